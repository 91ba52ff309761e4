"""Hypothesis profiles for the reliability tests: "ci" (a few hundred examples, in `make test`) and
"bench" (10,000, for bench/fuzz_webhook.py), chosen by the HYPOTHESIS_PROFILE environment variable."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# One database transaction per test wraps every example (each example rolls itself back), so the
# function-scoped fixtures are meant to be shared; examples are slow-ish by nature (a request each).
_COMMON = {
    "deadline": None,
    "suppress_health_check": [
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
    "print_blob": True,
}
settings.register_profile("ci", max_examples=200, **_COMMON)  # type: ignore[arg-type]
settings.register_profile(
    "bench",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "10000")),
    database=None,  # a fresh search, not a replay of what CI found
    **_COMMON,  # type: ignore[arg-type]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
