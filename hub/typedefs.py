"""Every ``web.AppKey`` of the application, in one place."""

from __future__ import annotations

import socketio
from aiohttp import web

from hub.metrics import Metrics
from hub.registry.base import PresenceRegistry
from hub.settings import Settings
from hub.store.base import SessionStore
from hub.tokens import AgentTokens

SETTINGS = web.AppKey("settings", Settings)
SIO = web.AppKey("sio", socketio.AsyncServer)
REGISTRY = web.AppKey("registry", PresenceRegistry)
STORE = web.AppKey("store", SessionStore)
METRICS = web.AppKey("metrics", Metrics)
AGENT_TOKENS = web.AppKey("agent_tokens", AgentTokens)
