"""The deployment examples stay valid: the compose example's config file loads and builds
the bot it describes, its .env template names only real settings, and its cluster variant
names a cluster the gateway opens with the cluster client."""

from __future__ import annotations

import re
from pathlib import Path

from redis.asyncio.cluster import RedisCluster

from bot.app.gateway import Gateway
from bot.core.botconfig import load_config
from bot.core.config import Settings, env_var
from bot.storage.connection import seed_nodes

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


def test_the_cluster_variant_builds_a_gateway_on_its_cluster() -> None:
    compose = (COMPOSE / "compose.cluster.yaml").read_text()
    [url] = re.findall(r"SINCHBOT_REDIS_URL: (\S+)", compose)
    assert url.startswith("redis+cluster://")
    seeds = seed_nodes(url)
    nodes = re.findall(r"ipv4_address: ([0-9.]+)", compose)
    assert len(nodes) == 6  # 3 masters and their replicas
    assert {host for host, _ in seeds} <= set(nodes)
    assert "--cluster-replicas 1" in compose
    for option in ("--cluster-enabled yes", "--appendonly yes", "--appendfsync everysec"):
        assert option in compose
    settings = Settings(
        _env_file=None,
        redis_url=url,  # never connected: the gateway is only built
        base_url="https://api.messagemedia.com",
        api_key="key",
        api_secret="secret",
        webhook_secret="a-long-webhook-secret",
        api_token="a-long-api-token",
    )
    gateway = Gateway(settings, config=load_config(COMPOSE / "sinchbot.toml"))
    assert isinstance(gateway.redis, RedisCluster)
