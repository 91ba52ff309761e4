from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from exceptions_inbox.kinds import KINDS, hooks_of, register_hooks


class Hooks:
    """Stands in for the engine at the hook seam: registers hooks per kind and restores the
    registry afterwards. Records every call in `calls`."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self._saved: dict[str, dict[str, Any]] = {}

    def register(self, kind: str, **hooks: Any) -> None:
        self._saved.setdefault(kind, hooks_of(kind))
        register_hooks(kind, **hooks)

    def recorder(self, name: str) -> Any:
        def hook(*args: Any) -> None:
            self.calls.append((name, args))

        return hook

    def restore(self) -> None:
        for kind, hooks in self._saved.items():
            register_hooks(kind, **hooks)


@pytest.fixture(autouse=True)
def hooks() -> Iterator[Hooks]:
    stand_in = Hooks()
    # Every inbox test starts from no hooks at all, whatever the engine registered when its app
    # was ready: the tests register what they stand in for.
    for kind in KINDS:
        stand_in.register(kind, **dict.fromkeys(hooks_of(kind)))
    yield stand_in
    stand_in.restore()
