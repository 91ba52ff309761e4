"""`SourceEvent.in_outbox`: a READY event whose operations are in the outbox.

Planned events stay READY until their operations settle (leased to "outbox"), so `event_ready`
(READY, per flow, by staged_at) held every event waiting on DotDigital. The planners' claims and
their "anything left to plan?" checks filtered the lease on each row and, at full load, stepped
over tens of thousands of them for the few not planned yet (the bench's two costliest statements
on PostgreSQL). The index now holds only READY events not in the outbox. The flag is a column of
its own rather than the lease in the index's condition: an index naming the lease would make
every lease update write all the table's indexes again (0011).

The column is added with SQL: on SQLite, Django's AddField with a default rebuilds the table and
would lose the indexes 0004 and 0005 created with SQL. Events already in the outbox are marked.
"""

from django.db import migrations, models

MARK = (
    "UPDATE monitoring_sourceevent SET in_outbox = {true} "
    "WHERE state = 'ready' AND lease_owner = 'outbox'"
)


def add_column(apps, schema_editor):
    postgres = schema_editor.connection.vendor == "postgresql"
    kind, false, true = ("boolean", "false", "true") if postgres else ("bool", "0", "1")
    schema_editor.execute(
        f"ALTER TABLE monitoring_sourceevent ADD COLUMN in_outbox {kind} NOT NULL DEFAULT {false}"
    )
    schema_editor.execute(MARK.format(true=true))


def drop_column(apps, schema_editor):
    schema_editor.execute("ALTER TABLE monitoring_sourceevent DROP COLUMN in_outbox")


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_config_change"),
        ("connectors", "0002_rate_budget"),
        ("monitoring", "0011_event_table_writes"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="sourceevent", name="event_ready"),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AddField(
                    model_name="sourceevent",
                    name="in_outbox",
                    field=models.BooleanField(default=False),
                ),
            ],
            database_operations=[migrations.RunPython(add_column, drop_column)],
        ),
        migrations.AddIndex(
            model_name="sourceevent",
            index=models.Index(
                condition=models.Q(("in_outbox", False), ("state", "ready")),
                fields=["flow", "staged_at"],
                name="event_ready",
            ),
        ),
    ]
