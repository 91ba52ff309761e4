from __future__ import annotations

import json
import threading
from collections import Counter
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from eventgen import Faults, Generator
from eventgen.post import post_batches
from eventgen.truth import normalise_email


def amount(money):
    return Decimal(money["amount"])


def test_a_seed_gives_the_same_stream():
    a, b = Generator(seed=7), Generator(seed=7)
    assert a.catalogue_events() == b.catalogue_events()
    assert a.events(300) == b.events(300)
    assert Generator(seed=8).events(50) != Generator(seed=7).events(50)


def test_the_mix_follows_its_weights():
    gen = Generator(seed=1, customers=500)
    gen.catalogue_events()
    counts = Counter(e["event_type"] for e in gen.events(5000))
    assert 0.35 < counts["order.created"] / 5000 < 0.48
    assert counts["refund.issued"] > 100 and counts["consent.changed"] > 100


def test_orders_without_faults_add_up_to_their_stated_total():
    gen = Generator(seed=2)
    gen.catalogue_events()
    for event in gen.events(1000):
        if event["event_type"] != "order.created":
            continue
        data = event["data"]
        lines = sum(amount(line["line_total"]) for line in data["lines"])
        totals = data["totals"]
        expected = lines + amount(totals["shipping"]) - amount(totals["discount"])
        assert amount(totals["grand_total"]) == expected


def test_the_ground_truth_agrees_with_the_events_it_generated():
    """Recompute LTV per email from the events alone and compare with the generator's truth."""
    gen = Generator(seed=3, faults=Faults(guest_duplicate=0.2))
    gen.catalogue_events()
    events = gen.events(3000)
    totals: dict[str, Decimal] = {}
    order_email: dict[str, str] = {}
    for e in events:
        if e["event_type"] == "order.created" and e["identity"].get("email"):
            email = normalise_email(e["identity"]["email_raw"])
            order_email[e["data"]["order_key"]] = email
            totals[email] = totals.get(email, Decimal(0)) + amount(
                e["data"]["totals"]["grand_total"]
            )
        elif e["event_type"] == "refund.issued":
            email = order_email[e["data"]["order_key"]]
            totals[email] -= amount(e["data"]["amount"])
    for email, ltv in totals.items():
        assert gen.truth.contacts[email].ltv == ltv
    assert all(o.refunded <= o.grand_total for o in gen.truth.orders.values())


def test_a_guest_duplicate_is_the_same_person_in_another_spelling():
    gen = Generator(seed=4, faults=Faults(guest_duplicate=1.0))
    gen.catalogue_events()
    orders = [e for e in gen.events(200) if e["event_type"] == "order.created"]
    raw = orders[0]["identity"]["email_raw"]
    assert raw != raw.strip().lower() and orders[0]["identity"]["is_guest"]
    assert normalise_email(raw) in gen.truth.contacts


def test_business_faults_are_recorded_as_blocked_with_their_exception_kind():
    gen = Generator(seed=5, faults=Faults(missing_email=0.1, odd_sku=0.1, bad_total=0.05))
    gen.catalogue_events()
    events = {e["source_event_id"]: e for e in gen.events(2000)}
    kinds = Counter(gen.truth.blocked.values())
    assert set(kinds) == {"contact_without_email", "sku_mapping_gap", "order_total_mismatch"}
    for source_event_id, kind in gen.truth.blocked.items():
        event = events[source_event_id]
        order_number = event["data"]["order_number"]
        assert order_number not in gen.truth.orders  # blocked orders are not expected in DotDigital
        if kind == "contact_without_email":
            assert event["identity"]["email"] is None


def test_duplicates_resend_the_same_event_and_are_not_counted_twice():
    gen = Generator(seed=6, faults=Faults(duplicate=0.3))
    gen.catalogue_events()
    delivered = gen.events(500)
    ids = Counter(e["source_event_id"] for e in delivered)
    assert len(ids) == 500 and len(delivered) > 500
    assert gen.truth.events == 500 and gen.truth.deliveries == len(delivered)


class _Flaky(BaseHTTPRequestHandler):
    calls: list[int] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Flaky.calls.append(len(body["events"]))
        status = 503 if len(_Flaky.calls) == 1 else 202
        payload = {"results": [{"status": "accepted"} for _ in body["events"]]}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_the_poster_retries_a_503_and_counts_the_answers():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        gen = Generator(seed=9)
        stats = post_batches(f"http://127.0.0.1:{server.server_port}/hooks/x/", gen.batches(30, 10))
    finally:
        server.shutdown()
        server.server_close()
    assert stats.requests == 3 and stats.events == 30 and stats.retries == 1
    assert stats.results == {"accepted": 30}
    assert _Flaky.calls == [10, 10, 10, 10]
