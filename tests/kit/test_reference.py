"""The API reference of the public surface (``docs/reference.py``, pdoc) is complete: it
builds without a warning, and everything it shows has a docstring; its check names what
has none."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_reference", ROOT / "docs" / "reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reference = _load_script()


def test_every_name_in_the_reference_has_a_docstring() -> None:
    assert reference.MODULES == ("bot.conversation", "bot.plugins", "bot.testing")
    assert reference.undocumented() == []


def test_the_reference_builds_without_warnings(tmp_path: Path) -> None:
    assert reference.build(tmp_path) == []
    page = (tmp_path / "bot" / "conversation.html").read_text()
    assert 'id="Context.text"' in page
    assert "The message's content as the handset typed it" in page
    assert 'id="Context.data"' in page  # an attribute, documented by Context's docstring
    assert (tmp_path / "index.html").exists()
    assert "cdn" not in (tmp_path / "bot" / "testing.html").read_text().lower()


def test_the_check_names_what_has_no_docstring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "reference_sample.py").write_text(
        textwrap.dedent(
            '''
            """A sample module."""

            __all__ = ["LIMIT", "Thing", "bare"]

            LIMIT = 3


            def bare() -> None:
                pass


            class Thing:
                """A thing.

                Attributes:
                    size: How big,
                        in centimetres.
                """

                def __init__(self) -> None:
                    self.size = 1
                    self.colour = "red"

                def paint(self) -> None:
                    pass
            '''
        )
    )
    monkeypatch.syspath_prepend(tmp_path)
    docs = reference.load(["reference_sample"])
    assert sorted(reference.undocumented(docs)) == [
        "reference_sample.LIMIT",
        "reference_sample.Thing.colour",
        "reference_sample.Thing.paint",
        "reference_sample.bare",
    ]
    thing = docs["reference_sample"].get("Thing")
    assert thing.docstring == "A thing."  # the Attributes: section went to the members
    assert docs["reference_sample"].get("Thing.size").docstring == "How big, in centimetres."
