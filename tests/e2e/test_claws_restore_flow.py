"""Never lose a claw, through the bot (issue 14): backup, delete keeping the bucket, restore with
the files back, --force asked twice, and the faults: a final backup that fails, refused
restores, the agent dying mid-restore, a viewer's presses. A real agent process, moto's S3."""

from __future__ import annotations

import asyncio
import glob
import shutil
import signal
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from bot.node import Node
from core.buckets import Buckets
from core.minis import Minis
from core.openclaw import gateway_url, handshake
from core.tables import claws as claws_table
from core.tables import utcnow
from tests.agent.conftest import FAKE_GATEWAY, Agent
from tests.agent.test_agent_backup import s3_table
from tests.agent.test_real_gateway import NODE, OPENCLAW
from tests.auxil.net import free_port
from tests.bot.test_bot import ADMIN, GROUP, VIEWER, say
from tests.bot.test_fleet_commands import confirmed, only
from tests.e2e.test_claws_flow import add_mini, start_node

PUBLIC = "https://ops.example.com"


@pytest.fixture
async def node(tmp_path, monkeypatch, tg, s3):
    running = await start_node(
        tmp_path, monkeypatch, tg, s3, sidecar={"port": free_port(), "public_url": PUBLIC}
    )
    yield running
    await running.stop()


def workspace(agent: Agent, agent_id: str) -> Path:
    return agent.state_dir / "homes" / agent_id / ".openclaw" / "workspace"


async def new_claw(node: Node, tg, agent: Agent, monkeypatch, slug: str = "support"):
    await add_mini(node, agent, monkeypatch)
    result = await confirmed(tg, f"/claw new acme {slug}", wait=60)
    assert "Claw ready" in result, result
    return await node.claws_service().get("acme", slug)


async def press_second(tg, first_text: str, which: int, user: int = ADMIN) -> str:
    """After ``confirmed`` returned the second question: press its button ``which``; the text
    the question ends as."""
    question = [s for s in tg.sent if s.kind == "edit" and s.text == first_text][-1]
    assert question.buttons and question.buttons[0][0]["text"].endswith("Confirm")
    await tg.press(
        GROUP, user, question.message_id or 0, question.buttons[0][which]["callback_data"]
    )
    for _ in range(400):
        edits = [s for s in tg.sent if s.kind == "edit" and s.message_id == question.message_id]
        if edits and edits[-1].text != first_text and not edits[-1].text.startswith("⏳"):
            return edits[-1].text
        await asyncio.sleep(0.05)
    raise AssertionError("the second question was not answered")


async def test_a_deleted_claw_is_restored_with_its_files_and_shows_its_buttons(
    node, tg, s3, start_agent: Callable[..., Agent], monkeypatch
):
    agent = start_agent(extra_toml=s3_table(s3))
    claw = await new_claw(node, tg, agent, monkeypatch)
    workspace(agent, claw.agent_id).mkdir(parents=True, exist_ok=True)
    (workspace(agent, claw.agent_id) / "MEMORY.md").write_text("remember the milk\n")
    status = (await say(tg, GROUP, VIEWER, "/claw status support"))[0]
    assert [b[0]["text"] for b in status.buttons] == ["Web chat"]  # no tunnel: no gateway link
    assert status.buttons[0][0]["url"] == f"{PUBLIC}/claws/acme/support"

    backed = await confirmed(tg, "/claw backup support", wait=30)
    assert backed.startswith("💾 acme/support backed up: backups/") and "(tarball)" in backed
    deleted = await confirmed(tg, "/claw delete support", wait=30)
    assert "acme/support</b> deleted" in deleted and "final backup backups/" in deleted
    gone = await node.claws_service().get("acme", "support")
    assert (gone.status, gone.mini_port) == ("deleted", None) and gone.backup_key
    assert await Buckets(s3).exists(claw.bucket)
    assert agent.call("GET", "/claws").json()["claws"] == []
    assert (await Minis(node.db).get("mini-1")).used == 0
    assert not workspace(agent, claw.agent_id).exists()
    listing = only(await say(tg, GROUP, VIEWER, "/claws"))
    assert "support" not in listing
    purge_day = (gone.deleted_at + timedelta(days=30)).strftime("%Y-%m-%d")
    listed = only(await say(tg, GROUP, VIEWER, "/claws --deleted"))
    assert "acme/support</b> · deleted" in listed and f"purged {purge_day}" in listed
    assert f"last backup: {gone.backup_key}" in listed
    (refused,) = await say(tg, GROUP, ADMIN, "/claw new acme support")
    assert "/claw restore acme support" in refused.text and not refused.buttons

    restored = await confirmed(tg, "/claw restore acme support", wait=60)
    assert "Claw restored" in restored and "active" in restored, restored
    (answer,) = [s for s in tg.sent if s.kind == "edit" and s.text == restored]
    assert [b[0]["text"] for b in answer.buttons] == ["Web chat"]  # the edited reply's buttons
    back = await node.claws_service().get("acme", "support")
    assert (back.id, back.status, back.deleted_at) == (claw.id, "active", None)
    assert (workspace(agent, back.agent_id) / "MEMORY.md").read_text() == "remember the milk\n"
    token = await node.claws_service().gateway_token("acme", "support")
    assert (await handshake(gateway_url(back.mini_port), token, timeout=10)).protocol == 4
    async with node.db.begin() as conn:  # a tunnel: the gateway button too
        await conn.execute(claws_table.update().values(tunnel_hostname="claw-1-m1.example.com"))
    status = (await say(tg, GROUP, VIEWER, "/claw status support"))[0]
    assert [(b[0]["text"], b[0]["url"]) for b in status.buttons] == [
        ("OpenClaw Gateway", "https://claw-1-m1.example.com"),
        ("Web chat", f"{PUBLIC}/claws/acme/support"),
    ]


async def test_a_final_backup_that_fails_stops_the_delete_and_force_asks_twice(
    node, tg, s3, start_agent: Callable[..., Agent], monkeypatch
):
    down = type(s3)(f"http://127.0.0.1:{free_port()}", "k", "s", "us-east-1")
    agent = start_agent(extra_toml=s3_table(down))  # its store is down
    claw = await new_claw(node, tg, agent, monkeypatch)
    result = await confirmed(tg, "/claw delete support", wait=60)
    assert "backup failed" in result and "--force" in result and "Nothing was deleted" in result
    assert (await node.claws_service().get("acme", "support")).status == "active"
    assert [c["clawId"] for c in agent.call("GET", "/claws").json()["claws"]] == [claw.agent_id]

    second = await confirmed(tg, "/claw delete support --force", wait=10)
    assert "without a final backup" in second
    # The viewer cannot press it; Cancel on the second question changes nothing.
    question = [s for s in tg.sent if s.kind == "edit" and s.text == second][-1]
    after = tg.sent[-1].seq
    await tg.press(GROUP, VIEWER, question.message_id or 0, question.buttons[0][0]["callback_data"])
    answers = await tg.wait_sent(after, 5.0)
    assert any("Only the admin who asked" in a.text for a in answers)
    assert "Cancelled" in await press_second(tg, second, 1)
    assert (await node.claws_service().get("acme", "support")).status == "active"

    agent.stop()  # the agent down: the final backup fails too, clearly and in bounded time
    result = await confirmed(tg, "/claw delete support", wait=60)
    assert "backup failed" in result and "not reachable" in result, result
    assert (await node.claws_service().get("acme", "support")).status == "active"
    agent.start()
    second = await confirmed(tg, "/claw delete support --force", wait=10)
    done = await press_second(tg, second, 0)
    assert "deleted" in done and "no final backup (--force)" in done, done
    assert (await node.claws_service().get("acme", "support")).status == "deleted"


async def test_restores_that_cannot_be_are_refused_clearly(
    node, tg, s3, start_agent: Callable[..., Agent], monkeypatch
):
    agent = start_agent(extra_toml=s3_table(s3))
    await new_claw(node, tg, agent, monkeypatch)
    for text, reason in [
        ("/claw restore acme support", "acme/support is active, not deleted"),
        ("/claw restore acme ghost", "no claw acme/ghost"),
        ("/claw restore acme", "Usage"),
    ]:
        (reply,) = await say(tg, GROUP, ADMIN, text)
        assert not reply.buttons and reason in reply.text, reply.text
    (denied,) = await say(tg, GROUP, VIEWER, "/claw backup support")
    assert "for admins" in denied.text and not denied.buttons
    await confirmed(tg, "/claw delete support", wait=30)
    await Minis(node.db).drain("mini-1")
    result = await confirmed(tg, "/claw restore acme support", wait=30)
    assert "no Mini has capacity" in result
    await Minis(node.db).undrain("mini-1")
    async with node.db.begin() as conn:
        await conn.execute(claws_table.update().values(deleted_at=utcnow() - timedelta(days=31)))
    (past,) = await say(tg, GROUP, ADMIN, "/claw restore acme support")
    assert "past the retention" in past.text and not past.buttons
    assert (await node.claws_service().get("acme", "support")).status == "deleted"


async def test_the_agent_dying_mid_restore_leaves_the_claw_deleted_with_its_bucket(
    tmp_path, tg, s3, start_agent: Callable[..., Agent], monkeypatch
):
    node = await start_node(tmp_path, monkeypatch, tg, s3, {"provision_timeout": "4s"})
    try:
        # Gateways take 2 s to listen: the restore is caught between its create and ready.
        agent = start_agent(
            extra_toml=s3_table(s3), gateway_command=[*FAKE_GATEWAY, "--delay", "2"]
        )
        claw = await new_claw(node, tg, agent, monkeypatch)
        await confirmed(tg, "/claw delete support", wait=30)
        task = asyncio.create_task(confirmed(tg, "/claw restore acme support", wait=60))
        for _ in range(400):
            held = agent.call("GET", "/claws").json()["claws"]
            if held:
                break
            await asyncio.sleep(0.01)
        assert held and not held[0]["ready"]
        agent.stop(signal.SIGKILL)  # the agent dies mid-restore
        result = await task
        assert "restore failed at ready" in result and "not reachable" in result, result
        # It could not be told to stop that gateway: the port stays held until it can.
        stuck = await node.claws_service().get("acme", "support")
        assert stuck.status == "deleting" and stuck.mini_port is not None
        agent.start()
        assert await node.claws_service().recover(timedelta(0)) == ["acme/support: deleted"]
        gone = await node.claws_service().get("acme", "support")
        assert (gone.status, gone.mini_port) == ("deleted", None)
        assert agent.call("GET", "/claws").json()["claws"] == []
        assert await Buckets(s3).exists(claw.bucket)
    finally:
        await node.stop()


@pytest.mark.slow
@pytest.mark.skipif(
    not (NODE.exists() and OPENCLAW.exists()),
    reason="the real OpenClaw gateway is not installed: run scripts/setup-openclaw",
)
async def test_a_claw_on_a_real_openclaw_gateway_is_deleted_and_restored_with_its_files(
    node, tg, s3, start_agent: Callable[..., Agent], monkeypatch
):
    before = set(glob.glob("/tmp/openclaw*"))
    agent = start_agent(
        extra_toml=s3_table(s3), gateway_command=[str(NODE), str(OPENCLAW), "gateway", "run"]
    )
    try:
        claw = await new_claw(node, tg, agent, monkeypatch, slug="real")
        workspace(agent, claw.agent_id).mkdir(parents=True, exist_ok=True)
        (workspace(agent, claw.agent_id) / "NOTES.md").write_text("kept across delete\n")
        deleted = await confirmed(tg, "/claw delete acme/real", wait=120)
        assert "deleted" in deleted and "final backup backups/" in deleted, deleted
        assert agent.call("GET", "/claws").json()["claws"] == []
        assert await Buckets(s3).exists(claw.bucket)
        listed = only(await say(tg, GROUP, VIEWER, "/claws --deleted"))
        assert "acme/real</b> · deleted" in listed and "purged " in listed
        restored = await confirmed(tg, "/claw restore acme real", wait=120)
        assert "Claw restored" in restored, restored
        back = await node.claws_service().get("acme", "real")
        assert back.status == "active" and back.id == claw.id
        notes = workspace(agent, back.agent_id) / "NOTES.md"
        assert notes.read_text() == "kept across delete\n"
        token = await node.claws_service().gateway_token("acme", "real")
        hello = await handshake(gateway_url(back.mini_port), token, timeout=20)
        assert hello.protocol == 4
        await node.claws_service().deprovision("acme", "real", force=True)
    finally:
        for path in set(glob.glob("/tmp/openclaw*")) - before:
            shutil.rmtree(path, ignore_errors=True)


async def test_the_second_question_of_a_forced_delete_expires_and_nothing_is_deleted(
    tmp_path, tg, s3, start_agent: Callable[..., Agent], monkeypatch
):
    node = await start_node(tmp_path, monkeypatch, tg, s3, telegram={"confirm_timeout": "1s"})
    try:
        agent = start_agent(extra_toml=s3_table(s3))
        await add_mini(node, agent, monkeypatch)
        await node.claws_service().provision("acme", "support", created_by=ADMIN)
        second = await confirmed(tg, "/claw delete support --force", wait=10)
        assert "without a final backup" in second and "within 1 s" in second
        question = [s for s in tg.sent if s.kind == "edit" and s.text == second][-1]
        for _ in range(100):
            edits = [s for s in tg.sent if s.kind == "edit" and s.message_id == question.message_id]
            if edits[-1].text.startswith("⌛ Expired"):
                break
            await asyncio.sleep(0.05)
        assert edits[-1].text.startswith("⌛ Expired") and not edits[-1].buttons
        after = tg.sent[-1].seq
        await tg.press(
            GROUP, ADMIN, question.message_id or 0, question.buttons[0][0]["callback_data"]
        )
        answers = await tg.wait_sent(after, 5.0)
        assert any("no longer valid" in a.text for a in answers)
        assert (await node.claws_service().get("acme", "support")).status == "active"
    finally:
        await node.stop()
