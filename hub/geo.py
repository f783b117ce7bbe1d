"""GeoIP of a tracker's address → userCountry, userCity, userState (SPEC §4.1).

The database is a MaxMind .mmdb (HUB_GEOIP_DB): a country database gives the country only, a city
database also the city and the state (the most specific subdivision). The client address is the
peer's, unless the peer is a trusted proxy (HUB_TRUSTED_PROXIES): then X-Forwarded-For is read from
the right, and the first address that is not a trusted proxy is the client.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import geoip2.database
import geoip2.errors
import geoip2.models
import maxminddb

from hub.errors import SettingsError
from hub.settings import IPNetwork

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class GeoInfo:
    """Where an address is; None where the database does not say."""

    country: str | None = None  # ISO 3166-1 alpha-2, like "FR"
    city: str | None = None  # English name
    state: str | None = None  # English name of the most specific subdivision


class GeoLocator:
    """A GeoIP database opened once per application."""

    def __init__(self, path: str) -> None:
        try:
            self._reader = geoip2.database.Reader(path, locales=["en"])
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as e:
            raise SettingsError(f"HUB_GEOIP_DB: cannot read {path}: {e}") from e
        kind = self._reader.metadata().database_type
        # geoip2 picks its model by the database type; an Enterprise database has city data too.
        if "City" in kind or "Enterprise" in kind:
            self._with_city = True
        elif "Country" in kind:
            self._with_city = False
        else:
            self._reader.close()
            raise SettingsError(
                f"HUB_GEOIP_DB: {path} is a {kind!r} database, not a country or city one"
            )
        self._kind = kind

    def locate(self, address: IPAddress | None) -> GeoInfo:
        """The location of an address; an empty GeoInfo when unknown."""
        if address is None:
            return GeoInfo()
        try:
            if not self._with_city:
                return GeoInfo(country=self._reader.country(address).country.iso_code)
            found: geoip2.models.City = (
                self._reader.enterprise(address)
                if "Enterprise" in self._kind
                else self._reader.city(address)
            )
        except geoip2.errors.AddressNotFoundError:
            return GeoInfo()
        except (ValueError, maxminddb.InvalidDatabaseError):
            # A damaged database must not refuse trackers: they go without a location.
            log.warning("GeoIP lookup of %s failed", address, exc_info=True)
            return GeoInfo()
        state = found.subdivisions.most_specific.name if found.subdivisions else None
        return GeoInfo(country=found.country.iso_code, city=found.city.name, state=state)

    def close(self) -> None:
        self._reader.close()


def client_address(
    peer: str | None, forwarded_for: str | None, trusted: Sequence[IPNetwork]
) -> IPAddress | None:
    """The address of the client behind ``peer``, believing X-Forwarded-For only from ``trusted``.

    The list is read from the right: each address a trusted proxy added is believed, and the first
    address that is not a trusted proxy is the client. When every address is a trusted proxy the
    left-most one is taken. A malformed entry ends the walk with None (no location) rather than
    a guess.
    """
    address = parse_address(peer)
    if address is None or not forwarded_for or not _is_trusted(address, trusted):
        return address
    for entry in reversed([part for part in forwarded_for.split(",") if part.strip()]):
        hop = parse_address(entry)
        if hop is None:
            return None
        address = hop
        if not _is_trusted(hop, trusted):
            break
    return address


def parse_address(text: str | None) -> IPAddress | None:
    """An IP address from ``1.2.3.4``, ``1.2.3.4:80``, ``::1`` or ``[::1]:80``; None otherwise."""
    if not text:
        return None
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_trusted(address: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in trusted)
