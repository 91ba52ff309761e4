"""The webhook fuzzer at bench size: 10,000 generated bodies (the CI test runs ~200).

Runs tests/reliability/test_webhook_fuzz.py under the hypothesis profile "bench" (pytest makes and
drops its own test database, so any DATABASE_URL is safe), then prints the examples run, examples
per second, the answers by status and body shape, and any failure with its reproducing input:

    .venv/bin/python bench/fuzz_webhook.py                      # SQLite
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/fuzz_webhook.py

`--examples N` runs another number of examples. Exits non-zero when a property fails.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000)
    args = parser.parse_args()
    os.environ["HYPOTHESIS_PROFILE"] = "bench"
    os.environ["FUZZ_EXAMPLES"] = str(args.examples)
    os.chdir(ROOT)
    import pytest  # nothing else before pytest.main: it must import hypothesis itself

    started = time.monotonic()
    code = pytest.main(
        [
            "tests/reliability/test_webhook_fuzz.py",
            "-k",
            "follows_the_table",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:logging",  # 10,000 "Bad Request" warnings say nothing
            "--hypothesis-show-statistics",
        ]
    )
    elapsed = time.monotonic() - started
    stats = sys.modules["tests.reliability.webhook_fuzz"].STATS
    examples = sum(n for k, n in stats.items() if not k.startswith("answer "))
    print()
    print(f"database: {os.environ.get('DATABASE_URL', 'sqlite (default)').split('@')[-1]}")
    print(f"examples: {examples} in {elapsed:.1f}s = {examples / elapsed:.1f} examples/s")
    print("answers:  " + ", ".join(f"{k[7:]}: {n}" for k, n in sorted(stats.items()) if k.startswith("answer ")))  # fmt: skip
    print("shapes:   " + ", ".join(f"{k}: {n}" for k, n in sorted(stats.items()) if not k.startswith("answer ")))  # fmt: skip
    print("result:   " + ("no property failed" if code == 0 else f"FAILED (pytest exit {code}); see above"))  # fmt: skip
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
