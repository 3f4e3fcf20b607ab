"""Every code block of docs/plugins.md runs, so the plugin author's guide cannot drift from
the code it describes.

Each ```` ```python ```` block is a *chain* of its own, or joins one; a chain runs as a
module: its code is compiled with docs/plugins.md as the file name and each line at its
line number in the guide, so a traceback points into the guide, then executed in a fresh
module (registered in ``sys.modules``, as an import would); then every ``test_*`` function
it defines runs, sync or async, given the fixtures its parameters name (``sinchbot_redis``:
the kit's redis-server). A failure is reported as ``docs/plugins.md:<line>``.

An HTML comment on the line before a block's opening fence (GitHub does not show it) says
how the block joins in:

``<!-- continue -->``
    The block goes on with the chain before it (same module): a fragment that uses what
    the block above defined.
``<!-- module: NAME -->``
    The chain is importable as ``NAME`` by the chains after it (the worked example's plugin
    package, imported by its tests); it is run first when a later chain needs it.

Other blocks are checked as far as they can be without a program around them: every
```` ```toml ```` block parses, and the ``sinchbot plugins`` listing shown is what the
command prints.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
import tomllib
import traceback
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bot.cli.main import main
from bot.testing import sinchbot_redis  # noqa: F401 (the kit's fixture, as a plugin's conftest loads it)

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "plugins.md"

_FENCE = re.compile(r"^```(?P<lang>[\w+-]*)\s*$")
_MARK = re.compile(r"^<!--\s*(?P<what>continue|module:\s*(?P<name>[\w.]+))\s*-->\s*$")


@dataclass
class Block:
    """A fenced code block: its language, first code line (1-based) and text."""

    lang: str
    line: int
    code: list[str]
    mark: str | None = None
    """The marker comment before it: ``"continue"``, ``"module"`` or ``None``."""
    module: str | None = None


@dataclass
class Chain:
    """Python blocks run as one module."""

    blocks: list[Block] = field(default_factory=list)
    module: str | None = None
    """The name later chains import it by (``<!-- module: NAME -->``), else ``None``."""
    length: int = 0
    """The number of lines of the guide it is from."""

    @property
    def line(self) -> int:
        return self.blocks[0].line

    @property
    def name(self) -> str:
        return self.module or f"plugin_guide_line_{self.line}"

    def source(self) -> str:
        """The chain's code with every line at its line number in the guide (the guide's
        other lines blank)."""
        lines = [""] * self.length
        for block in self.blocks:
            lines[block.line - 1 : block.line - 1 + len(block.code)] = block.code
        return "\n".join(lines) + "\n"


def blocks(text: str) -> Iterator[Block]:
    """The fenced code blocks of a Markdown text, with the marker comment before each."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None or not opening["lang"]:
            i += 1
            continue
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        mark = _MARK.match(before.strip())
        end = i + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        if end == len(lines):
            raise ValueError(f"line {i + 1}: the code block is never closed")
        yield Block(
            lang=opening["lang"].lower(),
            line=i + 2,
            code=lines[i + 1 : end],
            mark=None if mark is None else mark["what"].split(":")[0],
            module=None if mark is None else mark["name"],
        )
        i = end + 1


def chains(text: str) -> list[Chain]:
    """The Python chains of a Markdown text, in order."""
    found: list[Chain] = []
    for block in blocks(text):
        if block.lang not in ("python", "py"):
            continue
        if block.mark == "continue":
            if not found:
                raise ValueError(f"line {block.line}: <!-- continue --> with no block before it")
            found[-1].blocks.append(block)
            continue
        found.append(Chain([block], module=block.module, length=len(text.splitlines())))
    return found


def _guide_line(exc: BaseException, path: Path) -> int | None:
    """The deepest line of ``path`` in the traceback of ``exc``."""
    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
    if isinstance(exc, SyntaxError) and exc.filename == str(path):
        lines.append(exc.lineno or 0)
    return lines[-1] if lines and lines[-1] else None


def _where(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _load(chain: Chain, path: Path) -> types.ModuleType:
    """Run the chain's code as the module ``chain.name``."""
    module = types.ModuleType(chain.name)
    module.__file__ = str(path)
    sys.modules[chain.name] = module
    try:
        code = compile(chain.source(), str(path), "exec", dont_inherit=True)
        exec(code, module.__dict__)
    except BaseException:
        del sys.modules[chain.name]
        raise
    return module


async def run_chain(
    chain: Chain, everything: list[Chain], path: Path, fixtures: pytest.FixtureRequest | None
) -> list[str]:
    """Run ``chain`` (after the module chains before it that are not loaded yet) and the
    tests it defines; returns the names of the tests run. Any failure is an
    :class:`AssertionError` naming the guide's line."""
    needed = [c for c in everything if c.module and c.line < chain.line]
    current: Chain = chain
    try:
        for dependency in needed:
            if dependency.name not in sys.modules:
                current = dependency
                _load(dependency, path)
        current = chain
        loaded = sys.modules.get(chain.name) if chain.module else None
        module = loaded or _load(chain, path)
        ran: list[str] = []
        for name, function in list(vars(module).items()):
            if not (name.startswith("test_") and inspect.isfunction(function)):
                continue
            if function.__module__ != module.__name__:
                continue  # imported from elsewhere
            arguments: dict[str, Any] = {}
            for parameter in inspect.signature(function).parameters:
                if fixtures is None:
                    raise TypeError(f"{name}() asks for {parameter!r}, and no fixtures are given")
                arguments[parameter] = fixtures.getfixturevalue(parameter)
            result = function(**arguments)
            if inspect.isawaitable(result):
                await result
            ran.append(name)
        return ran
    except Exception as exc:
        line = _guide_line(exc, path) or current.line
        raise AssertionError(
            f"{_where(path)}:{line}: the block starting at line {current.line} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


TEXT = GUIDE.read_text()
CHAINS = chains(TEXT)


@pytest.mark.parametrize("chain", CHAINS, ids=[f"line-{c.line}" for c in CHAINS])
async def test_the_guides_python_block_runs(chain: Chain, request: pytest.FixtureRequest) -> None:
    await run_chain(chain, CHAINS, GUIDE, request)


def test_the_guides_toml_blocks_parse() -> None:
    tomls = [b for b in blocks(TEXT) if b.lang == "toml"]
    assert tomls
    for block in tomls:
        try:
            tomllib.loads("\n".join(block.code))
        except tomllib.TOMLDecodeError as exc:
            raise AssertionError(f"docs/plugins.md:{block.line}: {exc}") from None


def test_the_guide_shows_what_sinchbot_plugins_prints(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    command = "$ SINCHBOT_PLUGINS=feedback,appointments sinchbot plugins"
    [shown] = [b for b in blocks(TEXT) if b.code and b.code[0] == command]
    for name in [n for n in list(__import__("os").environ) if n.startswith("SINCHBOT_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SINCHBOT_PLUGINS", "feedback,appointments")
    assert main(["plugins"]) == 0
    printed = capsys.readouterr().out.splitlines()
    for line in shown.code[1:]:
        assert line in printed, f"docs/plugins.md:{shown.line}: sinchbot plugins prints {printed}"
    assert main(["plugins", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["enabled"] == ["feedback", "appointments"]


# ---------------------------------------------------------------------- the machinery itself

SAMPLE = """\
# A guide

```python
VALUE = 41
```

Prose.

<!-- continue -->
```python
VALUE += 1


def test_value() -> None:
    assert VALUE == 42
```

<!-- module: guide_sample_plugin -->
```python
NAME = "sample"
```

```python
from guide_sample_plugin import NAME


async def test_name() -> None:
    assert NAME == "sample"
    raise RuntimeError("broken on purpose")
```
"""


async def test_blocks_join_import_and_fail_with_their_line_in_the_guide(tmp_path: Path) -> None:
    path = tmp_path / "guide.md"
    path.write_text(SAMPLE)
    found = chains(SAMPLE)
    assert [(c.line, c.module, len(c.blocks)) for c in found] == [
        (4, None, 2),
        (20, "guide_sample_plugin", 1),
        (24, None, 1),
    ]
    assert await run_chain(found[0], found, path, None) == ["test_value"]
    with pytest.raises(AssertionError, match=r"guide\.md:29: the block starting at line 24 "):
        await run_chain(found[2], found, path, None)
    assert sys.modules.pop("guide_sample_plugin").NAME == "sample"  # loaded on demand

    path.write_text(SAMPLE.replace("VALUE += 1", "VALUE += 2"))
    with pytest.raises(AssertionError, match=r"guide\.md:15: .*AssertionError"):
        await run_chain(chains(path.read_text())[0], found, path, None)
    path.write_text(SAMPLE.replace("VALUE = 41", "VALUE = = 41"))
    with pytest.raises(AssertionError, match=r"guide\.md:4: .*SyntaxError"):
        await run_chain(chains(path.read_text())[0], found, path, None)
