"""Plugin loading: entry points, order, settings tables, and every way a plugin can be
broken, each reported in one line without stopping the others; the config file's
errors; ``sinchbot plugins``."""

from __future__ import annotations

import importlib.metadata
import json
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import BaseModel

from bot.app.assembly import DEMO_PLUGINS, enabled_plugins
from bot.app.plugins import ENTRY_POINT_GROUP, Plugin, load_plugins, parse_names
from bot.cli import main
from bot.conversation import Context, Keyword, Router
from bot.core.botconfig import BotConfig, load_config
from bot.core.config import ConfigError, Settings


class Greeting(BaseModel):
    text: str = "hello"
    times: int = 1


def make_router(settings: Greeting | None) -> Router:
    router = Router("greeter")

    @router.message(Keyword("hi"))
    async def hi(ctx: Context, settings: Greeting) -> None:
        ctx.reply(settings.text * settings.times)

    return router


GREETER = Plugin("greeter", make_router, settings=Greeting, description="says hello")


def entry_point(name: str, value: str) -> importlib.metadata.EntryPoint:
    return importlib.metadata.EntryPoint(name, value, ENTRY_POINT_GROUP)


@pytest.fixture
def fake_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    """Importable modules standing in for installed plugin packages."""
    good = ModuleType("fake_good_plugin")
    good.plugin = GREETER  # type: ignore[attr-defined]
    good.factory = lambda: GREETER  # type: ignore[attr-defined]
    good.not_a_plugin = 42  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_good_plugin", good)


def test_plugins_load_in_order_with_validated_settings(fake_modules: None) -> None:
    other = Plugin("other", Router("other"))
    load = load_plugins(
        ["other", "greeter"],
        {"greeter": {"text": "hey", "times": 2}},
        available={"other": other, "greeter": entry_point("greeter", "fake_good_plugin:plugin")},
    )
    assert load.problems == []
    assert [p.name for p in load.loaded] == ["other", "greeter"]
    assert load.loaded[1].settings == Greeting(text="hey", times=2)
    assert [r.name for r in load.routers] == ["other", "greeter"]


def test_an_entry_point_may_name_a_function_returning_the_plugin(fake_modules: None) -> None:
    load = load_plugins(
        ["greeter"], available={"greeter": entry_point("g", "fake_good_plugin:factory")}
    )
    assert [p.name for p in load.loaded] == ["greeter"]


@pytest.mark.parametrize(
    ("source", "table", "problem"),
    [
        (None, None, "plugin 'x' is not installed (available: "),
        (
            "no_such_module_anywhere:plugin",
            None,
            "plugin 'x' failed to import (no_such_module_anywhere:plugin): ModuleNotFoundError",
        ),
        (
            "fake_good_plugin:missing",
            None,
            "plugin 'x' failed to import (fake_good_plugin:missing): AttributeError",
        ),
        ("fake_good_plugin:not_a_plugin", None, "is not a bot.plugins.Plugin (got int)"),
        (
            "fake_good_plugin:plugin",
            {"times": "many"},
            "plugin 'greeter': invalid settings: times: Input should be a valid integer",
        ),
        ("fake_good_plugin:plugin", {"colour": "red"}, None),
    ],
)
def test_a_broken_plugin_is_one_line_and_the_others_still_load(
    fake_modules: None, source: str | None, table: dict[str, object] | None, problem: str | None
) -> None:
    available: dict[str, importlib.metadata.EntryPoint | Plugin] = {
        "ok": Plugin("ok", Router("ok"))
    }
    if source is not None:
        available["x"] = entry_point("x", source)
    load = load_plugins(["x", "ok"], {"x": table} if table else {}, available=available)  # type: ignore[arg-type]
    assert [p.name for p in load.loaded][-1] == "ok"
    if problem is None:  # extra keys are the model's business: Greeting ignores them
        assert load.problems == []
        return
    assert len(load.problems) == 1
    assert problem in load.problems[0]
    assert "\n" not in load.problems[0]


def test_a_plugin_without_a_settings_model_refuses_a_table_and_duplicates_are_refused() -> None:
    plain = Plugin("plain", Router("plain"))
    load = load_plugins(["plain", "plain"], {"plain": {"a": 1}}, available={"plain": plain})
    assert load.problems == [
        "plugin 'plain' takes no settings",
        "plugin 'plain' is enabled twice",
    ]


def test_names_from_the_environment_win_over_the_file_and_the_demo_has_defaults() -> None:
    assert parse_names(None) is None
    assert parse_names("a, b c") == ["a", "b", "c"]
    assert parse_names("none") == []
    file = BotConfig(plugins=["from-file"])
    env = Settings(_env_file=None, plugins="from-env")
    bare = Settings(_env_file=None)
    assert enabled_plugins(env, file, demo=False) == ["from-env"]
    assert enabled_plugins(bare, file, demo=False) == ["from-file"]
    assert enabled_plugins(bare, BotConfig(), demo=False) == []
    assert enabled_plugins(bare, BotConfig(), demo=True) == list(DEMO_PLUGINS)


def test_the_config_file_is_read_and_its_errors_are_one_line(tmp_path: Path) -> None:
    good = tmp_path / "bot.toml"
    good.write_text(
        textwrap.dedent(
            """
            plugins = ["appointments"]
            fallback = "Sorry?"
            [keywords]
            HOURS = "9 to 5"
            [plugin.appointments]
            remind_before = "PT2H"
            """
        )
    )
    config = load_config(good)
    assert config.plugins == ["appointments"]
    assert config.keywords == {"HOURS": "9 to 5"}
    assert config.plugin == {"appointments": {"remind_before": "PT2H"}}
    assert load_config(None) == BotConfig()

    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("plugins = [")
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("plugin_list = []\nsegment_budget = 0\n")
    for path, message in (
        (tmp_path / "missing.toml", "does not exist"),
        (bad_toml, "is not valid TOML"),
        (unknown, "plugin_list: Extra inputs are not permitted"),
        (unknown, "segment_budget: Input should be greater than or equal to 1"),
    ):
        with pytest.raises(ConfigError, match=message) as caught:
            load_config(path)
        assert "\n" not in str(caught.value)
        assert str(caught.value).startswith("SINCHBOT_CONFIG: ")


def test_sinchbot_plugins_lists_what_is_installed_and_fails_on_a_broken_enabled_plugin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for name in [n for n in list(__import__("os").environ) if n.startswith("SINCHBOT_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SINCHBOT_PLUGINS", "not-installed")
    assert main(["plugins", "--json"]) == 1
    listing = json.loads(capsys.readouterr().out)
    assert listing["enabled"] == ["not-installed"]
    (row,) = [r for r in listing["plugins"] if r["name"] == "not-installed"]
    assert row["loads"] is False and "is not installed" in row["problem"]
    assert {"appointments", "autoreply"} <= {r["name"] for r in listing["plugins"]}
