"""Rate limits per API key and per client address (moving windows of the `limits` library),
counted in this process's memory or in a Redis server that every replica shares."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from mriscribe.settings import Settings, SettingsError

if TYPE_CHECKING:
    from limits import RateLimitItem
    from limits.aio.strategies import MovingWindowRateLimiter

log = logging.getLogger("mriscribe.service")

Subject = Literal["key", "address"]
# Keys in a shared Redis start with this, apart from other applications' keys.
REDIS_PREFIX = "mriscribe"
# A Redis server that does not answer within this long counts as unavailable.
REDIS_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class Exceeded:
    """A limit a request went over: whose, which, and when to try again."""

    subject: Subject
    limit: str
    retry_after_s: int


class StoreUnavailableError(Exception):
    """The rate-limit store (Redis) did not answer: requests are refused until it does."""


class RateLimits:
    """The service's limits: ``rate_limit_per_key`` for each API key and
    ``rate_limit_per_address`` for each client address, on analysis requests."""

    def __init__(self, settings: Settings) -> None:
        from limits import parse_many
        from limits.aio.strategies import MovingWindowRateLimiter

        self.per_key = _parse(parse_many, "rate_limit_per_key", settings.rate_limit_per_key)
        self.per_address = _parse(
            parse_many, "rate_limit_per_address", settings.rate_limit_per_address
        )
        uri = settings.rate_limit_storage_uri
        self.shared = uri is not None and not uri.get_secret_value().startswith(
            ("memory", "async+memory")
        )
        self.strategy: MovingWindowRateLimiter = MovingWindowRateLimiter(
            _storage(uri.get_secret_value() if uri is not None else "memory://")
        )

    async def hit(self, subject: Subject, identity: str) -> Exceeded | None:
        """Count one request of ``identity``; the limit it went over, if any."""
        items = self.per_key if subject == "key" else self.per_address
        try:
            for item in items:
                if not await self.strategy.hit(item, subject, identity):
                    stats = await self.strategy.get_window_stats(item, subject, identity)
                    wait = max(1, math.ceil(stats.reset_time - time.time()))
                    return Exceeded(subject, str(item), wait)
        except Exception as exc:  # the store's client raises its own errors; none is ours
            log.error(
                "rate-limit store unavailable", extra={"exception": type(exc).__name__}
            )
            raise StoreUnavailableError from None
        return None

    async def check(self) -> bool:
        """Whether the store answers (at start-up, to log it)."""
        try:
            return bool(await self.strategy.storage.check())
        except Exception:  # a client error means it does not
            return False


def _parse(parse_many: object, name: str, value: str) -> list[RateLimitItem]:
    if not value:
        return []
    try:
        return list(parse_many(value))  # type: ignore[operator]
    except ValueError:
        raise SettingsError(f"{name}: {value!r} is not a rate like '120/minute'") from None


def _storage(uri: str) -> object:
    """The async storage for ``uri``: memory, or Redis through redis-py's asyncio client."""
    import importlib.util

    from limits.errors import ConfigurationError
    from limits.storage import storage_from_string

    scheme = uri if uri.startswith("async+") else f"async+{uri}"
    options: dict[str, float | str | bool] = {}
    if not scheme.startswith("async+memory"):
        if importlib.util.find_spec("redis") is None:
            raise SettingsError(
                "rate_limit_storage_uri: Redis needs the 'redis' package: "
                "pip install 'mriscribe[redis]'"
            )
        options = {
            "implementation": "redispy",
            "key_prefix": REDIS_PREFIX,
            "wrap_exceptions": True,
            "socket_timeout": REDIS_TIMEOUT_S,
            "socket_connect_timeout": REDIS_TIMEOUT_S,
        }
    try:
        return storage_from_string(scheme, **options)
    except (ConfigurationError, ValueError):
        # The URI may hold a password: the value is never repeated.
        raise SettingsError(
            "rate_limit_storage_uri: not a storage URI this version of `limits` takes"
        ) from None
