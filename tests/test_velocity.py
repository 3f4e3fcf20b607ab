"""Tests for bot.sandbox.velocity: the Velocity subset MessageMedia webhook templates use."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.sandbox.velocity import Template, TemplateError, parse, render

# The MO ("When a message is received") template of the newer connector binding, verbatim.
MO_TEMPLATE = (
    '{#if($version == 2)"contact_message":$jsonUtils.toJson($contact_message),#end'
    '#if($moContent)"content":"$esc.json($moContent)",#end'
    '#if($messageId)"message_id": "$messageId",#end"type":"$type",'
    '#if($moId)"reply_id":"$moId",#end#if($statusCode)"status_code":"$statusCode",#end'
    '#if($status)"status":"$status",#end'
    '#if($submittedTimestamp)"submitted_date":"$submittedTimestamp",#end'
    '#if($receivedTimestamp)"date_received":"$receivedTimestamp",#end'
    '"source_address":"$sourceAddress",'
    '#if($destinationAddress)"destination_address":"$destinationAddress",#end'
    '"attachments": [#foreach ($entry in $attachments){"attachment_type":"$entry.contentType",'
    '"attachment_content":"$entry.base64","attachment_name":"$entry.originalName"}'
    "#if($foreach.hasNext),#end#end],"
    '"metadata":[#foreach ($entry in $metadata.entrySet()){"metadata_key":"$entry.key",'
    '"metadata_value":"$esc.json($entry.value)"}#if($foreach.hasNext),#end#end]}'
)
ATTACHMENTS_LOOP = (
    '#foreach ($entry in $attachments){"attachment_type":"$entry.contentType",'
    '"attachment_content":"$entry.base64","attachment_name":"$entry.originalName"}'
    "#if($foreach.hasNext),#end#end"
)
METADATA_LOOP = (
    '#foreach ($entry in $metadata.entrySet()){"metadata_key":"$entry.key",'
    '"metadata_value":"$esc.json($entry.value)"}#if($foreach.hasNext),#end#end'
)
# The DR ("When delivery receipt is received") template, with the spec's "…same foreach…"
# abbreviations expanded to the loops of the MO template.
DR_TEMPLATE = (
    '{"delivery_report_id":"$drId",#if($statusCode)"status_code":"$statusCode",#end'
    '#if($status)"status":"$status",#end'
    '#if($destinationAddress)"destination_address":"$destinationAddress",#end'
    '#if($submittedTimestamp)"submitted_date":"$submittedTimestamp",#end'
    '#if($receivedTimestamp)"date_received":"$receivedTimestamp",#end'
    '"type":"$type","message_id":"$messageId","source_address":"$sourceAddress",'
    '"content":"$esc.json($mtContent)","attachments":[' + ATTACHMENTS_LOOP + "],"
    '"metadata":[' + METADATA_LOOP + "]}"
)


def test_templates_are_verbatim() -> None:
    """Guard against the test copies drifting from the spec's text."""
    assert MO_TEMPLATE.count("#if(") == 11
    assert MO_TEMPLATE.count("#end") == 13
    assert ATTACHMENTS_LOOP in MO_TEMPLATE
    assert METADATA_LOOP in MO_TEMPLATE


# ------------------------------------------------------------------ the real templates


def test_mo_sms_reply_with_metadata() -> None:
    context: dict[str, object] = {
        "moContent": "Yes please",
        "messageId": "877c19ef-fa2e-4cec-827a-e1df9b5509f7",
        "type": "SMS",
        "moId": "a175e797-2b54-468b-9850-41a3eab32f74",
        "submittedTimestamp": "2016-12-07T08:43:00.850Z",
        "receivedTimestamp": "2016-12-07T08:44:00.850Z",
        "sourceAddress": "+61491570156",
        "destinationAddress": "+61491593156",
        "attachments": [],
        "metadata": {"conv": "42"},
    }
    body = render(MO_TEMPLATE, context)
    # The spec's rendered example, field for field and in order.
    assert body == (
        '{"content":"Yes please","message_id": "877c19ef-fa2e-4cec-827a-e1df9b5509f7",'
        '"type":"SMS","reply_id":"a175e797-2b54-468b-9850-41a3eab32f74",'
        '"submitted_date":"2016-12-07T08:43:00.850Z","date_received":"2016-12-07T08:44:00.850Z",'
        '"source_address":"+61491570156","destination_address":"+61491593156",'
        '"attachments": [],"metadata":[{"metadata_key":"conv","metadata_value":"42"}]}'
    )
    assert json.loads(body) == {
        "content": "Yes please",
        "message_id": "877c19ef-fa2e-4cec-827a-e1df9b5509f7",
        "type": "SMS",
        "reply_id": "a175e797-2b54-468b-9850-41a3eab32f74",
        "submitted_date": "2016-12-07T08:43:00.850Z",
        "date_received": "2016-12-07T08:44:00.850Z",
        "source_address": "+61491570156",
        "destination_address": "+61491593156",
        "attachments": [],
        "metadata": [{"metadata_key": "conv", "metadata_value": "42"}],
    }


def test_mo_sms_with_several_metadata_entries_keeps_order() -> None:
    context: dict[str, object] = {
        "moContent": "hi",
        "type": "SMS",
        "moId": "r1",
        "sourceAddress": "+61491570156",
        "metadata": {"a": "1", "b": "2", "c": "3"},
    }
    assert json.loads(render(MO_TEMPLATE, context)) == {
        "content": "hi",
        "type": "SMS",
        "reply_id": "r1",
        "source_address": "+61491570156",
        "attachments": [],
        "metadata": [
            {"metadata_key": "a", "metadata_value": "1"},
            {"metadata_key": "b", "metadata_value": "2"},
            {"metadata_key": "c", "metadata_value": "3"},
        ],
    }


def test_mo_mms_with_attachments() -> None:
    context: dict[str, object] = {
        "type": "MMS",
        "moId": "b2c3",
        "messageId": "m-1",
        "receivedTimestamp": "2024-01-01T00:00:00Z",
        "sourceAddress": "+61491570156",
        "destinationAddress": "+61491593156",
        "attachments": [
            {"contentType": "image/jpeg", "base64": "/9j/4AAQSkZJRg==", "originalName": "cat.jpg"},
            {"contentType": "text/plain", "base64": "aGVsbG8=", "originalName": "note.txt"},
        ],
        "metadata": {},
    }
    assert json.loads(render(MO_TEMPLATE, context)) == {
        "message_id": "m-1",
        "type": "MMS",
        "reply_id": "b2c3",
        "date_received": "2024-01-01T00:00:00Z",
        "source_address": "+61491570156",
        "destination_address": "+61491593156",
        "attachments": [
            {
                "attachment_type": "image/jpeg",
                "attachment_content": "/9j/4AAQSkZJRg==",
                "attachment_name": "cat.jpg",
            },
            {
                "attachment_type": "text/plain",
                "attachment_content": "aGVsbG8=",
                "attachment_name": "note.txt",
            },
        ],
        "metadata": [],
    }


@dataclass
class Attachment:
    """An attachment as an object (attribute access instead of keys)."""

    contentType: str
    base64: str
    originalName: str


def test_mo_mms_attachments_as_objects() -> None:
    context: dict[str, object] = {
        "type": "MMS",
        "sourceAddress": "+1",
        "attachments": (Attachment("image/png", "iVBORw0KGgo=", "a.png"),),
    }
    assert json.loads(render(MO_TEMPLATE, context))["attachments"] == [
        {
            "attachment_type": "image/png",
            "attachment_content": "iVBORw0KGgo=",
            "attachment_name": "a.png",
        }
    ]


def test_mo_rcs_version_2_with_contact_message() -> None:
    contact_message: dict[str, object] = {
        "text_message": {"text": 'Ça va? "oui" 😀'},
        "suggestions": [1, 2.5, True, None],
    }
    context: dict[str, object] = {
        "version": 2,
        "contact_message": contact_message,
        "moContent": 'Ça va? "oui" 😀',
        "messageId": "m-2",
        "type": "RCS",
        "moId": "r-2",
        "sourceAddress": "+61491570156",
        "destinationAddress": "+61491593156",
        "metadata": {"conv": "7"},
    }
    body = render(MO_TEMPLATE, context)
    assert body.startswith('{"contact_message":{"text_message":{"text":"Ça va? \\"oui\\" 😀"}')
    assert json.loads(body) == {
        "contact_message": contact_message,
        "content": 'Ça va? "oui" 😀',
        "message_id": "m-2",
        "type": "RCS",
        "reply_id": "r-2",
        "source_address": "+61491570156",
        "destination_address": "+61491593156",
        "attachments": [],
        "metadata": [{"metadata_key": "conv", "metadata_value": "7"}],
    }


@pytest.mark.parametrize("version", [1, "1", None])
def test_mo_other_versions_have_no_contact_message(version: object) -> None:
    context: dict[str, object] = {
        "version": version,
        "contact_message": {"text_message": {"text": "x"}},
        "type": "SMS",
        "sourceAddress": "+1",
    }
    assert "contact_message" not in json.loads(render(MO_TEMPLATE, context))


def test_mo_version_as_string_two_still_matches() -> None:
    """Velocity compares values of unrelated types by their string forms."""
    context: dict[str, object] = {
        "version": "2",
        "contact_message": None,
        "type": "RCS",
        "sourceAddress": "+1",
    }
    assert json.loads(render(MO_TEMPLATE, context))["contact_message"] is None


def test_dr() -> None:
    context: dict[str, object] = {
        "drId": "01e1fa0a-6e27-4945-9cdb-18644b4de043",
        "statusCode": 220,
        "status": "delivered",
        "submittedTimestamp": "2017-02-09T00:30:25.000Z",
        "receivedTimestamp": "2017-02-09T00:30:27.000Z",
        "type": "SMS",
        "messageId": "d781dcab-d9d8-4fb2-9e03-872f07ae94ba",
        "sourceAddress": "+61491570157",
        "mtContent": "My first message!",
        "metadata": {"conv": "42", "note": 'she said "hi"\nbye'},
    }
    assert json.loads(render(DR_TEMPLATE, context)) == {
        "delivery_report_id": "01e1fa0a-6e27-4945-9cdb-18644b4de043",
        "status_code": "220",
        "status": "delivered",
        "submitted_date": "2017-02-09T00:30:25.000Z",
        "date_received": "2017-02-09T00:30:27.000Z",
        "type": "SMS",
        "message_id": "d781dcab-d9d8-4fb2-9e03-872f07ae94ba",
        "source_address": "+61491570157",
        "content": "My first message!",
        "attachments": [],
        "metadata": [
            {"metadata_key": "conv", "metadata_value": "42"},
            {"metadata_key": "note", "metadata_value": 'she said "hi"\nbye'},
        ],
    }


def test_dr_without_content_renders_the_reference_literally() -> None:
    """Velocity renders a null method result as the reference's source text."""
    context: dict[str, object] = {
        "drId": "d",
        "type": "SMS",
        "messageId": "m",
        "sourceAddress": "+1",
    }
    assert json.loads(render(DR_TEMPLATE, context))["content"] == "$esc.json($mtContent)"


@pytest.mark.parametrize(
    "value",
    [
        'quote " and backslash \\',
        "new\nline\r\ntab\tform\ffeed\bbackspace",
        "control \x00\x01\x1f\x7f",
        "unicode: é ß 中文 Ω",
        "astral: 😀 🇦🇺 𝄞",
        "slash / and </script>",
        "velocity-looking text $foo #if($x) #end",
        "",
        "'single' quotes",
        "\u2028\u2029 separators",
    ],
)
def test_metadata_values_are_json_escaped(value: str) -> None:
    context: dict[str, object] = {
        "type": "SMS",
        "sourceAddress": "+1",
        "moContent": value or "x",
        "metadata": {"k": value},
    }
    body = render(MO_TEMPLATE, context)
    assert body.isascii()  # everything outside printable ASCII is \uXXXX-escaped
    parsed = json.loads(body)
    assert parsed["metadata"] == [{"metadata_key": "k", "metadata_value": value}]
    assert parsed["content"] == (value or "x")


def test_esc_json_matches_commons_text_escape_json() -> None:
    assert render("$esc.json($v)", {"v": 'a"b\\c/d\n\té😀\x01'}) == (
        'a\\"b\\\\c\\/d\\n\\t\\u00E9\\uD83D\\uDE00\\u0001'
    )
    assert render("$esc.json($v)", {"v": 42}) == "42"
    assert render("$esc.json($v)", {"v": True}) == "true"


def test_esc_url_and_xml() -> None:
    assert render("$esc.url($v)", {"v": "a b&c=d/é*~"}) == "a+b%26c%3Dd%2F%C3%A9*%7E"
    assert render("$esc.xml($v)", {"v": "<a href=\"x\">'&'</a>"}) == (
        "&lt;a href=&quot;x&quot;&gt;&apos;&amp;&apos;&lt;/a&gt;"
    )
    assert render("$!esc.url($nope)|$!esc.xml($nope)", {}) == "|"


def test_json_utils_to_json() -> None:
    context: dict[str, object] = {
        "v": {"a": [1, 2.5, None, True], "b": {"c": 'é"x'}, 3: ("t",)},
        "s": {"x"},
        "b": b"ab",
    }
    assert json.loads(render("$jsonUtils.toJson($v)", context)) == {
        "a": [1, 2.5, None, True],
        "b": {"c": 'é"x'},
        "3": ["t"],
    }
    assert render("$jsonUtils.toJson($v)", {"v": "x"}) == '"x"'
    assert render("$jsonUtils.toJson($nope)", {}) == "null"
    assert render("$jsonUtils.toJson($s)", context) == '["x"]'
    assert render("$jsonUtils.toJson($b)", context) == json.dumps(str(b"ab"))
    assert render("$jsonUtils.toJson($m.entrySet())", {"m": {"k": 1}}) == '[{"k":1}]'
    assert render("$jsonUtils.toJson($o)", {"o": Attachment("a", "b", "c")}) == json.dumps(
        str(Attachment("a", "b", "c"))
    )


def test_context_can_override_tools() -> None:
    assert render("$esc", {"esc": "mine"}) == "mine"
    assert render("$esc.json('x')", {"esc": {}}) == "$esc.json('x')"


# ------------------------------------------------------------------ references


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("$foo", "$foo"),
        ("$!foo", ""),
        ("${foo}", "${foo}"),
        ("$!{foo}", ""),
        ("[$foo.bar]", "[$foo.bar]"),
        ("[$!foo.bar]", "[]"),
        ("$foo.bar('x', $baz)", "$foo.bar('x', $baz)"),
        ("$!foo.bar('x', $baz)", ""),
        ("${foo.bar}", "${foo.bar}"),
        ("$!{foo.bar}", ""),
    ],
)
def test_undefined_references(template: str, expected: str) -> None:
    assert render(template, {}) == expected


def test_none_is_undefined() -> None:
    assert render("$x|$!x|${x}", {"x": None}) == "$x||${x}"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("$name", "Ann"),
        ("$!name", "Ann"),
        ("${name}", "Ann"),
        ("$!{name}", "Ann"),
        ("${name}s", "Anns"),
        ("$name.", "Ann."),
        ("$name.length()", "3"),
        ("$name.toUpperCase()", "ANN"),
        ("${name}.x", "Ann.x"),
        ("$name.x", "$name.x"),
        ("$$name", "$Ann"),
        ("$ name", "$ name"),
        ("$5.00", "$5.00"),
        ("${ name}", "${ name}"),
        ("$!", "$!"),
        ("$!5", "$!5"),
        ("$name-x", "Ann-x"),
        ("a$name@b", "aAnn@b"),
        ("$name()", "Ann()"),
    ],
)
def test_defined_references(template: str, expected: str) -> None:
    assert render(template, {"name": "Ann"}) == expected


def test_property_chains() -> None:
    context: dict[str, object] = {
        "a": {"b": {"c": "deep"}},
        "entry": {"key": "k", "contentType": "image/png"},
        "obj": Attachment("text/plain", "Zg==", "f.txt"),
    }
    assert render("$a.b.c", context) == "deep"
    assert render("$entry.key $entry.contentType", context) == "k image/png"
    assert render("$obj.contentType $obj.originalName", context) == "text/plain f.txt"
    assert render("$a.b.missing", context) == "$a.b.missing"
    assert render("$obj.__class__ $obj._private", context) == "$obj.__class__ $obj._private"


def test_map_methods() -> None:
    context: dict[str, object] = {"metadata": {"key": "v1", "other": "v2"}, "k": "other"}
    assert render("$metadata.get('key')", context) == "v1"
    assert render('$metadata.get("key")', context) == "v1"
    assert render("$metadata.get($k)", context) == "v2"
    assert render("$metadata.get( 'key' )", context) == "v1"
    assert render("$metadata.get('nope')", context) == "$metadata.get('nope')"
    assert render("$!metadata.get('nope')", context) == ""
    assert render("$metadata.size() $metadata.isEmpty()", context) == "2 false"
    assert render("$metadata.keySet() $metadata.values()", context) == "[key, other] [v1, v2]"
    assert render("$metadata.containsKey('key') $metadata.containsKey('x')", context) == (
        "true false"
    )
    assert render("$metadata.containsValue('v2')", context) == "true"
    assert render("$metadata.entrySet()", context) == "[key=v1, other=v2]"
    assert render("$metadata.nothing()", context) == "$metadata.nothing()"
    assert render("$metadata.get('a', 'b')", context) == "$metadata.get('a', 'b')"
    assert render("$metadata.get($metadata)", context) == "$metadata.get($metadata)"
    assert render("$metadata.containsKey($metadata)", context) == "false"
    assert render("$metadata.toString()", context) == "{key=v1, other=v2}"


def test_entry_methods() -> None:
    template = "#foreach($e in $m.entrySet())$e.getKey()=$e.getValue() $e.key,#end"
    assert render(template, {"m": {"a": 1, "b": None}}) == "a=1 a,b=$e.getValue() b,"
    other = "#foreach($e in $m.entrySet())$e.nope()|$e.getKey(1)|$e.getNope()#end"
    assert render(other, {"m": {"a": 1}}) == "$e.nope()|$e.getKey(1)|$e.getNope()"


def test_list_and_string_methods() -> None:
    context: dict[str, object] = {"l": ["x", "y"], "s": "  Hi  "}
    assert render("$l.size() $l.get(1) $l.isEmpty() $l.contains('x')", context) == "2 y false true"
    assert render("$l.get(5)|$l.get('0')|$l.nope()", context) == "$l.get(5)|$l.get('0')|$l.nope()"
    assert render("$l.nope(1)|$l.get(1, 2)", context) == "$l.nope(1)|$l.get(1, 2)"
    assert render("[$s.trim()] $s.isEmpty() $s.toLowerCase()", context) == "[Hi] false   hi  "
    assert render("$s.contains('Hi') $s.startsWith(' ') $s.endsWith('x')", context) == (
        "true true false"
    )
    assert render("$s.equals('  Hi  ') $s.contains(1) $s.nope()", context) == (
        "true $s.contains(1) $s.nope()"
    )


class Greeter:
    """A context object with methods, like a Velocity tool."""

    greeting = "Hello"

    def greet(self, name: str, punctuation: str = "!") -> str:
        return f"{self.greeting}, {name}{punctuation}"

    def nothing(self) -> None:
        return None

    def _secret(self) -> str:  # pragma: no cover - must never be called
        raise AssertionError("private methods are not callable from templates")


def test_object_methods() -> None:
    context: dict[str, object] = {"g": Greeter()}
    assert render("$g.greet('Ann')", context) == "Hello, Ann!"
    assert render("$g.greet('Ann', '?')", context) == "Hello, Ann?"
    assert render("$g.greet()", context) == "$g.greet()"  # wrong arity: no such method
    assert render("$g.greeting", context) == "Hello"
    assert render("$g.greet", context) == "$g.greet"  # methods are not properties
    assert render("$g.greeting()", context) == "$g.greeting()"  # nor properties methods
    assert render("$g.nothing()|$!g.nothing()", context) == "$g.nothing()|"
    assert render("$g._secret()", context) == "$g._secret()"
    assert render("$g.toString()", context).startswith("<")


def test_java_style_rendering() -> None:
    context: dict[str, object] = {
        "t": True,
        "f": False,
        "i": 7,
        "x": 2.0,
        "nan": float("nan"),
        "inf": float("-inf"),
        "m": {"a": 1, "b": [True, None]},
        "l": [1, "two"],
    }
    assert render("$t $f $i $x $nan $inf", context) == "true false 7 2.0 NaN -Infinity"
    assert render("$m $l", context) == "{a=1, b=[true, null]} [1, two]"


# ------------------------------------------------------------------ directives


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "no"),
        (False, "no"),
        (True, "yes"),
        ("", "yes"),
        ("x", "yes"),
        (0, "yes"),
        ([], "yes"),
        ({}, "yes"),
    ],
)
def test_if_truthiness_velocity_1_7(value: object, expected: str) -> None:
    assert render("#if($v)yes#{else}no#end", {"v": value}) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "no"),
        (False, "no"),
        (True, "yes"),
        ("", "no"),
        ("x", "yes"),
        (0, "no"),
        (0.0, "no"),
        (3, "yes"),
        ([], "no"),
        ([0], "yes"),
        ({}, "no"),
        (Greeter(), "yes"),
    ],
)
def test_if_truthiness_empty_check(value: object, expected: str) -> None:
    assert render("#if($v)yes#{else}no#end", {"v": value}, empty_check=True) == expected


def test_if_elseif_else() -> None:
    template = "#if($n == 1)one#elseif($n == 2)two#elseif($n == 3)three#{else}many#end"
    assert [render(template, {"n": n}) for n in (1, 2, 3, 4)] == ["one", "two", "three", "many"]
    assert render("#if($x)a#end", {}) == ""
    assert render("#if($x)a#elseif($y)b#end", {"y": 1}) == "b"


def test_adjacent_directives_without_whitespace() -> None:
    template = '{#if($a)"a":1,#end#if($b)"b":2,#end"c":3}'
    assert render(template, {"a": 1, "b": 1}) == '{"a":1,"b":2,"c":3}'
    assert render(template, {"b": 1}) == '{"b":2,"c":3}'
    assert render("#if($a)x#{end}end", {"a": 1}) == "xend"


def test_braced_directives() -> None:
    template = "#{if}($a)A#{elseif}($b)B#{else}C#{end}|#{foreach}($i in $l)$i#{end}"
    assert render(template, {"a": 1, "l": [1, 2]}) == "A|12"
    assert render(template, {"b": 1, "l": []}) == "B|"
    assert render(template, {"l": None}) == "C|"


def test_not_directives_are_text() -> None:
    assert render("#endif #elsewhere #ifx #1 # #( #{nope} #{if #", {}) == (
        "#endif #elsewhere #ifx #1 # #( #{nope} #{if #"
    )
    assert render('{"tag":"#hashtag","n":"#5"}', {}) == '{"tag":"#hashtag","n":"#5"}'


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("$n == 2", True),
        ("$n != 2", False),
        ("$n == '2'", True),
        ("$s == 'abc'", True),
        ('$s == "abc"', True),
        ("$s != 'abd'", True),
        ("$n == 2.0", True),
        ("$t == true", True),
        ("$t == 'true'", True),
        ("$t == 1", False),
        ("$missing == $other", True),
        ("$missing == 1", False),
        ("$n > 1 && $n < 3", True),
        ("$n >= 2 and $n <= 2", True),
        ("$n gt 2 or $n lt 2", False),
        ("$s < 'abd'", True),
        ("$s > 1", False),
        ("$n ge 3", False),
        ("$n eq 2 && $s ne 'x'", True),
        ("!$missing", True),
        ("!$n", False),
        ("not $missing", True),
        ("! ! $n", True),
        ("!($n == 2)", False),
        ("($a || $b) && $c", False),
        ("$a || $b && $c", True),
        ("($a || $b) && !$c", True),
        ("$b || $c", False),
        ("true", True),
        ("false || null", False),
        ("-1 < 0", True),
        ("'it''s' == $q", True),
        ('"say ""hi""" == $dq', True),
        ('"$!missing" == ""', True),
        ('"${s}d" == "abcd"', True),
        ('"#if($a)y#{else}n#end" == "y"', True),
        ("$l == [1]", None),
    ],
)
def test_conditions(condition: str, expected: bool | None) -> None:
    context: dict[str, object] = {
        "n": 2,
        "s": "abc",
        "t": True,
        "a": True,
        "b": False,
        "c": None,
        "q": "it's",
        "dq": 'say "hi"',
        "l": [1],
    }
    template = f"#if({condition})yes#{{else}}no#end"
    if expected is None:
        with pytest.raises(TemplateError):
            render(template, context)
    else:
        assert render(template, context) == ("yes" if expected else "no")


def test_condition_whitespace_and_newlines() -> None:
    assert render("#if (\n  $a\n  &&\t$b )y#end", {"a": 1, "b": 1}) == "y"


def test_foreach_loop_variables() -> None:
    template = "#foreach($x in $l)$foreach.index/$foreach.count/$x/$foreach.hasNext/$foreach.first/$foreach.last #end"
    assert render(template, {"l": ["a", "b", "c"]}) == (
        "0/1/a/true/true/false 1/2/b/true/false/false 2/3/c/false/false/true "
    )
    assert render("#foreach($x in $l)$velocityCount$velocityHasNext,#end", {"l": "ab"}) == ""
    assert render("#foreach($x in $l)$velocityCount$velocityHasNext,#end", {"l": [5, 6]}) == (
        "1true,2false,"
    )
    assert render("#foreach($x in $l)$foreach.hasNext()#end", {"l": [1]}) == "false"


def test_foreach_restores_variables() -> None:
    template = "$x #foreach($x in $l)$x #end$x $!foreach"
    assert render(template, {"x": "outer", "l": [1, 2]}) == "outer 1 2 outer "


def test_foreach_nested_with_if() -> None:
    template = (
        "#foreach($row in $rows)"
        "#foreach($cell in $row)"
        "#if($cell == 0)_#elseif($cell > 5)$cell!#{else}$cell#end"
        "#if($foreach.hasNext),#end"
        "#end"
        "#if($foreach.hasNext);#end"
        "#end"
    )
    assert render(template, {"rows": [[1, 0, 9], [], [7]]}) == "1,_,9!;;7!"


def test_foreach_parent() -> None:
    template = "#foreach($a in $l)#foreach($b in $l)$foreach.parent.count$foreach.count #end#end"
    assert render(template, {"l": [1, 2]}) == "11 12 21 22 "
    assert render("#foreach($a in $l)$!foreach.parent#end", {"l": [1]}) == ""


@pytest.mark.parametrize(
    ("iterable", "expected"),
    [
        ([1, 2], "12"),
        ((1, 2), "12"),
        ({"a": 1, "b": 2}, "12"),  # a map iterates its values
        (range(3), "012"),
        (None, ""),
        ("ab", ""),
        (5, ""),
        (Greeter(), ""),
    ],
)
def test_foreach_iterables(iterable: object, expected: str) -> None:
    assert render("#foreach($x in $it)$x#end", {"it": iterable}) == expected


def test_foreach_braced_loop_variable_and_method_iterable() -> None:
    assert render("#foreach(${e} in $m.keySet())$e#end", {"m": {"a": 1, "b": 2}}) == "ab"


def test_if_inside_foreach_over_entry_set() -> None:
    template = (
        "#foreach($e in $m.entrySet())#if($e.value)$e.key=$e.value#{else}$e.key:none#end"
        "#if($foreach.hasNext)&#end#end"
    )
    assert render(template, {"m": {"a": "1", "b": None, "c": False}}) == "a=1&b:none&c:none"


# ------------------------------------------------------------------ comments, escapes, text


def test_comments() -> None:
    assert render("a## comment\nb", {}) == "ab"
    assert render("a## comment at the end", {}) == "a"
    assert render("a#* block\n $x #if( *#b", {}) == "ab"
    assert render("a#** doc *#b", {}) == "ab"
    assert render("#if($x)## c\ny#end", {"x": 1}) == "y"


def test_escapes() -> None:
    context: dict[str, object] = {"x": "X"}
    assert render("\\$x", context) == "$x"
    assert render("\\$undefined", context) == "$undefined"
    assert render("\\\\$x", context) == "\\X"
    assert render("\\\\\\$x", context) == "\\$x"
    assert render("\\${x} \\$!x", context) == "${x} $!x"
    assert render("\\#if($x)", context) == "#if(X)"
    assert render("\\#end \\#{else}", context) == "#end #{else}"
    assert render("a\\b \\n \\$ \\# \\\\", context) == "a\\b \\n \\$ \\# \\\\"
    assert render('{"path":"C:\\\\dir"}', context) == '{"path":"C:\\\\dir"}'


def test_whitespace_gobbling_lines_mode() -> None:
    template = '{\n  #if($a)\n  "a": 1,\n  #end\n  "b": 2\n}\n'
    assert render(template, {"a": 1}) == '{\n  "a": 1,\n  "b": 2\n}\n'
    assert render(template, {}) == '{\n  "b": 2\n}\n'
    loop = "[\n#foreach($i in $l)\n  $i\n#end\n]"
    assert render(loop, {"l": [1, 2]}) == "[\n  1\n  2\n]"
    assert render("x\r\n  #if(true)  \r\ny\r\n#end", {}) == "x\r\ny\r\n"
    assert render("#if(true)\nlast\n#end", {}) == "last\n"
    # Not alone on its line: nothing is gobbled.
    assert render("a #if(true)b#end c\n", {}) == "a b c\n"
    assert render("#if(true)x #end\n", {}) == "x \n"


@given(st.text(alphabet=st.characters(blacklist_characters="$#")))
def test_plain_text_renders_to_itself(text: str) -> None:
    assert render(text, {"x": 1}) == text


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=10),
        st.text(max_size=30),
        max_size=5,
    )
)
def test_metadata_round_trips_through_json(metadata: dict[str, str]) -> None:
    template = "{" + METADATA_LOOP.replace('"$entry.key"', '"$esc.json($entry.key)"') + "}"
    body = render("[" + template[1:-1] + "]", {"metadata": metadata})
    assert json.loads(body) == [
        {"metadata_key": key, "metadata_value": value} for key, value in metadata.items()
    ]


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("template", "message", "line", "column"),
    [
        ("#if($a)x", "#if without a matching #end", 1, 1),
        ("ab\n  #if($a)x#else y", "#if without a matching #end", 2, 3),
        ("#if($a)#if($b)#end", "#if without a matching #end", 1, 1),
        ("#foreach($x in $l)x", "#foreach without a matching #end", 1, 1),
        ("x#end", "#end without a matching #if or #foreach", 1, 2),
        ("#if($a)#end#end", "#end without a matching #if or #foreach", 1, 12),
        ("#else", "#else without a matching #if", 1, 1),
        ("#elseif($a)", "#elseif without a matching #if", 1, 1),
        ("#if($a)#else#elseif($b)#end", "#elseif without a matching #if", 1, 13),
        ("#if($a)#else#else#end", "#else without a matching #if", 1, 13),
        ("#foreach($x in $l)#else#end", "#else without a matching #if", 1, 19),
        ("#if", "#if needs its arguments in parentheses", 1, 4),
        ("#if x", "#if needs its arguments in parentheses", 1, 5),
        ("#if()", "unexpected ')' in an expression", 1, 5),
        ("#if($a", "expected ')' to close #if", 1, 7),
        ("#if($a $b)", "expected ')' to close #if", 1, 8),
        ("#if($a ==)#end", "unexpected ')' in an expression", 1, 10),
        ("#if(($a #end", "expected ')'", 1, 9),
        ("#if($a &&", "unexpected end of template in an expression", 1, 10),
        ("#if($)#end", "expected a reference after '$'", 1, 5),
        ("#if('abc)#end", "unterminated string literal", 1, 5),
        ('#if("abc)#end', "unterminated string literal", 1, 5),
        ('#if("#if($a)")#end', "#if without a matching #end", 1, 6),
        ("#foreach", "#foreach needs its arguments in parentheses", 1, 9),
        ("#foreach(x in $l)#end", "#foreach needs a loop variable like $entry", 1, 10),
        ("#foreach($5 in $l)#end", "#foreach needs a loop variable like $entry", 1, 10),
        ("#foreach(${x in $l)#end", "expected '}' to close the loop variable", 1, 13),
        ("#foreach($x on $l)#end", "expected 'in' in #foreach", 1, 13),
        ("#foreach($x)#end", "expected 'in' in #foreach", 1, 12),
        ("#foreach($x in $l#end", "expected ')' to close #foreach", 1, 18),
        ("#set($a = 1)", "unsupported directive #set", 1, 1),
        ("#{macro}(x)", "unsupported directive #macro", 1, 1),
        ("#parse('x')", "unsupported directive #parse", 1, 1),
        ("a #* never closed", "unterminated #* block comment", 1, 3),
        ("${foo", "expected '}' to close the reference", 1, 6),
        ("${foo.bar baz}", "expected '}' to close the reference", 1, 10),
        ("$a.b(", "unexpected end of template in an expression", 1, 6),
        ("$a.b('x' 'y')", "expected ',' or ')' in method arguments", 1, 10),
        ("$a.b('x',)", "unexpected ')' in an expression", 1, 10),
    ],
)
def test_syntax_errors(template: str, message: str, line: int, column: int) -> None:
    with pytest.raises(TemplateError) as excinfo:
        render(template, {})
    error = excinfo.value
    assert error.message == message
    assert (error.line, error.column) == (line, column)
    assert str(error) == f"{message} (line {line}, column {column})"
    assert isinstance(error, ValueError)


def test_deep_nesting_is_a_template_error() -> None:
    with pytest.raises(TemplateError, match="nested too deeply"):
        render("#if(true)" * 200 + "#end" * 200, {})
    with pytest.raises(TemplateError, match="nested too deeply"):
        render("#if(" + "(" * 500 + "true" + ")" * 500 + ")#end", {})
    with pytest.raises(TemplateError, match="nested too deeply"):
        render("#if(" + "!" * 500 + "true)#end", {})
    with pytest.raises(TemplateError, match="nested too deeply"):
        render("$a.b(" * 100 + ")" * 100, {})
    assert render("#if(true)" * 60 + "x" + "#end" * 60, {}) == "x"


# ------------------------------------------------------------------ API


def test_parse_returns_a_reusable_cached_template() -> None:
    template = parse(MO_TEMPLATE)
    assert isinstance(template, Template)
    assert parse(MO_TEMPLATE) is template
    assert template.source == MO_TEMPLATE
    assert "Template(" in repr(template)
    first = template.render({"type": "SMS", "sourceAddress": "+1", "moContent": "a"})
    second = template.render({"type": "MMS", "sourceAddress": "+2"})
    assert json.loads(first)["content"] == "a"
    assert json.loads(second) == {
        "type": "MMS",
        "source_address": "+2",
        "attachments": [],
        "metadata": [],
    }


def test_render_accepts_any_mapping() -> None:
    from types import MappingProxyType

    context: Any = MappingProxyType({"x": 1})
    assert render("$x", context) == "1"


def test_tools_repr() -> None:
    assert render("$esc $jsonUtils", {}) == "EscapeTool JsonUtils"
