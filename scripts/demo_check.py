"""make demo-check: start `make demo`, wait for /healthz, the sign-in page and the recorded source
systems' replay (every recorded webhook request answered 202), then stop it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

PORT = int(os.environ.get("DEMO_PORT", "8000"))
SANDBOX_PORT = int(os.environ.get("DEMO_SANDBOX_PORT", "8099"))
BASE = f"http://127.0.0.1:{PORT}"
# The recorded systems play for a minute (connectors/sources/replay.py, REPLAY_LEAD) once the
# workers are up, after migrations and seeding.
BUDGET_SECONDS = 180


def get(path: str, base: str = BASE) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(base + path, timeout=5) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def wait_for_replay(started: float) -> str:
    """The demo-replay process's verdict on the recorded systems' webhooks ("" if none yet)."""
    marker = "recorded systems replayed: "
    while time.monotonic() - started < BUDGET_SECONDS:
        with open("var/demo-check.log", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if marker in line:
                    return line.split(marker, 1)[1].strip()
        time.sleep(1)
    return ""


def _kill_leftovers(group: int) -> None:
    """Whatever of the demo outlived it (a web worker busy on a request when told to stop, say)
    goes too: it would hold the demo's port, and the next check would fail to bind it."""
    with contextlib.suppress(ProcessLookupError):  # the whole group has exited
        os.killpg(group, signal.SIGKILL)


def main() -> int:
    os.makedirs("var", exist_ok=True)
    log = open("var/demo-check.log", "wb")  # noqa: SIM115 (closed in finally, after the demo stops)
    demo = subprocess.Popen(
        ["make", "--no-print-directory", "demo"],
        env={**os.environ, "DEMO_PORT": str(PORT), "DEMO_SANDBOX_PORT": str(SANDBOX_PORT)},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    started = time.monotonic()
    ok = False
    try:
        while time.monotonic() - started < BUDGET_SECONDS:
            if demo.poll() is not None:
                print(f"make demo exited early with {demo.returncode}; see var/demo-check.log")
                break
            try:
                status, body = get("/healthz")
            except OSError:
                time.sleep(1)
                continue
            if status == 200:
                page_status, page = get("/login/")
                sandbox_status, _ = get("/_sandbox/health", f"http://127.0.0.1:{SANDBOX_PORT}")
                ok = page_status == 200 and "Sign in" in page and sandbox_status == 200
                print(f"/healthz 200 after {time.monotonic() - started:.1f}s: {body}")
                print(
                    f"/login/ {page_status}, sign-in form {'shown' if 'Sign in' in page else 'MISSING'}"
                )
                print(f"DotDigital sandbox /_sandbox/health {sandbox_status}")
                replayed = wait_for_replay(started)
                print(f"recorded source systems: {replayed or 'NOT replayed in time'}")
                ok = ok and replayed == "all accepted"
                break
            time.sleep(1)
        else:
            print(f"no healthy answer from {BASE}/healthz within {BUDGET_SECONDS}s")
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGINT)
            try:
                demo.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(demo.pid, signal.SIGKILL)
                demo.wait()
        _kill_leftovers(demo.pid)
        log.close()
    if not ok:
        with open("var/demo-check.log") as fh:
            sys.stdout.write(fh.read()[-4000:])
    print("demo-check:", "passed" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
