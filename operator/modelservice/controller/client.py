"""A small asynchronous Kubernetes API client (aiohttp), used only by apply.py and observe.py.

It reuses the credentials kopf logged in with (see handlers.login), so the operator has one login path for
in-cluster service accounts and kubeconfigs. Every request is counted in the operator metrics; API errors carry
the HTTP status so the reconcile loop can tell retryable ones (409, 429, 5xx, dropped connections) from the rest.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp

from modelservice import __version__, metrics

USER_AGENT = f"modelservice-operator/{__version__}"
RETRYABLE = {409, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class Kind:
    """An API resource: group ("" for core), version, plural, kind."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace)}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name)}"
        if subresource:
            base += f"/{subresource}"
        return base


class ApiError(Exception):
    """A failed API request: ``status`` 0 means no HTTP answer (connection refused, dropped, timed out)."""

    def __init__(self, status: int, reason: str, message: str, verb: str, path: str) -> None:
        super().__init__(f"{verb} {path}: {status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def retryable(self) -> bool:
        return self.status == 0 or self.status in RETRYABLE


@dataclass(frozen=True)
class Connection:
    """Where and how to reach the API server (taken from kopf's ConnectionInfo)."""

    server: str
    headers: dict[str, str]
    ssl_context: ssl.SSLContext | None


class KubeClient:
    """JSON requests against the API server; one aiohttp session per operator."""

    def __init__(self, connection: Connection, timeout: float = 30.0) -> None:
        self._connection = connection
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def update(self, connection: Connection) -> None:
        """New credentials (kopf re-logged in); the next request uses them."""
        self._connection = connection

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=32, ssl=self._connection.ssl_context or False),
            )
        return self._session

    async def request(
        self,
        verb: str,
        kind: Kind,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        url = self._connection.server.rstrip("/") + path + (f"?{urlencode(params)}" if params else "")
        headers = {**self._connection.headers, "Accept": "application/json", "User-Agent": USER_AGENT}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body, separators=(",", ":"))
        metrics.API_REQUESTS.labels(verb=verb, resource=kind.plural).inc()
        try:
            async with self._get_session().request(verb, url, data=data, headers=headers) as response:
                text = await response.text()
                if response.status >= 400:
                    try:
                        payload = json.loads(text)
                    except ValueError:
                        payload = {}
                    reason = str(payload.get("reason") or response.reason or "")
                    message = str(payload.get("message") or text[:200])
                    metrics.API_ERRORS.labels(verb=verb, resource=kind.plural, code=str(response.status)).inc()
                    raise ApiError(response.status, reason, message, verb, path)
                return json.loads(text) if text else None
        except (TimeoutError, aiohttp.ClientError) as exc:
            metrics.API_ERRORS.labels(verb=verb, resource=kind.plural, code="connection").inc()
            raise ApiError(0, type(exc).__name__, str(exc) or type(exc).__name__, verb, path) from exc

    async def create(self, kind: Kind, namespace: str | None, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("POST", kind, kind.path(namespace), body)
        return result

    async def get(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", kind, kind.path(namespace, name))
        return result

    async def list(self, kind: Kind, namespace: str | None, label_selector: str | None = None) -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else None
        result = await self.request("GET", kind, kind.path(namespace), params=params)
        items: list[dict[str, Any]] = list((result or {}).get("items") or [])
        return items

    async def merge_patch(
        self, kind: Kind, namespace: str | None, name: str, patch: dict[str, Any], subresource: str | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "PATCH",
            kind,
            kind.path(namespace, name, subresource),
            patch,
            content_type="application/merge-patch+json",
        )
        return result
