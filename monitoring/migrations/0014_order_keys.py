"""`OrderKey`: each source's own key for an order (`data.order_key`), so a shipment, refund or
return from the same source finds its order by that key whatever the flow's join key.

Orders staged before this table existed get their keys from the order events that built them
(`order.created`, `order.updated`, `order.status_changed`), oldest first: the first order a key
was seen with keeps it, as staging does.
"""

import django.db.models.deletion
from django.db import migrations, models

ORDER_EVENTS = ("order.created", "order.updated", "order.status_changed")


def keys_from_events(apps, schema_editor):
    SourceEvent = apps.get_model("monitoring", "SourceEvent")
    OrderKey = apps.get_model("monitoring", "OrderKey")
    rows = (
        SourceEvent.objects.filter(event_type__in=ORDER_EVENTS, order_id__isnull=False)
        .order_by("pk")
        .values_list("workspace_id", "source_system", "envelope", "order_id")
    )
    pending = []
    for workspace_id, system, envelope, order_id in rows.iterator(chunk_size=2000):
        data = envelope.get("data") if isinstance(envelope, dict) else None
        key = str((data or {}).get("order_key") or "")[:255] if isinstance(data, dict) else ""
        if key:
            pending.append(
                OrderKey(
                    workspace_id=workspace_id,
                    source_system=system,
                    order_key=key,
                    order_id=order_id,
                )
            )
        if len(pending) >= 2000:
            OrderKey.objects.bulk_create(pending, ignore_conflicts=True)
            pending = []
    OrderKey.objects.bulk_create(pending, ignore_conflicts=True)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_config_change"),
        ("monitoring", "0013_reconciliation_progress"),
    ]

    operations = [
        migrations.CreateModel(
            name="OrderKey",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("source_system", models.CharField(max_length=60)),
                ("order_key", models.CharField(max_length=255)),
                (
                    "order",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="keys",
                        to="monitoring.order",
                    ),
                ),
                (
                    "workspace",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="accounts.workspace",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("workspace", "source_system", "order_key"), name="order_key_once"
                    )
                ],
            },
        ),
        migrations.RunPython(keys_from_events, migrations.RunPython.noop),
    ]
