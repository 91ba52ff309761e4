"""Bulk imports: records split into bodies within DotDigital's limits, each held by an import slot.

DotDigital runs at most 25 contact and 5 insight imports of an account at once. `submit_import`
claims one of those slots (`connectors.budget.ConcurrencyCap`, shared by every worker) before the
PUT, names it after the import id once accepted, and `poll_import` releases it when the import is
seen finished. Every request goes through `Transport._call`, budget and all.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from connectors.budget import ConcurrencyCap, Lane, RateBudget

from . import errors
from .parse import import_status_from
from .transport import Transport
from .types import ContactWrite, ImportHandle, ImportKind, ImportStatus, InsightWrite

IMPORT_CAPS = {ImportKind.CONTACTS: 25, ImportKind.INSIGHT: 5}
# Slots the bulk lane leaves to the realtime lane, which keeps at most one import of each kind
# and collection in flight (`monitoring.pipeline.deliver`): a backfill never holds them all.
REALTIME_SLOTS = {ImportKind.CONTACTS: 5, ImportKind.INSIGHT: 2}
MAX_BODY_BYTES = 50 * 1024 * 1024
# A little under the 50 MB limit: headers and our own rounding never push a body over it.
DEFAULT_MAX_BODY_BYTES = 48 * 1024 * 1024
# Without a published count limit, a count cap keeps each import quick to apply and to poll.
DEFAULT_MAX_RECORDS = 20_000
IMPORT_MERGE_OPTIONS = {
    "overwrite": "overwrite",
    "overwrite-if-not-empty": "overwriteIfNotEmpty",
    "overwrite-if-empty": "overwriteIfEmpty",
}


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def split_bodies(
    records: Sequence[bytes], overhead: int, max_bytes: int, max_records: int
) -> list[tuple[int, int]]:
    """Index ranges [start, stop) of `records` whose joined bodies stay within both limits."""
    ranges: list[tuple[int, int]] = []
    start, size = 0, overhead
    for index, record in enumerate(records):
        extra = len(record) + (1 if index > start else 0)
        if overhead + len(record) > max_bytes:
            raise ValueError(f"record {index} alone is over the {max_bytes}-byte body limit")
        if index > start and (size + extra > max_bytes or index - start >= max_records):
            ranges.append((start, index))
            start, size = index, overhead
            extra = len(record)
        size += extra
    if start < len(records):
        ranges.append((start, len(records)))
    return ranges


def default_import_caps(
    account_key: str, budget: RateBudget, ttl: float
) -> dict[ImportKind, ConcurrencyCap]:
    """The account's import slots, one cap per kind, kept where the rate budget is kept."""
    return {
        kind: ConcurrencyCap(
            account_key, f"imports:{kind.value}", cap, ttl=ttl, backend=budget.backend
        )
        for kind, cap in IMPORT_CAPS.items()
    }


class ImportCalls(Transport):
    """The import calls of `DotDigitalClient`, which sets the slots and limits below."""

    import_caps: dict[ImportKind, ConcurrencyCap]
    max_body_bytes: int
    max_records: int

    def import_contacts(
        self, contacts: Sequence[ContactWrite], merge_option: str = "overwrite"
    ) -> list[ImportHandle]:
        """Submit `contacts` as v3 imports, split to the body and count limits.

        On a failure after some bodies were accepted, the error carries them as `.submitted`.
        """
        option = IMPORT_MERGE_OPTIONS.get(merge_option, merge_option)
        if option not in IMPORT_MERGE_OPTIONS.values():
            raise ValueError(f"merge_option must be one of {sorted(IMPORT_MERGE_OPTIONS)}")
        records = [dumps({"matchIdentifier": c.match_identifier, **c.body()}) for c in contacts]
        head = b'{"mergeOption":' + dumps(option) + b',"contacts":['
        return self._submit_all(
            ImportKind.CONTACTS,
            "/contacts/v3/import",
            head,
            records,
            [c.key for c in contacts],
            None,
        )

    def import_insight(
        self,
        collection: str,
        records: Sequence[InsightWrite],
        *,
        scope: str = "contact",
        collection_type: str = "custom",
    ) -> list[ImportHandle]:
        """Submit insight `records` as v3 imports, split to the body and count limits."""
        encoded = [dumps(r.body()) for r in records]
        head = (
            b'{"collectionName":'
            + dumps(collection)
            + b',"collectionScope":'
            + dumps(scope)
            + b',"collectionType":'
            + dumps(collection_type)
            + b',"records":['
        )
        return self._submit_all(
            ImportKind.INSIGHT,
            "/insightData/v3/import",
            head,
            encoded,
            [str(r.key) for r in records],
            collection,
        )

    def _submit_all(
        self,
        kind: ImportKind,
        path: str,
        head: bytes,
        records: list[bytes],
        keys: list[str],
        collection: str | None,
    ) -> list[ImportHandle]:
        tail = b"]}"
        handles: list[ImportHandle] = []
        for start, stop in split_bodies(
            records, len(head) + len(tail), self.max_body_bytes, self.max_records
        ):
            body = head + b",".join(records[start:stop]) + tail
            try:
                handles.append(
                    self.submit_import(kind, path, body, tuple(keys[start:stop]), collection)
                )
            except errors.DotDigitalError as exc:
                exc.submitted = handles  # type: ignore[attr-defined]
                raise
        return handles

    def submit_import(
        self,
        kind: ImportKind,
        path: str,
        body: bytes,
        keys: tuple[str, ...],
        collection: str | None = None,
    ) -> ImportHandle:
        """PUT one import body while holding one of the account's import slots of `kind`."""
        cap = self.import_caps[kind]
        token = f"pending-{uuid.uuid4()}"
        waited = 0.0
        # A slot waiting for its import id is held only as long as the PUT can take, so a worker
        # killed meanwhile gives it back within a minute or two; the import id holds it longer.
        realtime = self.lane is Lane.REALTIME
        keep_free = 0 if realtime else REALTIME_SLOTS[kind]
        while not cap.claim(token, ttl=self.timeouts.bulk + 30.0, keep_free=keep_free):
            if waited >= self.max_wait:
                usable = cap.cap - keep_free
                raise errors.TooManyImports(
                    f"PUT {path}: all {usable} {kind.value} import slots"
                    f"{'' if realtime else ' open to the bulk lane'} are in use",
                    # A slot comes free when an import finishes: about a second for the small
                    # imports the realtime lane sends.
                    retry_after=1.0 if realtime else 5.0,
                    method="PUT",
                    path=path,
                )
            step = min(0.25, self.max_wait - waited)
            self.sleep(step)
            waited += step
        try:
            response = self._call("PUT", path, tier="import", timeout=self.timeouts.bulk, data=body)
            import_id = str(response.json()["importId"])
        except BaseException:
            cap.release(token)
            raise
        cap.rename(token, import_id)
        return ImportHandle(import_id, kind, keys, collection, len(body))

    def poll_import(self, handle: ImportHandle) -> ImportStatus:
        """The import's status; once done its slot is released and failures keyed by record key."""
        base = (
            "/contacts/v3/import/"
            if handle.kind is ImportKind.CONTACTS
            else ("/insightData/v3/import/")
        )
        cap = self.import_caps[handle.kind]
        try:
            response = self._call(
                "GET",
                base + quote(handle.import_id, safe=""),
                label=base + "{importId}",
                tier="status",
                timeout=self.timeouts.bulk,
            )
        except errors.NotFound:
            cap.release(handle.import_id)
            raise
        status = import_status_from(handle, response.json())
        if status.done:
            cap.release(handle.import_id)
        else:
            cap.claim(handle.import_id)  # renew the lease while it runs
        return status

    def wait_for_import(
        self, handle: ImportHandle, *, interval: float = 5.0, timeout: float = 3600.0
    ) -> ImportStatus:
        """Poll every `interval` seconds until done (DotDigital asks for 5–30 s between polls)."""
        waited = 0.0
        while True:
            status = self.poll_import(handle)
            if status.done:
                return status
            if waited >= timeout:
                raise errors.CallTimeout(
                    f"import {handle.import_id} not finished after {timeout:g}s",
                    retry_after=interval,
                )
            self.sleep(interval)
            waited += interval
