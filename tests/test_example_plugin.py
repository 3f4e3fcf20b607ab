"""The example plugin (examples/sinchbot-feedback), installed as any third-party plugin is,
is found through its entry point, loads by name and runs in the gateway.

CI installs it before the suite (``.ci/run``); without it these tests fail, on purpose:
they prove that an external package, not the repository's own code, can be a plugin.
"""

from __future__ import annotations

from bot.app.plugins import ENTRY_POINT_GROUP, discover, load_plugins
from bot.storage.redis_server import RedisServer
from bot.testing import BotTester

NAME = "feedback"
INSTALL = "pip install -e examples/sinchbot-feedback"


def test_the_example_is_discovered_through_its_entry_point() -> None:
    found = discover()
    assert NAME in found, f"the example plugin is not installed ({INSTALL}); found {sorted(found)}"
    entry_point = found[NAME]
    assert entry_point.group == ENTRY_POINT_GROUP
    assert entry_point.value == "sinchbot_feedback:plugin"
    assert entry_point.dist is not None
    assert entry_point.dist.name == "sinchbot-feedback"  # its own distribution, not ours


def test_the_example_loads_by_name_with_its_settings() -> None:
    loaded = load_plugins([NAME], {NAME: {"business": "Acme Dental"}})
    assert loaded.problems == [], INSTALL
    [plugin] = loaded.loaded
    assert plugin.name == NAME
    assert plugin.settings.business == "Acme Dental"
    assert plugin.router.name == NAME


async def test_the_example_given_by_name_answers_a_handset(redis_server: RedisServer) -> None:
    config = {"plugin": {NAME: {"business": "Acme Dental"}}}
    async with BotTester([NAME], config=config, redis_url=redis_server.url) as bot:
        phone = bot.phone()
        await phone.send("feedback")
        await phone.expect_reply("^Thanks for visiting Acme Dental! How did we do?")
        await phone.send("5")
        await phone.expect_reply("^Thank you!")
        status, body = await bot.api("GET", "/api/feedback")  # its API route is mounted
        assert status == 200
        assert [r["rating"] for r in body["responses"]] == [5]
