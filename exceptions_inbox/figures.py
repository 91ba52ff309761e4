"""The money an exception is about, for finance to see its size without opening each occurrence.

The engine puts an occurrence's figures in its detail (`{"figures": {"total", "parts",
"difference", "currency"}}`, exact decimal strings); the group adds up what is off, per currency.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from exceptions_inbox.models import ExceptionGroup, Occurrence


@dataclass(frozen=True)
class OffBy:
    """How much the blocked occurrences of a group are off by, in one currency."""

    currency: str
    amount: Decimal  # the sum of each occurrence's difference, sign dropped
    occurrences: int


def figures_of(detail: dict[str, Any]) -> dict[str, str] | None:
    figures = detail.get("figures") if isinstance(detail, dict) else None
    if not isinstance(figures, dict) or "difference" not in figures:
        return None
    return {k: str(v) for k, v in figures.items()}


def off_by(group: ExceptionGroup) -> list[OffBy]:
    """Per currency, how much the group's blocking occurrences are off by (empty when they carry
    no figures)."""
    sums: dict[str, tuple[Decimal, int]] = {}
    details = Occurrence.objects.filter(group=group, state=Occurrence.State.OPEN).values_list(
        "detail", flat=True
    )
    for detail in details.iterator():
        figures = figures_of(detail)
        if figures is None:
            continue
        try:
            difference = abs(Decimal(figures["difference"]))
        except InvalidOperation:
            continue
        currency = figures.get("currency", "")
        total, count = sums.get(currency, (Decimal(0), 0))
        sums[currency] = (total + difference, count + 1)
    return [OffBy(c, amount, n) for c, (amount, n) in sorted(sums.items())]
