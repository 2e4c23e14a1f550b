"""The view-model of `sigma watch`: everything the live view shows, as plain data.

No I/O, no clock and no rich here: the network loop (`sigma.cli.watch.run`) feeds `WatchState` with
what its `sigma.client` stream yields: connection events (`connecting`, `welcomed`,
`disconnected`), events and notices (`received`), the stream's verdicts (`gap`, `duplicate`) and
the subscriptions the server confirmed (`subscribed`), each stamped with `now_s` from
`trio.current_time()`; the renderer (`sigma.cli.watch.view`) only reads it.

Sequence numbers: `last_seq` is the highest `seq` seen in the current epoch, of any type (the
welcome's `last_seq` counts too); it is the `since` of the next reconnect. Events of types the
user did not ask for still move it (they arrive while the subscription change is in flight, and
in a resume's replay, which covers every type), but they are not shown. `heartbeat` is always
subscribed: it drives the liveness display and keeps `since` recent, so a resume after a long
quiet spell of the chosen types does not fall out of the server's history.

Gaps are the stream's (`sigma.client.sequence` has the rules): a resume with `recovered: true` in
the same epoch is a gap-free pause ("reconnected, resumed from seq N, recovered"); a new epoch or
`recovered: false` is a GAP line, and agents, jobs and the system status are marked stale until
an event refreshes them (the gateway has no state to fetch: live events are the refetch; a new
server process publishes everything afresh). A hole in `seq` while every type is subscribed and
an `events_dropped` notice are GAP lines too.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from sigma.cli.probe_verdict import HeartbeatLimits, Status
from sigma.cli.watch.summary import clip, summarize
from sigma.client.connection import Welcome
from sigma.client.items import Connected, Disconnected, Duplicate, Gap, Notice, StreamItem
from sigma.protocol.event_types import ALL_EVENT_TYPES
from sigma.protocol.server_messages import Event, Reply, ServerMessage

JsonObject = dict[str, Any]

ALL_TYPES: frozenset[str] = frozenset(ALL_EVENT_TYPES)
ALWAYS_SUBSCRIBED: frozenset[str] = frozenset({"heartbeat"})
LOG_SIZE = 200
"""Log lines kept (the renderer shows the newest that fit)."""
MAX_JOBS = 50
"""Compression jobs kept, the most recently updated."""


class Phase(StrEnum):
    """Where the connection stands."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    WAITING = "waiting to reconnect"
    ENDED = "stopped"


class LogKind(StrEnum):
    """What a log line is about, for its colour."""

    EVENT = "event"
    INFO = "info"
    RESUMED = "resumed"
    GAP = "gap"
    ERROR = "error"


@dataclass(frozen=True)
class LogLine:
    """One line of the scrolling event log."""

    at_s: float
    kind: LogKind
    text: str
    seq: int | None = None
    event_type: str | None = None


@dataclass(frozen=True)
class ResumePoint:
    """Where the next connection resumes: `?since=<since>&epoch=<epoch>`."""

    since: int
    epoch: str


@dataclass(frozen=True)
class Resume:
    """How the last reconnect went."""

    since: int
    recovered: bool
    epoch_changed: bool


@dataclass(frozen=True)
class Entity:
    """The latest event about one thing (the system, an agent, a job)."""

    key: str
    data: JsonObject
    seq: int | None
    stale: bool = False


@dataclass(frozen=True)
class LastHeartbeat:
    """The latest heartbeat: its seq, when it arrived, what it said."""

    seq: int | None
    at_s: float
    data: JsonObject


class WatchState:
    """What `sigma watch` knows; see the module docstring for the sequencing rules."""

    def __init__(
        self, url: str, *, types: frozenset[str] = ALL_TYPES, log_size: int = LOG_SIZE
    ) -> None:
        unknown = types - ALL_TYPES
        if unknown or not types:
            raise ValueError(f"unknown or no event types: {sorted(unknown)}")
        self.url = url
        self.types = types
        self.phase = Phase.CONNECTING
        self.started_at_s: float | None = None
        self.attempt = 0
        """Connection attempts that failed in a row."""
        self.retry_at_s: float | None = None
        self.last_error: str | None = None
        self.welcome: Welcome | None = None
        self.epoch: str | None = None
        self.last_seq: int | None = None
        self.subscriptions: tuple[str, ...] = ()
        self.connects = 0
        self.last_resume: Resume | None = None
        self.resumes = 0
        self.gaps = 0
        self.missing = 0
        """Events known lost: seq jumps while every type is subscribed, dropped-event notices."""
        self.duplicates = 0
        self.counts: Counter[str] = Counter()
        self.heartbeat: LastHeartbeat | None = None
        self.system: Entity | None = None
        self.agents: dict[str, Entity] = {}
        self.jobs: dict[str, Entity] = {}
        self.log: deque[LogLine] = deque(maxlen=log_size)
        self.logged = 0
        """Lines ever logged (the log keeps the newest `log_size`)."""

    # --- what the network loop asks ------------------------------------------------------------

    @property
    def every_type(self) -> bool:
        """Whether every core type is shown, so that seqs must be contiguous."""
        return self.types == ALL_TYPES

    def resume_point(self) -> ResumePoint | None:
        """Where a reconnect resumes, once an epoch is known."""
        if self.epoch is None or self.last_seq is None:
            return None
        return ResumePoint(self.last_seq, self.epoch)

    @property
    def wanted_types(self) -> frozenset[str]:
        """The types to subscribe to: those shown, and `heartbeat` for liveness."""
        return self.types | ALWAYS_SUBSCRIBED

    def heartbeat_age_s(self, now_s: float) -> float | None:
        """Seconds since the latest heartbeat arrived (None before the first)."""
        return None if self.heartbeat is None else max(0.0, now_s - self.heartbeat.at_s)

    def heartbeat_status(self, now_s: float) -> Status | None:
        """The heartbeat's age judged as `sigma check` would (None before the first)."""
        age_s = self.heartbeat_age_s(now_s)
        if age_s is None or self.welcome is None:
            return None
        return HeartbeatLimits.for_interval(self.welcome.heartbeat_interval, None).classify(age_s)

    # --- connection events ---------------------------------------------------------------------

    def connecting(self, now_s: float) -> None:
        """A connection attempt starts."""
        if self.started_at_s is None:
            self.started_at_s = now_s
        self.phase = Phase.CONNECTING
        self.retry_at_s = None

    def apply(self, item: StreamItem, now_s: float) -> None:
        """One item of the `sigma.client` stream."""
        if isinstance(item, Connected):
            self.welcomed(item.welcome, now_s, since=item.since)
        elif isinstance(item, Disconnected):
            self.disconnected(item.reason, now_s, item.retry_in_s)
        elif isinstance(item, Gap):
            self.gap(item, now_s)
        elif isinstance(item, Duplicate):
            self.duplicate(item.event, now_s)
        elif isinstance(item, Notice):
            self.received(item.message, now_s)
        else:
            self.received(item, now_s)

    def welcomed(self, welcome: Welcome, now_s: float, *, since: int | None = None) -> None:
        """The gateway welcomed us; `since` is the seq this connection asked to resume after.

        A resume that did not hold is followed by the stream's `Gap` (see `gap`).
        """
        self.phase = Phase.CONNECTED
        self.welcome = welcome
        self.attempt = 0
        self.last_error = None
        self.connects += 1
        self.subscriptions = tuple(welcome.subscriptions)
        if since is None:
            self.epoch, self.last_seq = welcome.epoch, welcome.last_seq
            self._log(
                now_s,
                LogKind.INFO,
                f"connected: epoch {welcome.epoch}, last seq {welcome.last_seq}, "
                f"server {welcome.server_version}",
            )
            return
        epoch_changed = welcome.epoch != self.epoch
        recovered = welcome.recovered is True and not epoch_changed
        self.last_resume = Resume(since, recovered, epoch_changed)
        if recovered:
            self.resumes += 1
            self._log(now_s, LogKind.RESUMED, f"reconnected, resumed from seq {since}, recovered")

    def gap(self, gap: Gap, now_s: float) -> None:
        """The stream says events were not delivered: log a GAP line and count them."""
        self.gaps += 1
        self.missing += gap.missing or 0
        if gap.reason == "hole":
            assert gap.resumes_after is not None
            self._log(
                now_s,
                LogKind.GAP,
                f"GAP: seq jumped from {gap.last_seen} to {gap.resumes_after + 1} "
                f"({gap.missing} event(s) lost)",
            )
            return
        if gap.reason == "events_dropped":
            self._log(now_s, LogKind.GAP, f"GAP: the server dropped {gap.missing} event(s) for us")
            return
        why = (
            f"epoch changed ({gap.previous_epoch} → {gap.epoch})"
            if gap.reason == "new_epoch"
            else "not recovered"
        )
        self._log(
            now_s,
            LogKind.GAP,
            f"GAP: {why}; events after seq {gap.last_seen} lost; state marked stale until "
            "refreshed",
        )
        self.epoch, self.last_seq = gap.epoch, gap.resumes_after
        self._mark_stale()

    def duplicate(self, event: Event, now_s: float) -> None:
        """The stream delivered `event` a second time: counted, not shown."""
        self.duplicates += 1

    def subscribed(self, types: frozenset[str], now_s: float) -> None:
        """The server confirmed this connection's subscriptions; logged when they changed."""
        current = tuple(sorted(types))
        if current != self.subscriptions:
            self.subscriptions = current
            self._log(now_s, LogKind.INFO, f"subscribed to {', '.join(current)}")

    def disconnected(self, reason: str, now_s: float, retry_in_s: float) -> None:
        """The connection ended, or an attempt failed; the next attempt is in `retry_in_s`."""
        if self.phase is Phase.CONNECTED:
            self._log(now_s, LogKind.ERROR, f"disconnected: {reason}")
        elif self.attempt == 0:
            self._log(now_s, LogKind.ERROR, f"cannot connect: {reason}")
        self.phase = Phase.WAITING
        self.attempt += 1
        self.last_error = reason
        self.retry_at_s = now_s + retry_in_s

    def ended(self, reason: str, now_s: float) -> None:
        """The stream ended for good (a refused token, a protocol violation): nothing follows."""
        self.phase = Phase.ENDED
        self.last_error = reason
        self.retry_at_s = None
        self._log(now_s, LogKind.ERROR, f"stopped: {reason}")

    # --- messages ------------------------------------------------------------------------------

    def received(self, message: ServerMessage, now_s: float) -> None:
        """Apply one decoded message."""
        if isinstance(message, Reply):
            self._on_reply(message, now_s)
        else:
            self._on_event(message, now_s)

    def malformed(self, problem: str, now_s: float) -> None:
        """A frame that could not be decoded (it is skipped)."""
        self._log(now_s, LogKind.ERROR, f"malformed frame: {problem}")

    def _on_reply(self, reply: Reply, now_s: float) -> None:
        data = reply.data
        if reply.type == "subscriptions":
            self.subscribed(frozenset(str(t) for t in data.get("subscriptions") or ()), now_s)
        elif reply.type == "error":
            self._log(now_s, LogKind.ERROR, f"error {data.get('code')}: {data.get('message')}")
        elif reply.type == "notification":
            self._log(now_s, LogKind.INFO, clip(str(data.get("message") or data.get("kind"))))

    def _on_event(self, event: Event, now_s: float) -> None:
        seq = event.seq
        if seq is not None and (self.last_seq is None or seq > self.last_seq):
            self.last_seq = seq  # a snapshot on join is older than what is live: it moves nothing
        if event.type == "heartbeat":
            self.heartbeat = LastHeartbeat(seq, now_s, event.data)
        if event.type not in self.types:
            return
        self.counts[event.type] += 1
        self._apply(event)
        self._log(now_s, LogKind.EVENT, summarize(event), seq, event.type)

    def _apply(self, event: Event) -> None:
        data = event.data
        if event.type == "system_status":
            self.system = Entity("system", data, event.seq)
        elif event.type == "agent_status":
            key = str(data.get("agent_id", data.get("id", "?")))
            self.agents.pop(key, None)
            if data.get("change") != "removed":
                self.agents[key] = Entity(key, data, event.seq)
        elif event.type == "compression_update":
            key = str(data.get("job_id", data.get("id", "?")))
            self.jobs.pop(key, None)
            self.jobs[key] = Entity(key, data, event.seq)
            while len(self.jobs) > MAX_JOBS:
                del self.jobs[next(iter(self.jobs))]

    def _mark_stale(self) -> None:
        if self.system is not None:
            self.system = replace(self.system, stale=True)
        self.agents = {key: replace(entity, stale=True) for key, entity in self.agents.items()}
        self.jobs = {key: replace(entity, stale=True) for key, entity in self.jobs.items()}

    def _log(
        self,
        now_s: float,
        kind: LogKind,
        text: str,
        seq: int | None = None,
        event_type: str | None = None,
    ) -> None:
        self.log.append(LogLine(now_s, kind, text, seq, event_type))
        self.logged += 1
