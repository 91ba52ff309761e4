"""The two flows the engine benches post to (the generator's demo ERP and demo WMS), shared by
bench/engine.py and bench/pipeline.py. Call after `django.setup()`."""

from __future__ import annotations

from typing import Any


def bench_flows(workspace: Any, destination: Any) -> dict[str, str]:
    """A canonical source and a backfilled flow to `destination` per generator system; returns
    each system's webhook path (`/hooks/<token>/`)."""
    from connectors.models import Connection
    from monitoring.models import Flow
    from monitoring.pipeline.flows import install_defaults, mark_backfill_complete

    paths = {}
    for system, join in (("demo-erp", "order_number"), ("demo-wms", "channel_order_ref")):
        source = Connection.objects.create(workspace=workspace, kind="canonical", name=system)
        token = source.rotate_webhook_token()
        flow = Flow.objects.create(
            workspace=workspace, name=system, source=source, destination=destination, join_key=join
        )
        install_defaults(flow)
        mark_backfill_complete(flow, by="bench")
        paths[system] = f"/hooks/{token}/"
    return paths
