"""Hold every REST response the tests see to the OpenAPI document (``api/openapi.py``).

``validate_responses(client)`` wraps an aiohttp ``TestClient`` so that each response to a
documented operation is checked: its status must be documented, its media type too, its
documented headers present and its body valid against the schema (JSON Schema 2020-12). A
violation fails the test that made the request, naming the operation and the problem.

Responses to operations the document does not list (a wrong method, an unknown path, the Socket.IO
endpoint, a CORS preflight) are not checked here: they have tests of their own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator, FormatChecker

from api.openapi import build_document

Document = dict[str, Any]


def resolve(document: Document, node: Any) -> Any:
    """``node`` with every local ``$ref`` replaced by what it points to (the document has no
    recursive schema)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target: Any = document
            for part in ref[2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            return resolve(document, target)
        return {key: resolve(document, value) for key, value in node.items()}
    if isinstance(node, list):
        return [resolve(document, item) for item in node]
    return node


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    pattern: re.Pattern[str]
    spec: dict[str, Any]


class OpenApiValidator:
    """Checks responses against the document; :meth:`check` raises AssertionError."""

    def __init__(self, document: Document | None = None) -> None:
        self.document = build_document() if document is None else document
        self._validators: dict[str, Draft202012Validator] = {}
        operations = []
        for template, item in self.document["paths"].items():
            regex = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
            # Literal segments first: /sessions/{id}/agent-token before /sessions/{id}.
            for method, spec in item.items():
                operations.append(
                    Operation(method.upper(), template, re.compile(regex + r"\Z"), spec)
                )
        literal = lambda op: -len(re.sub(r"\{[^}]+\}", "", op.template))  # noqa: E731
        self.operations = sorted(operations, key=literal)

    def operation(self, method: str, path: str) -> Operation | None:
        """The documented operation of a request (HEAD is answered as GET), or None."""
        method = "GET" if method == "HEAD" else method
        for op in self.operations:
            if op.method == method and op.pattern.match(path):
                return op
        return None

    def check(
        self, method: str, path: str, status: int, headers: dict[str, str], body: bytes
    ) -> None:
        """Raise AssertionError when the response is not one the document allows."""
        op = self.operation(method, path)
        if op is None:
            return
        where = f"{method} {path} ({op.method} {op.template}) answered {status}"
        responses = op.spec["responses"]
        status_key = str(status) if str(status) in responses else "default"
        assert status_key in responses, f"{where}: status not documented; body {body[:300]!r}"
        documented = resolve(self.document, responses[status_key])
        lower = {name.lower(): value for name, value in headers.items()}
        for name, header in documented.get("headers", {}).items():
            if header.get("required"):
                assert name.lower() in lower, f"{where}: header {name} missing"
        content = documented.get("content")
        if not content:
            assert not body, f"{where}: a body where none is documented"
            return
        media = lower.get("content-type", "").split(";")[0].strip()
        assert media in content, f"{where}: media type {media!r}, documented {list(content)}"
        if method == "HEAD":
            return
        schema = content[media].get("schema")
        if schema is None:
            return
        value: Any
        if media == "application/json":
            try:
                value = json.loads(body)
            except ValueError as e:
                raise AssertionError(f"{where}: not JSON: {body[:300]!r}") from e
        else:
            value = body.decode("utf-8")
        validator = self._validator(f"{op.method} {op.template} {status_key} {media}", schema)
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.path))
        if errors:
            shown = "; ".join(f"at {list(e.path)}: {e.message[:300]}" for e in errors[:5])
            raise AssertionError(f"{where}: body does not match the document: {shown}")

    def _validator(self, key: str, schema: dict[str, Any]) -> Draft202012Validator:
        validator = self._validators.get(key)
        if validator is None:
            validator = Draft202012Validator(schema, format_checker=FormatChecker())
            self._validators[key] = validator
        return validator


RequestFunction = Callable[..., Awaitable[ClientResponse]]


def validate_responses(
    client: TestClient[web.Request, web.Application], validator: OpenApiValidator | None = None
) -> OpenApiValidator:
    """Check every response ``client`` gets from now on (see the module's docstring)."""
    validator = validator or OpenApiValidator()
    original: RequestFunction = client._request

    async def request(method: str, path: Any, **kwargs: Any) -> ClientResponse:
        response = await original(method, path, **kwargs)
        body = await response.read()  # kept by the response: the test reads it again
        validator.check(
            response.method, response.url.raw_path, response.status, dict(response.headers), body
        )
        return response

    setattr(client, "_request", request)  # noqa: B010 (mypy refuses assigning a method)
    return validator
