"""The engine's work tables churn: every event and operation row is updated several times within
seconds of its insert. PostgreSQL's default autovacuum thresholds (vacuum at 20% dead rows,
analyze at 10% changed) let them bloat and their statistics go stale between runs, and stale
statistics gave the outbox's queries nested-loop plans over every pair (docs/architecture.md,
"Engine: delivery"). These tables are vacuumed at 2% and analyzed at 1%, as queue tables usually
are. PostgreSQL only; nothing on SQLite."""

from django.db import migrations

TABLES = (
    "monitoring_sourceevent",
    "monitoring_operation",
    "monitoring_operationevent",
    "monitoring_deliverybatch",
    "monitoring_listmembership",
)


def tune(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in TABLES:
        schema_editor.execute(
            f"ALTER TABLE {table} SET (autovacuum_vacuum_scale_factor = 0.02, "
            "autovacuum_analyze_scale_factor = 0.01)"
        )


def untune(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in TABLES:
        schema_editor.execute(
            f"ALTER TABLE {table} RESET (autovacuum_vacuum_scale_factor, "
            "autovacuum_analyze_scale_factor)"
        )


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0009_order_carries_money")]

    operations = [migrations.RunPython(tune, untune)]
