"""Fewer writes per event on `monitoring_sourceevent`, the engine's hottest table.

An event's row is inserted once and updated about five times within seconds (staging's claim, the
staged state, planning's claim, the hand-over to the outbox, the outcome). The bench's profile
(pg_stat_statements and pg_stat_user_tables, docs/architecture.md) showed almost none of those
updates were HOT, so each wrote a new entry into every one of the table's 20 indexes.

- Three indexes go: the single-column ones on `workspace_id` and `flow_id` (indexes that lead with
  those columns serve the same lookups: `event_state`, `watch_event_flow_received`), and
  `watch_event_flow_backlog`, which 0005's `watch_event_flow_waiting` replaced but did not drop.
- Staging's claim index leads with the flow (see below).
- Pages are filled to 70% (PostgreSQL only), leaving room for the updates that change no indexed
  column (the leases: staging's and planning's claims, the outbox hand-over) to be HOT: a new row
  version on the same page and no index entries at all.

The index drops are SQL, not Django's AlterField: on SQLite AlterField rebuilds the table, which
would lose the indexes that 0004 and 0005 created with SQL.
"""

import django.db.models.deletion
from django.db import migrations, models

FK_INDEXES = (
    ("monitoring_sourceevent_workspace_id_c7a73837", "workspace_id"),
    ("monitoring_sourceevent_flow_id_45d9e31f", "flow_id"),
)
BACKLOG = (
    "CREATE INDEX IF NOT EXISTS watch_event_flow_backlog ON monitoring_sourceevent "
    "(flow_id, received_at) WHERE state IN ('received', 'ready')"
)


def fill(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE monitoring_sourceevent SET (fillfactor = 70)")


def unfill(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE monitoring_sourceevent RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_config_change"),
        ("monitoring", "0010_outbox_autovacuum"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="sourceevent",
                    name="flow",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="events",
                        to="monitoring.flow",
                    ),
                ),
                migrations.AlterField(
                    model_name="sourceevent",
                    name="workspace",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="accounts.workspace",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    f"DROP INDEX IF EXISTS {name}",
                    f"CREATE INDEX IF NOT EXISTS {name} ON monitoring_sourceevent ({column})",
                )
                for name, column in FK_INDEXES
            ],
        ),
        migrations.RunSQL("DROP INDEX IF EXISTS watch_event_flow_backlog", BACKLOG),
        migrations.RunPython(fill, unfill),
        # Staging claims one flow's due rows in (next_attempt_at, id) order: the index now leads
        # with the flow and ends in the tie-break, so the claim reads just the rows it takes.
        migrations.RemoveIndex(model_name="sourceevent", name="event_stage_due"),
        migrations.AddIndex(
            model_name="sourceevent",
            index=models.Index(
                condition=models.Q(("state__in", ["received", "held"])),
                fields=["flow", "next_attempt_at", "id"],
                name="event_stage_due",
            ),
        ),
    ]
