"""The subset of Apache Velocity that MessageMedia webhook templates use.

MessageMedia renders a webhook's body from a user-supplied Velocity template (see the API spec,
sections 1 and 5). The sandbox must render the same templates the same way, so this module
implements a small, faithful Velocity engine: a scanner that turns the template into tokens
(text, references, directives), a parser that builds a tree from them (so ``#if`` and
``#foreach`` nest), and an evaluator that walks the tree.

Supported syntax
----------------
* References ``$name``, ``$!name``, ``${name}``, ``$!{name}``, with property access
  (``$entry.key``, ``$a.b.c``: mapping keys or public attributes) and method calls with
  arguments (``$metadata.get('key')``, ``$metadata.entrySet()``, ``$esc.json($x)``).
* ``#if`` / ``#elseif`` / ``#else`` / ``#end`` and ``#foreach ($x in $list)`` ... ``#end``, also in
  the braced forms ``#{if}``, ``#{elseif}``, ``#{else}``, ``#{end}``, ``#{foreach}``; inside a loop
  ``$foreach.hasNext``, ``$foreach.count`` (1-based), ``$foreach.index`` (0-based),
  ``$foreach.first``, ``$foreach.last`` and ``$foreach.parent``.
* Conditions: references, ``'single'`` and ``"double"`` quoted strings (double-quoted strings
  interpolate references, so the Velocity idiom ``#if("$!x" == "")`` works), integer and decimal
  literals, ``true``/``false``/``null``, ``==`` ``!=`` ``<`` ``<=`` ``>`` ``>=`` ``&&`` ``||`` ``!``
  (and their word forms ``eq ne lt le gt ge and or not``) and parentheses.
* ``##`` line comments (the newline is part of the comment), ``#* ... *#`` block comments, and
  ``\\$`` / ``\\#`` escapes.
* The built-in tools ``$esc`` (``json``, ``url``, ``xml``) and ``$jsonUtils`` (``toJson``), always
  available unless the context supplies its own value under the same name.

Velocity semantics kept on purpose
----------------------------------
* A reference whose value is undefined or ``None`` renders as its own source text (``$foo``
  stays ``$foo``, ``$esc.json($missing)`` stays ``$esc.json($missing)``) unless it is quiet
  (``$!foo``), which renders nothing. Quietness only affects how the reference itself is
  rendered: ``$!x`` passed as a method argument still passes ``null``, exactly as in Velocity,
  so ``$esc.json($!x)`` renders literally when ``$x`` is undefined.
* ``#if`` truthiness follows Velocity 1.7 (and Velocity 2 with ``directive.if.empty_check =
  false``): ``null`` and ``false`` are false, *everything else is true*, including ``""``, ``0``
  and empty collections. ``render(..., empty_check=True)`` selects the Velocity 2 default
  instead, where empty strings, empty collections and zero are false too.
* ``==`` compares numbers numerically, values of related types with equality, and values of
  unrelated types by their Java-style string forms (so ``$version == 2`` holds for ``"2"``).
* Values render like Java's ``toString()``: ``true``/``false``, ``{k=v, k2=v2}``, ``[a, b]``.
* ``#foreach`` over ``null`` or a non-iterable value renders nothing; over a mapping it iterates
  the values (use ``$map.entrySet()`` for entries with ``.key`` and ``.value``).
* Identifiers are ``[A-Za-z_][A-Za-z0-9_]*`` (Velocity 2; ``$a-b`` is ``$a`` followed by ``-b``).
* Whitespace gobbling follows Velocity 2's default ``lines`` mode: a directive standing alone on
  its line takes its indentation and its line break with it; all other text passes through
  byte for byte.
* ``\\$x`` and ``\\#if`` render ``$x`` and ``#if``; a run of *n* backslashes before a reference or
  directive renders *n* // 2 backslashes and escapes the reference or directive when *n* is odd.
  Backslashes anywhere else are plain text.

Velocity directives the provider's templates never use (``#set``, ``#macro``, ``#parse``, ...)
are rejected with :class:`TemplateError` rather than silently rendered as text.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

__all__ = ["Template", "TemplateError", "parse", "render"]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_DIRECTIVES = frozenset({"if", "elseif", "else", "end", "foreach"})
_UNSUPPORTED = frozenset(
    {"set", "macro", "parse", "include", "evaluate", "define", "break", "stop"}
)
_WS = " \t\r\n"
_MAX_DEPTH = 64


class TemplateError(ValueError):
    """A template that cannot be parsed (or nests too deeply to render safely).

    Attributes:
        message: what is wrong, without the position.
        position: 0-based character offset in the template.
        line: 1-based line of ``position``.
        column: 1-based column of ``position``.
    """

    def __init__(self, message: str, position: int, template: str) -> None:
        position = max(0, min(position, len(template)))
        line = template.count("\n", 0, position) + 1
        column = position - (template.rfind("\n", 0, position) + 1) + 1
        super().__init__(f"{message} (line {line}, column {column})")
        self.message = message
        self.position = position
        self.line = line
        self.column = column


# --------------------------------------------------------------------------- tree


@dataclass(frozen=True, slots=True)
class _Text:
    text: str


@dataclass(frozen=True, slots=True)
class _Property:
    name: str


@dataclass(frozen=True, slots=True)
class _Call:
    name: str
    args: tuple[_Expr, ...]


@dataclass(frozen=True, slots=True)
class _Ref:
    name: str
    chain: tuple[_Property | _Call, ...]
    quiet: bool
    source: str


@dataclass(frozen=True, slots=True)
class _Literal:
    value: object


@dataclass(frozen=True, slots=True)
class _Interpolated:
    """A double-quoted string literal: a little template rendered to a string."""

    nodes: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Not:
    operand: _Expr


@dataclass(frozen=True, slots=True)
class _Logical:
    op: Literal["&&", "||"]
    left: _Expr
    right: _Expr


@dataclass(frozen=True, slots=True)
class _Compare:
    op: str
    left: _Expr
    right: _Expr


@dataclass(frozen=True, slots=True)
class _If:
    branches: tuple[tuple[_Expr, tuple[_Node, ...]], ...]
    orelse: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Foreach:
    var: str
    iterable: _Expr
    body: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Directive:
    """A directive token, before the parser pairs it with its ``#end``."""

    kind: str
    position: int
    expr: _Expr | None = None
    var: str = ""


_Expr: TypeAlias = _Ref | _Literal | _Interpolated | _Not | _Logical | _Compare
_Node: TypeAlias = _Text | _Ref | _If | _Foreach
_Token: TypeAlias = _Text | _Ref | _Directive


# --------------------------------------------------------------------------- scanner


class _Scanner:
    """Turns ``src[start:stop]`` into text, reference and directive tokens.

    References and directive arguments (conditions) are parsed here too: in Velocity they are
    lexical constructs, and their extent is only known once they are parsed.
    """

    def __init__(self, src: str, start: int, stop: int, *, in_string: bool, depth: int) -> None:
        self._src = src
        self._start = start
        self._stop = stop
        self._in_string = in_string
        self._depth = depth
        self._buf: list[str] = []
        self._out: list[_Token] = []

    def _error(self, message: str, position: int) -> TemplateError:
        return TemplateError(message, position, self._src)

    # -- main loop

    def tokens(self) -> list[_Token]:
        src, stop = self._src, self._stop
        i = self._start
        while i < stop:
            ch = src[i]
            if ch == "\\":
                i = self._backslashes(i)
            elif ch == "$":
                parsed = self._reference(i, self._depth)
                if parsed is None:
                    self._buf.append("$")
                    i += 1
                else:
                    self._emit(parsed[0])
                    i = parsed[1]
            elif ch == "#":
                i = self._hash(i)
            else:
                nxt = _find_any(src, "\\$#", i + 1, stop)
                self._buf.append(src[i:nxt])
                i = nxt
        self._flush()
        return self._out

    def _flush(self) -> None:
        if self._buf:
            text = "".join(self._buf)
            if self._in_string:
                text = text.replace('""', '"')
            self._buf = []
            if text:
                self._out.append(_Text(text))

    def _emit(self, token: _Ref | _Directive) -> None:
        self._flush()
        self._out.append(token)

    def _backslashes(self, i: int) -> int:
        src, stop = self._src, self._stop
        j = i
        while j < stop and src[j] == "\\":
            j += 1
        count = j - i
        if j < stop and self._special_at(j):
            self._buf.append("\\" * (count // 2))
            if count % 2:
                self._buf.append(src[j])
                return j + 1
            return j
        self._buf.append(src[i:j])
        return j

    def _special_at(self, i: int) -> bool:
        """Whether a reference or a directive starts at ``i`` (for escapes)."""
        src, stop = self._src, self._stop
        if src[i] == "$":
            j = i + 1
            if src.startswith("!", j, stop):
                j += 1
            if src.startswith("{", j, stop):
                j += 1
            return _IDENT.match(src, j, stop) is not None
        return self._directive_name(i) is not None

    def _hash(self, i: int) -> int:
        src, stop = self._src, self._stop
        if src.startswith("##", i, stop):
            newline = src.find("\n", i, stop)
            return stop if newline < 0 else newline + 1
        if src.startswith("#*", i, stop):
            close = src.find("*#", i + 2, stop)
            if close < 0:
                raise self._error("unterminated #* block comment", i)
            return close + 2
        named = self._directive_name(i)
        if named is None:
            self._buf.append("#")
            return i + 1
        name, after = named
        if name in _UNSUPPORTED:
            raise self._error(f"unsupported directive #{name}", i)
        directive, end = self._directive(name, i, after)
        end = self._gobble(i, end)
        self._emit(directive)
        return end

    def _directive_name(self, i: int) -> tuple[str, int] | None:
        src, stop = self._src, self._stop
        known = _DIRECTIVES | _UNSUPPORTED
        if src.startswith("{", i + 1, stop):
            match = _IDENT.match(src, i + 2, stop)
            if match is None or not src.startswith("}", match.end(), stop):
                return None
            return (match.group(), match.end() + 1) if match.group() in known else None
        match = _IDENT.match(src, i + 1, stop)
        if match is None or match.group() not in known:
            return None
        return match.group(), match.end()

    def _directive(self, name: str, start: int, after: int) -> tuple[_Directive, int]:
        if name in ("else", "end"):
            return _Directive(name, start), after
        j = self._ws(after)
        if not self._src.startswith("(", j, self._stop):
            raise self._error(f"#{name} needs its arguments in parentheses", j)
        if name == "foreach":
            return self._foreach_args(start, j + 1)
        expr, j = self._expression(j + 1, self._depth)
        j = self._expect(")", self._ws(j), f"expected ')' to close #{name}")
        return _Directive(name, start, expr), j

    def _foreach_args(self, start: int, i: int) -> tuple[_Directive, int]:
        src, stop = self._src, self._stop
        j = self._ws(i)
        if not src.startswith("$", j, stop):
            raise self._error("#foreach needs a loop variable like $entry", j)
        k = j + 1
        braced = src.startswith("{", k, stop)
        if braced:
            k += 1
        match = _IDENT.match(src, k, stop)
        if match is None:
            raise self._error("#foreach needs a loop variable like $entry", j)
        var, k = match.group(), match.end()
        if braced:
            k = self._expect("}", k, "expected '}' to close the loop variable")
        k = self._ws(k)
        word = _IDENT.match(src, k, stop)
        if word is None or word.group() != "in":
            raise self._error("expected 'in' in #foreach", k)
        iterable, k = self._expression(word.end(), self._depth)
        k = self._expect(")", self._ws(k), "expected ')' to close #foreach")
        return _Directive("foreach", start, iterable, var), k

    def _gobble(self, start: int, end: int) -> int:
        """Velocity's ``lines`` space gobbling for a directive alone on its line."""
        if self._in_string:
            return end
        src, stop = self._src, self._stop
        line_start = max(self._start, src.rfind("\n", self._start, start) + 1)
        indent = src[line_start:start]
        if indent.strip(" \t"):
            return end
        k = end
        while k < stop and src[k] in " \t":
            k += 1
        if src.startswith("\r\n", k, stop):
            k += 2
        elif src.startswith("\n", k, stop):
            k += 1
        elif k < stop:
            return end
        if indent:
            text = "".join(self._buf)
            if not text.endswith(indent):  # pragma: no cover - defensive, cannot happen
                return end
            self._buf = [text[: -len(indent)]]
        return k

    # -- references

    def _reference(self, i: int, depth: int) -> tuple[_Ref, int] | None:
        """Parse the reference at ``src[i] == '$'``; ``None`` if it is a plain ``$``."""
        src, stop = self._src, self._stop
        j = i + 1
        quiet = src.startswith("!", j, stop)
        if quiet:
            j += 1
        braced = src.startswith("{", j, stop)
        if braced:
            j += 1
        match = _IDENT.match(src, j, stop)
        if match is None:
            return None
        name, j = match.group(), match.end()
        chain: list[_Property | _Call] = []
        while src.startswith(".", j, stop):
            member = _IDENT.match(src, j + 1, stop)
            if member is None:
                break
            j = member.end()
            if src.startswith("(", j, stop):
                args, j = self._arguments(j + 1, depth + 1)
                chain.append(_Call(member.group(), args))
            else:
                chain.append(_Property(member.group()))
        if braced:
            j = self._expect("}", j, "expected '}' to close the reference")
        return _Ref(name, tuple(chain), quiet, src[i:j]), j

    def _arguments(self, i: int, depth: int) -> tuple[tuple[_Expr, ...], int]:
        j = self._ws(i)
        if self._src.startswith(")", j, self._stop):
            return (), j + 1
        args: list[_Expr] = []
        while True:
            expr, j = self._expression(j, depth)
            args.append(expr)
            j = self._ws(j)
            if self._src.startswith(",", j, self._stop):
                j += 1
            elif self._src.startswith(")", j, self._stop):
                return tuple(args), j + 1
            else:
                raise self._error("expected ',' or ')' in method arguments", j)

    # -- expressions (conditions and method arguments)

    def _expression(self, i: int, depth: int) -> tuple[_Expr, int]:
        if depth > _MAX_DEPTH:
            raise self._error("expression nested too deeply", i)
        left, i = self._and(i, depth)
        while True:
            op_end = self._operator(self._ws(i), ("||",), ("or",))
            if op_end is None:
                return left, i
            right, i = self._and(op_end[1], depth)
            left = _Logical("||", left, right)

    def _and(self, i: int, depth: int) -> tuple[_Expr, int]:
        left, i = self._equality(i, depth)
        while True:
            op_end = self._operator(self._ws(i), ("&&",), ("and",))
            if op_end is None:
                return left, i
            right, i = self._equality(op_end[1], depth)
            left = _Logical("&&", left, right)

    def _equality(self, i: int, depth: int) -> tuple[_Expr, int]:
        left, i = self._relational(i, depth)
        while True:
            op_end = self._operator(self._ws(i), ("==", "!="), ("eq", "ne"))
            if op_end is None:
                return left, i
            right, i = self._relational(op_end[1], depth)
            left = _Compare(op_end[0], left, right)

    def _relational(self, i: int, depth: int) -> tuple[_Expr, int]:
        left, i = self._unary(i, depth)
        while True:
            op_end = self._operator(self._ws(i), ("<=", ">=", "<", ">"), ("le", "ge", "lt", "gt"))
            if op_end is None:
                return left, i
            right, i = self._unary(op_end[1], depth)
            left = _Compare(op_end[0], left, right)

    def _unary(self, i: int, depth: int) -> tuple[_Expr, int]:
        j = self._ws(i)
        src, stop = self._src, self._stop
        if src.startswith("!", j, stop) and not src.startswith("!=", j, stop):
            operand, k = self._unary(j + 1, depth + 1)
            return _Not(operand), k
        word = _IDENT.match(src, j, stop)
        if word is not None and word.group() == "not":
            operand, k = self._unary(word.end(), depth + 1)
            return _Not(operand), k
        return self._primary(j, depth)

    _WORD_OPERATORS = {
        "or": "||",
        "and": "&&",
        "eq": "==",
        "ne": "!=",
        "lt": "<",
        "le": "<=",
        "gt": ">",
        "ge": ">=",
    }

    def _operator(
        self, j: int, symbols: tuple[str, ...], words: tuple[str, ...]
    ) -> tuple[str, int] | None:
        for symbol in symbols:
            if self._src.startswith(symbol, j, self._stop):
                return symbol, j + len(symbol)
        word = _IDENT.match(self._src, j, self._stop)
        if word is not None and word.group() in words:
            return self._WORD_OPERATORS[word.group()], word.end()
        return None

    def _primary(self, j: int, depth: int) -> tuple[_Expr, int]:
        if depth > _MAX_DEPTH:
            raise self._error("expression nested too deeply", j)
        src, stop = self._src, self._stop
        if j >= stop:
            raise self._error("unexpected end of template in an expression", j)
        ch = src[j]
        if ch == "(":
            expr, k = self._expression(j + 1, depth + 1)
            return expr, self._expect(")", self._ws(k), "expected ')'")
        if ch == "$":
            parsed = self._reference(j, depth)
            if parsed is None:
                raise self._error("expected a reference after '$'", j)
            return parsed
        if ch in "'\"":
            return self._string(j, depth)
        number = _NUMBER.match(src, j, stop)
        if number is not None:
            text = number.group()
            value: object = float(text) if "." in text else int(text)
            return _Literal(value), number.end()
        word = _IDENT.match(src, j, stop)
        if word is not None and word.group() in ("true", "false", "null"):
            constants: dict[str, object] = {"true": True, "false": False, "null": None}
            return _Literal(constants[word.group()]), word.end()
        raise self._error(f"unexpected {src[j]!r} in an expression", j)

    def _string(self, j: int, depth: int) -> tuple[_Expr, int]:
        src, stop = self._src, self._stop
        quote = src[j]
        k = j + 1
        while True:
            close = src.find(quote, k, stop)
            if close < 0:
                raise self._error("unterminated string literal", j)
            if src.startswith(quote, close + 1, stop):  # a doubled quote stands for itself
                k = close + 2
                continue
            break
        if quote == "'":
            return _Literal(src[j + 1 : close].replace("''", "'")), close + 1
        inner = _Scanner(src, j + 1, close, in_string=True, depth=depth + 1)
        nodes = _Parser(inner.tokens(), src, depth + 1).parse()
        if all(isinstance(node, _Text) for node in nodes):
            return _Literal("".join(node.text for node in nodes if isinstance(node, _Text))), (
                close + 1
            )
        return _Interpolated(nodes), close + 1

    # -- helpers

    def _ws(self, i: int) -> int:
        while i < self._stop and self._src[i] in _WS:
            i += 1
        return i

    def _expect(self, text: str, i: int, message: str) -> int:
        if not self._src.startswith(text, i, self._stop):
            raise self._error(message, i)
        return i + len(text)


def _find_any(src: str, chars: str, start: int, stop: int) -> int:
    """The index of the first of ``chars`` in ``src[start:stop]``, or ``stop``."""
    best = stop
    for ch in chars:
        found = src.find(ch, start, best)
        if found >= 0:
            best = found
    return best


# --------------------------------------------------------------------------- parser


class _Parser:
    """Pairs directives with their ``#end`` and builds the tree."""

    def __init__(self, tokens: list[_Token], src: str, depth: int = 0) -> None:
        self._tokens = tokens
        self._src = src
        self._i = 0
        self._depth = depth

    def parse(self) -> tuple[_Node, ...]:
        nodes, _ = self._block(frozenset(), self._depth)
        return nodes

    def _block(
        self, terminators: frozenset[str], depth: int
    ) -> tuple[tuple[_Node, ...], _Directive | None]:
        nodes: list[_Node] = []
        while self._i < len(self._tokens):
            token = self._tokens[self._i]
            self._i += 1
            if not isinstance(token, _Directive):
                nodes.append(token)
            elif token.kind in terminators:
                return tuple(nodes), token
            elif token.kind in ("if", "foreach"):
                if depth >= _MAX_DEPTH:
                    raise TemplateError("directives nested too deeply", token.position, self._src)
                nodes.append(
                    self._if(token, depth + 1)
                    if token.kind == "if"
                    else self._loop(token, depth + 1)
                )
            elif token.kind == "end":
                raise TemplateError(
                    "#end without a matching #if or #foreach", token.position, self._src
                )
            else:
                raise TemplateError(
                    f"#{token.kind} without a matching #if", token.position, self._src
                )
        return tuple(nodes), None

    def _if(self, opening: _Directive, depth: int) -> _If:
        branches: list[tuple[_Expr, tuple[_Node, ...]]] = []
        condition = opening.expr
        while True:
            assert condition is not None
            body, closing = self._block(frozenset({"elseif", "else", "end"}), depth)
            branches.append((condition, body))
            if closing is None:
                raise TemplateError("#if without a matching #end", opening.position, self._src)
            if closing.kind == "end":
                return _If(tuple(branches), ())
            if closing.kind == "else":
                orelse, end = self._block(frozenset({"end"}), depth)
                if end is None:
                    raise TemplateError("#if without a matching #end", opening.position, self._src)
                return _If(tuple(branches), orelse)
            condition = closing.expr

    def _loop(self, opening: _Directive, depth: int) -> _Foreach:
        body, closing = self._block(frozenset({"end"}), depth)
        if closing is None:
            raise TemplateError("#foreach without a matching #end", opening.position, self._src)
        assert opening.expr is not None
        return _Foreach(opening.var, opening.expr, body)


# --------------------------------------------------------------------------- runtime values


@dataclass(frozen=True, slots=True)
class _Entry:
    """A ``Map.Entry``: what ``$map.entrySet()`` yields."""

    key: object
    value: object


@dataclass(frozen=True, slots=True)
class _LoopInfo:
    """The ``$foreach`` object of one iteration."""

    index: int
    has_next: bool
    parent: _LoopInfo | None

    def property(self, name: str) -> object:
        values: dict[str, object] = {
            "index": self.index,
            "count": self.index + 1,
            "hasNext": self.has_next,
            "first": self.index == 0,
            "last": not self.has_next,
            "parent": self.parent,
        }
        return values.get(name)


class _EscapeTool:
    """The parts of Velocity Tools' ``EscapeTool`` that webhook templates use."""

    def json(self, value: object) -> str | None:
        """JSON string escaping without the surrounding quotes (commons-text ``escapeJson``)."""
        return None if value is None else _escape_json(_java_str(value))

    def url(self, value: object) -> str | None:
        """``application/x-www-form-urlencoded`` escaping in UTF-8 (Java's ``URLEncoder``)."""
        return None if value is None else _escape_url(_java_str(value))

    def xml(self, value: object) -> str | None:
        """Escape the five XML special characters."""
        if value is None:
            return None
        text = _java_str(value)
        for char, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;")):
            text = text.replace(char, entity)
        return text.replace("'", "&apos;")

    def __repr__(self) -> str:
        return "EscapeTool"


class _JsonUtils:
    """MessageMedia's ``$jsonUtils``: serialise a value as compact JSON."""

    def toJson(self, value: object) -> str:  # camelCase: the name templates call
        """The value as compact JSON (``null`` for ``None``)."""
        return json.dumps(_jsonable(value), ensure_ascii=False, separators=(",", ":"))

    def __repr__(self) -> str:
        return "JsonUtils"


_TOOLS: dict[str, object] = {"esc": _EscapeTool(), "jsonUtils": _JsonUtils()}

_JSON_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "/": "\\/",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _escape_json(text: str) -> str:
    r"""Escape like commons-text ``StringEscapeUtils.escapeJson``.

    Quotes, backslashes and ``/`` get a backslash, control characters use the short forms or
    ``\uXXXX``, and everything outside printable ASCII becomes ``\uXXXX`` (UTF-16 units, so
    astral characters become surrogate pairs).
    """
    parts: list[str] = []
    for char in text:
        escaped = _JSON_ESCAPES.get(char)
        if escaped is not None:
            parts.append(escaped)
            continue
        code = ord(char)
        if 0x20 <= code <= 0x7F:
            parts.append(char)
        elif code > 0xFFFF:
            code -= 0x10000
            parts.append(f"\\u{0xD800 + (code >> 10):04X}\\u{0xDC00 + (code & 0x3FF):04X}")
        else:
            parts.append(f"\\u{code:04X}")
    return "".join(parts)


_URL_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-*_")


def _escape_url(text: str) -> str:
    parts: list[str] = []
    for char in text:
        if char in _URL_SAFE:
            parts.append(char)
        elif char == " ":
            parts.append("+")
        else:
            parts.extend(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
    return "".join(parts)


def _jsonable(value: object) -> object:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, _Entry):
        return {_java_str(value.key): _jsonable(value.value)}
    if isinstance(value, Mapping):
        return {_java_str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, bytes | bytearray):
        return _java_str(value)
    if isinstance(value, Iterable):
        return [_jsonable(item) for item in value]
    return _java_str(value)


def _java_str(value: object) -> str:
    """The value as Java's ``toString()`` would render it (``None`` as ``null``)."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    if isinstance(value, _Entry):
        return f"{_java_str(value.key)}={_java_str(value.value)}"
    if isinstance(value, Mapping):
        items = ", ".join(f"{_java_str(k)}={_java_str(v)}" for k, v in value.items())
        return "{" + items + "}"
    if isinstance(value, list | tuple | set | frozenset):
        return "[" + ", ".join(_java_str(item) for item in value) + "]"
    return str(value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_builtin(value: object) -> bool:
    return type(value).__module__ == "builtins"


def _get_property(value: object, name: str) -> object:
    if isinstance(value, Mapping):
        return value.get(name)
    if isinstance(value, _Entry):
        return {"key": value.key, "value": value.value}.get(name)
    if isinstance(value, _LoopInfo):
        return value.property(name)
    if _is_builtin(value) or name.startswith("_"):
        return None
    attribute = getattr(value, name, None)
    return None if callable(attribute) else attribute


def _java_getter(name: str) -> str | None:
    """``getKey`` → ``key``, ``isFirst`` → ``first``; ``None`` for other names."""
    for prefix in ("get", "is"):
        rest = name[len(prefix) :]
        if name.startswith(prefix) and rest[:1].isupper():
            return rest[0].lower() + rest[1:]
    return None


def _call_method(value: object, name: str, args: list[object]) -> object:
    """Call a Java-style method; ``None`` (Velocity's ``null``) when there is no such method."""
    if name == "toString" and not args:
        return _java_str(value)
    if isinstance(value, Mapping):
        return _map_method(value, name, args)
    if isinstance(value, str):
        return _string_method(value, name, args)
    if isinstance(value, Sequence):
        return _list_method(value, name, args)
    if isinstance(value, _Entry | _LoopInfo):
        prop = "hasNext" if name == "hasNext" else _java_getter(name)
        return None if args or prop is None else _get_property(value, prop)
    if _is_builtin(value) or name.startswith("_"):
        return None
    method = getattr(value, name, None)
    if not callable(method):
        return None
    try:
        inspect.signature(method).bind(*args)
    except TypeError:
        return None
    except ValueError:  # pragma: no cover - callables without a signature
        pass
    result: object = method(*args)
    return result


def _map_method(value: Mapping[object, object], name: str, args: list[object]) -> object:
    if not args:
        nullary: dict[str, object] = {
            "size": len(value),
            "isEmpty": not value,
        }
        if name in nullary:
            return nullary[name]
        if name == "entrySet":
            return [_Entry(key, item) for key, item in value.items()]
        if name == "keySet":
            return list(value.keys())
        if name == "values":
            return list(value.values())
        return None
    if len(args) == 1:
        if name == "get":
            return _lookup_key(value, args[0])
        if name == "containsKey":
            try:
                return args[0] in value
            except TypeError:  # unhashable key
                return False
        if name == "containsValue":
            return any(_equals(item, args[0]) for item in value.values())
    return None


def _lookup_key(value: Mapping[object, object], key: object) -> object:
    try:
        return value.get(key)
    except TypeError:  # unhashable key
        return None


def _string_method(value: str, name: str, args: list[object]) -> object:
    if not args:
        nullary: dict[str, object] = {
            "length": len(value),
            "isEmpty": not value,
            "trim": value.strip(" \t\r\n\f\v\x00"),
            "toUpperCase": value.upper(),
            "toLowerCase": value.lower(),
        }
        return nullary.get(name)
    if len(args) == 1 and isinstance(args[0], str):
        unary: dict[str, object] = {
            "equals": value == args[0],
            "contains": args[0] in value,
            "startsWith": value.startswith(args[0]),
            "endsWith": value.endswith(args[0]),
        }
        return unary.get(name)
    return None


def _list_method(value: Sequence[object], name: str, args: list[object]) -> object:
    if not args:
        return {"size": len(value), "isEmpty": not value}.get(name)
    if len(args) == 1:
        if name == "get":
            index = args[0]
            if _is_number(index) and isinstance(index, int) and 0 <= index < len(value):
                return value[index]
            return None
        if name == "contains":
            return any(_equals(item, args[0]) for item in value)
    return None


def _equals(left: object, right: object) -> bool:
    if left is None or right is None:
        return left is None and right is None
    if _is_number(left) and _is_number(right):
        return left == right
    related = isinstance(left, type(right)) or isinstance(right, type(left))
    if related and isinstance(left, bool) == isinstance(right, bool):
        return left == right
    return _java_str(left) == _java_str(right)


_ORDERINGS: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _compare(op: str, left: object, right: object) -> bool:
    """``==``/``!=`` by :func:`_equals`; orderings for two numbers or two strings, else false."""
    if op == "==":
        return _equals(left, right)
    if op == "!=":
        return not _equals(left, right)
    comparable = (_is_number(left) and _is_number(right)) or (
        isinstance(left, str) and isinstance(right, str)
    )
    return comparable and bool(_ORDERINGS[op](left, right))


# --------------------------------------------------------------------------- evaluator


class _Renderer:
    def __init__(self, context: Mapping[str, object], *, empty_check: bool) -> None:
        self._context = context
        self._empty_check = empty_check
        self._scopes: list[dict[str, object]] = []

    def render(self, nodes: tuple[_Node, ...], out: list[str]) -> None:
        for node in nodes:
            if isinstance(node, _Text):
                out.append(node.text)
            elif isinstance(node, _Ref):
                value = self.evaluate(node)
                if value is not None:
                    out.append(_java_str(value))
                elif not node.quiet:
                    out.append(node.source)
            elif isinstance(node, _If):
                self._render_if(node, out)
            else:
                self._render_foreach(node, out)

    def _render_if(self, node: _If, out: list[str]) -> None:
        for condition, body in node.branches:
            if self.truthy(self.evaluate(condition)):
                self.render(body, out)
                return
        self.render(node.orelse, out)

    def _render_foreach(self, node: _Foreach, out: list[str]) -> None:
        items = _iteration_items(self.evaluate(node.iterable))
        parent = self._lookup("foreach")
        scope: dict[str, object] = {}
        self._scopes.append(scope)
        try:
            for index, item in enumerate(items):
                has_next = index + 1 < len(items)
                loop = _LoopInfo(index, has_next, parent if isinstance(parent, _LoopInfo) else None)
                scope[node.var] = item
                scope["foreach"] = loop
                scope["velocityCount"] = index + 1
                scope["velocityHasNext"] = has_next
                self.render(node.body, out)
        finally:
            self._scopes.pop()

    def _lookup(self, name: str) -> object:
        for scope in reversed(self._scopes):
            if name in scope:
                return scope[name]
        if name in self._context:
            return self._context[name]
        return _TOOLS.get(name)

    def truthy(self, value: object) -> bool:
        if value is None:
            return False
        if isinstance(value, bool):
            return value
        if not self._empty_check:
            return True
        if _is_number(value):
            return value != 0
        if isinstance(value, str | Mapping | Sequence | set | frozenset):
            return len(value) > 0
        return True

    def evaluate(self, expr: _Expr) -> object:
        if isinstance(expr, _Ref):
            value = self._lookup(expr.name)
            for part in expr.chain:
                if value is None:
                    return None
                if isinstance(part, _Property):
                    value = _get_property(value, part.name)
                else:
                    args = [self.evaluate(arg) for arg in part.args]
                    value = _call_method(value, part.name, args)
            return value
        if isinstance(expr, _Literal):
            return expr.value
        if isinstance(expr, _Interpolated):
            out: list[str] = []
            self.render(expr.nodes, out)
            return "".join(out)
        if isinstance(expr, _Not):
            return not self.truthy(self.evaluate(expr.operand))
        if isinstance(expr, _Logical):
            left = self.truthy(self.evaluate(expr.left))
            if expr.op == "&&":
                return left and self.truthy(self.evaluate(expr.right))
            return left or self.truthy(self.evaluate(expr.right))
        return _compare(expr.op, self.evaluate(expr.left), self.evaluate(expr.right))


def _iteration_items(value: object) -> list[object]:
    if value is None or isinstance(value, str | bytes | bytearray):
        return []
    if isinstance(value, Mapping):
        return list(value.values())
    if isinstance(value, Iterable):
        return list(value)
    return []


# --------------------------------------------------------------------------- public API


class Template:
    """A parsed template, ready to render any number of times (it is immutable)."""

    __slots__ = ("_nodes", "source")

    def __init__(self, source: str) -> None:
        """Parse ``source``; raises :class:`TemplateError` if it is not a valid template."""
        self.source = source
        tokens = _Scanner(source, 0, len(source), in_string=False, depth=0).tokens()
        self._nodes = _Parser(tokens, source).parse()

    def render(self, context: Mapping[str, object], *, empty_check: bool = False) -> str:
        """Render with ``context`` as the template's variables.

        ``esc`` and ``jsonUtils`` are provided unless ``context`` has its own. ``empty_check``
        selects Velocity 2's ``#if`` rule (empty strings, collections and zero are false)
        instead of the Velocity 1.7 rule (only ``null`` and ``false`` are false).
        """
        out: list[str] = []
        _Renderer(context, empty_check=empty_check).render(self._nodes, out)
        return "".join(out)

    def __repr__(self) -> str:
        return f"Template({self.source!r})"


@functools.lru_cache(maxsize=256)
def parse(template: str) -> Template:
    """Parse (and cache) a template; raises :class:`TemplateError` on a syntax error."""
    return Template(template)


def render(template: str, context: Mapping[str, object], *, empty_check: bool = False) -> str:
    """Render a Velocity ``template`` with ``context``; see :meth:`Template.render`.

    Raises :class:`TemplateError` (a :class:`ValueError`) if the template cannot be parsed.
    """
    return parse(template).render(context, empty_check=empty_check)
