"""The embedded default's broker never hands a worker half a message."""

from __future__ import annotations

import threading
from pathlib import Path

from kombu import Connection, Queue

from config.celery import app  # noqa: F401  (registers the transport under `filesystem`)


def test_a_worker_polling_while_messages_are_written_reads_every_message_whole(tmp_path: Path):
    folder = tmp_path / "queue"
    folder.mkdir()
    options = {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "control_folder": str(tmp_path),
        "store_processed": False,
        "polling_interval": 0.0,
    }
    queue = Queue("realtime", routing_key="realtime")
    body = {"padding": "x" * 2_000_000}  # large, so writing one takes a while
    count = 40
    received: list[int] = []
    errors: list[BaseException] = []

    def consume() -> None:
        with Connection("filesystem://", transport_options=options) as conn:
            simple = conn.SimpleQueue(queue)
            try:
                while len(received) < count:
                    message = simple.get(timeout=30)
                    received.append(message.payload["n"])
                    message.ack()
            except BaseException as exc:  # noqa: BLE001 (reported by the test below)
                errors.append(exc)
            finally:
                simple.close()

    reader = threading.Thread(target=consume)
    with Connection("filesystem://", transport_options=options) as conn:
        assert type(conn.transport).__module__ == "config.broker"
        producer = conn.SimpleQueue(queue)
        reader.start()
        for n in range(count):
            producer.put({**body, "n": n})
        producer.close()
    reader.join(timeout=60)
    assert not errors, errors
    assert sorted(received) == list(range(count))
