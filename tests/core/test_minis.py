"""The Mac Mini inventory on both backends: validation, listing with usage, drain, remove."""

from __future__ import annotations

import pytest
from sqlalchemy import func, insert, select

from core.crypto import Keyring, SecretsError, generate_key
from core.errors import InputError
from core.minis import Minis, agent_token
from core.tables import claws, mac_minis, utcnow


async def add(minis: Minis, hostname: str = "mini-1", **kwargs):
    kwargs.setdefault("ports", "3001-3010")
    kwargs.setdefault("capacity", 4)
    if "agent_token" not in kwargs:
        kwargs.setdefault("agent_token_env", "MINI_AGENT_TOKEN")
    return await minis.add(hostname, kwargs.pop("agent_url", "http://127.0.0.1:7600"), **kwargs)


async def count(db) -> int:
    async with db.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(mac_minis))).scalar_one())


async def test_a_mini_is_added_and_listed_online_with_nothing_used(db):
    minis = Minis(db)
    mini = await add(minis, tunnel_suffix="mini1.claws.example.com", gateway_host="10.0.0.5")
    assert (mini.hostname, mini.ports, mini.capacity, mini.status, mini.used) == (
        "mini-1", "3001-3010", 4, "online", 0,
    )  # fmt: skip
    assert mini.address == "10.0.0.5"
    assert [m.hostname for m in await minis.list()] == ["mini-1"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"agent_url": "ftp://host"}, "agent_url"),
        ({"agent_url": "not a url"}, "agent_url"),
        ({"agent_url": "http://host:99999"}, "agent_url"),
        ({"ports": "3001"}, "ports"),
        ({"ports": "3100-3001"}, "ports"),
        ({"ports": "80-90"}, "ports"),
        ({"capacity": 0}, "capacity"),
        ({"capacity": 11}, "capacity"),
        ({"agent_token_env": "lower case"}, "agent_token_env"),
        ({"tunnel_suffix": "Not_A.Domain"}, "tunnel_suffix"),
        ({"gateway_host": "bad host"}, "gateway_host"),
    ],
)
async def test_a_bad_field_is_refused_by_name_and_nothing_is_written(db, kwargs, field):
    with pytest.raises(InputError, match=f"^{field}: "):
        await add(Minis(db), **kwargs)
    assert await count(db) == 0


async def test_a_duplicate_hostname_is_refused_and_the_first_is_kept(db):
    minis = Minis(db)
    await add(minis, capacity=2)
    with pytest.raises(InputError, match="hostname: mini-1 is already in the inventory"):
        await add(minis, capacity=3)
    assert [(m.hostname, m.capacity) for m in await minis.list()] == [("mini-1", 2)]


async def test_a_token_value_is_stored_sealed_and_only_with_a_key(db):
    with pytest.raises(SecretsError, match="needs the claws key"):
        await add(Minis(db), agent_token="s3cret-agent-token-value")
    assert await count(db) == 0
    keyring = Keyring.parse(generate_key())
    mini = await add(Minis(db, keyring), agent_token="s3cret-agent-token-value")
    assert mini.agent_token_sealed and "s3cret" not in mini.agent_token_sealed
    assert agent_token(mini, keyring) == "s3cret-agent-token-value"


async def test_a_token_variable_is_read_when_the_agent_is_called(db, monkeypatch):
    mini = await add(Minis(db))
    with pytest.raises(InputError, match="MINI_AGENT_TOKEN unset"):
        agent_token(mini, None)
    monkeypatch.setenv("MINI_AGENT_TOKEN", "from-the-env")
    assert agent_token(mini, None) == "from-the-env"


async def test_drain_and_undrain_change_the_status(db):
    minis = Minis(db)
    await add(minis)
    assert (await minis.drain("mini-1")).status == "draining"
    assert (await minis.undrain("mini-1")).status == "online"
    with pytest.raises(InputError, match="no Mini 'ghost'"):
        await minis.drain("ghost")


async def test_a_mini_holding_claws_cannot_be_removed_and_one_without_can(db):
    minis = Minis(db)
    mini = await add(minis)
    now = utcnow()
    async with db.begin() as conn:
        await conn.execute(
            insert(claws).values(
                org="acme", slug="a", status="active", mini_id=mini.id, mini_port=3001,
                created_at=now, updated_at=now,
            )
        )  # fmt: skip
    assert (await minis.get("mini-1")).used == 1
    with pytest.raises(InputError, match="still holds 1 claw"):
        await minis.remove("mini-1")
    assert await count(db) == 1
    async with db.begin() as conn:
        await conn.execute(claws.delete())
    await minis.remove("mini-1")
    assert await count(db) == 0


async def test_the_configs_minis_seed_the_inventory_once_and_never_overwrite_it(db):
    from core.config import MiniConfig
    from core.minis import seed_minis

    configured = [
        MiniConfig(hostname="felipes-mac-mini", agent_url="http://127.0.0.1:7600",
                   agent_token_env="MINI_TOKEN", ports="18800-18899", capacity=6,
                   tunnel_suffix="mini1.claws.example.dev"),
    ]  # fmt: skip
    assert await seed_minis(db, configured) == ["felipes-mac-mini"]
    await Minis(db).drain("felipes-mac-mini")
    assert await seed_minis(db, configured) == []
    (mini,) = await Minis(db).list()
    assert (mini.status, mini.capacity, mini.ports) == ("draining", 6, "18800-18899")


async def test_a_config_mini_the_inventory_refuses_stops_the_start(db):
    from core.config import MiniConfig
    from core.errors import StartupRefused
    from core.minis import seed_minis

    bad = MiniConfig(hostname="m", agent_url="ftp://nope", agent_token_env="T", ports="10-20",
                     capacity=2)  # fmt: skip
    with pytest.raises(StartupRefused, match=r"claws.minis\[0\] \(m\): agent_url"):
        await seed_minis(db, [bad])
    assert await count(db) == 0
