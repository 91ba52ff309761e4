"""python -m eventgen --url http://127.0.0.1:8000/hooks/<token>/ [--rate 5] [--events N] [--faults demo]"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys

from eventgen.generator import Faults, Generator
from eventgen.post import post_batches


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="eventgen", description=__doc__)
    parser.add_argument("--url", required=True, help="the webhook URL of a canonical connection")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--events", type=int, default=0, help="how many; 0 = until stopped")
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--rate", type=float, default=5.0, help="events per second (0 = flat out)")
    parser.add_argument("--faults", choices=["none", "demo"], default="demo")
    parser.add_argument(
        "--catalogue", action="store_true", help="post the catalogue and stock first"
    )
    parser.add_argument("--live", action="store_true", help="stamp events with the real time")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s eventgen: %(message)s")
    gen = Generator(
        seed=args.seed,
        customers=args.customers,
        live=args.live,
        faults=Faults.demo() if args.faults == "demo" else Faults(),
    )
    if args.catalogue:
        catalogue = gen.catalogue_events()
        chunks = [catalogue[i : i + 100] for i in range(0, len(catalogue), 100)]
        stats = post_batches(args.url, chunks)
        logging.info("catalogue posted: %s events, answers %s", stats.events, stats.statuses)
    counts = itertools.count() if args.events == 0 else range(0, args.events, args.batch)
    batches = (gen.events(args.batch) for _ in counts)
    stats = post_batches(args.url, batches, rate=args.rate or None)
    logging.info("posted %s events in %s requests: %s", stats.events, stats.requests, stats.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
