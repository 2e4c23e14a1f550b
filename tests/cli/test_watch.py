"""`sigma watch`: the view-model (sync), the renderer, and the watcher against real servers."""

from __future__ import annotations

import io
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from helpers import make_config, running_stack
from rich.console import Console

from sigma.backoff import FullJitter
from sigma.cli.main import main
from sigma.cli.probe_verdict import Status
from sigma.cli.watch.run import Watcher, WatchOptions
from sigma.cli.watch.state import LogKind, Phase, Resume, ResumePoint, WatchState
from sigma.cli.watch.summary import summarize
from sigma.cli.watch.view import dashboard, snapshot
from sigma.client import Connected
from sigma.client.connection import Welcome
from sigma.client.sequence import Sequencer
from sigma.config import GatewayConfig, HeartbeatConfig
from sigma.heartbeat import run_heartbeat
from sigma.protocol.event_types import ALL_EVENT_TYPES, EVENT_TYPES
from sigma.protocol.server_messages import Event, Reply

URL = "ws://127.0.0.1:1/ws"
FAST_RETRY = FullJitter(min_s=0.2, max_s=0.2)

# --- the view-model ------------------------------------------------------------------------------


def a_welcome(
    *, epoch: str = "e1", last_seq: int = 0, recovered: bool | None = None, client: str = "c1"
) -> Welcome:
    return Welcome(
        kind="welcome",
        client_id=client,
        subscriptions=list(ALL_EVENT_TYPES),
        last_seq=last_seq,
        epoch=epoch,
        heartbeat_interval=15.0,
        server_version="0.1.0",
        recovered=recovered,
    )


def event(seq: int, event_type: str = "heartbeat", **data: Any) -> Event:
    return Event.model_validate({"type": event_type, "seq": seq, "data": data})


def texts(state: WatchState, kind: LogKind | None = None) -> list[str]:
    return [line.text for line in state.log if kind is None or line.kind is kind]


def event_seqs(state: WatchState) -> list[int | None]:
    return [line.seq for line in state.log if line.kind is LogKind.EVENT]


class Feed:
    """Feeds a `WatchState` the way the watcher's stream does: through a `Sequencer`."""

    def __init__(self, state: WatchState) -> None:
        self.state = state
        self.sequencer = Sequencer()

    def welcome(self, welcome: Welcome, now_s: float = 0.0) -> None:
        self.state.connecting(now_s)
        resume = self.sequencer.resume_point
        gap = self.sequencer.welcomed(welcome)
        self.state.apply(Connected(URL, welcome, resume[0] if resume else None), now_s)
        if gap is not None:
            self.state.apply(gap, now_s)

    def event(self, message: Event, now_s: float = 1.0) -> None:
        gap, item = self.sequencer.event(message)
        if gap is not None:
            self.state.apply(gap, now_s)
        if message.type in self.state.wanted_types:
            self.state.apply(item, now_s)

    def dropped(self, count: int, now_s: float = 1.0) -> None:
        self.state.apply(self.sequencer.dropped(count), now_s)


def connected(state: WatchState, welcome: Welcome, now_s: float = 0.0) -> Feed:
    feed = Feed(state)
    feed.welcome(welcome, now_s)
    return feed


def test_first_welcome_sets_the_baseline() -> None:
    state = WatchState(URL)
    feed = connected(state, a_welcome(last_seq=41), 10.0)
    assert (state.phase, state.epoch, state.last_seq, state.connects) == (
        Phase.CONNECTED,
        "e1",
        41,
        1,
    )
    assert texts(state) == ["connected: epoch e1, last seq 41, server 0.1.0"]
    feed.event(event(42), 11.0)
    assert state.resume_point() == ResumePoint(since=42, epoch="e1")
    assert feed.sequencer.resume_point == (42, "e1")


def test_events_fill_the_panels() -> None:
    state = WatchState(URL)
    connected(state, a_welcome())
    system = {"cpu_usage": 12.5, "memory": {"percent": 40.0}, "load_average": [0.5, 0.4, 0.3]}
    state.received(event(1, "system_status", **system), 1.0)
    state.received(event(2, "agent_status", agent_id="w1", state="idle", change="added"), 1.0)
    state.received(event(3, "agent_status", agent_id="w2", state="busy", change="added"), 1.0)
    state.received(event(4, "agent_status", agent_id="w1", change="removed"), 1.0)
    job = {"job_id": "j1", "state": "running", "progress": 40.0, "path": "a.log"}
    state.received(event(5, "compression_update", **job), 1.0)
    state.received(event(6, "compression_update", **{**job, "progress": 90.0}), 1.0)
    assert state.system is not None and state.system.data["cpu_usage"] == 12.5
    assert list(state.agents) == ["w2"]
    assert state.jobs["j1"].data["progress"] == 90.0 and state.jobs["j1"].seq == 6
    assert event_seqs(state) == [1, 2, 3, 4, 5, 6]
    assert texts(state, LogKind.EVENT)[0] == "cpu 12.5% mem 40.0% load 0.50"
    assert state.counts["agent_status"] == 3


def test_resume_that_recovered_is_a_gap_free_pause() -> None:
    state = WatchState(URL)
    feed = connected(state, a_welcome(last_seq=2))
    feed.event(event(3), 1.0)
    state.disconnected("code 1001 (server shutting down)", 2.0, retry_in_s=0.5)
    assert (state.phase, state.retry_at_s) == (Phase.WAITING, 2.5)
    feed.welcome(a_welcome(last_seq=5, recovered=True), 2.6)
    for seq in (4, 5, 6):  # the replay, then live
        feed.event(event(seq), 2.7)
    assert state.last_resume == Resume(since=3, recovered=True, epoch_changed=False)
    assert "reconnected, resumed from seq 3, recovered" in texts(state, LogKind.RESUMED)
    assert event_seqs(state) == [3, 4, 5, 6]
    assert (state.gaps, state.missing, state.duplicates, state.resumes) == (0, 0, 0, 1)


def test_new_epoch_is_a_marked_gap_and_state_goes_stale() -> None:
    state = WatchState(URL)
    feed = connected(state, a_welcome(last_seq=0))
    feed.event(event(1, "agent_status", agent_id="w1", state="idle"), 1.0)
    feed.event(event(2, "system_status", cpu_usage=1.0), 1.0)
    state.disconnected("code 1012 (hub restarted)", 2.0, retry_in_s=0.1)
    feed.welcome(a_welcome(epoch="e2", last_seq=0, recovered=False), 2.2)
    assert texts(state, LogKind.GAP) == [
        "GAP: epoch changed (e1 → e2); events after seq 2 lost; state marked stale until refreshed"
    ]
    assert state.last_resume == Resume(since=2, recovered=False, epoch_changed=True)
    assert state.agents["w1"].stale and state.system is not None and state.system.stale
    assert (state.epoch, state.last_seq) == ("e2", 0)
    feed.event(event(1, "agent_status", agent_id="w1", state="busy"), 3.0)
    assert not state.agents["w1"].stale and state.gaps == 1


def test_same_epoch_not_recovered_is_a_gap() -> None:
    state = WatchState(URL)
    feed = connected(state, a_welcome(last_seq=7))
    state.disconnected("code 1006", 1.0, retry_in_s=0.1)
    feed.welcome(a_welcome(last_seq=5000, recovered=False), 1.2)
    assert texts(state, LogKind.GAP)[0].startswith("GAP: not recovered; events after seq 7 lost")
    assert state.last_seq == 5000


def test_a_seq_jump_is_a_gap_only_when_every_type_is_shown() -> None:
    state = WatchState(URL)
    feed = connected(state, a_welcome())
    feed.event(event(1))
    feed.event(event(4))
    assert (state.gaps, state.missing) == (1, 2)
    assert texts(state, LogKind.GAP) == ["GAP: seq jumped from 1 to 4 (2 event(s) lost)"]
    feed.event(event(4))
    assert state.duplicates == 1 and event_seqs(state) == [1, 4]
    narrow = WatchState(URL, types=frozenset({"agent_status"}))
    narrow_feed = connected(narrow, a_welcome())
    narrow_feed.sequencer.subscribed(["agent_status", "heartbeat"])
    narrow_feed.event(event(1, "agent_status", agent_id="w1"))
    narrow_feed.event(event(9, "agent_status", agent_id="w1"))
    assert narrow.gaps == 0 and narrow.last_seq == 9


def test_dropped_events_notice_is_a_gap() -> None:
    state = WatchState(URL)
    feed = connected(state, a_welcome())
    feed.dropped(3)
    feed.event(event(4))  # the hole the notice announced: not counted twice
    assert (state.gaps, state.missing) == (1, 3)
    assert texts(state, LogKind.GAP) == ["GAP: the server dropped 3 event(s) for us"]


def test_types_narrow_what_is_shown_and_what_is_subscribed() -> None:
    state = WatchState(URL, types=frozenset({"agent_status"}))
    assert state.wanted_types == {"agent_status", "heartbeat"}
    assert WatchState(URL).wanted_types == set(ALL_EVENT_TYPES)  # supervision too
    feed = connected(state, a_welcome())
    feed.event(event(1, "system_status", cpu_usage=3.0))  # in flight before the change
    feed.event(event(2))
    feed.event(event(3, "agent_status", agent_id="w1"))
    state.subscribed(frozenset({"agent_status", "heartbeat"}), 1.0)
    assert state.system is None and event_seqs(state) == [3]
    assert state.heartbeat is not None and state.heartbeat.seq == 2
    assert state.last_seq == 3 and state.subscriptions == ("agent_status", "heartbeat")
    assert texts(state)[-1] == "subscribed to agent_status, heartbeat"


def test_failed_attempts_are_logged_once_in_a_row() -> None:
    state = WatchState(URL)
    for attempt in range(3):
        state.connecting(float(attempt))
        state.disconnected("cannot connect: connection refused", float(attempt), retry_in_s=1.0)
    assert state.attempt == 3 and state.last_error == "cannot connect: connection refused"
    assert texts(state) == ["cannot connect: cannot connect: connection refused"]
    connected(state, a_welcome(), 5.0)
    assert state.attempt == 0 and state.last_error is None
    state.disconnected("code 1001 (server shutting down)", 6.0, retry_in_s=1.0)
    assert texts(state)[-1] == "disconnected: code 1001 (server shutting down)"


def test_heartbeat_age_is_judged_like_the_probe() -> None:
    state = WatchState(URL)
    connected(state, a_welcome())  # interval 15 s: OK to 30 s, WARNING to 60 s
    assert state.heartbeat_age_s(1.0) is None and state.heartbeat_status(1.0) is None
    state.received(event(1, beat=1, client_count=2), 10.0)
    assert state.heartbeat_age_s(12.5) == 2.5
    assert state.heartbeat_status(40.0) is Status.OK
    assert state.heartbeat_status(41.0) is Status.WARNING
    assert state.heartbeat_status(71.0) is Status.CRITICAL


def test_the_log_is_bounded() -> None:
    state = WatchState(URL, log_size=5)
    connected(state, a_welcome())
    for seq in range(1, 21):
        state.received(event(seq), 1.0)
    assert len(state.log) == 5 and state.logged == 21
    assert event_seqs(state) == [16, 17, 18, 19, 20]


@pytest.mark.parametrize(
    ("message", "summary"),
    [
        (event(1, beat=3, client_count=2), "beat 3 clients 2"),
        (
            event(1, "agent_status", agent_id="w1", state="busy", change="updated"),
            "agent w1 busy updated",
        ),
        (
            event(1, "compression_update", job_id="0123456789", state="done", progress=100),
            "job 01234567 done 100.0%",
        ),
        (event(1, "rpc_error", method="agents.list", message="boom"), "agents.list boom"),
        (event(1, "storage_update", data_dir={"percent": 51.25}), "data_dir 51.2%"),
        (event(1, "notification", weird=[1]), "weird=[1]"),
    ],
)
def test_summaries(message: Event, summary: str) -> None:
    assert summarize(message) == summary


def test_error_replies_and_malformed_frames_are_logged() -> None:
    state = WatchState(URL)
    connected(state, a_welcome())
    state.received(Reply(type="error", data={"code": "invalid_message", "message": "no"}), 1.0)
    state.malformed("frame is not valid JSON", 1.0)
    assert texts(state, LogKind.ERROR) == [
        "error invalid_message: no",
        "malformed frame: frame is not valid JSON",
    ]


# --- the renderer --------------------------------------------------------------------------------


def render_text(renderable: Any, *, height: int | None = None) -> str:
    console = Console(file=io.StringIO(), force_terminal=False, width=140, height=height)
    console.print(renderable)
    assert isinstance(console.file, io.StringIO)
    return console.file.getvalue()


def test_snapshot_and_dashboard_show_every_panel() -> None:
    state = WatchState(URL)
    feed = connected(state, a_welcome(last_seq=0))
    system = {"cpu_usage": 12.5, "memory": {"percent": 40.0}, "load_average": [0.5, 0.4, 0.3]}
    feed.event(event(1, "system_status", **system))
    feed.event(event(2, "agent_status", agent_id="worker-1", state="idle"))
    feed.event(event(3, "compression_update", job_id="job-1", state="running", progress=5))
    actors = {"hub": "running", "poller": "restarting"}
    feed.event(event(4, beat=1, client_count=7, actors=actors))
    state.disconnected("code 1012 (hub restarted)", 2.0, retry_in_s=0.5)
    feed.welcome(a_welcome(epoch="e2"), 2.5)
    text = render_text(snapshot(state, 3.0))
    for expected in ("sigma watch", "connected", "12.5%", "worker-1", "job-1", "7 clients"):
        assert expected in text, expected
    assert "GAP: epoch changed (e1 → e2)" in text and "system (stale)" in text
    assert "hub running  poller restarting" in text
    assert "worker-1" in render_text(dashboard(state, 3.0), height=40)


def test_panels_say_when_a_type_is_not_shown() -> None:
    state = WatchState(URL, types=frozenset({"heartbeat"}))
    state.connecting(0.0)
    state.disconnected("cannot connect: connection refused", 0.0, retry_in_s=1.5)
    text = render_text(snapshot(state, 0.5))
    assert text.count("not subscribed") == 3
    assert "waiting to reconnect (retry in 1.0s, attempt 1)" in text


# --- against real servers ------------------------------------------------------------------------


@asynccontextmanager
async def watching(url: str, **options: Any) -> AsyncIterator[Watcher]:
    """A watcher running in the background for the duration of the block."""
    state = WatchState(url, types=options.get("types", frozenset(EVENT_TYPES)))
    watcher = Watcher(WatchOptions(url=url, backoff=FAST_RETRY, **options), state)
    async with trio.open_nursery() as nursery:
        await nursery.start(watcher.run)
        yield watcher
        nursery.cancel_scope.cancel()


async def until(watcher: Watcher, predicate: Callable[[WatchState], bool]) -> None:
    with trio.fail_after(5):
        await watcher.wait_for(predicate)


def heartbeats(count: int) -> list[dict[str, Any]]:
    return [{"type": "heartbeat", "data": {"n": n}} for n in range(count)]


async def test_a_dropped_connection_resumes_without_a_gap() -> None:
    async with running_stack() as stack, watching(stack.ws_url) as watcher:
        state = watcher.state
        await until(watcher, lambda s: s.phase is Phase.CONNECTED)
        await stack.publish([*heartbeats(2), {"type": "agent_status", "data": {"agent_id": "w"}}])
        await until(watcher, lambda s: s.last_seq == 3)
        assert state.welcome is not None
        await stack.sessions.terminate_child(state.welcome.client_id)  # closed by the server
        await until(watcher, lambda s: s.phase is Phase.WAITING)
        assert await stack.publish(heartbeats(4)) == {"seqs": [4, 5, 6, 7]}  # while away
        await until(watcher, lambda s: s.last_seq == 7)
        await stack.publish(heartbeats(1))
        await until(watcher, lambda s: s.last_seq == 8)
    assert state.last_resume == Resume(since=3, recovered=True, epoch_changed=False)
    assert "reconnected, resumed from seq 3, recovered" in texts(state, LogKind.RESUMED)
    assert "disconnected: code 1001 (server shutting down)" in texts(state, LogKind.ERROR)
    assert event_seqs(state) == list(range(1, 9))
    assert (state.connects, state.gaps, state.missing, state.duplicates) == (2, 0, 0, 0)


async def test_a_restarted_server_shows_a_marked_gap() -> None:
    port = free_port()  # both servers listen here, one after the other
    config = make_config(gateway=GatewayConfig(port=port))
    async with watching(f"ws://127.0.0.1:{port}/ws") as watcher:
        state = watcher.state
        async with running_stack(config) as first:
            await until(watcher, lambda s: s.phase is Phase.CONNECTED)
            await first.publish({"type": "agent_status", "data": {"agent_id": "w"}})
            await until(watcher, lambda s: s.last_seq == 1)
            old_epoch = first.hub.state.epoch
        await until(watcher, lambda s: s.phase is Phase.WAITING)
        async with running_stack(config) as second:
            await until(watcher, lambda s: s.gaps == 1)
            new_epoch = second.hub.state.epoch
            await second.publish(heartbeats(1))
            await until(watcher, lambda s: s.heartbeat is not None and s.epoch == new_epoch)
    assert texts(state, LogKind.GAP) == [
        f"GAP: epoch changed ({old_epoch} → {new_epoch}); events after seq 1 lost; "
        "state marked stale until refreshed"
    ]
    assert state.last_resume == Resume(since=1, recovered=False, epoch_changed=True)
    assert state.agents["w"].stale and state.last_seq == 1 and state.connects == 2


async def test_types_subscribe_narrowly_on_the_server() -> None:
    types = frozenset({"agent_status"})
    async with running_stack() as stack, watching(stack.ws_url, types=types) as watcher:
        await until(watcher, lambda s: s.subscriptions == ("agent_status", "heartbeat"))
        await stack.publish(
            [
                {"type": "system_status", "data": {"cpu_usage": 1.0}},
                {"type": "agent_status", "data": {"agent_id": "w"}},
                {"type": "heartbeat", "data": {}},
            ]
        )
        await until(watcher, lambda s: s.last_seq == 3)
    state = watcher.state
    assert event_seqs(state) == [2] and list(state.agents) == ["w"]
    assert state.system is None and state.heartbeat is not None and state.heartbeat.seq == 3


async def test_cli_headless_run_prints_the_log_and_the_view(
    capsys: pytest.CaptureFixture[str],
) -> None:
    beat = HeartbeatConfig(interval_s=0.1, ping_interval_s=3600.0)
    async with running_stack() as stack, trio.open_nursery() as nursery:
        await nursery.start(run_heartbeat, beat, stack.hub_send)
        argv = ["watch", "--url", stack.ws_url, "--no-live", "--max-seconds", "0.5"]
        status = await trio.to_thread.run_sync(main, argv)
        nursery.cancel_scope.cancel()
    out = capsys.readouterr().out
    assert status == 0
    assert "connected: epoch" in out and "heartbeat" in out and "sigma watch" in out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_cli_exit_status_when_never_connected(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"ws://127.0.0.1:{free_port()}/ws"
    argv = ["watch", "--url", url, "--no-live", "--max-seconds", "0.3"]
    assert await trio.to_thread.run_sync(main, argv) == 1
    assert "cannot connect: connection refused" in capsys.readouterr().out
    with pytest.raises(SystemExit) as usage:
        main(["watch", "--types", "weather"])
    assert usage.value.code == 2


def test_a_snapshot_on_join_does_not_move_last_seq_back() -> None:
    """State on join is older than what is live: the header's last seq must not go back."""
    state = WatchState(URL)
    feed = connected(state, a_welcome(last_seq=13))
    snapshot = Event.model_validate(
        {"type": "system_status", "seq": 7, "snapshot": True, "data": {"cpu_percent": 1.0}}
    )
    feed.event(snapshot)
    assert state.last_seq == 13
    feed.event(event(14))
    assert state.last_seq == 14
