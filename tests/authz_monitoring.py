"""The engine's rows of the authorization table (merged into tests/authz.py).

The webhook is public by design (its token is the credential): every persona gets the same
answer, 404 for a token that names no connection, 405 for GET. The bearer route (Patchworks)
answers 401 to a POST without an `Authorization: Bearer` header, signed in or not."""

from __future__ import annotations

from tests.authz import Rule, each

_UNKNOWN_TOKEN = Rule(
    get=each(405, 405, 405, 405, 405),
    post=each(404, 404, 404, 404, 404),
    kwargs=lambda world: {"token": "no-such-token"},
)

RULES: dict[str, Rule] = {
    "monitoring:webhook": _UNKNOWN_TOKEN,
    "monitoring:webhook-control": _UNKNOWN_TOKEN,
    "monitoring:webhook-bearer": Rule(
        get=each(405, 405, 405, 405, 405),
        post=each(401, 401, 401, 401, 401),
        kwargs=lambda world: {},
    ),
}
