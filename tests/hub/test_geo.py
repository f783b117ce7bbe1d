"""Unit tests of hub.geo: lookups in generated country and city databases, and client addresses."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from hub.errors import SettingsError
from hub.geo import GeoInfo, GeoLocator, client_address, parse_address
from tests.hub.conftest import write_geoip_db

ip = ipaddress.ip_address


def test_city_database(geoip_city_db: str) -> None:
    geo = GeoLocator(geoip_city_db)
    try:
        assert geo.locate(ip("81.2.69.160")) == GeoInfo("GB", "London", "England")
        # The state is the most specific subdivision.
        assert geo.locate(ip("2.125.160.216")) == GeoInfo("GB", "Boxford", "West Berkshire")
        assert geo.locate(ip("203.0.113.9")) == GeoInfo("FR", "Paris", "Île-de-France")
        assert geo.locate(ip("2001:db8::1")) == GeoInfo("JP", "Tokyo", "Tokyo")
        assert geo.locate(ip("198.51.100.1")) == GeoInfo("US", None, None)
        assert geo.locate(ip("192.0.2.1")) == GeoInfo()
        assert geo.locate(None) == GeoInfo()
    finally:
        geo.close()


def test_country_database(geoip_country_db: str) -> None:
    geo = GeoLocator(geoip_country_db)
    try:
        assert geo.locate(ip("81.2.69.160")) == GeoInfo("GB", None, None)
        assert geo.locate(ip("2001:db8::1")) == GeoInfo("JP", None, None)
        assert geo.locate(ip("192.0.2.1")) == GeoInfo()
    finally:
        geo.close()


def test_other_database_types_are_refused(tmp_path: Path) -> None:
    path = write_geoip_db(tmp_path / "asn.mmdb", "GeoLite2-ASN", with_city=False)
    with pytest.raises(SettingsError, match="not a country or city"):
        GeoLocator(str(path))


def test_a_file_that_is_no_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.mmdb"
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(SettingsError, match="HUB_GEOIP_DB"):
        GeoLocator(str(path))


TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        # No proxy trusted: the peer, whatever the header says.
        ("81.2.69.1", "203.0.113.9", "81.2.69.1"),
        # A trusted proxy: the right-most address that is not a trusted proxy.
        ("10.0.0.2", "203.0.113.9", "203.0.113.9"),
        ("10.0.0.2", "1.1.1.1, 203.0.113.9, 10.0.0.1", "203.0.113.9"),
        ("10.0.0.2", "203.0.113.9,10.0.0.3,10.0.0.1", "203.0.113.9"),
        # Every hop trusted: the left-most.
        ("10.0.0.2", "10.0.0.5, 10.0.0.1", "10.0.0.5"),
        # Ports, brackets and IPv6.
        ("10.0.0.2", "203.0.113.9:5555", "203.0.113.9"),
        ("fd00::2", "[2001:db8::7]:443", "2001:db8::7"),
        ("::ffff:10.0.0.2", "203.0.113.9", "203.0.113.9"),
        # A trusted proxy without the header, or with an empty one.
        ("10.0.0.2", None, "10.0.0.2"),
        ("10.0.0.2", " , ", "10.0.0.2"),
        # Garbage on the way: no guess.
        ("10.0.0.2", "203.0.113.9, unknown", None),
        # No peer address (a unix socket).
        (None, "203.0.113.9", None),
        ("", None, None),
    ],
)
def test_client_address(peer: str | None, forwarded: str | None, client: str | None) -> None:
    expected = ip(client) if client else None
    assert client_address(peer, forwarded, TRUSTED) == expected


def test_untrusted_peer_header_is_ignored() -> None:
    assert client_address("81.2.69.1", "10.0.0.1", ()) == ip("81.2.69.1")


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("1.2.3.4", "1.2.3.4"),
        (" 1.2.3.4:80 ", "1.2.3.4"),
        ("::1", "::1"),
        ("[::1]:80", "::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("::ffff:1.2.3.4", "1.2.3.4"),
        ("example.com", None),
        ("1.2.3.4:80:90", None),
        (None, None),
    ],
)
def test_parse_address(text: str | None, address: str | None) -> None:
    assert parse_address(text) == (ip(address) if address else None)
