"""`supervision` events over real sockets: the whole tree (`sigma.app.serve`) in process, a
`websockets` client that opts in, a fault that crashes the poller, and the tree healing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
import websockets.asyncio.client
from helpers import tree_config

from sigma.app import RunningApp, serve
from sigma.config import Config
from sigma.faults import FaultSpec
from sigma.hub.messages import HubMessage
from sigma.supervision.spec import ChildExited, ChildStarted, SupervisionEvent
from sigma.supervision.supervisor import DynamicSupervisor, Supervisor
from sigma.supervision_feed import TreeView, feed_supervision

ROOT_CHILDREN = ["engine", "hub", "sessions", "gateway", "poller", "heartbeat"]


@asynccontextmanager
async def running_app(config: Config) -> AsyncIterator[RunningApp]:
    async with trio.open_nursery() as nursery:
        app: RunningApp = await nursery.start(serve, config)
        yield app
        nursery.cancel_scope.cancel()


def supervision_session(
    url: str, *, crash: trio.lowlevel.TrioToken, app: RunningApp, subscribe: bool = True
) -> list[dict[str, Any]]:
    """Opt in to supervision, crash the poller once the tree snapshot arrived, and collect
    supervision messages until the poller runs again."""

    async def run() -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        async with websockets.asyncio.client.connect(url) as ws:
            seen.append(orjson.loads(await ws.recv()))  # welcome
            if subscribe:
                await ws.send('{"action": "subscribe", "types": ["supervision"], "id": 1}')
            else:
                trio.from_thread.run_sync(_crash_poller, app, trio_token=crash)
            deadline = asyncio.get_running_loop().time() + (10.0 if subscribe else 2.0)
            while True:
                left = deadline - asyncio.get_running_loop().time()
                try:
                    message = orjson.loads(await asyncio.wait_for(ws.recv(), max(left, 0.0)))
                except TimeoutError:
                    return seen
                if message["type"] not in ("supervision", "subscriptions", "error"):
                    continue
                seen.append(message)
                if message.get("snapshot"):
                    trio.from_thread.run_sync(_crash_poller, app, trio_token=crash)
                data = message["data"]
                if (data.get("kind"), data.get("child_id")) == ("child_started", "poller"):
                    return seen

    return asyncio.run(run())


def _crash_poller(app: RunningApp) -> None:
    app.faults.arm(FaultSpec(point="poller.call", action="raise", once=True))


async def test_the_tree_snapshot_then_a_crash_and_restart_arrive_as_supervision_events(
    tmp_path: Path,
) -> None:
    async with running_app(tree_config(tmp_path)) as app:
        assert app.endpoints.gateway is not None
        token = trio.lowlevel.current_trio_token()
        messages = await trio.to_thread.run_sync(
            lambda: supervision_session(
                app.endpoints.gateway.ws_url,  # type: ignore[union-attr]
                crash=token,
                app=app,
            )
        )
    welcome, reply, snapshot, *live = messages
    assert "supervision" not in welcome["data"]["subscriptions"]  # opt-in only
    assert "supervision" in reply["data"]["subscriptions"]
    assert snapshot["snapshot"] is True  # the newest tree, whose seq may follow our welcome
    tree = snapshot["data"]["tree"]
    assert tree["supervisor"] == "root"
    assert [child["id"] for child in tree["children"]] == ROOT_CHILDREN
    assert {child["state"] for child in tree["children"]} == {"running"}
    # the sessions' supervisor's events (one per connection) never reach the wire
    assert {m["data"]["supervisor"] for m in live} == {"root"}
    kinds = [(m["data"]["kind"], m["data"]["child_id"]) for m in live]
    assert kinds == [
        ("child_exited", "poller"),
        ("restart_scheduled", "poller"),
        ("child_started", "poller"),
    ]
    exited, scheduled, started = (m["data"] for m in live)
    assert exited["supervisor"] == "root" and exited["abnormal"] is True
    assert "InjectedFault" in exited["reason"]
    assert scheduled["attempt"] == 0 and scheduled["delay_s"] >= 0
    assert started["restarts"] == 1
    poller = next(child for child in started["tree"]["children"] if child["id"] == "poller")
    assert poller == {
        "id": "poller",
        "state": "running",
        "restarts": 1,
        "last_exit": exited["reason"],
        "supervisor": False,
    }
    sessions = next(child for child in started["tree"]["children"] if child["id"] == "sessions")
    assert sessions["child_count"] == 1  # this very connection
    seqs = [m["seq"] for m in live]
    assert seqs == sorted(seqs) and all(seq > snapshot["seq"] for seq in seqs)


async def test_a_client_that_does_not_opt_in_sees_no_supervision_event(tmp_path: Path) -> None:
    async with running_app(tree_config(tmp_path)) as app:
        assert app.endpoints.gateway is not None
        token = trio.lowlevel.current_trio_token()
        messages = await trio.to_thread.run_sync(
            lambda: supervision_session(
                app.endpoints.gateway.ws_url,  # type: ignore[union-attr]
                crash=token,
                app=app,
                subscribe=False,
            )
        )
        assert app.faults.point("poller.call").fired == 1  # the tree did crash and restart
        assert app.root.which_children()[4].restarts == 1
    assert [m["type"] for m in messages] == ["notification"]  # the welcome, then nothing


async def test_the_sessions_supervisors_events_stay_off_the_wire() -> None:
    """One session per connection: its start and end would cost every client two seqs."""
    tree = TreeView(Supervisor("root", []), DynamicSupervisor("sessions"))
    events_send, events_receive = trio.open_memory_channel[SupervisionEvent](8)
    hub_send, hub_receive = trio.open_memory_channel[HubMessage](8)
    async with events_send:
        events_send.send_nowait(ChildStarted(supervisor="sessions", at=0.0, child_id="c-1"))
        events_send.send_nowait(ChildStarted(supervisor="root", at=0.0, child_id="poller"))
        events_send.send_nowait(
            ChildExited(
                supervisor="sessions", at=0.0, child_id="c-1", reason="normal", abnormal=False
            )
        )
    await feed_supervision(events_receive, hub_send, tree)
    published = hub_receive.receive_nowait().events  # type: ignore[union-attr]
    assert [(e.data["supervisor"], e.data["child_id"]) for e in published] == [("root", "poller")]
    with pytest.raises(trio.WouldBlock):
        hub_receive.receive_nowait()
