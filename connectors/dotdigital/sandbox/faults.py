"""Run-time fault injection: latency, 5xx, 429 storms, hangs and dropped connections.

Decisions come from one seeded generator under a lock, so the same seed and the same sequence of
calls give the same faults.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Any

FAULT_KEYS = {
    "seed": int,
    "match": str,
    "methods": list,
    "latency_ms": float,
    "error_rate": float,
    "error_burst": int,
    "error_status": int,
    "rate_limit_rate": float,
    "rate_limit_burst": int,
    "hang_rate": float,
    "hang_burst": int,
    "hang_seconds": float,
    "drop_rate": float,
    "drop_burst": int,
    "drop_after_processing": bool,
    # A bug inside the sandbox itself, to prove a handler failure answers a JSON 500.
    "crash_rate": float,
    "crash_burst": int,
}


@dataclass
class Plan:
    """What to do to one call."""

    latency_s: float = 0.0
    drop: bool = False
    error_status: int | None = None
    rate_limited: bool = False
    hang_s: float = 0.0
    crash: bool = False
    tags: list[str] = field(default_factory=list)


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.config: dict[str, Any] = {}
        self._rng = random.Random(0)
        self.injected: dict[str, int] = {}

    def set(self, config: dict[str, Any]) -> dict[str, Any]:
        clean: dict[str, Any] = {}
        for key, value in config.items():
            kind = FAULT_KEYS.get(key)
            if kind is None:
                raise ValueError(f"unknown fault setting {key!r}; known: {sorted(FAULT_KEYS)}")
            clean[key] = [str(m).upper() for m in value] if kind is list else kind(value)
        with self._lock:
            self.config = clean
            self._rng = random.Random(clean.get("seed", 0))
            self.injected = {}
        return self.describe()

    def clear(self) -> None:
        self.set({})

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {"config": dict(self.config), "injected": dict(self.injected)}

    def _applies(self, method: str, path: str) -> bool:
        match = self.config.get("match")
        if match and not path.startswith(match):
            return False
        methods = self.config.get("methods")
        return not methods or method.upper() in methods

    def _take(self, kind: str) -> bool:
        burst_key, rate_key = f"{kind}_burst", f"{kind}_rate"
        burst = int(self.config.get(burst_key, 0))
        if burst > 0:
            self.config[burst_key] = burst - 1
            return True
        rate = float(self.config.get(rate_key, 0.0))
        return rate > 0 and self._rng.random() < rate

    def plan(self, method: str, path: str) -> Plan:
        plan = Plan()
        with self._lock:
            if not self.config or not self._applies(method, path):
                return plan
            plan.latency_s = float(self.config.get("latency_ms", 0.0)) / 1000
            if self._take("drop"):
                plan.drop = True
                plan.tags.append("drop")
            elif self._take("error"):
                plan.error_status = int(self.config.get("error_status", 503))
                plan.tags.append("error")
            elif self._take("rate_limit"):
                plan.rate_limited = True
                plan.tags.append("rate_limit")
            elif self._take("hang"):
                plan.hang_s = float(self.config.get("hang_seconds", 130.0))
                plan.tags.append("hang")
            elif self._take("crash"):
                plan.crash = True
                plan.tags.append("crash")
            for tag in plan.tags:
                self.injected[tag] = self.injected.get(tag, 0) + 1
        return plan

    @property
    def drop_after_processing(self) -> bool:
        return bool(self.config.get("drop_after_processing", False))
