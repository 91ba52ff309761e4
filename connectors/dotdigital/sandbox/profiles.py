"""Behaviour profiles: latency, import timing, rate limits and caps, by name or from a JSON file."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TIERS = ("single", "import", "status", "read")


@dataclass
class Profile:
    name: str
    latency_ms: float = 0.0
    import_base_s: float = 0.0
    import_per_record_ms: float = 0.0
    # Per-window limits of the tiered scheme, keyed by tier.
    tier_limits: dict[str, int] = field(
        default_factory=lambda: {
            "single": 100_000,
            "import": 100_000,
            "status": 100_000,
            "read": 100_000,
        }
    )
    # The X-RateLimit-Scope value sent for each tier.
    tier_scopes: dict[str, str] = field(
        default_factory=lambda: {
            "single": "mediumCallRate",
            "import": "lowCallRate",
            "status": "highCallRate",
            "read": "readCallRate",
        }
    )
    window_s: int = 60
    # Scheme for API users created without an explicit one: "tiered" or "flat".
    default_scheme: str = "tiered"
    flat_calls_per_hour: int = 2000
    max_contact_imports: int = 25
    max_insight_imports: int = 5
    enrolments_per_hour: int = 20
    max_body_bytes: int = 50 * 1024 * 1024
    insight_max_string: int = 1000
    insight_max_key: int = 255

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_overrides(self, overrides: dict[str, Any]) -> Profile:
        data = self.to_dict()
        for key, value in overrides.items():
            if key not in data:
                raise ValueError(f"unknown profile setting {key!r}")
            if isinstance(data[key], dict) and isinstance(value, dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return Profile(**data)


def fast() -> Profile:
    return Profile(name="fast")


def realistic() -> Profile:
    return Profile(
        name="realistic",
        latency_ms=50.0,
        import_base_s=1.0,
        import_per_record_ms=0.05,
        tier_limits={"single": 600, "import": 120, "status": 1200, "read": 300},
    )


NAMED = {"fast": fast, "realistic": realistic}


def load(spec: str | dict[str, Any]) -> Profile:
    """A named profile, a JSON file path, or a dict of settings (with "base" naming a profile)."""
    if isinstance(spec, dict):
        data = dict(spec)
        base_name = str(data.pop("base", "fast"))
        if base_name not in NAMED:
            raise ValueError(f"unknown base profile {base_name!r}")
        base = NAMED[base_name]()
        name = str(data.pop("name", base.name))
        overrides = {**data.pop("overrides", {}), **data}
        return dataclasses.replace(base.with_overrides(overrides), name=name)
    if spec in NAMED:
        return NAMED[spec]()
    path = Path(spec)
    if not path.exists():
        raise ValueError(f"profile {spec!r} is neither one of {sorted(NAMED)} nor a JSON file")
    data = json.loads(path.read_text())
    data.setdefault("name", path.stem)
    return load(data)
