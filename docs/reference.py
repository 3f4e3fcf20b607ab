"""Build the API reference of sinchbot's public surface, from its docstrings, with pdoc.

::

    python docs/reference.py                 # writes build/reference/index.html
    python docs/reference.py --output DIR

The reference covers what plugin authors import: :data:`MODULES` (``bot.conversation``,
the plugin entry point ``bot.plugins`` and the testing kit ``bot.testing``), each as its
``__all__`` lists it. pdoc needs no network (math and mermaid, which load from a CDN, stay
off). Two things pdoc cannot see are filled in from the source before rendering
(:func:`load`):

* a class's members are documented by the ``Attributes:`` section of its docstring (the
  Google style used throughout sinchbot): each entry becomes its member's docstring and
  leaves the class's text;
* a constant or type alias a package re-exports (``bot.conversation.ANY_STATE``) keeps the
  docstring written where it is defined (``bot.conversation.filters``);
* Sphinx's short references (``:class:`~datetime.timedelta```) lose their ``~``, which pdoc
  would print: the reference names the target in full, linked when it is documented; and a
  literal block's ``::`` becomes the colon Sphinx shows (the indented block after it is
  Markdown's code block already).

The build fails, exit status 1 with one line per problem, when pdoc warns (an annotation it
cannot resolve, a module that does not import...) or when anything the reference shows has
no docstring (:func:`undocumented`). ``.ci/run`` runs it, so a broken or incomplete
reference fails CI; ``tests/kit/test_reference.py`` checks the docstrings without writing
HTML.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pdoc.doc
import pdoc.render

ROOT = Path(__file__).resolve().parent.parent
"""The repository's root."""
OUTPUT = ROOT / "build" / "reference"
"""Where the reference is written by default (``build/`` is git-ignored)."""
MODULES = ("bot.conversation", "bot.plugins", "bot.testing")
"""The public surface. ``bot.conversation``'s submodules are its implementation: everything
public in them is re-exported by the package, and documented there."""

_OURS = ("bot.", "handlers.", "plugins.")
_SECTION = re.compile(r"^(?P<indent>[ \t]*)Attributes:[ \t]*$", re.MULTILINE)
_ENTRY = re.compile(r"^(?P<name>\w+)(?:[ \t]*\([^)]*\))?:[ \t]*(?P<text>.*)$")
_SHORT_REFERENCE = re.compile(r"(:(?:py:)?(?:mod|func|data|const|class|meth|attr|exc|obj):`)~")
_LITERAL_MARK = re.compile(r"(?<=\S)::$", re.MULTILINE)
_LONE_LITERAL_MARK = re.compile(r"^[ \t]*::[ \t]*\n", re.MULTILINE)


def sphinx_to_pdoc(docstring: str) -> str:
    """What pdoc's reStructuredText conversion leaves out: short references and literal
    block marks (see the module documentation).

    >>> sphinx_to_pdoc("A :class:`~datetime.timedelta`, as in::\\n\\n    x = 1\\n")
    'A :class:`datetime.timedelta`, as in:\\n\\n    x = 1\\n'
    """
    docstring = _SHORT_REFERENCE.sub(r"\1", docstring)
    return _LITERAL_MARK.sub(":", _LONE_LITERAL_MARK.sub("", docstring))


def split_attributes(docstring: str) -> tuple[str, dict[str, str]]:
    """The docstring without its ``Attributes:`` section, and the section's entries by
    name (each entry's text, continuation lines joined).

    >>> split_attributes("A thing.\\n\\nAttributes:\\n    size: How big,\\n        in cm.\\n")
    ('A thing.', {'size': 'How big, in cm.'})
    """
    found = _SECTION.search(docstring)
    if found is None:
        return docstring, {}
    indent = len(found["indent"].expandtabs())
    rest = docstring[found.end() :].split("\n")[1:]
    entries: dict[str, list[str]] = {}
    taken = entry_indent = 0
    for line in rest:
        width = len(line) - len(line.lstrip())
        if line.strip() and width <= indent:
            break  # the section ended: a line at the heading's depth or less
        taken += 1
        entry = _ENTRY.match(line.strip())
        if entry is not None and (not entries or width <= entry_indent):
            entry_indent = width
            entries[entry["name"]] = [entry["text"]]
        elif line.strip() and entries:
            entries[next(reversed(entries))].append(line.strip())
    remaining = docstring[: found.start()] + "\n".join(rest[taken:])
    return remaining.strip(), {
        name: " ".join(t for t in text if t) for name, text in entries.items()
    }


def _owners(modules: Iterable[str]) -> tuple[str, ...]:
    """The packages whose code the reference documents: sinchbot's and the documented
    modules' (``"bot."``...), as prefixes of module names."""
    return (*_OURS, *(f"{name.split('.')[0]}." for name in modules))


def _members(doc: pdoc.doc.Namespace[Any], owners: tuple[str, ...]) -> Iterator[pdoc.doc.Doc[Any]]:
    """The members the reference shows of a module or class: not private (``_name``) nor
    dunder, and not inherited from outside ``owners`` (``object``, ``Exception``...)."""
    for member in doc.members.values():
        if member.name.startswith("_"):
            continue
        if isinstance(doc, pdoc.doc.Class) and not f"{member.taken_from[0]}.".startswith(owners):
            continue
        yield member


def _attributes_of(cls: type, owners: tuple[str, ...]) -> dict[str, str]:
    """The ``Attributes:`` entries of ``cls`` and of its base classes in ``owners``
    (nearest first)."""
    found: dict[str, str] = {}
    for base in cls.__mro__:
        if f"{base.__module__}.".startswith(owners):
            for name, text in split_attributes(inspect.cleandoc(base.__doc__ or ""))[1].items():
                found.setdefault(name, text)
    return found


def _defined_docstring(name: str, value: object, owners: tuple[str, ...]) -> str:
    """The docstring of the variable ``name`` in the module of ``owners`` that defines it
    (one binding the same object under that name whose source documents it)."""
    for module_name, module in sorted(sys.modules.items()):
        if not f"{module_name}.".startswith(owners) or getattr(module, name, None) is not value:
            continue
        var = pdoc.doc.Module(module).get(name)
        if isinstance(var, pdoc.doc.Variable) and var.docstring.strip():
            return var.docstring
    return ""


def _fill_in(module: pdoc.doc.Module, owners: tuple[str, ...]) -> None:
    for member in _members(module, owners):
        if isinstance(member, pdoc.doc.Variable) and not member.docstring.strip():
            member.docstring = _defined_docstring(member.name, member.default_value, owners)
        if isinstance(member, pdoc.doc.Class):
            member.docstring = split_attributes(member.docstring)[0]
            attributes = _attributes_of(member.obj, owners)
            for child in _members(member, owners):
                if not child.docstring.strip() and child.name in attributes:
                    child.docstring = attributes[child.name]


def load(modules: Sequence[str] = MODULES) -> dict[str, pdoc.doc.Module]:
    """pdoc's documentation of ``modules``, by name, with the docstrings it cannot see
    filled in (see the module documentation)."""
    loaded = {name: pdoc.doc.Module.from_name(name) for name in modules}
    for module in loaded.values():
        _fill_in(module, _owners(loaded))
    for doc in walk(loaded):
        doc.docstring = sphinx_to_pdoc(doc.docstring)
    return loaded


def walk(modules: Mapping[str, pdoc.doc.Module]) -> Iterator[pdoc.doc.Doc[Any]]:
    """Everything the reference shows: the modules, their public names, and their classes'
    public members (inherited ones included, as pdoc shows them, but not what they inherit
    from outside the project: ``object``, ``Exception``, pydantic's ``BaseModel``...)."""
    owners = _owners(modules)
    for module in modules.values():
        yield module
        for member in _members(module, owners):
            yield member
            if isinstance(member, pdoc.doc.Class):
                yield from _members(member, owners)


def undocumented(modules: Mapping[str, pdoc.doc.Module] | None = None) -> list[str]:
    """What the reference shows without a docstring, as ``module.Name.member``
    (default: the reference of :data:`MODULES`)."""
    return [
        f"{doc.modulename}.{doc.qualname}" if doc.qualname else doc.modulename
        for doc in walk(load() if modules is None else modules)
        if not doc.docstring.strip()
    ]


def build(output: Path = OUTPUT) -> list[str]:
    """Write the HTML reference into ``output`` (``index.html``, one page per module,
    ``search.js``); returns the problems, an empty list when the reference is complete."""
    pdoc.render.configure(
        docformat="google",
        math=False,
        mermaid=False,
        show_source=False,
        footer_text="sinchbot: the plugin author's API",
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        modules = load()
        pages = {name: pdoc.render.html_module(doc, modules) for name, doc in modules.items()}
        index = pdoc.render.html_index(modules)
        search = pdoc.render.search_index(modules)
    for name, page in pages.items():
        path = output / f"{name.replace('.', '/')}.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    (output / "index.html").write_text(index, encoding="utf-8")
    (output / "search.js").write_text(search, encoding="utf-8")
    problems = [f"pdoc: {w.category.__name__}: {w.message}" for w in caught]
    return problems + [f"no docstring: {name}" for name in undocumented(modules)]


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: build, print the problems, exit 1 if there are any."""
    parser = argparse.ArgumentParser(description="Build sinchbot's API reference with pdoc.")
    parser.add_argument(
        "--output", type=Path, default=OUTPUT, help=f"default: {OUTPUT.relative_to(ROOT)}/"
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))  # this checkout's sinchbot, installed or not
    problems = build(args.output)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        print(f"the reference is incomplete: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"reference written to {args.output / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
