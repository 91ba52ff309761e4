"""Fails when a file of the application is over 800 lines or a function over 80.

A file that long, or a function, hides how the code works from the next reader: split it by what
it does. Benches, the event generator, tests and migrations are not application code and are left
out. Run by ``make lint``; pass paths to check only those.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPLICATION = (
    "accounts",
    "api",
    "config",
    "connectors",
    "exceptions_inbox",
    "monitoring",
    "scripts",
)
MAX_FILE_LINES = 800
MAX_FUNCTION_LINES = 80


def _files(paths: list[str]) -> Iterator[Path]:
    for name in paths or APPLICATION:
        path = (ROOT / name) if not Path(name).is_absolute() else Path(name)
        found = [path] if path.is_file() else sorted(path.rglob("*.py"))
        yield from (p for p in found if "migrations" not in p.parts)


def main(paths: list[str]) -> int:
    problems = []
    for path in _files(paths):
        source = path.read_text()
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        lines = source.count("\n")
        if lines > MAX_FILE_LINES:
            problems.append(f"{shown}: {lines} lines (at most {MAX_FILE_LINES})")
        for node in ast.walk(ast.parse(source, str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    problems.append(
                        f"{shown}:{node.lineno}: {node.name} is {length} lines"
                        f" (at most {MAX_FUNCTION_LINES})"
                    )
    print("\n".join(problems) or "Every file and function is within its size.")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
