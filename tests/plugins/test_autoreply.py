"""The autoreply plugin, through the real gateway: keyword and regex rules answer in order,
business hours pick the variant from the engine clock, rules come inline or from a file,
anything else falls through to the fallback, and a bad table is refused in one line."""

from __future__ import annotations

import json
import re
import sys
import types
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.app.plugins import load_plugins
from bot.storage.redis_server import RedisServer
from bot.testing import BotTester
from plugins.autoreply import AutoreplySettings, BusinessHours

SYDNEY = ZoneInfo("Australia/Sydney")
FALLBACK = "Sorry, I did not get that: {text}"

RULES: list[dict[str, Any]] = [
    {"keyword": ["hours", "opening hours"], "text": "We are open 9-5 weekdays."},
    {"regex": r"price of (?P<item>\w+)", "text": "Prices for {item}: see example.com/{item}"},
    {"regex": r"^book(?: for (?P<day>\w+))?$", "text": "Booking{day}? Call us. {{ok}}"},
]


def config(table: dict[str, Any]) -> dict[str, Any]:
    return {"fallback": FALLBACK, "plugin": {"autoreply": table}}


async def test_keywords_and_regex_groups_answer_and_the_rest_falls_through(
    redis_server: RedisServer,
) -> None:
    # Given by name: the plugin is found through its entry point.
    async with BotTester(
        ["autoreply"], config=config({"rules": RULES}), redis_url=redis_server.url
    ) as bot:
        phone = bot.phone()
        await phone.send("  Opening   HOURS?! ")
        await phone.expect_reply("^We are open 9-5 weekdays.$")
        await phone.send("What's the price of apples today?")
        await phone.expect_reply(r"^Prices for apples: see example\.com/apples$")
        await phone.send("book")  # the optional group did not take part: ""
        await phone.expect_reply(r"^Booking\? Call us\. \{ok\}$")
        await phone.send("hours please")  # a keyword is the whole message
        await phone.expect_reply("^Sorry, I did not get that: hours please$")
        await phone.expect_no_reply()


async def test_after_hours_variant_follows_the_engine_clock(redis_server: RedisServer) -> None:
    table = {
        "timezone": "Australia/Sydney",
        "business_hours": {"mon-fri": "09:00-17:00", "sat": "10:00-13:00"},
        "rules": [
            {**RULES[0], "after_hours": "We're closed now; we open at 9am."},
            RULES[1],  # no variant: the same answer at any hour
        ],
    }
    monday_morning = datetime(2030, 1, 7, 10, 0, tzinfo=SYDNEY)
    async with BotTester(
        ["autoreply"], config=config(table), redis_url=redis_server.url, start=monday_morning
    ) as bot:
        phone = bot.phone()
        await phone.send("hours")
        await phone.expect_reply("^We are open 9-5 weekdays")

        await bot.advance(hours=8)  # Monday 18:00
        await phone.send("hours")
        await phone.expect_reply("^We're closed now")
        await phone.send("price of pears")
        await phone.expect_reply("^Prices for pears")

        await bot.advance(days=4, hours=17)  # Saturday 11:00
        await phone.send("hours")
        await phone.expect_reply("^We are open 9-5 weekdays")
        await bot.advance(hours=2)  # Saturday 13:00: the window has closed
        await phone.send("hours")
        await phone.expect_reply("^We're closed now")


async def test_rules_come_from_a_toml_file_after_the_inline_ones(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    replies = tmp_path / "replies.toml"
    replies.write_text(
        '[[rules]]\nkeyword = "hours"\ntext = "From the file: 8-6."\n\n'
        '[[rules]]\nkeyword = ["parking", "car park"]\ntext = "Free parking out back."\n',
        encoding="utf-8",
    )
    table = {"file": str(replies), "rules": [{"keyword": "hours", "text": "Inline: 9-5."}]}
    async with BotTester(["autoreply"], config=config(table), redis_url=redis_server.url) as bot:
        phone = bot.phone()
        await phone.send("Car park?")
        await phone.expect_reply("^Free parking out back.$")
        await phone.send("hours")
        await phone.expect_reply("^Inline: 9-5.$")  # the inline rule comes first
        await phone.expect_no_reply()


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"rules": [{"regex": "price (", "text": "x"}]}, "rules.0: .*does not compile"),
        (
            {"rules": [{"keyword": "a", "regex": "b", "text": "x"}]},
            "exactly one of keyword or regex",
        ),
        ({"rules": [{"text": "x"}]}, "exactly one of keyword or regex"),
        (
            {"rules": [{"regex": r"price of (?P<item>\w+)", "text": "{items}"}]},
            r"text uses \{items\}, but the regex's named groups are item",
        ),
        ({"rules": [{"keyword": "hi", "text": "{name}"}]}, "the rule has no named groups"),
        ({"rules": [{"keyword": "hi", "text": "x", "after_hours": "y"}]}, "needs business_hours"),
        ({"rules": [{"keyword": "hi", "text": "x", "reply": "y"}]}, "rules.0.reply: Extra"),
        ({"file": "does-not-exist.toml"}, "cannot read file 'does-not-exist.toml'"),
        ({"file": "rules.json"}, "must end in .toml, .yaml or .yml"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"business_hours": {"mon-fry": "09:00-17:00"}}, "'fry' is not a day"),
        ({"business_hours": {"mon": "17:00-09:00"}}, "ends before it starts"),
        ({"business_hours": {"mon-fri": "9-5"}}, "is not a window like 09:00-17:00"),
        ({"business_hours": {"mon-fri": "09:00-17:00", "fri": "closed"}}, "fri is named twice"),
    ],
)
def test_invalid_settings_are_one_clear_line(table: dict[str, Any], problem: str) -> None:
    loaded = load_plugins(["autoreply"], {"autoreply": table})
    assert loaded.loaded == []
    [line] = loaded.problems
    assert "\n" not in line
    assert line.startswith("plugin 'autoreply': invalid settings: ")
    assert re.search(problem, line), line


def test_a_broken_rules_file_names_the_file_and_the_rule(tmp_path: Path) -> None:
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[[rules]]\nkeyword = \n", encoding="utf-8")
    bad_rule = tmp_path / "rule.toml"
    bad_rule.write_text('[[rules]]\nregex = "("\ntext = "x"\n', encoding="utf-8")
    for path, problem in ((bad_toml, "is not valid TOML"), (bad_rule, "rules.0: .*compile")):
        [line] = load_plugins(["autoreply"], {"autoreply": {"file": str(path)}}).problems
        assert str(path) in line
        assert "\n" not in line
        assert re.search(problem, line), line


def test_yaml_rules_need_pyyaml_and_say_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    replies = tmp_path / "replies.yaml"
    replies.write_text(json.dumps({"rules": [{"keyword": "hi", "text": "Hello!"}]}))
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml → ImportError
    [line] = load_plugins(["autoreply"], {"autoreply": {"file": str(replies)}}).problems
    assert line.endswith(
        "is YAML, but PyYAML is not installed (pip install pyyaml, or write the rules as TOML)"
    )

    # With a YAML parser present, the file's rules load (JSON is YAML; the stand-in parses
    # only that, which is all this file needs).
    stand_in = types.ModuleType("yaml")
    stand_in.safe_load = json.loads  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "yaml", stand_in)
    settings = AutoreplySettings.model_validate({"file": str(replies)})
    assert [rule.text for rule in settings.all_rules] == ["Hello!"]


def test_business_hours_shapes() -> None:
    hours = BusinessHours(
        {"mon,wed": "09:00-12:00, 13:00-17:00", "fri-sun": "20:00-24:00", "tue": "closed"}
    )

    def at(day: int, hour: int, minute: int = 0) -> datetime:
        return datetime(2030, 1, 6 + day, hour, minute, tzinfo=SYDNEY)  # 2030-01-07 is a Monday

    assert hours.is_open(at(1, 9))
    assert not hours.is_open(at(1, 12, 30))  # lunch
    assert not hours.is_open(at(1, 17))  # the end is excluded
    assert not hours.is_open(at(2, 10))  # tuesday: closed
    assert hours.is_open(at(3, 16, 59))
    assert not hours.is_open(at(4, 10))  # thursday: not named
    assert hours.is_open(at(7, 23, 59))  # sunday, in the fri-sun range
    settings = AutoreplySettings.model_validate(
        {"timezone": "Australia/Sydney", "business_hours": {"mon-fri": "09:00-17:00"}}
    )
    # 22:00 UTC on Sunday is 09:00 on Monday in Sydney (summer time).
    assert settings.is_open(datetime(2030, 1, 6, 22, 0, tzinfo=ZoneInfo("UTC")))
    assert AutoreplySettings().is_open(datetime(2030, 1, 6, 3, 0, tzinfo=SYDNEY))
