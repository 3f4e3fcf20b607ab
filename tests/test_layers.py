"""The shape of ``bot/``: every import points down the layers, and no modules import each
other in a circle.

The folders of ``bot/`` are layered as docs/architecture.md draws them. A module may import
from its own folder and from any folder of a lower layer, never from a higher one; a few
folders are reachable only from the named ones (the sandbox is a fake provider: no part of
the gateway may depend on it). Imports are read with :mod:`ast` from the source, so an
import inside a function counts as much as one at the top. The one exception is a lazy
``__getattr__`` in a package's ``__init__`` that keeps a moved name importable for one
release (it is never executed by the package itself).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BOT = ROOT / "bot"

LAYERS: dict[str, int] = {
    "core": 0,
    "sinch": 1,
    "sandbox": 2,
    "storage": 2,
    "streams": 3,
    "ingress": 4,
    "conversation": 5,
    "receipts": 6,
    "outbox": 7,
    "inbox": 8,
    "sender": 9,
    "api": 10,
    "web": 11,
    "demo": 12,
    "app": 13,
    "cli": 14,
    "testing": 14,
    "__main__": 15,
}
"""Rank of each folder (a top-level module of ``bot/`` is its own folder)."""

ONLY_FROM: dict[str, set[str]] = {
    "sandbox": {"demo", "cli", "testing"},
}
"""Folders that only the named folders may import."""

COMPATIBILITY = {"sms", "plugins"}
"""Top-level modules a plugin author imports: ``bot.plugins`` (the entry point's names) and
``bot.sms`` (an alias of :mod:`bot.core.sms` for one release). They import down into their
folder; nothing in ``bot/`` imports them."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def folder_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "bot" or len(parts) < 2:
        return None
    return parts[1]


def imports_of(path: Path, module: str | None = None) -> set[str]:
    """Every ``bot`` module ``path`` (the module ``module``, by default the one at ``path``)
    imports; ``from pkg import name`` counts as ``pkg.name`` when that is a module, else as
    ``pkg``."""
    tree = ast.parse(path.read_text(), str(path))
    module = module or module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    lazy: set[int] = set()
    if path.name == "__init__.py":
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
                lazy |= {id(n) for n in ast.walk(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in lazy:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.add(candidate if is_module(candidate) else target)
    return {name for name in found if name == "bot" or name.startswith("bot.")}


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def graph() -> dict[str, set[str]]:
    return {
        module_name(path): imports_of(path)
        for path in sorted(BOT.rglob("*.py"))
        if "static" not in path.parts
    }


def test_every_folder_has_a_layer() -> None:
    folders = {folder_of(m) for m in graph()} - {None}
    assert folders <= set(LAYERS) | COMPATIBILITY, sorted(folders - set(LAYERS))


def test_imports_point_down_the_layers() -> None:
    upward = []
    for module, targets in graph().items():
        mine = folder_of(module)
        if mine is None or mine in COMPATIBILITY:
            continue
        for target in targets:
            theirs = folder_of(target)
            if theirs is None or theirs == mine:
                continue
            if theirs in COMPATIBILITY:
                upward.append(f"{module} -> {target} (use the new path)")
            elif mine in ONLY_FROM.get(theirs, {mine}) and LAYERS[theirs] < LAYERS[mine]:
                continue
            else:
                upward.append(f"{module} ({mine}) -> {target} ({theirs})")
    assert not upward, "imports that point up or sideways:\n" + "\n".join(sorted(upward))


def test_no_import_cycles() -> None:
    edges = graph()
    # Tarjan's strongly connected components; any component of two or more is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in edges:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from bot.outbox import queue\n", {"bot.outbox.queue"}),
        ("from bot.storage.keys import PartitionKeys\n", {"bot.storage.keys"}),
        ("def f():\n    import bot.sandbox\n", {"bot.sandbox"}),
    ],
)
def test_the_walker_sees_imports(tmp_path: Path, source: str, expected: set[str]) -> None:
    """The checks above would pass vacuously if the walker saw nothing."""
    probe = tmp_path / "probe.py"
    probe.write_text(source)
    assert imports_of(probe, "bot.core.probe") == expected
