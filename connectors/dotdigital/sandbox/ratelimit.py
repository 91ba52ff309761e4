"""Per-account rate limits: tiered fixed windows with X-RateLimit-* headers, or the flat rolling hour."""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass, field

from .profiles import Profile

FLAT_MESSAGE = (
    "Your account has generated excess API activity and is being temporarily capped. "
    "Please contact support. ERROR_APIUSAGE_EXCEEDED"
)


@dataclass
class Decision:
    allowed: bool
    headers: dict[str, str] = field(default_factory=dict)


class RateLimiter:
    """Counts are kept in memory: a restart starts a fresh window, as a new minute would."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int]] = {}
        self._flat: deque[float] = deque()

    def reset(self) -> None:
        with self._lock:
            self._windows.clear()
            self._flat.clear()

    def tiered(self, tier: str, profile: Profile, now: float) -> Decision:
        limit = int(profile.tier_limits.get(tier, 0))
        window = max(1, int(profile.window_s))
        start = math.floor(now / window) * window
        with self._lock:
            seen_start, count = self._windows.get(tier, (start, 0))
            if seen_start != start:
                count = 0
            allowed = count < limit
            if allowed:
                count += 1
            self._windows[tier] = (start, count)
        return Decision(allowed, self.headers(tier, profile, limit, limit - count, start + window))

    @staticmethod
    def headers(
        tier: str, profile: Profile, limit: int, remaining: int, reset: float
    ) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(max(0, remaining)),
            "X-RateLimit-Reset": str(int(math.ceil(reset))),
            "X-RateLimit-Scope": profile.tier_scopes.get(tier, tier),
        }

    def storm_headers(self, tier: str, profile: Profile, now: float) -> dict[str, str]:
        """Headers for an injected 429: the bucket looks exhausted until the window ends."""
        window = max(1, int(profile.window_s))
        start = math.floor(now / window) * window
        limit = int(profile.tier_limits.get(tier, 0))
        return self.headers(tier, profile, limit, 0, start + window)

    def flat(self, profile: Profile, now: float) -> Decision:
        with self._lock:
            while self._flat and self._flat[0] <= now - 3600:
                self._flat.popleft()
            if len(self._flat) >= profile.flat_calls_per_hour:
                return Decision(False)
            self._flat.append(now)
            return Decision(True)

    def usage(self, now: float, profile: Profile) -> dict[str, dict[str, int]]:
        window = max(1, int(profile.window_s))
        start = math.floor(now / window) * window
        with self._lock:
            tiers = {
                tier: {
                    "used": count if seen == start else 0,
                    "limit": int(profile.tier_limits.get(tier, 0)),
                }
                for tier, (seen, count) in self._windows.items()
            }
            tiers["flat_last_hour"] = {
                "used": sum(1 for t in self._flat if t > now - 3600),
                "limit": profile.flat_calls_per_hour,
            }
        return tiers
