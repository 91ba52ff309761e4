"""OrderWise in `make demo` (monitoring/demo.py plays `RECORDING`): a recorded OrderWise API serving the export
definitions for the poller (products, customers, orders, deliveries, credit notes, stock) and one
legacy ``ExportData`` push to the flow's webhook.

No OrderWise payload is public: the rows are synthetic, in the columns the setup page's SQL
returns (connectors/sources/orderwise/README.md), with the demo catalogue's SKUs. Their times are the
demo's present (connectors/sources/replay.py), a few seconds apart, written in the server's local
time as OrderWise writes them. On purpose: a web order
on the shared web account (a guest, not the account), a credit note (a refund), and one order in
a status the connection's status map does not know (it changes nothing and opens a
``source_warning`` in the inbox).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from connectors.sources.base import RecordedApi, RecordedRequest, Recording
from connectors.sources.replay import replay_anchor

USER = "demo-orderwise"
PASSWORD = "demo-orderwise-password"
ZONE = ZoneInfo("Europe/London")
DEFINITIONS = {"products": "15", "customers": "14", "orders": "11", "deliveries": "12",
               "credit_notes": "13", "stock": "16"}  # fmt: skip
STATUS_MAP = {
    "Awaiting despatch": {"lifecycle": "open", "fulfilment": "unfulfilled", "financial": "paid"},
    "Completed": {"lifecycle": "closed", "fulfilment": "dispatched"},
}
LEGACY_XML = """<?xml version="1.0" encoding="utf-8"?>
<orders>
  <order>
    <orderNo>SO-D1002</orderNo>
    <orderStatus>Completed</orderStatus>
    <deliveries>
      <delivery>
        <deliveryNumber>D2</deliveryNumber>
        <courierName>Royal Mail</courierName>
        <consignmentNumbers><consignmentNumber>RM100200300GB</consignmentNumber></consignmentNumbers>
      </delivery>
    </deliveries>
  </order>
</orders>
"""


def _local(moment: datetime) -> str:
    return moment.astimezone(ZONE).strftime("%Y-%m-%d %H:%M:%S")


def _order(oh_id: int, number: str, at: datetime, *, email: str, cu_id: str, status: str,
           lines: list[tuple[str, str, float]], delivery: float) -> list[dict[str, Any]]:  # fmt: skip
    """One order, a row per line, gross throughout: oh_gross = Σ ol_gross + delivery."""
    gross = round(sum(price for _, _, price in lines) + delivery, 2)
    head = {
        "row_id": oh_id, "amended": _local(at), "oh_order_number": number,
        "oh_cust_order_ref": f"#WEB{oh_id}", "oh_datetime": _local(at), "os_description": status,
        "cu_id": cu_id, "cu_account": f"ACC-{cu_id}", "contact_email": email,
        "contact_first_name": email.split("@")[0].split(".")[0].title(), "contact_last_name": "Demo",
        "currency_code": "GBP", "oh_net": round(gross / 1.2, 2), "oh_tax": round(gross - gross / 1.2, 2),
        "oh_gross": gross, "oh_delivery_gross": delivery,
    }  # fmt: skip
    return [
        {**head, "ol_id": oh_id * 10 + n, "vad_variant_code": sku, "vad_description": name,
         "ol_quantity": 1, "ol_unit_price": round(price / 1.2, 2), "ol_net": round(price / 1.2, 2),
         "ol_tax": round(price - price / 1.2, 2), "ol_gross": price}
        for n, (sku, name, price) in enumerate(lines)
    ]  # fmt: skip


def demo_rows(now: datetime) -> dict[str, list[dict[str, Any]]]:
    """Each export definition's rows, as of `now`: changed in the seconds before it, in order."""
    t = [now - timedelta(seconds=2 * (10 - i)) for i in range(10)]
    merino, raincoat = ("MER-000/RED-S", "Merino Crew", 34.99), ("RAI-001/RED-M", "Raincoat", 17.99)
    return {
        DEFINITIONS["products"]: [
            {"row_id": 1, "amended": _local(t[0]), "vad_variant_code": merino[0],
             "vad_description": merino[1], "vafp_rsp_exc_vat": 29.16, "vad_active": 1},
            {"row_id": 2, "amended": _local(t[0]), "vad_variant_code": raincoat[0],
             "vad_description": raincoat[1], "vafp_rsp_exc_vat": 14.99, "vad_active": 1},
        ],
        DEFINITIONS["customers"]: [
            {"row_id": 1, "amended": _local(t[0]), "cu_id": "C100", "cu_account": "ACC-C100",
             "contact_id": 1, "contact_email": "jo.orderwise@example.com",
             "contact_first_name": "Jo", "contact_last_name": "Demo", "cu_name": "Jo Demo"},
            {"row_id": 2, "amended": _local(t[0]), "cu_id": "WEB", "cu_account": "WEBSALES",
             "contact_id": 2, "contact_email": "webshop@northwind.example",
             "contact_first_name": "Web", "contact_last_name": "Sales", "cu_name": "Web sales"},
        ],
        DEFINITIONS["orders"]: [
            *_order(1001, "SO-D1001", t[1], email="jo.orderwise@example.com", cu_id="C100",
                    status="Awaiting despatch", lines=[merino, raincoat], delivery=3.99),
            *_order(1002, "SO-D1002", t[2], email="ann.web@example.com", cu_id="WEB",
                    status="Awaiting despatch", lines=[merino], delivery=0.0),
            *_order(1003, "SO-D1003", t[3], email="bo.web@example.com", cu_id="WEB",
                    status="Awaiting courier collection", lines=[raincoat], delivery=3.99),
        ],
        DEFINITIONS["deliveries"]: [
            {"row_id": 70, "amended": _local(t[4]), "dh_number": "D1", "oh_order_number": "SO-D1001",
             "oh_cust_order_ref": "#WEB1001", "dh_datetime": _local(t[4]), "courier_name": "DPD",
             "dh_consignment_number": "15501234", "cod_tracking_url_prefix": "https://track.dpd.co.uk/",
             "vad_variant_code": sku, "dl_quantity": 1}
            for sku in (merino[0], raincoat[0])
        ],
        DEFINITIONS["credit_notes"]: [
            {"row_id": 90, "amended": _local(t[5]), "cn_number": "CN-D1", "oh_order_number": "SO-D1001",
             "cn_datetime": _local(t[5]), "currency_code": "GBP", "cn_gross": -raincoat[2],
             "cn_reason": "Too small", "contact_email": "jo.orderwise@example.com", "cu_id": "C100",
             "vad_variant_code": raincoat[0], "cnl_quantity": 1, "cnl_gross": raincoat[2]},
        ],
        DEFINITIONS["stock"]: [
            {"row_id": 1, "amended": _local(t[6]), "vad_variant_code": merino[0],
             "location_code": "MAIN", "on_hand": 5, "allocated": 2, "free_stock": 3},
        ],
    }  # fmt: skip


def demo_credentials() -> dict[str, Any]:
    return {"username": USER, "password": PASSWORD}


def demo_options(base_url: str) -> dict[str, Any]:
    return {
        "base_url": f"{base_url}/OWAPI",
        "account": "demo",
        "export_definitions": DEFINITIONS,
        "status_map": STATUS_MAP,
        "shared_customer_ids": ["WEB"],
        "legacy_order_number_is": "order_number",
        # The recording is served locally, and the demo polls it every second while it plays
        # (a poll reads each export definition): the default 60 a minute guards a tenant's server.
        "requests_per_minute": 600,
    }


def demo_requests() -> list[RecordedRequest]:
    """The legacy e-commerce push: SO-D1002 completed, its delivery with a consignment."""
    return [
        RecordedRequest(
            body=urlencode({"ExportData": LEGACY_XML}).encode(),
            content_type="application/x-www-form-urlencoded",
            label="legacy ExportData push (SO-D1002 completed, delivery D2)",
        )
    ]


def demo_api(anchor: datetime | None = None) -> RecordedApi:
    """``GET /OWAPI/token/gettoken`` (Basic) and ``GET /OWAPI/ExportDefinition/{id}`` with keyset
    paging by ``limit`` + ``last_id`` and the ``since`` window, as the setup page's SQL does."""
    rows = demo_rows(anchor or replay_anchor())
    basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    tokens: set[str] = set()

    def answer(
        method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str]
    ) -> tuple[int, Any, Mapping[str, str]]:
        auth = headers.get("authorization", "")
        if path == "/OWAPI/token/gettoken":
            if auth != basic:
                return 401, "Unauthorised", {}
            token = secrets.token_hex(8)
            tokens.add(token)
            return 200, token, {}
        if auth != basic and auth.removeprefix("Bearer ") not in tokens:
            return 401, {"Message": "Authorization has been denied for this request."}, {}
        number = path.removeprefix("/OWAPI/ExportDefinition/")
        if number not in rows:
            return 404, {"Message": "No such export definition"}, {}
        since = str(query.get("since") or "").replace("T", " ")
        last_id = int(query.get("last_id") or 0)
        limit = int(query.get("limit") or 1000)
        page = [
            r
            for r in sorted(rows[number], key=lambda r: int(r["row_id"]))
            if int(r["row_id"]) > last_id and (not since or str(r["amended"]) >= since)
        ][:limit]
        return 200, {"data": page}, {}

    return answer


RECORDING = Recording(
    name="OrderWise (recorded)",
    join_key="order_number",
    requests=demo_requests,
    credentials=demo_credentials,
    options=demo_options,
    api=demo_api,
    polls=True,
)
