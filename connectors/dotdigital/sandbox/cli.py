"""`python -m connectors.dotdigital.sandbox --port 8099 --db var/sandbox.sqlite3 [--profile fast]`."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from . import profiles
from .server import App, make_server
from .store import Store

DEFAULT_USER = "apiuser-sandbox@apiconnector.com:sandbox-password"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m connectors.dotdigital.sandbox",
        description="A local DotDigital API for tests and demos.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8099, help="0 picks a free port")
    p.add_argument("--db", required=True, help="the sandbox's own SQLite file")
    p.add_argument(
        "--profile",
        default="fast",
        help="fast, realistic, or a JSON file of settings (see profiles.py)",
    )
    p.add_argument(
        "--api-user",
        action="append",
        default=[],
        metavar="USER:PASSWORD[:SCHEME]",
        help=f"an API user (repeatable; SCHEME tiered or flat); default {DEFAULT_USER}",
    )
    p.add_argument("--reset", action="store_true", help="wipe the state before starting")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    profile = profiles.load(args.profile)
    store = Store(args.db)
    if args.reset:
        store.reset()
    app = App(store, profile, args.host, args.port)
    for spec in args.api_user or ([] if app.users() else [DEFAULT_USER]):
        username, _, rest = spec.partition(":")
        password, _, scheme = rest.partition(":")
        if not username or not password:
            raise SystemExit(f"--api-user wants USER:PASSWORD, got {spec!r}")
        app.add_user(username, password, scheme or None)
    server = make_server(app)
    settler = threading.Thread(target=app.settle_forever, name="settle", daemon=True)
    settler.start()

    def stop(*_: Any) -> None:
        app.stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # One write: whoever waits for the first line finds the rest of the banner with it.
    banner = (
        f"DotDigital sandbox listening on {app.base_url} (db {args.db})",
        f"profile: {json.dumps(profile.to_dict())}",
        f"api users: {', '.join(sorted(app.users()))}",
        f"state page: {app.base_url}/_sandbox/",
    )
    print("\n".join(banner), flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        app.stop.set()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
