"""Fixtures of the hub tests: small GeoIP databases written by the tests themselves.

The databases hold a few documentation and loopback networks with made-up but realistic
locations; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

# network → (country ISO code, city, subdivisions from the largest to the most specific)
LOCATIONS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "81.2.69.0/24": ("GB", "London", ("England",)),
    "2.125.160.0/24": ("GB", "Boxford", ("England", "West Berkshire")),
    "203.0.113.0/24": ("FR", "Paris", ("Île-de-France",)),
    "127.0.0.0/8": ("DE", "Berlin", ("Land Berlin",)),
    "2001:db8::/32": ("JP", "Tokyo", ("Tokyo",)),
    "198.51.100.0/24": ("US", "", ()),  # a country without a city
}


def _record(country: str, city: str, subdivisions: tuple[str, ...], *, with_city: bool) -> Any:
    record: dict[str, Any] = {
        "country": {"iso_code": country, "names": {"en": f"country {country}"}},
        "registered_country": {"iso_code": country, "names": {"en": f"country {country}"}},
    }
    if with_city:
        if city:
            record["city"] = {"names": {"en": city, "de": city + " (de)"}}
        if subdivisions:
            record["subdivisions"] = [
                {"iso_code": name[:3].upper(), "names": {"en": name}} for name in subdivisions
            ]
    return record


def write_geoip_db(path: Path, database_type: str, *, with_city: bool) -> Path:
    """Write a GeoIP database of ``LOCATIONS``; ``database_type`` like "GeoLite2-City"."""
    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type=database_type,
        languages=["en", "de"],
        description="livehub test database",
    )
    for network, (country, city, subdivisions) in LOCATIONS.items():
        writer.insert_network(
            IPSet([network]), _record(country, city, subdivisions, with_city=with_city)
        )
    writer.to_db_file(str(path))
    return path


@pytest.fixture(scope="session")
def geoip_city_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A city database (GeoLite2-City layout)."""
    path = tmp_path_factory.mktemp("geoip") / "city.mmdb"
    return str(write_geoip_db(path, "GeoLite2-City", with_city=True))


@pytest.fixture(scope="session")
def geoip_country_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A country database (GeoLite2-Country layout)."""
    path = tmp_path_factory.mktemp("geoip") / "country.mmdb"
    return str(write_geoip_db(path, "GeoLite2-Country", with_city=False))


# User-Agent headers of real browsers, by the device type they must give.
UA_MAC_CHROME = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/103.0.0.0 Safari/537.36"
)
UA_WINDOWS_FIREFOX = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:109.0) Gecko/20100101 Firefox/115.0"
)
UA_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 16_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/16.5 Mobile/15E148 Safari/604.1"
)
UA_ANDROID_PHONE = (
    "Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/116.0.0.0 Mobile Safari/537.36"
)
UA_IPAD = (
    "Mozilla/5.0 (iPad; CPU OS 16_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/16.5 Mobile/15E148 Safari/604.1"
)
UA_ANDROID_TABLET = (
    "Mozilla/5.0 (Linux; Android 12; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/112.0.0.0 Safari/537.36"
)
