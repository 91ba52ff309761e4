from __future__ import annotations

from django.db import migrations

# The flows page counts backlog and held events of a flow in one pass: a partial index on every
# waiting state (received, ready, held) replaces the one on received and ready.
CREATE = (
    "CREATE INDEX IF NOT EXISTS watch_event_flow_waiting ON monitoring_sourceevent "
    "(flow_id, received_at) WHERE state IN ('received', 'ready', 'held')"
)
DROP = "DROP INDEX IF EXISTS watch_event_flow_waiting"


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0004_watch")]

    operations = [migrations.RunSQL(CREATE, DROP)]
