"""The deployment examples stay valid: the compose example's config file loads and builds
the bot it describes, and its .env template names only real settings."""

from __future__ import annotations

from pathlib import Path

from bot.app.gateway import Gateway
from bot.core.botconfig import load_config
from bot.core.config import Settings, env_var

COMPOSE = Path(__file__).resolve().parent.parent / "examples" / "compose"


def test_the_compose_examples_config_builds_its_bot() -> None:
    config = load_config(COMPOSE / "sinchbot.toml")
    settings = Settings(
        _env_file=None,
        redis_url="redis://127.0.0.1:1/0",  # never connected: the gateway is only built
        base_url="https://api.messagemedia.com",
        api_key="key",
        api_secret="secret",
        webhook_secret="a-long-webhook-secret",
        api_token="a-long-api-token",
    )
    gateway = Gateway(settings, config=config)
    assert gateway.bot is not None
    assert gateway.bot.plugins.problems == []
    assert [p.name for p in gateway.bot.plugins.loaded] == ["appointments", "autoreply"]
    assert gateway.quiet_hours is not None
    assert not gateway.demo


def test_the_env_template_names_only_real_settings() -> None:
    known = {env_var(name) for name in Settings.model_fields}
    names = [
        line.split("=", 1)[0]
        for line in (COMPOSE / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert names and set(names) <= known, set(names) - known
    compose = (COMPOSE / "compose.yaml").read_text()
    assert "SINCHBOT_REDIS_URL: redis://redis:6379/0" in compose
    assert "--appendonly" in compose
