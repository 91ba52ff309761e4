"""Fixtures that run the DotDigital sandbox as a real process on a free port with its own SQLite file.

`dotdigital_sandbox` (session): a started `SandboxProcess`; `.url` is its base URL, `.auth` a working
API user, `.api` a `requests.Session` authenticated as that user, and the control helpers below.
`sandbox` (function): the same process, reset to an empty account with the `fast` profile.
`contract`: the published specs as loaded by `openapi_contract`, to validate calls.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

REPO = Path(__file__).resolve().parents[3]
USER = ("apiuser-test@apiconnector.com", "test-password")


class SandboxProcess:
    def __init__(
        self, workdir: Path, profile: str = "fast", command: list[str] | None = None
    ) -> None:
        self.workdir = workdir
        self.command = command or [sys.executable, "-m", "connectors.dotdigital.sandbox"]
        self.db_path = workdir / "sandbox.sqlite3"
        self.log_path = workdir / "sandbox.log"
        self.profile = profile
        self.port = 0
        self.url = ""
        self.auth = USER
        self.process: subprocess.Popen[bytes] | None = None
        self.api = requests.Session()
        self.api.auth = USER

    # -- process --------------------------------------------------------------------------------

    def start(self, port: int = 0) -> None:
        log = self.log_path.open("ab")
        offset = self.log_path.stat().st_size
        self.process = subprocess.Popen(
            [
                *self.command,
                "--port",
                str(port),
                "--db",
                str(self.db_path),
                "--profile",
                self.profile,
                "--api-user",
                f"{USER[0]}:{USER[1]}",
            ],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            text = self.log_path.read_bytes()[offset:].decode(errors="replace")
            for line in text.splitlines():
                if line.startswith("DotDigital sandbox listening on "):
                    self.url = line.split()[4]
                    self.port = int(self.url.rsplit(":", 1)[1])
                    return
            if self.process.poll() is not None:
                raise RuntimeError(f"sandbox exited early:\n{text}")
            time.sleep(0.02)
        raise RuntimeError("sandbox did not start within 15 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        """Kill the process (no clean shutdown) and start a new one on the same port and file."""
        port = self.port
        self.stop()
        self.api.close()
        self.start(port)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    # -- control helpers ------------------------------------------------------------------------

    def control(self, method: str, name: str, body: Any = None, **params: Any) -> Any:
        r = requests.request(
            method, f"{self.url}/_sandbox/{name}", json=body, params=params, timeout=30
        )
        assert r.status_code == 200, f"/_sandbox/{name}: {r.status_code} {r.text}"
        return r.json()

    def reset(self, profile: str | dict[str, Any] | None = None) -> None:
        self.control("POST", "reset", {"profile": profile} if profile else {})

    def set_profile(self, **settings: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.control("POST", "profile", settings)
        return result

    def faults(self, **config: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.control("POST", "faults", config)
        return result

    def account(self, **config: Any) -> None:
        self.control("POST", "account", config)

    def plant(self, **data: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.control("POST", "plant", data)
        return result

    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = self.control("GET", "state")
        return result

    def calls(self, **params: Any) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.control("GET", "calls", **params)["calls"]
        return result

    def advance_clock(self, seconds: float) -> None:
        self.control("POST", "clock", {"advance_seconds": seconds})

    def add_api_user(self, username: str, password: str, scheme: str | None = None) -> None:
        self.control(
            "POST", "api-users", {"username": username, "password": password, "scheme": scheme}
        )


@pytest.fixture(scope="session")
def dotdigital_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    process = SandboxProcess(tmp_path_factory.mktemp("dotdigital-sandbox"))
    process.start()
    try:
        yield process
    finally:
        process.stop()
        process.api.close()


@pytest.fixture
def sandbox(dotdigital_sandbox: SandboxProcess) -> SandboxProcess:
    if dotdigital_sandbox.process is None or dotdigital_sandbox.process.poll() is not None:
        dotdigital_sandbox.start(dotdigital_sandbox.port)
    dotdigital_sandbox.reset()
    return dotdigital_sandbox


@pytest.fixture
def start_sandbox(tmp_path: Path) -> Iterator[Callable[..., SandboxProcess]]:
    """Start extra sandbox processes (e.g. another profile or entry point); stopped afterwards."""
    started: list[SandboxProcess] = []

    def start(profile: str = "fast", command: list[str] | None = None) -> SandboxProcess:
        workdir = tmp_path / f"sandbox-{len(started)}"
        workdir.mkdir()
        process = SandboxProcess(workdir, profile, command)
        started.append(process)
        process.start()
        return process

    yield start
    for process in started:
        process.stop()
        process.api.close()


@pytest.fixture(scope="session")
def contract(dotdigital_sandbox: SandboxProcess) -> Any:
    # Imported by name: pytest puts this folder on sys.path (it is not a package).
    return importlib.import_module("openapi_contract").Contract(dotdigital_sandbox.url)
