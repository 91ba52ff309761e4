"""What an unknown SKU may stand for: the catalogue's products ranked by what the blocked order
lines say of it, each with its name, saleable stock and how close it is (0-100).

Spelling alone misleads: a legacy code such as LEG-1058 looks no more like its product's SKU than
like any other. The blocked lines often carry more: the product key (exact, so 100) or the
product's name (the share of words the two names have in common, so another size or colour of the
same product is well short of 100). The SKU's spelling counts too: the same characters but for
case and separators is 100; any other difference is at most `SPELT_ALIKE_AT_MOST`, since one
character can be another size or colour.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from django.db.models import Count, Sum
from rapidfuzz import fuzz, process, utils

from exceptions_inbox.kinds import Suggestion
from monitoring.models import Product, SourceEvent, StockLevel
from monitoring.pipeline.normalise import clean_sku

if TYPE_CHECKING:
    from exceptions_inbox.models import ExceptionGroup

SUGGEST_FROM = 20_000  # catalogue products ranked (rapidfuzz: milliseconds)
SHOWN = 5
CUTOFF = 50  # below this a product is not worth showing
HINT_EVENTS = 20  # blocked events read for what their lines say of the SKU
SPELT_ALIKE_AT_MOST = 80  # a SKU differing in more than case and separators
UNKNOWN_SHOWN = 10  # unknown SKUs of a group given suggestions (the inbox shows as many)


def suggest_products(group: ExceptionGroup) -> list[Suggestion]:
    """For each unknown SKU of the group (those blocking most first), the products it most
    likely stands for, best first."""
    products = list(
        Product.objects.filter(workspace_id=group.workspace_id)
        .order_by("sku")
        .values_list("sku", "name", "product_key")[:SUGGEST_FROM]
    )
    if not products:
        return []
    found: list[tuple[str, int, float, str]] = []  # (unknown SKU, product index, score, why)
    for unknown in unknown_skus(group):
        found += [(unknown, *ranked) for ranked in _rank(group, unknown, products)]
    stock = saleable(
        group.workspace_id, sorted({products[index][0] for _u, index, _s, _w in found})
    )
    return [
        Suggestion(
            value=products[index][0],
            closeness=round(score),
            name=products[index][1],
            stock=stock.get(products[index][0]),
            why=why,
            for_value=unknown,
        )
        for unknown, index, score, why in found
    ]


def unknown_skus(group: ExceptionGroup) -> list[str]:
    """The group's own SKU, or in a group per flow its blocking occurrences' SKUs, most first."""
    if group.sku:
        return [group.sku]
    rows = (
        group.occurrences.filter(state="open")
        .exclude(sku="")
        .values_list("sku")
        .annotate(n=Count("pk"))
        .order_by("-n", "sku")[:UNKNOWN_SHOWN]
    )
    return [sku for sku, _n in rows]


def _rank(
    group: ExceptionGroup, unknown: str, products: list[tuple[str, str, str]]
) -> list[tuple[int, float, str]]:
    """The products nearest one unknown SKU: (index, score, why), best first."""
    keys, names = line_hints(group, unknown)
    best: dict[int, tuple[float, str]] = {}

    def offer(index: int, score: float, why: str) -> None:
        if score > best.get(index, (-1.0, ""))[0]:
            best[index] = (score, why)

    for index, (_sku, _name, key) in enumerate(products):
        if key and key in keys:
            offer(index, 100, "the blocked lines carry its product key")
    for _choice, score, index in _nearest(unknown, [p[0] for p in products], by_words=False):
        same = _characters(unknown) == _characters(products[index][0])
        offer(index, 100 if same else min(score, SPELT_ALIKE_AT_MOST), "its SKU is spelt alike")
    product_names = [p[1] for p in products]
    for name in names:
        for _choice, _score, index in _nearest(name, product_names, by_words=True):
            shared = _words_shared(name, product_names[index])
            if shared >= CUTOFF:
                offer(index, shared, f"named like the blocked lines' {name!r}")
    ranked = sorted(best.items(), key=lambda item: (-item[1][0], products[item[0]][0]))
    return [(index, score, why) for index, (score, why) in ranked[:SHOWN]]


def _characters(sku: str) -> str:
    """The SKU's letters and digits, case folded: what is left when separators do not count."""
    return "".join(c for c in sku.casefold() if c.isalnum())


def _words_shared(a: str, b: str) -> float:
    """100 × the words two names share over the words either has (order and case aside)."""
    first, second = set(utils.default_process(a).split()), set(utils.default_process(b).split())
    if not first or not second:
        return 0.0
    return 100 * len(first & second) / len(first | second)


def _nearest(text: str, choices: list[str], *, by_words: bool) -> list[tuple[str, float, int]]:
    """The choices nearest `text`: as names, word by word (order aside); else as codes, where a
    part matching counts (WRatio)."""
    found = process.extract(
        text,
        choices,
        scorer=fuzz.token_sort_ratio if by_words else fuzz.WRatio,
        processor=utils.default_process,
        limit=SHOWN,
        score_cutoff=CUTOFF,
    )
    return [(str(choice), float(score), int(index)) for choice, score, index in found]


def line_hints(group: ExceptionGroup, unknown: str) -> tuple[set[str], list[str]]:
    """The product keys and names the blocked order lines give beside an unknown SKU."""
    wanted = clean_sku(unknown).casefold()
    blocking = group.occurrences.filter(state="open")
    if not group.sku:
        blocking = blocking.filter(sku=unknown)
    ids = [
        int(key[6:])
        for key in blocking.order_by("-last_seen").values_list("event_key", flat=True)[:HINT_EVENTS]
        if key.startswith("event:") and key[6:].isdigit()
    ]
    keys: set[str] = set()
    names: list[str] = []
    for envelope in SourceEvent.objects.filter(pk__in=ids).values_list("envelope", flat=True):
        for line in _lines(envelope):
            if clean_sku(str(line.get("sku") or "")).casefold() != wanted:
                continue
            if line.get("product_key"):
                keys.add(str(line["product_key"]))
            name = str(line.get("name") or "").strip()
            if name and name not in names:
                names.append(name)
    return keys, names


def _lines(envelope: object) -> Iterable[dict[str, object]]:
    data = envelope.get("data") if isinstance(envelope, dict) else None
    lines = data.get("lines") if isinstance(data, dict) else None
    return [line for line in lines or [] if isinstance(line, dict)]


def saleable(workspace_id: int, skus: list[str]) -> dict[str, int]:
    """Saleable stock per SKU, over its locations (absent when nothing is known)."""
    rows = (
        StockLevel.objects.filter(workspace_id=workspace_id, sku__in=skus, saleable__isnull=False)
        .values("sku")
        .annotate(total=Sum("saleable"))
        .order_by()
    )
    return {row["sku"]: int(row["total"]) for row in rows}
