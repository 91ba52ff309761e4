"""The OpenAPI document's additions: links between the API's operations (from a list to one item,
from an item to what can be done to it), so a client and schemathesis's stateful tests can follow
them; and the headers of the 401 and 429 answers."""

from __future__ import annotations

from typing import Any

# (from path, its status) → [(to path, to method, parameter, where in the answer)]
FIRST_ITEM = "$response.body#/items/0/id"
LINKS: dict[tuple[str, str], list[tuple[str, str, str, str]]] = {
    ("/api/v1/w/{ws}/events", "200"): [
        ("/api/v1/w/{ws}/events/{event_id}", "get", "event_id", FIRST_ITEM)
    ],
    ("/api/v1/w/{ws}/exceptions", "200"): [
        ("/api/v1/w/{ws}/exceptions/{group_id}", "get", "group_id", FIRST_ITEM)
    ],
    ("/api/v1/w/{ws}/reconciliation/runs", "200"): [
        ("/api/v1/w/{ws}/reconciliation/runs/{run_id}", "get", "run_id", FIRST_ITEM)
    ],
    ("/api/v1/w/{ws}/alerts", "200"): [
        ("/api/v1/w/{ws}/alerts/{alert_id}", "get", "alert_id", FIRST_ITEM)
    ],
    ("/api/v1/w/{ws}/alerts/{alert_id}", "200"): [
        ("/api/v1/w/{ws}/alerts/{alert_id}/acknowledge", "post", "alert_id", "$response.body#/id")
    ],
    ("/api/v1/w/{ws}/flows", "200"): [
        ("/api/v1/w/{ws}/flows/{flow_id}/reconciliation/runs", "post", "flow_id", FIRST_ITEM)
    ],
}
GROUP_ACTIONS = [
    "assign",
    "acknowledge",
    "snooze",
    "unsnooze",
    "resolve",
    "ignore",
    "reopen",
    "retry",
    "comment",
    "fix",
]
for _action in GROUP_ACTIONS:
    LINKS.setdefault(("/api/v1/w/{ws}/exceptions/{group_id}", "200"), []).append(
        (
            f"/api/v1/w/{{ws}}/exceptions/{{group_id}}/{_action}",
            "post",
            "group_id",
            "$response.body#/id",
        )
    )


def add_links(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with a `links` entry on each answer that names another operation's input (the
    workspace is carried along from the request)."""
    paths = schema.get("paths", {})
    for (path, status), targets in LINKS.items():
        responses = paths.get(path, {}).get("get", {}).get("responses", {})
        source = responses.get(int(status), responses.get(status))
        if source is None:
            continue
        links = source.setdefault("links", {})
        for to_path, method, param, value in targets:
            target = paths.get(to_path, {}).get(method)
            if target is None:
                continue
            links[target["operationId"]] = {
                "operationId": target["operationId"],
                "parameters": {param: value, "ws": "$request.path.ws"},
            }
    for operations in paths.values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            for code, header in HEADERS.items():
                answer = responses.get(code, responses.get(str(code)))
                if answer is not None:
                    answer["headers"] = header
    return schema


HEADERS = {
    401: {
        "WWW-Authenticate": {
            "description": "How to authenticate: a bearer key.",
            "schema": {"type": "string"},
        }
    },
    429: {
        "Retry-After": {
            "description": "Seconds until the key may call again.",
            "schema": {"type": "integer", "minimum": 1},
            "required": True,
        }
    },
}
