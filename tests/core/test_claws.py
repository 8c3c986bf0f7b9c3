"""Claws end to end on both backends: stand-in agents over HTTP, moto's S3 server, rollbacks."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from core.buckets import Buckets, S3Settings
from core.claws import Claws
from core.config import OrgConfig
from core.crypto import Keyring, SecretsError, generate_key
from core.errors import InputError, RemoteError
from core.minis import Minis
from core.orgs import is_member, org_exists, sync_orgs
from core.provision import NoCapacity, rotate_secrets
from core.tables import claws as claws_table
from core.tables import mac_minis
from tests.auxil.fakeagent import FakeAgent, down_url
from tests.auxil.net import free_port

AGENT_ENV = "CLAWS_TEST_AGENT_TOKEN"
Start = Callable[..., Awaitable[FakeAgent]]


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.parse(generate_key())


@pytest.fixture
async def start_agent(monkeypatch) -> AsyncIterator[Start]:
    monkeypatch.setenv(AGENT_ENV, FakeAgent.token)
    started: list[FakeAgent] = []

    async def start(**kwargs: Any) -> FakeAgent:
        agent = await FakeAgent(**kwargs).start()
        started.append(agent)
        return agent

    yield start
    for agent in started:
        await agent.stop()


@pytest.fixture
async def fleet(db) -> Minis:
    await sync_orgs(db, [OrgConfig(slug="acme", name="Acme", members=[7, 8])])
    return Minis(db)


def service(db, keyring, s3: S3Settings | None = None, **kwargs: Any) -> Claws:
    kwargs.setdefault("provision_timeout", 1.0)
    kwargs.setdefault("poll_interval", 0.02)
    kwargs.setdefault("agent_retries", 1)
    kwargs.setdefault("agent_timeout", 2.0)
    return Claws(
        db, keyring, buckets=Buckets(s3) if s3 else None,
        bucket_prefix=f"t{uuid.uuid4().hex[:8]}-", **kwargs,
    )  # fmt: skip


async def add_mini(fleet: Minis, url: str, name: str = "mini-1", **kwargs: Any):
    kwargs.setdefault("ports", "3001-3010")
    kwargs.setdefault("capacity", 5)
    return await fleet.add(name, url, agent_token_env=AGENT_ENV, **kwargs)


async def row(db, org: str = "acme", slug: str = "support") -> Any:
    async with db.connect() as conn:
        query = select(claws_table).where(claws_table.c.org == org, claws_table.c.slug == slug)
        return (await conn.execute(query)).first()


async def test_a_claw_is_provisioned_to_active_with_mini_port_tunnel_and_bucket(
    db, fleet, start_agent, keyring, s3
):
    agent = await start_agent()
    await add_mini(fleet, agent.url, tunnel_suffix="m1.claws.example.com")
    claws = service(db, keyring, s3)
    steps: list[str] = []

    async def progress(text: str) -> None:
        steps.append(text)

    claw = await claws.provision("acme", "support", created_by=7, progress=progress)
    assert (claw.status, claw.mini, claw.mini_port, claw.error) == ("active", "mini-1", 3001, "")
    bucket = f"{claws.bucket_prefix}{claw.id}"
    assert [step.rsplit(" · ", 1)[0] for step in steps] == [
        "reserved mini-1:3001",
        "gateway starting",
        f"bucket {bucket} created",
        "waiting for the gateway's handshake",
        "handshake ok",
    ]
    assert all(step.endswith(" s") and step.rsplit(" · ", 1)[1][:-2].isdigit() for step in steps)
    assert claw.tunnel_hostname == f"claw-{claw.id}-m1.claws.example.com"
    assert claw.gateway_url == f"wss://claw-{claw.id}-m1.claws.example.com"
    assert claw.steps == ["reserved", "agent", "bucket", "tunnel", "ready"]
    assert claw.bucket == f"{claws.bucket_prefix}{claw.id}"
    assert await Buckets(s3).exists(claw.bucket)
    held = agent.claws[f"claw-{claw.id}"]
    assert held["port"] == 3001 and held["bucket"] == claw.bucket
    assert held["token"] == await claws.gateway_token("acme", "support")
    assert [c.slug for c in await claws.list("acme")] == ["support"]


async def test_the_gateway_token_is_sealed_and_in_plaintext_nowhere_in_the_row(
    db, fleet, start_agent, keyring
):
    agent = await start_agent()
    await add_mini(fleet, agent.url)
    claws = service(db, keyring)
    await claws.provision("acme", "support")
    token = await claws.gateway_token("acme", "support")
    assert len(token) >= 32
    stored = await row(db)
    assert stored.gateway_token_sealed.startswith(f"v1:{keyring.current}:")
    assert all(token not in str(value) for value in stored)


async def test_without_a_tunnel_the_gateway_is_reached_at_the_minis_address(
    db, fleet, start_agent, keyring
):
    agent = await start_agent()
    await add_mini(fleet, agent.url)
    claw = await service(db, keyring).provision("acme", "support")
    assert claw.tunnel_hostname is None and claw.bucket is None
    assert claw.gateway_url == "ws://127.0.0.1:3001"
    assert claw.steps == ["reserved", "agent", "tunnel", "ready"]


async def test_a_progress_callback_that_fails_does_not_stop_the_provision(
    db, fleet, start_agent, keyring
):
    agent = await start_agent()
    await add_mini(fleet, agent.url)
    told: list[str] = []

    async def broken(text: str) -> None:
        told.append(text)
        raise RuntimeError("the chat is gone")

    claw = await service(db, keyring).provision("acme", "support", progress=broken)
    assert claw.status == "active" and claw.steps == ["reserved", "agent", "tunnel", "ready"]
    assert len(told) == 4 and told[-1].startswith("handshake ok")


async def assert_no_orphan(db, claws: Claws, agent: FakeAgent | None, s3, reason: str) -> None:
    """The claw is in error with ``reason``; the agent, the store and the port hold nothing."""
    claw = await claws.get("acme", "support")
    assert claw.status == "error"
    assert reason in claw.error
    assert (claw.mini, claw.mini_port, claw.bucket, claw.steps) == (None, None, None, [])
    if agent is not None:
        assert agent.claws == {}
    if s3 is not None:
        assert not await Buckets(s3).exists(f"{claws.bucket_prefix}{claw.id}")
    again = await claws.provision("acme", "second")  # the port is free again: same one
    assert again.mini_port == 3001


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("500", "agent: agent http://127.0.0.1"),
        ("not-ok", "200 without ok: gateway binary missing"),
        ("never-ready", "ready: gateway not ready after 0.3s (status crashed: gateway exited"),
    ],
)
async def test_an_agent_fault_leaves_the_claw_in_error_and_nothing_behind(
    db, fleet, start_agent, keyring, s3, fault, reason
):
    agent = await start_agent(fault=fault)
    await add_mini(fleet, agent.url)
    claws = service(db, keyring, s3, provision_timeout=0.3)
    with pytest.raises(RemoteError, match="acme/support: provisioning failed at"):
        await claws.provision("acme", "support")
    agent.fault = None
    await assert_no_orphan(db, claws, agent, s3, reason)
    assert len(agent.claws) == 1  # only the second claw


async def test_an_agent_that_is_down_leaves_the_claw_in_error_and_the_port_free(
    db, fleet, start_agent, keyring, s3
):
    agent = await start_agent()
    mini = await add_mini(fleet, down_url())
    claws = service(db, keyring, s3)
    with pytest.raises(RemoteError, match=r"failed at agent: .* not reachable"):
        await claws.provision("acme", "support")
    async with db.begin() as conn:  # the Mini comes back (at the running agent's address)
        await conn.execute(
            mac_minis.update().where(mac_minis.c.id == mini.id).values(agent_url=agent.url)
        )
    await assert_no_orphan(db, claws, agent, s3, "not reachable")


async def test_a_store_that_is_down_rolls_back_the_agent_claw(db, fleet, start_agent, keyring):
    agent = await start_agent()
    await add_mini(fleet, agent.url)
    down = S3Settings(f"http://127.0.0.1:{free_port()}", "k", "s", timeout=0.5)
    claws = service(db, keyring, down)
    with pytest.raises(RemoteError, match=r"failed at bucket: .*unreachable"):
        await claws.provision("acme", "support")
    assert agent.calls.count("DELETE /claws/claw-1") == 1
    claws.buckets = None
    await assert_no_orphan(db, claws, agent, None, "bucket: S3 store")


async def test_a_bucket_name_already_taken_fails_and_that_bucket_is_left_alone(
    db, fleet, start_agent, keyring, s3
):
    agent = await start_agent()
    await add_mini(fleet, agent.url)
    claws = service(db, keyring, s3)
    taken = f"{claws.bucket_prefix}1"
    elsewhere = Buckets(S3Settings(s3.endpoint_url, "testing", "testing", "eu-west-1"))
    await elsewhere.create(taken)
    try:
        with pytest.raises(RemoteError, match="failed at bucket: S3 create"):
            await claws.provision("acme", "support")
        assert await elsewhere.exists(taken)
        claw = await claws.get("acme", "support")
        assert (claw.status, claw.mini_port, agent.claws) == ("error", None, {})
    finally:
        await elsewhere.delete(taken)


async def test_deprovision_removes_the_agent_claw_and_frees_the_port_but_keeps_the_bucket(
    db, fleet, start_agent, keyring, s3
):
    agent = await start_agent()
    await add_mini(fleet, agent.url)
    claws = service(db, keyring, s3)
    claw = await claws.provision("acme", "support")
    await claws.deprovision("acme", "support")
    assert agent.claws == {}
    assert await Buckets(s3).exists(claw.bucket)  # kept for /claw restore until purged
    assert (await row(db)).status == "deleted"
    assert (await fleet.get("mini-1")).used == 0


async def test_deprovision_of_a_claw_without_a_bucket_deletes_its_row(
    db, fleet, start_agent, keyring
):
    agent = await start_agent()
    await add_mini(fleet, agent.url)
    claws = service(db, keyring)
    await claws.provision("acme", "support")
    await claws.deprovision("acme", "support")
    assert agent.claws == {} and await row(db) is None


async def test_a_delete_the_agent_refuses_stays_deleting_and_recover_finishes_it(
    db, fleet, start_agent, keyring
):
    agent = await start_agent()
    await add_mini(fleet, agent.url)
    claws = service(db, keyring)
    await claws.provision("acme", "support")
    agent.refuse_delete = True
    with pytest.raises(RemoteError, match=r"delete incomplete: agent .*cannot stop the gateway"):
        await claws.deprovision("acme", "support")
    assert (await claws.get("acme", "support")).status == "deleting"
    agent.refuse_delete = False
    assert await claws.recover(timedelta(0)) == ["acme/support: deleted"]
    assert agent.claws == {} and await row(db) is None


async def provision_until(
    claws: Claws, step: str, arrived: Callable[[], bool] = lambda: True
) -> asyncio.Task[Any]:
    """Start a provision and cancel it (a crash of the node) once ``step`` is recorded and
    ``arrived()`` holds (e.g. the agent has received its call)."""
    task = asyncio.create_task(claws.provision("acme", "support"))
    for _ in range(500):
        await asyncio.sleep(0.01)
        found = await claws.list("acme")
        if found and step in found[0].steps and arrived():
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return task


async def test_recover_finishes_a_claw_whose_gateway_became_ready(
    db, fleet, start_agent, keyring, s3
):
    agent = await start_agent(fault="never-ready")
    await add_mini(fleet, agent.url)
    claws = service(db, keyring, s3, provision_timeout=30)
    await provision_until(claws, "tunnel")
    assert (await claws.get("acme", "support")).status == "provisioning"
    assert await claws.recover() == []  # not stale yet: maybe another node is still on it
    agent.fault = None
    assert await claws.recover(timedelta(0)) == ["acme/support: finished (active)"]
    claw = await claws.get("acme", "support")
    assert (claw.status, claw.mini_port, claw.steps[-1]) == ("active", 3001, "ready")


async def test_recover_rolls_back_a_claw_left_in_provisioning_with_partial_steps(
    db, fleet, start_agent, keyring, s3
):
    agent = await start_agent(latency=0.3)
    await add_mini(fleet, agent.url)
    claws = service(db, keyring, s3)
    # Cancelled while the agent call is in flight (it has reached the agent, slow to answer).
    await provision_until(claws, "agent", lambda: "POST /claws" in agent.calls)
    for _ in range(100):  # the agent finishes creating the claw anyway
        if agent.claws:
            break
        await asyncio.sleep(0.05)
    assert list(agent.claws) == ["claw-1"]
    assert await claws.recover(timedelta(0)) == ["acme/support: rolled back"]
    agent.latency = 0
    await assert_no_orphan(db, claws, agent, s3, "the node stopped while provisioning")


async def test_an_incomplete_rollback_keeps_the_port_until_recover_completes_it(
    db, fleet, start_agent, keyring
):
    agent = await start_agent(fault="never-ready", refuse_delete=True)
    await add_mini(fleet, agent.url)
    claws = service(db, keyring, provision_timeout=0.1)
    with pytest.raises(RemoteError, match="failed at ready"):
        await claws.provision("acme", "support")
    claw = await claws.get("acme", "support")
    assert (claw.status, claw.mini_port, claw.steps) == ("error", 3001, ["reserved", "agent"])
    assert "rollback incomplete" in claw.error and list(agent.claws) == ["claw-1"]
    agent.refuse_delete = False
    assert await claws.recover(timedelta(0)) == ["acme/support: rolled back"]
    claw = await claws.get("acme", "support")
    assert (claw.status, claw.mini_port, agent.claws) == ("error", None, {})


async def test_without_a_key_every_claws_operation_refuses_clearly(db, fleet):
    claws = Claws(db, None, no_key_reason="CLAWOPS_SECRET_KEY is not set: claws need a key")
    for call in (
        claws.provision("acme", "support"),
        claws.deprovision("acme", "support"),
        claws.gateway_token("acme", "support"),
        claws.recover(),
    ):
        with pytest.raises(SecretsError, match="CLAWOPS_SECRET_KEY is not set"):
            await call
    assert await claws.list() == []


@pytest.mark.parametrize(
    ("org", "slug", "message"),
    [
        ("acme", "Bad_Name", "claw name 'Bad_Name'"),
        ("acme", "-dash", "claw name '-dash'"),
        ("acme", "x" * 64, "claw name"),
        ("ghost", "support", "no org 'ghost'"),
    ],
)
async def test_bad_input_is_refused_and_nothing_is_written(
    db, fleet, start_agent, keyring, org, slug, message
):
    agent = await start_agent()
    await add_mini(fleet, agent.url)
    with pytest.raises(InputError, match=message):
        await service(db, keyring).provision(org, slug)
    assert await service(db, keyring).list() == [] and agent.calls == []


async def test_a_second_claw_with_the_same_name_is_refused(db, fleet, start_agent, keyring):
    agent = await start_agent()
    await add_mini(fleet, agent.url)
    claws = service(db, keyring)
    await claws.provision("acme", "support")
    with pytest.raises(InputError, match="claw acme/support exists \\(active\\)"):
        await claws.provision("acme", "support")
    assert len(agent.claws) == 1


async def test_the_least_loaded_online_mini_is_chosen_and_draining_ones_skipped(
    db, fleet, start_agent, keyring
):
    agents = [await start_agent() for _ in range(3)]
    for n, agent in enumerate(agents, 1):
        await add_mini(fleet, agent.url, name=f"mini-{n}")
    await fleet.drain("mini-3")
    claws = service(db, keyring)
    placed = [(await claws.provision("acme", f"c{i}")).mini for i in range(4)]
    assert sorted(placed) == ["mini-1", "mini-1", "mini-2", "mini-2"]
    assert agents[2].claws == {}


async def test_orgs_are_mirrored_from_the_config(db):
    await sync_orgs(db, [OrgConfig(slug="acme", name="Acme", members=[1, 2])])
    await sync_orgs(db, [OrgConfig(slug="beta", name="Beta", members=[2])])
    assert not await org_exists(db, "acme") and await org_exists(db, "beta")
    assert await is_member(db, "beta", 2) and not await is_member(db, "beta", 1)


async def test_rotation_reseals_every_token_under_the_new_key(db, fleet, start_agent, keyring):
    agent = await start_agent()
    await add_mini(fleet, agent.url)
    await Minis(db, keyring).add(
        "mini-2", agent.url, ports="4001-4010", capacity=1, agent_token="sealed-agent-token-1"
    )  # fmt: skip
    old = service(db, keyring)
    await old.provision("acme", "support")
    token = await old.gateway_token("acme", "support")
    newer = Keyring.parse(f"{generate_key()},{generate_key()}")
    both = Keyring({**keyring.keys, **newer.keys}, newer.current)
    assert await rotate_secrets(db, both) == 2
    assert await rotate_secrets(db, both) == 0
    assert (await row(db)).gateway_token_sealed.startswith(f"v1:{newer.current}:")
    only_new = Keyring({newer.current: newer.keys[newer.current]}, newer.current)
    assert await service(db, only_new).gateway_token("acme", "support") == token


async def concurrent(db, fleet, start_agent, keyring, minis: int, capacity: int, n: int):
    for i in range(minis):
        agent = await start_agent(latency=0.02)
        await add_mini(fleet, agent.url, name=f"mini-{i}", ports="3001-3100", capacity=capacity)
    claws = service(db, keyring, provision_timeout=10, agent_timeout=10)
    results = await asyncio.gather(
        *(claws.provision("acme", f"c{i}") for i in range(n)), return_exceptions=True
    )
    return claws, results


async def check_placement(fleet: Minis, claws: Claws, n: int, capacity: int) -> None:
    placed = [(c.mini, c.mini_port) for c in await claws.list() if c.status == "active"]
    assert len(placed) == n and len(set(placed)) == n
    assert all(m.used <= capacity for m in await fleet.list())


async def test_fifty_concurrent_provisions_on_postgresql_get_distinct_ports_within_capacity(
    db, fleet, start_agent, keyring
):
    if db.dialect != "postgresql":
        pytest.skip("the 50-way race is the PostgreSQL row-locking test")
    claws, results = await concurrent(db, fleet, start_agent, keyring, 5, 10, 50)
    assert [r for r in results if isinstance(r, BaseException)] == []
    await check_placement(fleet, claws, 50, 10)
    assert sorted(m.used for m in await fleet.list()) == [10] * 5
    with pytest.raises(NoCapacity, match="no Mini has capacity"):
        await claws.provision("acme", "one-too-many")
    assert await row(db, slug="one-too-many") is None


async def test_twenty_concurrent_provisions_on_sqlite_get_distinct_ports_within_capacity(
    db, fleet, start_agent, keyring
):
    if db.dialect != "sqlite":
        pytest.skip("the SQLite variant of the race")
    claws, results = await concurrent(db, fleet, start_agent, keyring, 2, 10, 21)
    failures = [r for r in results if isinstance(r, BaseException)]
    assert [type(f) for f in failures] == [NoCapacity]
    await check_placement(fleet, claws, 20, 10)
