"""Who may call which route: API keys (X-API-Key, or the same key as a bearer token) and their
scopes, rate limits per key and per address, all checked before a body is read; and the
start-up rule that keeps a service without keys on loopback."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.exceptions import HTTPException
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from mriscribe.service.keys import KeyRing, Scope, grants, load_secret
from mriscribe.service.metrics import ServiceMetrics
from mriscribe.service.middleware import KEY_ID_STATE
from mriscribe.service.ratelimit import RateLimits, StoreUnavailableError, Subject
from mriscribe.settings import Settings, SettingsError

log = logging.getLogger("mriscribe.service")

KEY_HEADER = "X-API-Key"
API_KEY = APIKeyHeader(
    name=KEY_HEADER,
    scheme_name="APIKey",
    description="An API key made with `mriscribe keys create` (needed when the service has "
    "keys). Scope 'analyze' for the analysis routes, 'admin' for those and /metrics.",
    auto_error=False,
)
BEARER = HTTPBearer(
    scheme_name="Bearer",
    description="The same API key as a bearer token (`Authorization: Bearer KEY`), for "
    "clients that can only send that header, such as Prometheus.",
    auto_error=False,
)
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="mriscribe"'}
_UNAUTHORISED = {
    "missing": f"an API key is needed: send it in the {KEY_HEADER} header",
    "invalid": "the API key is not valid",
    "revoked": "the API key has been revoked",
}


def check_exposure(settings: Settings) -> None:
    """Refuse (SettingsError) to serve beyond loopback with no API keys, unless
    ``allow_unauthenticated`` says so explicitly."""
    if settings.keys_required or settings.loopback_only:
        return
    if settings.allow_unauthenticated:
        log.warning(
            "serving beyond loopback WITHOUT API keys (allow_unauthenticated): anyone who "
            "can reach the port can upload scans",
            extra={"host": settings.host},
        )
        return
    raise SettingsError(
        f"host: {settings.host} reaches beyond this machine, and the service has no API keys: "
        "create one (`mriscribe keys create --name NAME`) and set api_keys_file and "
        "api_key_secret_file, or set allow_unauthenticated = true (--allow-unauthenticated) "
        "to serve without keys"
    )


class Guard:
    """The checks in front of the routes, as FastAPI dependencies (shown in the OpenAPI
    document as the routes' security). Without keys a route has no security; without rate
    limits, no limit check: neither costs anything then."""

    def __init__(self, settings: Settings, metrics: ServiceMetrics | None) -> None:
        self.metrics = metrics
        self.keys: KeyRing | None = None
        if settings.api_keys_file is not None:
            if settings.allow_unauthenticated:
                raise SettingsError(
                    "allow_unauthenticated: set together with api_keys_file; unset one of them"
                )
            if "*" in settings.allowed_origins:
                raise SettingsError(
                    "cors_origins: '*' cannot be used with API keys; list the origins of the "
                    "web pages that call the service (e.g. [\"https://pacs.example.org\"])"
                )
            self.keys = KeyRing(settings.api_keys_file, load_secret(settings))
            if self.keys.active_count == 0:
                log.warning("the key file has no active key: every analysis is refused")
        self.limits = RateLimits(settings) if settings.rate_limited else None

    def dependencies(self, needed: Scope, *, rate_limited: bool = True) -> list[Any]:
        """The ``dependencies=`` of a route that needs a key of scope ``needed``."""
        limits = self.limits if rate_limited else None
        keys = self.keys
        if keys is None:
            return [Depends(self._address_check(limits))] if limits is not None else []

        async def api_key(
            request: Request,
            key: Annotated[str | None, Security(API_KEY)],
            bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
        ) -> None:
            if limits is not None:
                await self._limit(limits, "address", _address(request))
            verdict = keys.verify(key or (bearer.credentials if bearer is not None else None))
            if verdict.failure == "unavailable":
                self._refuse("keys_unavailable")
                raise HTTPException(
                    503,
                    "the service's API keys cannot be read; see the server log",
                    headers={"Retry-After": "30"},
                )
            if verdict.failure is not None or verdict.key is None:
                reason = verdict.failure or "invalid"
                extra = {"key_id": verdict.key.id} if verdict.key is not None else {}
                self._refuse(f"{reason}_key", **extra)
                raise HTTPException(401, _UNAUTHORISED[reason], headers=_CHALLENGE)
            request.scope.setdefault("state", {})[KEY_ID_STATE] = verdict.key.id
            if not grants(verdict.key.scope, needed):
                self._refuse("insufficient_scope", key_id=verdict.key.id)
                raise HTTPException(403, f"this API key lacks the '{needed}' scope")
            if limits is not None:
                await self._limit(limits, "key", verdict.key.id)

        return [Security(api_key)]

    def _address_check(self, limits: RateLimits) -> Any:
        async def client_address(request: Request) -> None:
            await self._limit(limits, "address", _address(request))

        return client_address

    async def _limit(self, limits: RateLimits, subject: Subject, identity: str) -> None:
        try:
            exceeded = await limits.hit(subject, identity)
        except StoreUnavailableError:
            self._refuse("rate_limit_store_unavailable")
            raise HTTPException(
                503,
                "the rate-limit store is unavailable; try again shortly",
                headers={"Retry-After": "5"},
            ) from None
        if exceeded is not None:
            self._refuse(f"rate_limited_{subject}")
            whose = "this API key" if subject == "key" else "this client address"
            raise HTTPException(
                429,
                f"rate limit exceeded: {exceeded.limit} for {whose}; "
                f"retry after {exceeded.retry_after_s} s",
                headers={"Retry-After": str(exceeded.retry_after_s)},
            )

    def _refuse(self, reason: str, **extra: str) -> None:
        log.info("request refused", extra={"reason": reason, **extra})
        if self.metrics is not None:
            self.metrics.observe_refusal(reason)


def _address(request: Request) -> str:
    client = request.client
    return client.host if client is not None else "unknown"
