"""`make lint`'s own checks: they fail on what they are there to catch, and only on that."""

from __future__ import annotations

from pathlib import Path

import grimp

from scripts import check_import_cycles, check_sizes


def _graph(*imports: tuple[str, str]) -> grimp.ImportGraph:
    graph = grimp.ImportGraph()
    for importer, imported in imports:
        graph.add_import(importer=importer, imported=imported, line_number=1, line_contents="")
    return graph


def test_it_finds_a_cycle_of_three_modules_and_the_loop_through_them() -> None:
    graph = _graph(
        ("monitoring.a", "monitoring.b"),
        ("monitoring.b", "monitoring.c"),
        ("monitoring.c", "monitoring.a"),
        ("monitoring.c", "monitoring.d"),
    )

    cycles = check_import_cycles._cycles(graph)

    assert cycles == [["monitoring.a", "monitoring.b", "monitoring.c"]]
    assert check_import_cycles._shortest_loop(graph, cycles[0]) == [
        "monitoring.a",
        "monitoring.b",
        "monitoring.c",
        "monitoring.a",
    ]


def test_it_finds_no_cycle_in_imports_that_only_go_down() -> None:
    graph = _graph(
        ("monitoring.tasks", "monitoring.pipeline.lanes"),
        ("monitoring.pipeline.lanes", "monitoring.pipeline.wake"),
        ("monitoring.tasks", "monitoring.pipeline.wake"),
    )

    assert check_import_cycles._cycles(graph) == []


def test_it_leaves_tests_and_migrations_out_of_cycles() -> None:
    graph = _graph(
        ("monitoring.migrations.m0001", "monitoring.models"),
        ("monitoring.models", "monitoring.migrations.m0001"),
    )

    assert check_import_cycles._cycles(graph) == []


def test_the_application_has_no_import_cycle_today() -> None:
    assert check_import_cycles.main() == 0


def test_it_fails_on_a_file_over_800_lines_and_a_function_over_80(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(81))
    source = tmp_path / "long.py"
    source.write_text(f"def long() -> None:\n{body}\n" + "\n" * 800)

    assert check_sizes.main([str(source)]) == 1


def test_it_passes_a_short_file(tmp_path: Path) -> None:
    source = tmp_path / "short.py"
    source.write_text("def short() -> int:\n    return 1\n")

    assert check_sizes.main([str(source)]) == 0
