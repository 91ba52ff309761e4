from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.fields import EncryptedJSONField


class Command(BaseCommand):
    help = (
        "Re-encrypt every encrypted field under the first key of FIELD_ENCRYPTION_KEYS. "
        "Run after putting a new key in front; then the old key can be removed."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        for model in apps.get_models():
            fields = [f for f in model._meta.concrete_fields if isinstance(f, EncryptedJSONField)]
            if not fields:
                continue
            count = 0
            for obj in model._default_manager.all().iterator(chunk_size=500):
                values = {f.name: getattr(obj, f.name) for f in fields}
                with transaction.atomic():
                    model._default_manager.filter(pk=obj.pk).update(**values)
                count += 1
            self.stdout.write(f"{model._meta.label}: {count} rows re-encrypted")
