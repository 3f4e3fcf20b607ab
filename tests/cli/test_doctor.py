"""``sinchbot doctor`` on good and broken configurations, against a real redis-server and the
real sandbox provider over HTTP.

``main`` runs in a thread (it runs its own event loop) while the sandbox serves on the
test's loop; the configuration comes from environment variables set by each test (no
inherited ``SINCHBOT_*`` variables, no ``.env``). Tests on the session's redis-server take the
``redis`` fixture, which flushes it: other tests leave partition counts and dead letters.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from redis.asyncio import Redis

from bot.cli import main
from bot.cli.doctor import Report, check_public_url
from bot.core.config import ENV_PREFIX, Settings
from bot.sandbox import Sandbox, SandboxConfig
from bot.sinch.client import SinchClient
from bot.sinch.models import WebhookEvent, WebhookSpec
from bot.storage.keys import DLQ, META
from bot.storage.redis_server import RedisServer
from tests.redis_cluster import LocalCluster

GATEWAY = "http://127.0.0.1:8080"
SECRET = "a-long-webhook-secret-0123456789"
TOKEN = "a-long-api-token-0123456789abcdef"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No inherited SINCHBOT_* variables and no ``.env``; local state in ``tmp_path``."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()

    def levels(self, level: str) -> list[str]:
        return [line for line in self.lines if line.startswith(f"{level}: ")]

    def has(self, line: str) -> bool:
        return line in self.lines


@pytest.fixture
def doctor(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """Run ``sinchbot doctor`` with ``SINCHBOT_<NAME>`` set from the keyword arguments."""

    async def run(*args: str, **env: str) -> Result:
        for name, value in env.items():
            monkeypatch.setenv(f"SINCHBOT_{name.upper()}", value)
        capsys.readouterr()
        code = await asyncio.to_thread(main, ["doctor", *args])
        captured = capsys.readouterr()
        assert captured.err == "", captured.err
        lines = captured.out.splitlines()
        if "--json" not in args:
            assert lines and all(
                line.startswith(("ok: ", "warn: ", "error: ")) for line in lines
            ), captured.out
        return Result(code, captured.out, captured.err)

    return run


def production(redis_url: str, sandbox: Sandbox, **extra: str) -> dict[str, str]:
    """A production configuration with the sandbox as the provider."""
    return {
        "redis_url": redis_url,
        "base_url": sandbox.url,
        "api_key": sandbox.api_key,
        "api_secret": sandbox.api_secret,
        "webhook_secret": SECRET,
        "api_token": TOKEN,
        "public_url": GATEWAY,
        **extra,
    }


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def subscribe(client: SinchClient, base: str = GATEWAY, **kwargs: Any) -> None:
    headers = kwargs.pop("headers", {"X-Webhook-Secret": SECRET})
    await client.subscribe(
        messages_url=f"{base}/webhooks/messages",
        receipts_url=f"{base}/webhooks/receipts",
        headers=headers,
        **kwargs,
    )


async def test_a_healthy_production_configuration_is_all_ok(
    doctor: Any, redis: Redis, redis_server: RedisServer, sandbox: Sandbox, client: SinchClient
) -> None:
    await subscribe(client)

    result = await doctor(**production(redis_server.url, sandbox))

    assert result.code == 0, result.out
    assert result.levels("warn") == result.levels("error") == [], result.out
    assert any(
        line.startswith(f"ok: redis at {redis_server.url} answers (Redis ") for line in result.lines
    ), result.out
    assert result.has(
        f"ok: the provider at {sandbox.url} accepts the credentials (1 sender ID, "
        "default +61491570157)"
    )
    assert result.has(
        f"ok: the provider pushes messages and receipts to {GATEWAY}/webhooks/messages and "
        f"{GATEWAY}/webhooks/receipts"
    )
    assert result.has("ok: webhooks are authenticated by SINCHBOT_WEBHOOK_SECRET")
    assert result.has("ok: SINCHBOT_API_TOKEN protects the management API")


async def test_a_wrong_redis_url_and_bad_credentials_are_errors_that_say_what_to_fix(
    doctor: Any, sandbox: Sandbox
) -> None:
    port = closed_port()
    env = production(
        f"redis://:redis-password@127.0.0.1:{port}/0",
        sandbox,
        api_secret="not-the-secret",
    )

    result = await doctor(**env)

    assert result.code == 1
    assert result.has(
        f"error: redis at redis://***@127.0.0.1:{port}/0 unreachable (Connection refused): "
        "check SINCHBOT_REDIS_URL"
    ), result.out
    assert result.has(
        f"error: the provider at {sandbox.url} refused the credentials (401): "
        "check SINCHBOT_API_KEY / SINCHBOT_API_SECRET"
    ), result.out
    assert len(result.levels("error")) == 2, result.out
    for secret in ("redis-password", "not-the-secret", SECRET, TOKEN):
        assert secret not in result.out


async def test_an_unreachable_provider_is_an_error_naming_its_url(
    doctor: Any, redis: Redis, redis_server: RedisServer, sandbox: Sandbox
) -> None:
    url = f"http://127.0.0.1:{closed_port()}"

    result = await doctor(**production(redis_server.url, sandbox, base_url=url))

    assert result.code == 1
    assert result.levels("error") == [
        f"error: cannot reach the provider at {url} (Connection refused): "
        "check SINCHBOT_BASE_URL and the network"
    ], result.out


async def test_missing_or_wrong_webhooks_are_warnings_with_the_command_that_fixes_them(
    doctor: Any, redis: Redis, redis_server: RedisServer, sandbox: Sandbox, client: SinchClient
) -> None:
    # Our messages webhook lacks events, the ids in its template and the secret; receipts
    # go to an old deployment.
    ours = await client.create_webhook(
        WebhookSpec(
            url=f"{GATEWAY}/webhooks/messages/",
            events=[WebhookEvent.RECEIVED_SMS],
            template='{"content":"$moContent"}',
        )
    )
    await client.subscribe(receipts_url="https://old.example.com/webhooks/receipts?token=s3cret")
    old = next(h.id for h in await client.all_webhooks() if "old.example.com" in h.url)

    result = await doctor(**production(redis_server.url, sandbox))

    assert result.code == 0, result.out
    assert result.has(
        f"warn: no receipt webhook points at {GATEWAY}: run `sinchbot webhooks subscribe "
        f"--receipts-url {GATEWAY}/webhooks/receipts "
        '--header X-Webhook-Secret="$SINCHBOT_WEBHOOK_SECRET"`'
    ), result.out
    assert result.has(
        f"warn: webhook {old} pushes receipts to https://old.example.com/webhooks/receipts, "
        f"not to this gateway ({GATEWAY}): if it is stale, `sinchbot webhooks delete {old}`"
    ), result.out
    redo = f"`sinchbot webhooks delete {ours.id}` and subscribe again"
    for problem in (
        f"the messages webhook {ours.id} lacks the events RECEIVED_MMS, OPT_OUT_SMS: ",
        f"the messages webhook {ours.id}'s template has no reply_id, so redelivered pushes "
        "cannot be recognised: ",
        f"the messages webhook {ours.id} sends no X-Webhook-Secret header: the gateway "
        "refuses its pushes (401); ",
    ):
        assert any(line.startswith(f"warn: {problem}{redo}") for line in result.lines), (
            problem,
            result.out,
        )
    assert not any(line.startswith("ok: the provider pushes") for line in result.lines)
    assert "s3cret" not in result.out


async def test_production_without_webhook_authentication_or_api_token(
    doctor: Any, redis: Redis, redis_server: RedisServer, sandbox: Sandbox, client: SinchClient
) -> None:
    await subscribe(client, headers={})
    env = production(redis_server.url, sandbox)
    del env["webhook_secret"], env["api_token"]

    result = await doctor(**env)

    assert result.code == 1
    assert result.levels("error") == [
        "error: production without SINCHBOT_WEBHOOK_SECRET or SINCHBOT_WEBHOOK_PUBLIC_KEY: "
        "the gateway refuses every webhook; set SINCHBOT_WEBHOOK_SECRET to a long random "
        "value and subscribe with --header X-Webhook-Secret=..."
    ], result.out
    assert result.has(
        "warn: no SINCHBOT_API_TOKEN: the management API (/api/) is disabled; set one to use it"
    ), result.out


@pytest.mark.parametrize(
    ("public_url", "warning"),
    [
        (
            None,
            "SINCHBOT_PUBLIC_URL is not set, so webhooks are checked against "
            "http://127.0.0.1:8080, which the provider cannot reach",
        ),
        ("http://10.0.0.5:8080", "SINCHBOT_PUBLIC_URL http://10.0.0.5:8080 is a local address"),
        ("http://bot.example.com", "SINCHBOT_PUBLIC_URL http://bot.example.com is plain http"),
        ("https://bot.example.com", None),
    ],
)
def test_the_public_url_must_be_reachable_by_a_remote_provider(
    public_url: str | None, warning: str | None
) -> None:
    values = {"api_key": "k", "api_secret": "s", "public_url": public_url}
    report = Report()

    check_public_url(report, Settings(_env_file=None, **values))

    messages = [f.message for f in report.findings]
    if warning is None:
        assert messages == []
    else:
        assert len(messages) == 1 and messages[0].startswith(warning), messages
        assert report.findings[0].level == "warn"
    # A provider on this machine (a sandbox) reaches a local gateway.
    local = Report()
    check_public_url(local, Settings(_env_file=None, base_url="http://127.0.0.1:9", **values))
    assert local.findings == []


async def test_a_broken_configuration_reports_each_problem_and_goes_on(
    doctor: Any, tmp_path: Path
) -> None:
    config = tmp_path / "bot.toml"
    config.write_text("plugins = [\n")  # not TOML

    result = await doctor(
        service="bogus",
        config=str(config),
        plugins="autoreply,no-such-plugin",
        data_dir=str(tmp_path / "state"),
    )

    assert result.code == 1
    errors = result.levels("error")
    assert errors[0].startswith("error: invalid configuration: SINCHBOT_SERVICE: "), errors
    assert errors[1].startswith(f"error: SINCHBOT_CONFIG: {config} is not valid TOML"), errors
    assert errors[2].startswith("error: plugin 'no-such-plugin' is not installed"), errors
    assert len(errors) == 3, result.out
    assert result.has("warn: the checks below use the default of SINCHBOT_SERVICE")
    assert result.has("ok: autoreply load (enabled by SINCHBOT_PLUGINS)")
    # No Redis and no credentials: the demo, with an embedded redis-server.
    assert any(
        line.startswith("ok: no SINCHBOT_REDIS_URL: embedded Redis will be started by serve")
        for line in result.lines
    ), result.out
    assert result.has(
        "warn: no SINCHBOT_API_KEY: serve runs the sandbox (demo mode) on port 8025; "
        "set SINCHBOT_API_KEY and SINCHBOT_API_SECRET for the real provider"
    )


async def test_redis_data_that_does_not_fit_the_settings_and_a_running_serves_redis(
    doctor: Any, redis: Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    await redis.hset(META, "partitions", "8")
    await redis.xadd(DLQ, {"reason": "boom"})
    # A `sinchbot serve` running on this data directory recorded its embedded Redis here.
    (tmp_path / "state" / "redis").mkdir(parents=True)
    (tmp_path / "state" / "redis" / "redis.url").write_text(redis_server.url)

    result = await doctor("--json", data_dir=str(tmp_path / "state"))

    body = json.loads(result.out)
    assert result.code == 1
    assert body["ok"] is False
    findings = [(f["level"], f["check"], f["message"]) for f in body["findings"]]
    redis_findings = [f for f in findings if f[1] == "redis"]
    assert redis_findings[0][0] == "ok"
    assert redis_findings[0][2].startswith(
        f"the embedded redis-server of a running serve at {redis_server.url} answers"
    )
    assert redis_findings[1:] == [
        (
            "error",
            "redis",
            "the data in Redis was written with 8 partitions but SINCHBOT_PARTITIONS is 16: "
            "serve refuses to start; set SINCHBOT_PARTITIONS=8",
        ),
        (
            "warn",
            "redis",
            "1 dead letter waiting: see `sinchbot dlq list`, then `sinchbot dlq replay` or "
            "`sinchbot dlq purge`",
        ),
    ]

    # The serve died and left its URL file behind: a warning, the next serve starts anew.
    port = closed_port()
    (tmp_path / "state" / "redis" / "redis.url").write_text(f"redis://127.0.0.1:{port}/0")
    result = await doctor(data_dir=str(tmp_path / "state"))
    assert result.code == 0, result.out
    assert any(
        line.startswith(
            f"warn: redis at redis://127.0.0.1:{port}/0 unreachable (Connection refused)"
        )
        for line in result.lines
    ), result.out


async def test_the_webhook_public_key_must_be_the_providers_enabled_signature_key(
    doctor: Any, redis: Redis, redis_server: RedisServer
) -> None:
    async with Sandbox(SandboxConfig(port=0, signing=True)) as signing:
        key = signing.state.signing_key
        assert key is not None
        async with SinchClient(
            api_key=signing.api_key, api_secret=signing.api_secret, base_url=signing.url
        ) as client:
            await subscribe(client)
        env = production(redis_server.url, signing, webhook_public_key=key.public_key_b64)
        del env["webhook_secret"]

        result = await doctor(**env)
        assert result.code == 0, result.out
        assert result.has(
            f"ok: SINCHBOT_WEBHOOK_PUBLIC_KEY is the provider's enabled signature key "
            f"({key.key_id})"
        ), result.out
        assert result.has(
            "ok: webhooks are authenticated by RSA signatures (SINCHBOT_WEBHOOK_PUBLIC_KEY)"
        )

        other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
        pem = other.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
        result = await doctor(webhook_public_key=pem)
        assert result.code == 1
        assert any(
            line.startswith(
                "error: SINCHBOT_WEBHOOK_PUBLIC_KEY is not the provider's enabled signature "
                f"key ({key.key_id}): signed webhooks will be refused"
            )
            for line in result.lines
        ), result.out

        result = await doctor(webhook_public_key="not a key")
        assert result.code == 1
        assert any(
            line.startswith("error: SINCHBOT_WEBHOOK_PUBLIC_KEY is unusable (")
            for line in result.lines
        ), result.out


# --------------------------------------------------------------------------- Redis Cluster


def redis_findings(result: Result) -> list[tuple[str, str]]:
    return [
        (f["level"], f["message"])
        for f in json.loads(result.out)["findings"]
        if f["check"] == "redis"
    ]


async def test_a_cluster_is_reported_with_its_topology(
    doctor: Any, redis_cluster: LocalCluster
) -> None:
    redis_cluster.flushall()
    result = await doctor("--json", redis_url=redis_cluster.url, partitions="16")

    findings = redis_findings(result)
    assert findings[0][0] == "ok"
    assert findings[0][1].startswith(f"redis cluster at {redis_cluster.url} answers (Redis 6.2")
    assert findings[1] == (
        "ok",
        "cluster topology: 3 masters, 3 replicas, 16384 of 16384 slots served",
    )
    masters = {node.port: node for node in redis_cluster.masters()}
    lines = findings[2:]
    assert len(lines) == 3, findings
    partitions: list[int] = []
    for level, message in lines:
        assert level == "ok"
        port = int(message.split(":")[1])  # "cluster master 127.0.0.1:<port>: slots …"
        master = masters[port]
        [replica] = redis_cluster.replicas_of(master)
        assert message.endswith(f"1 replica (127.0.0.1:{replica.port})")
        slots = redis_cluster.slots_of(master)
        assert f"slots {slots[0]}-{slots[-1]} (partitions " in message
        held = message.split("(partitions ")[1].split(")")[0]
        for part in held.split(", "):
            low, _, high = part.partition("-")
            partitions += range(int(low), int(high or low) + 1)
    assert sorted(partitions) == list(range(16))  # every partition on exactly one master


async def test_a_master_without_a_replica_warns_and_a_plain_url_to_a_cluster_is_an_error(
    doctor: Any, tmp_path: Path
) -> None:
    with LocalCluster(tmp_path / "lone", masters=1, replicas=0) as lone:
        [master] = lone.masters()
        result = await doctor("--json", redis_url=lone.url, partitions="4")
        findings = redis_findings(result)
        assert findings[1] == (
            "ok",
            "cluster topology: 1 master, 0 replicas, 16384 of 16384 slots served",
        )
        assert findings[2] == (
            "warn",
            f"cluster master 127.0.0.1:{master.port} has no replica: if it fails, partitions 0-3 "
            f"(slots 0-16383) stop until it is back; give it one (CLUSTER REPLICATE {master.id} "
            "on a new node)",
        )

        plain = f"redis://127.0.0.1:{master.port}/0"
        result = await doctor("--json", redis_url=plain)
        assert redis_findings(result) == [
            (
                "error",
                f"redis at {plain} is a node of a Redis Cluster: name the cluster in "
                f"SINCHBOT_REDIS_URL (redis+cluster://127.0.0.1:{master.port})",
            )
        ]
        assert result.code == 1


async def test_a_cluster_url_to_a_single_server_is_an_error(
    doctor: Any, redis_server: RedisServer
) -> None:
    url = f"redis+cluster://127.0.0.1:{redis_server.port}"
    result = await doctor("--json", redis_url=url)
    [(level, message)] = redis_findings(result)
    assert level == "error"
    assert message.startswith(f"redis at {url} is not a cluster (")
    assert message.endswith(
        "SINCHBOT_REDIS_URL names a cluster (redis+cluster://); for one server use redis://"
    )


async def test_waiting_for_more_replicas_than_there_are_is_an_error(
    doctor: Any, redis_cluster: LocalCluster, redis_server: RedisServer
) -> None:
    result = await doctor("--json", redis_url=redis_cluster.url, redis_wait_replicas="2")
    errors = [m for level, m in redis_findings(result) if level == "error"]
    assert len(errors) == 3, errors
    for master in redis_cluster.masters():
        assert any(
            m.startswith(
                f"SINCHBOT_REDIS_WAIT_REPLICAS=2 but cluster master 127.0.0.1:{master.port} "
                "has 1 replica: the webhooks of partitions "
            )
            for m in errors
        ), errors
    result = await doctor("--json", redis_url=redis_cluster.url, redis_wait_replicas="1")
    assert [level for level, _ in redis_findings(result)] == ["ok"] * 5

    result = await doctor("--json", redis_url=redis_server.url, redis_wait_replicas="1")
    assert (
        "error",
        f"SINCHBOT_REDIS_WAIT_REPLICAS=1 but redis at {redis_server.url} has 0 replicas: "
        "every webhook answers 503; add replicas or lower it",
    ) in redis_findings(result)
