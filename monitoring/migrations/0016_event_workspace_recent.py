"""`event_workspace_recent` (workspace, id descending): the API's event list, newest first and
paged by id. Without it a workspace's first page reads the primary key backwards past every
newer event of the other workspaces, and a state or flow filter sorts every match. Its columns
never change: lease-only updates stay HOT (0011).
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_config_change"),
        ("connectors", "0002_rate_budget"),
        ("monitoring", "0015_event_stage_due_by_lane"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="sourceevent",
            index=models.Index(fields=["workspace", "-id"], name="event_workspace_recent"),
        ),
    ]
