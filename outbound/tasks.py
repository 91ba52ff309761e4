"""The webhook sender's tasks, on the `webhooks` queue only (config/settings.py routes them), so
a receiver that hangs holds a webhook worker for at most its timeout and never a realtime or bulk
one. Woken by name after commit (`outbound.record.wake_sender`) and every few seconds by beat."""

from __future__ import annotations

from celery import shared_task

from outbound import delivery


@shared_task(name="outbound.deliver_webhooks")
def deliver_webhooks() -> int:
    """Send what is due; returns how many were attempted."""
    return delivery.deliver_due()


@shared_task(name="outbound.prune_webhook_log")
def prune_webhook_log() -> int:
    return delivery.prune_log()
