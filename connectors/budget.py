"""A rate budget shared by every worker on every machine: DotDigital's tiers, Brightpearl's 200/min.

The state lives in the database (`RateWindow`, `ConcurrencySlot`: conditional UPDATEs, safe on
PostgreSQL and SQLite) or, when `settings.RATE_BUDGET_REDIS_URL` is set, in Redis (one Lua
script per operation). Never in process memory.

Use it before every call and feed it every answer:

    grant = budget.acquire("import", Lane.BULK)
    if not grant:                   # no room: grant.wait says for how long, in seconds
        ...                         # sleep that long, or push the row's next_attempt_at
    response = session.put(...)
    budget.observe_headers("import", response.headers)   # corrects the local view
    if response.status_code == 429:
        budget.block("import", retry_after)              # nobody calls this tier until then

Lanes: the realtime lane may use the whole window; the bulk lane stops `reserve` (a share of the
limit) short of it, so a backfill can never starve a dispatch email. A budget made with `pace`
spreads each lane's calls over the window: `pace` of the lane's share at its start, growing
evenly to the whole by its end (`paced_cap`). A fixed window spent in its first seconds leaves
every dispatch waiting for the window to end; paced, some room comes back every second.

Concurrency caps (DotDigital's 25 contact / 5 insight imports in flight) are `ConcurrencyCap`:
claim a slot before submitting, rename it to the import id once accepted, release it when the
import is seen finished. A slot whose lease runs out frees itself. The bulk lane claims with
`keep_free`, so a backfill's imports never hold the slots a dispatch's import needs.
"""

from __future__ import annotations

import enum
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol

import redis
from django.conf import settings
from django.db import IntegrityError
from django.db.models import F, Q, QuerySet
from django.db.models.functions import Greatest
from requests.structures import CaseInsensitiveDict

from connectors.models import ConcurrencySlot, RateWindow

Clock = Callable[[], float]
# A reset time this close to the window's end is the same window (clocks and transit differ).
SAME_WINDOW = 0.5


class Lane(enum.StrEnum):
    REALTIME = "realtime"
    BULK = "bulk"


@dataclass(frozen=True)
class TierLimit:
    """Calls allowed per window of `window` seconds (until the answers' headers say otherwise)."""

    limit: int
    window: float = 60.0


@dataclass(frozen=True)
class Grant:
    """The budget's answer. Falsy when refused: then `wait` is how long to wait, in seconds."""

    granted: bool
    wait: float = 0.0
    remaining: int = 0  # calls still open to this lane in this window, after this one

    def __bool__(self) -> bool:
        return self.granted


def paced_cap(cap: int, window: float, window_end: float, now: float, pace: float) -> int:
    """The calls open to a lane by `now` in the window ending at `window_end`: its `cap`, or
    fewer early in the window when paced (`pace` of the cap at its start, growing evenly to the
    whole by its end)."""
    if pace <= 0:
        return cap
    elapsed = max(0.0, now - (window_end - window))
    return min(cap, math.ceil(cap * (elapsed / window + pace)))


def paced_wait(
    used: int, cap: int, window: float, window_end: float, now: float, pace: float
) -> float:
    """Seconds until a paced window has opened `used` of a lane's `cap` calls."""
    start = window_end - window
    return max(0.01, start + (used / max(cap, 1) - pace) * window - now)


def next_window_end(window_end: float, window: float, now: float) -> float:
    """The end of the window containing `now`, keeping the phase of `window_end` if known."""
    if window_end > 0:
        return window_end + window * (math.floor((now - window_end) / window) + 1)
    return math.floor(now / window) * window + window


class Backend(Protocol):
    def acquire(
        self,
        key: str,
        tier: str,
        default: TierLimit,
        share: float,
        cost: int,
        now: float,
        pace: float = 0.0,
    ) -> Grant: ...

    def window_state(self, key: str, tier: str, now: float) -> tuple[int, int, float, float]:
        """(used, limit, window end, window length) of the current window; zeros if none."""
        ...

    def observe(
        self,
        key: str,
        tier: str,
        default: TierLimit,
        limit: int | None,
        remaining: int | None,
        reset_at: float | None,
        now: float,
    ) -> None: ...

    def block(self, key: str, tier: str, default: TierLimit, until: float) -> None: ...

    def claim(self, key: str, kind: str, cap: int, holder: str, ttl: float, now: float) -> bool: ...

    def rename(self, key: str, kind: str, old: str, new: str, ttl: float, now: float) -> bool: ...

    def release(self, key: str, kind: str, holder: str) -> None: ...

    def in_use(self, key: str, kind: str, now: float) -> int: ...


# -- the database -----------------------------------------------------------------------------


class DatabaseBackend:
    """Rows in `connectors_ratewindow` / `connectors_concurrencyslot`, changed by conditional UPDATE."""

    attempts = 8

    def _row(self, key: str, tier: str, default: TierLimit) -> RateWindow:
        try:
            row, _ = RateWindow.objects.get_or_create(
                account_key=key,
                tier=tier,
                defaults={"limit": default.limit, "window_seconds": default.window},
            )
        except IntegrityError:  # created by another worker between the get and the create
            row = RateWindow.objects.get(account_key=key, tier=tier)
        return row

    def acquire(
        self,
        key: str,
        tier: str,
        default: TierLimit,
        share: float,
        cost: int,
        now: float,
        pace: float = 0.0,
    ) -> Grant:
        row = self._row(key, tier, default)
        for _ in range(self.attempts):
            if row.blocked_until > now:
                return Grant(False, row.blocked_until - now)
            full = row.limit - math.ceil(row.limit * share) if share else row.limit
            mine = RateWindow.objects.filter(pk=row.pk, window_end=row.window_end)
            new_window = now >= row.window_end
            end = (
                next_window_end(row.window_end, row.window_seconds, now)
                if new_window
                else row.window_end
            )
            used = 0 if new_window else row.used
            cap = paced_cap(full, row.window_seconds, end, now, pace)
            if used + cost > cap:
                if used + cost > full:
                    return Grant(False, end - now)
                return Grant(
                    False, paced_wait(used + cost, full, row.window_seconds, end, now, pace)
                )
            if new_window:
                if mine.filter(blocked_until__lte=now).update(window_end=end, used=cost):
                    return Grant(True, 0.0, cap - cost)
            elif mine.filter(used__lte=cap - cost, blocked_until__lte=now).update(
                used=F("used") + cost
            ):
                return Grant(True, 0.0, max(0, cap - used - cost))
            row.refresh_from_db()
        # Lost every race: plenty of others are calling; look again very soon.
        return Grant(False, 0.05 + random.random() * 0.05)

    def observe(
        self,
        key: str,
        tier: str,
        default: TierLimit,
        limit: int | None,
        remaining: int | None,
        reset_at: float | None,
        now: float,
    ) -> None:
        row = self._row(key, tier, default)
        changes: dict[str, Any] = {}
        if limit is not None and limit > 0 and limit != row.limit:
            changes["limit"] = limit
        # An answer about a window already over (reset in the past) corrects no count.
        if remaining is not None and reset_at is not None and reset_at > now:
            server_used = max(0, (limit or row.limit) - remaining)
            mine = RateWindow.objects.filter(pk=row.pk, window_end=row.window_end)
            if abs(reset_at - row.window_end) <= SAME_WINDOW:
                # Our count can be behind the server's (other clients of the account) but is
                # never too high (calls still in flight), so it only ever goes up.
                mine.update(used=Greatest(F("used"), server_used), **changes)
            else:
                # The server's window is another one than ours: take its end and its count.
                mine.update(window_end=reset_at, used=server_used, **changes)
            return
        if changes:
            RateWindow.objects.filter(pk=row.pk).update(**changes)

    def block(self, key: str, tier: str, default: TierLimit, until: float) -> None:
        self._row(key, tier, default)
        RateWindow.objects.filter(account_key=key, tier=tier, blocked_until__lt=until).update(
            blocked_until=until
        )

    def window_state(self, key: str, tier: str, now: float) -> tuple[int, int, float, float]:
        row = RateWindow.objects.filter(account_key=key, tier=tier).first()
        if row is None:
            return 0, 0, 0.0, 0.0
        current = now < row.window_end
        return (row.used if current else 0), row.limit, row.window_end, row.window_seconds

    def _slots(self, key: str, kind: str, cap: int) -> QuerySet[ConcurrencySlot]:
        slots = ConcurrencySlot.objects.filter(account_key=key, kind=kind)
        if slots.filter(slot__lt=cap).count() < cap:
            ConcurrencySlot.objects.bulk_create(
                [ConcurrencySlot(account_key=key, kind=kind, slot=n) for n in range(cap)],
                ignore_conflicts=True,
            )
        return slots.filter(slot__lt=cap)

    def claim(self, key: str, kind: str, cap: int, holder: str, ttl: float, now: float) -> bool:
        slots = self._slots(key, kind, cap)
        if slots.filter(holder=holder).update(expires_at=now + ttl):
            return True
        for _ in range(self.attempts):
            free = list(
                slots.filter(Q(holder="") | Q(expires_at__lte=now)).values_list(
                    "pk", "holder", "expires_at"
                )
            )
            if not free:
                return False
            random.shuffle(free)  # fewer collisions between workers claiming at once
            for pk, old_holder, old_expiry in free:
                if slots.filter(pk=pk, holder=old_holder, expires_at=old_expiry).update(
                    holder=holder, expires_at=now + ttl
                ):
                    return True
        return False

    def rename(self, key: str, kind: str, old: str, new: str, ttl: float, now: float) -> bool:
        return bool(
            ConcurrencySlot.objects.filter(account_key=key, kind=kind, holder=old).update(
                holder=new, expires_at=now + ttl
            )
        )

    def release(self, key: str, kind: str, holder: str) -> None:
        ConcurrencySlot.objects.filter(account_key=key, kind=kind, holder=holder).update(
            holder="", expires_at=0.0
        )

    def in_use(self, key: str, kind: str, now: float) -> int:
        return (
            ConcurrencySlot.objects.filter(account_key=key, kind=kind, expires_at__gt=now)
            .exclude(holder="")
            .count()
        )


# -- Redis --------------------------------------------------------------------------------------

ACQUIRE_LUA = """
local now = tonumber(ARGV[1])
local h = redis.call('HMGET', KEYS[1], 'limit', 'window', 'end', 'used', 'blocked')
local limit = tonumber(h[1]) or tonumber(ARGV[2])
local window = tonumber(h[2]) or tonumber(ARGV[3])
local wend = tonumber(h[3]) or 0
local used = tonumber(h[4]) or 0
local blocked = tonumber(h[5]) or 0
local share = tonumber(ARGV[4])
local cost = tonumber(ARGV[5])
local pace = tonumber(ARGV[6]) or 0
if blocked > now then return {0, tostring(blocked - now), 0} end
local full = limit
if share > 0 then full = limit - math.ceil(limit * share) end
if now >= wend then
  if wend > 0 then
    wend = wend + window * (math.floor((now - wend) / window) + 1)
  else
    wend = math.floor(now / window) * window + window
  end
  used = 0
end
redis.call('HSET', KEYS[1], 'limit', limit, 'window', window, 'end', wend)
redis.call('EXPIRE', KEYS[1], 86400)
local cap = full
local start = wend - window
if pace > 0 then
  local opened = math.ceil(full * (math.max(0, now - start) / window + pace))
  if opened < cap then cap = opened end
end
if used + cost > cap then
  redis.call('HSET', KEYS[1], 'used', used)
  if used + cost > full then return {0, tostring(wend - now), 0} end
  local wait = start + ((used + cost) / math.max(full, 1) - pace) * window - now
  if wait < 0.01 then wait = 0.01 end
  return {0, tostring(wait), 0}
end
redis.call('HSET', KEYS[1], 'used', used + cost)
return {1, '0', cap - used - cost}
"""

OBSERVE_LUA = """
local h = redis.call('HMGET', KEYS[1], 'limit', 'window', 'end', 'used')
local limit = tonumber(h[1]) or tonumber(ARGV[1])
local window = tonumber(h[2]) or tonumber(ARGV[2])
local wend = tonumber(h[3]) or 0
local used = tonumber(h[4]) or 0
local new_limit = tonumber(ARGV[3])
local remaining = tonumber(ARGV[4])
local reset = tonumber(ARGV[5])
local same = tonumber(ARGV[6])
if new_limit and new_limit > 0 then limit = new_limit end
redis.call('HSET', KEYS[1], 'limit', limit, 'window', window)
if remaining and reset and reset > tonumber(ARGV[7]) then
  local server_used = math.max(0, limit - remaining)
  if math.abs(reset - wend) <= same then
    if server_used > used then redis.call('HSET', KEYS[1], 'used', server_used) end
  else
    redis.call('HSET', KEYS[1], 'end', reset, 'used', server_used)
  end
end
redis.call('EXPIRE', KEYS[1], 86400)
return 1
"""

BLOCK_LUA = """
local blocked = tonumber(redis.call('HGET', KEYS[1], 'blocked')) or 0
if tonumber(ARGV[1]) > blocked then redis.call('HSET', KEYS[1], 'blocked', ARGV[1]) end
if redis.call('HEXISTS', KEYS[1], 'limit') == 0 then
  redis.call('HSET', KEYS[1], 'limit', ARGV[2], 'window', ARGV[3])
end
redis.call('EXPIRE', KEYS[1], 86400)
return 1
"""

CLAIM_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local expiry = tonumber(ARGV[1]) + tonumber(ARGV[4])
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  redis.call('ZADD', KEYS[1], expiry, ARGV[3])
  return 1
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], expiry, ARGV[3])
redis.call('EXPIRE', KEYS[1], 86400)
return 1
"""

RENAME_LUA = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[1], tonumber(ARGV[3]) + tonumber(ARGV[4]), ARGV[2])
return 1
"""


@cache
def _redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


class RedisBackend:
    """One hash per (account, tier) and one sorted set per (account, kind), changed by Lua."""

    def __init__(self, url: str, prefix: str = "syncdesk:budget") -> None:
        self.client = _redis_client(url)
        self.prefix = prefix
        self._acquire = self.client.register_script(ACQUIRE_LUA)
        self._observe = self.client.register_script(OBSERVE_LUA)
        self._block = self.client.register_script(BLOCK_LUA)
        self._claim = self.client.register_script(CLAIM_LUA)
        self._rename = self.client.register_script(RENAME_LUA)

    def _rate_key(self, key: str, tier: str) -> str:
        return f"{self.prefix}:rate:{key}:{tier}"

    def _slot_key(self, key: str, kind: str) -> str:
        return f"{self.prefix}:slots:{key}:{kind}"

    def acquire(
        self,
        key: str,
        tier: str,
        default: TierLimit,
        share: float,
        cost: int,
        now: float,
        pace: float = 0.0,
    ) -> Grant:
        granted, wait, remaining = self._acquire(
            keys=[self._rate_key(key, tier)],
            args=[repr(now), default.limit, repr(default.window), repr(share), cost, repr(pace)],
        )
        return Grant(bool(int(granted)), float(wait), int(remaining))

    def observe(
        self,
        key: str,
        tier: str,
        default: TierLimit,
        limit: int | None,
        remaining: int | None,
        reset_at: float | None,
        now: float,
    ) -> None:
        self._observe(
            keys=[self._rate_key(key, tier)],
            args=[
                default.limit,
                repr(default.window),
                "" if limit is None else limit,
                "" if remaining is None else remaining,
                "" if reset_at is None else repr(reset_at),
                repr(SAME_WINDOW),
                repr(now),
            ],
        )

    def block(self, key: str, tier: str, default: TierLimit, until: float) -> None:
        self._block(
            keys=[self._rate_key(key, tier)],
            args=[repr(until), default.limit, repr(default.window)],
        )

    def window_state(self, key: str, tier: str, now: float) -> tuple[int, int, float, float]:
        raw = self.client.hmget(self._rate_key(key, tier), ["limit", "end", "used", "window"])
        limit, end, used, window = (float(v) if v is not None else 0.0 for v in raw)
        return (int(used) if now < end else 0), int(limit), end, window

    def claim(self, key: str, kind: str, cap: int, holder: str, ttl: float, now: float) -> bool:
        return bool(
            int(
                self._claim(
                    keys=[self._slot_key(key, kind)], args=[repr(now), cap, holder, repr(ttl)]
                )
            )
        )

    def rename(self, key: str, kind: str, old: str, new: str, ttl: float, now: float) -> bool:
        return bool(
            int(
                self._rename(
                    keys=[self._slot_key(key, kind)], args=[old, new, repr(now), repr(ttl)]
                )
            )
        )

    def release(self, key: str, kind: str, holder: str) -> None:
        self.client.zrem(self._slot_key(key, kind), holder)

    def in_use(self, key: str, kind: str, now: float) -> int:
        return int(self.client.zcount(self._slot_key(key, kind), f"({now!r}", "+inf"))


def default_backend() -> Backend:
    """Redis when settings.RATE_BUDGET_REDIS_URL is set, else the database."""
    url = getattr(settings, "RATE_BUDGET_REDIS_URL", "")
    if url:
        return RedisBackend(url)
    return DatabaseBackend()


# -- what callers use -------------------------------------------------------------------------


def _number(headers: Mapping[str, str], name: str) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        return None


class RateBudget:
    """The rate budget of one account (`account_key`), per tier, shared by every process."""

    def __init__(
        self,
        account_key: str,
        tiers: Mapping[str, TierLimit],
        *,
        reserve: float = 0.2,
        pace: float = 0.0,
        backend: Backend | None = None,
        clock: Clock = time.time,
    ) -> None:
        if not 0 <= reserve < 1:
            raise ValueError("reserve is a share of the window, from 0 to below 1")
        if not 0 <= pace <= 1:
            raise ValueError("pace is a share of the window, from 0 (not paced) to 1")
        self.account_key = account_key
        self.tiers = dict(tiers)
        self.reserve = reserve
        self.pace = pace
        self.backend = backend or default_backend()
        self.clock = clock

    def _tier(self, tier: str) -> TierLimit:
        try:
            return self.tiers[tier]
        except KeyError:
            raise ValueError(f"{self.account_key} has no rate tier {tier!r}") from None

    def acquire(self, tier: str, lane: Lane = Lane.BULK, cost: int = 1) -> Grant:
        """Take `cost` calls from this window of `tier`, or say how long to wait for room."""
        realtime = lane is Lane.REALTIME
        return self.backend.acquire(
            self.account_key,
            tier,
            self._tier(tier),
            0.0 if realtime else self.reserve,
            cost,
            self.clock(),
            self.pace,
        )

    def room(self, tier: str, lane: Lane = Lane.REALTIME, headroom: float = 0.0) -> int:
        """How many calls `lane` could make in `tier` now (paced, reserve and `headroom`, a share
        of the limit kept free, allowed for)."""
        now = self.clock()
        used, limit, end, window = self.backend.window_state(self.account_key, tier, now)
        default = self._tier(tier)
        limit, window = limit or default.limit, window or default.window
        if now >= end:
            end, used = next_window_end(end, window, now), 0
        realtime = lane is Lane.REALTIME
        full = limit - math.ceil(limit * (0.0 if realtime else self.reserve))
        full = math.floor(full * (1 - headroom))
        return max(0, paced_cap(full, window, end, now, self.pace) - used)

    def observe(
        self,
        tier: str,
        *,
        limit: int | None = None,
        remaining: int | None = None,
        reset_at: float | None = None,
    ) -> None:
        """Correct the shared view with what the server said (limit, remaining, window end)."""
        self.backend.observe(
            self.account_key, tier, self._tier(tier), limit, remaining, reset_at, self.clock()
        )

    def observe_headers(self, tier: str, headers: Mapping[str, str]) -> None:
        """Read DotDigital's X-RateLimit-* or Brightpearl's Brightpearl-* rate headers, if any.

        `headers` should be case-insensitive (requests' are).
        """
        remaining = _number(headers, "X-RateLimit-Remaining")
        if remaining is not None:
            limit = _number(headers, "X-RateLimit-Limit")
            reset = _number(headers, "X-RateLimit-Reset")
            self.observe(
                tier,
                limit=None if limit is None else int(limit),
                remaining=int(remaining),
                reset_at=reset,
            )
            return
        remaining = _number(headers, "Brightpearl-Requests-Remaining")
        if remaining is not None:
            next_period_ms = _number(headers, "Brightpearl-Next-Throttle-Period")
            reset = None if next_period_ms is None else self.clock() + next_period_ms / 1000
            self.observe(tier, remaining=int(remaining), reset_at=reset)

    def block(self, tier: str, retry_after: float) -> None:
        """Nobody calls `tier` for `retry_after` seconds (after a 429)."""
        self.backend.block(
            self.account_key, tier, self._tier(tier), self.clock() + max(0.0, retry_after)
        )

    def block_all(self, retry_after: float) -> None:
        for tier in self.tiers:
            self.block(tier, retry_after)

    def usage(self, tier: str) -> tuple[int, int]:
        """(calls counted in the current window, limit) of `tier`."""
        used, limit, _end, _window = self.backend.window_state(self.account_key, tier, self.clock())
        return used, limit


class Prepaid(RateBudget):
    """`calls` calls of one tier of `budget`, taken in one acquire on the thread that makes it,
    for calls then made on other threads (`monitoring.pipeline.sending.each_call`).

    A database budget's rows must be read and written by the paying thread (its connection,
    its transaction), so the threads take from the prepaid calls instead, and what their
    answers say about the window (headers, a 429's block) waits here until `settle`, on the
    paying thread, tells the budget. Once the calls are spent, another is refused with a long
    wait, so the caller sends that write another way (an import) rather than over the limit."""

    SPENT_WAIT = 60.0

    def __init__(self, budget: RateBudget, tier: str, lane: Lane, calls: int) -> None:
        super().__init__(
            budget.account_key,
            budget.tiers,
            reserve=budget.reserve,
            pace=budget.pace,
            backend=budget.backend,
            clock=budget.clock,
        )
        self.paid_by = budget
        self.tier = tier
        self.calls = calls if budget.acquire(tier, lane, calls) else 0
        self._lock = threading.Lock()
        self._blocked_until = 0.0
        self._headers: dict[str, dict[str, str]] = {}  # each tier's newest answer's
        self._blocks: list[tuple[str, float]] = []

    def acquire(self, tier: str, lane: Lane = Lane.BULK, cost: int = 1) -> Grant:
        with self._lock:
            blocked = self._blocked_until - self.clock()
            if blocked > 0:
                return Grant(False, blocked)
            if tier != self.tier or self.calls < cost:
                return Grant(False, self.SPENT_WAIT)
            self.calls -= cost
            return Grant(True, 0.0, self.calls)

    def observe_headers(self, tier: str, headers: Mapping[str, str]) -> None:
        with self._lock:
            self._headers[tier] = dict(headers)

    def block(self, tier: str, retry_after: float) -> None:
        with self._lock:
            self._blocked_until = max(self._blocked_until, self.clock() + retry_after)
            self._blocks.append((tier, retry_after))

    def settle(self) -> None:
        """Tell the budget what the answers said: the blocks, and the last headers of each tier
        (the newest count DotDigital gave)."""
        for tier, retry_after in self._blocks:
            self.paid_by.block(tier, retry_after)
        for tier, headers in self._headers.items():
            self.paid_by.observe_headers(tier, CaseInsensitiveDict(headers))
        self._blocks, self._headers = [], {}


class ConcurrencyCap:
    """At most `cap` holders at once per (account, kind); leases expire after `ttl` seconds."""

    def __init__(
        self,
        account_key: str,
        kind: str,
        cap: int,
        *,
        ttl: float = 900.0,
        backend: Backend | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.account_key = account_key
        self.kind = kind
        self.cap = cap
        self.ttl = ttl
        self.backend = backend or default_backend()
        self.clock = clock

    def claim(self, holder: str, ttl: float | None = None, keep_free: int = 0) -> bool:
        """Take a slot for `holder` (or renew its lease) for `ttl` seconds (the cap's by
        default); False when all are taken. With `keep_free`, only while more than that many
        slots would stay free: the bulk lane keeps some for the realtime lane."""
        cap = max(1, self.cap - keep_free)
        return self.backend.claim(
            self.account_key, self.kind, cap, holder, ttl or self.ttl, self.clock()
        )

    def rename(self, old: str, new: str) -> bool:
        """Hand `old`'s slot to `new` (e.g. a provisional token to the import id), renewed."""
        return self.backend.rename(self.account_key, self.kind, old, new, self.ttl, self.clock())

    def release(self, holder: str) -> None:
        self.backend.release(self.account_key, self.kind, holder)

    def in_use(self) -> int:
        return self.backend.in_use(self.account_key, self.kind, self.clock())
