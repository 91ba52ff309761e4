"""A deterministic generator of canonical Syncdesk events (sync.event/v1) and of the state they
should produce in DotDigital.

It imports no engine code on purpose: the demo feeds it to the webhook, and the benchmarks and the
reliability tests compare DotDigital's final state with the ground truth it computes on its own.
"""

from __future__ import annotations

from eventgen.generator import Faults, Generator, Mix
from eventgen.truth import Truth

__all__ = ["Faults", "Generator", "Mix", "Truth"]
