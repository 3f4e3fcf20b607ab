"""bot.core.fastjson: orjson and the standard library write and read the same values, and
refuse the same ones."""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.core import fastjson


def stdlib(value: Any, **options: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, **options)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # it does not change
@given(value=json_values)
def test_dumps_and_loads_agree_with_the_standard_library(json_library: str, value: Any) -> None:
    text = fastjson.dumps(value)
    assert json.loads(text) == json.loads(stdlib(value))
    assert fastjson.loads(text) == value
    assert fastjson.loads(text.encode()) == value
    assert fastjson.dumps_bytes(value) == text.encode()


@pytest.mark.parametrize(
    "value",
    [
        {"a": [1, 2.5, None, True], "é": "ça va 😀", "nested": {"x": ""}},
        'quote " backslash \\ newline \n tab \t nul \x00 \u2028',
        2**64 + 1,  # beyond orjson: the standard library writes it
        "lone \ud83d surrogate",  # beyond orjson too
        {1: "int key", None: "none key"},
        [],
        {},
    ],
)
def test_dumps_writes_what_the_standard_library_writes(json_library: str, value: Any) -> None:
    assert fastjson.dumps(value) == stdlib(value)


def test_default_gets_what_the_standard_library_does_not_know(json_library: str) -> None:
    at = datetime(2026, 5, 1, 9, 30, tzinfo=UTC)

    @dataclasses.dataclass
    class Point:
        x: int

    value = {"at": at, "point": Point(1)}
    assert fastjson.dumps(value, default=str) == stdlib(value, default=str)
    for bad in (at, Point(1), {1, 2}, object()):
        with pytest.raises(TypeError):
            fastjson.dumps(bad)
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="ircular"):
        fastjson.dumps(loop)


@pytest.mark.parametrize(
    "document",
    [
        '{"a": 1, "a": 2}',
        '"\\ud83d\\ude00"',
        '"lone \\ud83d"',  # the standard library reads it; orjson refuses it
        "NaN",
        "[1e400, -0.0, 12345678901234567890123]",
        '{"billing_units": -9223372036854775809}',  # orjson alone would read a float
        '  {"x" : [ ] }  ',
    ],
)
def test_loads_reads_what_the_standard_library_reads(json_library: str, document: str) -> None:
    expected = json.loads(document)
    got = fastjson.loads(document)
    if isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == expected
        assert fastjson.loads(document.encode()) == expected


def test_loads_reads_utf16_bytes_like_the_standard_library(json_library: str) -> None:
    body = '{"content": "hé"}'.encode("utf-16")
    assert fastjson.loads(body) == json.loads(body)


@pytest.mark.parametrize("document", ["", "{", "[1,]", "{'a': 1}", "\xff", b"\xff\xfe\x00"])
def test_loads_refuses_what_the_standard_library_refuses(
    json_library: str, document: str | bytes
) -> None:
    with pytest.raises((json.JSONDecodeError, UnicodeDecodeError)) as expected:
        json.loads(document)
    with pytest.raises(type(expected.value)):
        fastjson.loads(document)


def test_use_names_the_backend() -> None:
    previous = fastjson.backend()
    try:
        assert fastjson.use("stdlib") == "stdlib"
        assert fastjson.backend() == "stdlib"
        assert fastjson.use("auto") in ("orjson", "stdlib")
        with pytest.raises(ValueError, match="one of auto, orjson, stdlib"):
            fastjson.use("simplejson")
    finally:
        fastjson.use(previous)
