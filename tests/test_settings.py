"""Settings: flags beat environment beat defaults; bad values stop the start, naming the setting."""

from __future__ import annotations

import re

import pytest

from hub.errors import SettingsError
from hub.settings import SETTINGS, Settings
from tests.conftest import ROOT


def test_defaults() -> None:
    s = Settings.from_env({})
    assert (s.host, s.port, s.redis_url) == ("127.0.0.1", 8080, None)
    assert s.database_url == "sqlite:///./livehub.db"
    assert s.socket_path == "/ws-assist/socket"
    assert (s.session_grace, s.ping_interval, s.ping_timeout) == (30, 25, 20)
    assert s.limits.session_info_bytes == 16 * 1024
    assert s.limits.event_bytes == 1024 * 1024
    assert s.limits.session_data_bytes == 4 * 1024 * 1024
    assert (s.limits.events_per_second, s.limits.event_burst) == (100, 200)


def test_flag_beats_environment_beats_default() -> None:
    env = {"HUB_PORT": "9000", "HUB_SESSION_GRACE": "5", "HUB_MAX_EVENT_SIZE": "2048"}
    s = Settings.from_env(env, {"port": "9100"})
    assert s.port == 9100
    assert s.session_grace == 5
    assert s.limits.event_bytes == 2048


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"HUB_PORT": "http"}, "HUB_PORT"),
        ({"HUB_PORT": "70000"}, "HUB_PORT"),
        ({"HUB_SESSION_GRACE": "-1"}, "HUB_SESSION_GRACE"),
        ({"HUB_PING_INTERVAL": "0"}, "HUB_PING_INTERVAL"),
        ({"HUB_TRUSTED_PROXIES": "10.0.0.0/8,bogus"}, "HUB_TRUSTED_PROXIES"),
        ({"HUB_LOG_FORMAT": "xml"}, "HUB_LOG_FORMAT"),
        ({"HUB_DATABASE_URL": "mysql://x"}, "HUB_DATABASE_URL"),
        ({"HUB_REDIS_URL": "localhost:6379"}, "HUB_REDIS_URL"),
        ({"HUB_SOCKET_PATH": "socket"}, "HUB_SOCKET_PATH"),
        ({"HUB_GEOIP_DB": "/nonexistent.mmdb"}, "HUB_GEOIP_DB"),
        ({"HUB_JWT_SECRET": "short"}, "HUB_JWT_SECRET"),
        ({"HUB_EVENT_RATE": "nan"}, "HUB_EVENT_RATE"),
        ({"HUB_WS_COMPRESSION": "maybe"}, "HUB_WS_COMPRESSION"),
        ({"HUB_MAX_SESSION_DATA": "0"}, "HUB_MAX_SESSION_DATA"),
    ],
)
def test_bad_setting_names_itself(env: dict[str, str], name: str) -> None:
    with pytest.raises(SettingsError) as e:
        Settings.from_env(env)
    message = str(e.value)
    assert message.startswith(name)
    assert "\n" not in message


def test_every_setting_is_documented() -> None:
    doc = (ROOT / "docs" / "operations.md").read_text()
    documented = set(re.findall(r"`(HUB_[A-Z_]+)`", doc))
    in_code = {spec.env for spec in SETTINGS}
    assert in_code - documented == set(), "settings missing from docs/operations.md"
    assert documented - in_code == set(), "docs/operations.md lists settings the code lacks"
