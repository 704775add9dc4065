"""The architecture holds in code: the catalogue is the whole event map, the doc carries it, every service
follows the template, and no package has an import cycle. (The layering contracts themselves run as
`lint-imports`, configured in pyproject.toml; `make test` and `make lint` run it.)"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import grimp
import pytest

from flywheel import catalogue
from flywheel.catalogue import RUNNING_SERVICES

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "architecture.md"
MAP = re.compile(r"<!-- event-map:begin -->\n(.*?)<!-- event-map:end -->", re.S)
PACKAGES = ("flywheel", *(f"flywheel_{s}" for s in RUNNING_SERVICES), "flywheel_dev")
TEMPLATE = ("__main__", "app", "settings", "topics", "core", "handlers", "events", "ports", "metrics")
TOPIC_NAMES = {t.name for t in catalogue.TOPICS}


def test_the_doc_carries_the_catalogue_s_event_map() -> None:
    found = MAP.search(DOC.read_text())
    assert found, "docs/architecture.md lost its event-map markers"
    assert found.group(1) == catalogue.event_map_markdown(), (
        "docs/architecture.md's event map differs from the catalogue: paste `flywheel topics --markdown`")


def package_dir(service: str) -> Path:
    return REPO / "services" / service / f"flywheel_{service}"


@pytest.mark.parametrize("service", RUNNING_SERVICES)
def test_every_service_has_the_template_modules(service: str) -> None:
    missing = [m for m in TEMPLATE if not (package_dir(service) / f"{m}.py").is_file()]
    assert not missing, f"{service} lacks {missing} (docs/architecture.md: adding a service)"


def topic_literals(files: Iterable[Path]) -> dict[str, set[str]]:
    """Catalogue topic names written as string literals in `files`, with the files naming them."""
    found: dict[str, set[str]] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in TOPIC_NAMES:
                found.setdefault(node.value, set()).add(path.name)
    return found


@pytest.mark.parametrize("service", RUNNING_SERVICES)
def test_a_service_names_only_topics_the_catalogue_gives_it(service: str) -> None:
    """Who reads or writes a topic is never hidden in code: every topic a service's code names is one
    the catalogue lists for it (consumed, produced or replayed)."""
    topics = importlib.import_module(f"flywheel_{service}.topics")
    allowed = {*topics.CONSUMES, *topics.PRODUCES, *topics.REPLAYS}
    named = topic_literals(package_dir(service).rglob("*.py"))
    stray = {name: files for name, files in named.items() if name not in allowed}
    assert not stray, f"{service} names topics the catalogue does not give it: {stray}"


def cycles(graph: grimp.ImportGraph, modules: Iterable[str]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), i.e. import cycles."""
    modules = sorted(modules)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in sorted(graph.find_modules_directly_imported_by(module)):
            if other not in set(modules):
                continue
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in modules:
        if module not in index:
            visit(module)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycles(package: str) -> None:
    # grimp reads every import statement, those inside functions too, so a cycle cannot hide there.
    graph = grimp.build_graph(package, cache_dir=None)
    modules = [m for m in graph.modules if not graph.find_children(m)]  # modules, not packages' __init__
    assert cycles(graph, modules) == []


def test_the_cycle_check_finds_a_cycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "cyclic"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from cyclic import b  # hidden in a function\n")
    (pkg / "b.py").write_text("from cyclic import c\n")
    (pkg / "c.py").write_text("import cyclic.a\n")
    (pkg / "d.py").write_text("import cyclic.a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("cyclic", cache_dir=None)
    assert cycles(graph, ["cyclic.a", "cyclic.b", "cyclic.c", "cyclic.d"]) == [["cyclic.a", "cyclic.b", "cyclic.c"]]


def test_the_layering_contracts_hold() -> None:
    """import-linter with the contracts in pyproject.toml (services independent, core imports no service or
    tooling, pure cores import no adapters or I/O libraries)."""
    lint = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "broken" in done.stdout and " 0 broken" in done.stdout


def test_a_broken_layering_contract_fails_lint_imports(tmp_path: Path) -> None:
    """The contracts bite: one that the code breaks (tooling importing the core, as it does) fails."""
    config = tmp_path / "importlinter.ini"
    config.write_text("[importlinter]\nroot_packages =\n    flywheel\n    flywheel_dev\n\n"
                      "[importlinter:contract:probe]\nname = probe\ntype = forbidden\n"
                      "source_modules = flywheel_dev\nforbidden_modules = flywheel\n")
    lint = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(lint), "--no-cache", "--config", str(config)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode != 0 and "BROKEN" in done.stdout
