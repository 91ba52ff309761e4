"""The state page at /_sandbox/: the same data as /_sandbox/state, as tables."""

from __future__ import annotations

import json
from html import escape
from typing import Any

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#222}
h1{font-size:1.4rem} h2{font-size:1.1rem;margin-top:1.6rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.4rem 0} td,th{border:1px solid #ddd;padding:.2rem .5rem;
vertical-align:top;text-align:left} th{background:#f4f4f4} code,pre{font-size:12px}
.muted{color:#777}
"""


def cell(value: Any) -> str:
    if isinstance(value, dict | list):
        return f"<code>{escape(json.dumps(value, sort_keys=True))}</code>"
    return escape("" if value is None else str(value))


def table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    if not rows:
        return '<p class="muted">none</p>'
    columns = columns or list(rows[0])
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell(row.get(c))}</td>" for c in columns) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def render(state: dict[str, Any]) -> str:
    profile = state["profile"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>DotDigital sandbox</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>DotDigital sandbox <span class='muted'>{escape(state['base_url'])}</span></h1>",
        f"<p>Now {escape(state['now'])} · profile <b>{escape(profile['name'])}</b> · "
        f"counts {cell(state['counts'])}</p>",
        f"<p>Account failure: {cell(state['account'] or 'none')} · faults: "
        f"{cell(state['faults'])}</p>",
        "<h2>Rate limits (this window)</h2>",
        table([{"tier": k, **v} for k, v in state["rate_limits"].items()]),
        "<h2>Calls per minute by tier (last hour)</h2>",
        table([{"tier": k, "minutes": v} for k, v in state["calls_per_minute"].items()]),
        "<h2>Imports</h2>",
        f"<p>In flight {cell(state['imports_in_flight'])} · peak "
        f"{cell(state['peak_imports_in_flight'])}</p>",
        table(
            state["imports"],
            [
                "id",
                "kind",
                "collection",
                "records",
                "status",
                "submitted",
                "finishAt",
                "summary",
                "failures",
            ],
        ),
        "<h2>Contacts</h2>",
        table(
            state["contacts"],
            [
                "contactId",
                "status",
                "identifiers",
                "dataFields",
                "channelProperties",
                "lists",
                "updated",
            ],
        ),
        "<h2>Data fields</h2>",
        table(state["data_fields"], ["name", "type", "visibility", "default_value", "system"]),
        "<h2>Lists</h2>",
        table(state["lists"]),
        "<h2>Suppressions</h2>",
        table(state["suppressions"]),
        "<h2>Resubscribe challenges</h2>",
        table(state["resubscribe_challenges"]),
        "<h2>Insight collections</h2>",
    ]
    for coll in state["collections"]:
        parts.append(
            f"<h3>{escape(coll['name'])} <span class='muted'>{escape(coll['scope'])}, "
            f"{escape(coll['type'])}, {coll['recordCount']} records</span></h3>"
        )
        parts.append(
            f"<details><summary>schema</summary><pre>"
            f"{escape(json.dumps(coll['schema'], indent=1))}</pre></details>"
        )
        parts.append(table(coll["records"]))
    parts += [
        "<h2>Programs</h2>",
        table(state["programs"]),
        "<h2>Enrolments</h2>",
        table(state["enrolments"]["log"]),
        "<h3>Per program and contact</h3>",
        table(state["enrolments"]["counts"]),
        "</body></html>",
    ]
    return "".join(parts)
