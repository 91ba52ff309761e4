"""The DotDigital connection as delivery sees it: paused on a connection error and resumed by a
successful test, and what DotDigital has (data fields, insight collections' schemas, lists), read
once and cached for `SCHEMA_TTL` so a claim does not ask again for each write.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.utils import timezone

from connectors.budget import Lane
from connectors.dotdigital import errors
from connectors.dotdigital.client import DotDigitalClient
from connectors.models import Connection
from exceptions_inbox.recording import clear_occurrences, record_occurrence
from monitoring.models import DestinationCache
from monitoring.pipeline.mapping import DATA_FIELD_TYPES, schema_map
from monitoring.pipeline.wake import wake_delivery

log = logging.getLogger(__name__)

SCHEMA_TTL = timedelta(minutes=5)


STAGE_CONNECTION = "connection"


def pause_destination(destination_id: int, exc: errors.DotDigitalError) -> None:
    """Pause the connection (once) with one alert; its operations stay queued."""
    conn = Connection.objects.select_related("workspace").get(pk=destination_id)
    message = f"{errors.explain(exc)} Until then delivery to it waits, with nothing lost."[:2000]
    if conn.pause(message):
        Connection.objects.filter(pk=conn.pk).update(last_error=message)
        record_occurrence(
            workspace=conn.workspace,
            kind="connection_paused",
            event_key=f"connection:{conn.pk}",
            stage=STAGE_CONNECTION,
            message=message,
            subject_key=f"connection:{conn.pk}",
            subject_label=conn.name,
            detail={"connection_id": conn.pk, "code": exc.code, "status": exc.status},
        )
        log.warning("paused %s: %s", conn, message)


def test_and_resume(connection: Connection) -> tuple[bool, str]:
    """ "Test connection" for the config UI: one read call; on success the connection resumes,
    its alert clears and its queued operations are woken. Returns (ok, message)."""
    client = DotDigitalClient.for_connection(connection, lane=Lane.REALTIME, max_wait=2.0)
    try:
        client.list_data_fields()
    except errors.DotDigitalError as exc:
        message = errors.explain(exc, retry="Test again in a minute.")
        Connection.objects.filter(pk=connection.pk).update(
            last_tested_at=timezone.now(), last_error=message[:2000]
        )
        return False, message
    Connection.objects.filter(pk=connection.pk).update(last_tested_at=timezone.now(), last_error="")
    resumed = connection.resume()
    clear_occurrences(connection.workspace, [f"connection:{connection.pk}"])
    if resumed:
        for lane in (Lane.REALTIME, Lane.BULK):
            wake_delivery(connection.pk, lane.value)
    return True, "DotDigital answered: the connection works." + (
        " Delivery resumed." if resumed else ""
    )


def cached(destination_id: int, name: str) -> DestinationCache | None:
    row = DestinationCache.objects.filter(destination_id=destination_id, name=name).first()
    if row is None or timezone.now() - row.fetched_at > SCHEMA_TTL:
        return None
    return row


def remember(destination_id: int, name: str, value: Any) -> None:
    DestinationCache.objects.update_or_create(
        destination_id=destination_id,
        name=name,
        defaults={"value": value, "fetched_at": timezone.now()},
    )


def data_field_types(
    client: DotDigitalClient, destination_id: int, wanted: dict[str, str]
) -> dict[str, str]:
    """DotDigital's data field types by name, creating the wanted ones it lacks (name → mapping
    type)."""
    row = cached(destination_id, "data_fields")
    types: dict[str, str] = dict(row.value) if row else {}
    if row is None or any(name not in types for name in wanted):
        types = {f.name.upper(): f.type for f in client.list_data_fields()}
        for name, kind in sorted(wanted.items()):
            if name not in types:
                created = client.create_data_field(name, DATA_FIELD_TYPES.get(kind, "String"))
                types[created.name.upper()] = created.type
        remember(destination_id, "data_fields", types)
    return types


def collection_schema(
    client: DotDigitalClient, destination_id: int, collection: str
) -> dict[str, Any] | None:
    """The collection's locked schema as {name: {type, mode, fields}}; None before it exists."""
    name = f"collection:{collection}"
    row = cached(destination_id, name)
    if row is not None:
        schema: dict[str, Any] | None = row.value.get("schema")
        return schema
    found = client.get_collection_schema(collection)
    value = {"schema": schema_map(found.fields) if found else None}
    remember(destination_id, name, value)
    return value["schema"]


def list_id(
    client: DotDigitalClient, destination_id: int, name: str, known: dict[str, int] | None = None
) -> int:
    """The DotDigital list (address book) of that name, created on first use. `known`: the lists
    read already in this claim (filled here), so a claim reads the cache once."""
    if known and name in known:
        return known[name]
    row = DestinationCache.objects.filter(destination_id=destination_id, name="lists").first()
    lists: dict[str, int] = dict(row.value) if row else {}
    if name not in lists:
        lists = {b.name: b.id for b in client.list_address_books()}
        if name not in lists:
            lists[name] = _create_list(client, name)
        remember(destination_id, "lists", lists)
    if known is not None:
        known.update(lists)
    return int(lists[name])


def _create_list(client: DotDigitalClient, name: str) -> int:
    """Create the list; when another sender created it a moment ago (both saw none), its id."""
    try:
        return client.create_address_book(name).id
    except errors.ValidationFailed as exc:
        if exc.code != "ERROR_ADDRESSBOOK_DUPLICATE":
            raise
        for book in client.list_address_books():
            if book.name == name:
                return book.id
        raise


# The realtime lane's calls are spread over each rate window: a tenth of it at the window's start,
# then evenly, so room for a dispatch comes back every second (`connectors.budget`).
REALTIME_PACE = 0.1


def client_for(destination: Connection, lane: str) -> DotDigitalClient:
    return DotDigitalClient.for_connection(
        destination, lane=Lane(lane), max_wait=1.0, pace=REALTIME_PACE
    )
