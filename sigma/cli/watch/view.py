"""The renderer of `sigma watch`: turns a `WatchState` into rich renderables, and nothing else.

`dashboard()` is the full-screen layout the live view refreshes (its log shows as many of the
newest lines as its region holds); `snapshot()` is the same panels stacked at their natural height
(printed once at the end of a headless run); `log_line()` is one log line as text (printed as it
happens in a headless run). Every function reads the state and `now_s` (for ages and countdowns)
and has no other input.
"""

from __future__ import annotations

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.layout import Layout
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from sigma.cli.probe_verdict import Status
from sigma.cli.watch.state import Entity, LogKind, LogLine, Phase, WatchState

LOG_STYLES: dict[LogKind, str] = {
    LogKind.EVENT: "",
    LogKind.INFO: "cyan",
    LogKind.RESUMED: "green",
    LogKind.GAP: "bold white on red",
    LogKind.ERROR: "red",
}
PHASE_STYLES: dict[Phase, str] = {
    Phase.CONNECTED: "bold green",
    Phase.CONNECTING: "bold yellow",
    Phase.WAITING: "bold red",
}
STATUS_STYLES: dict[Status, str] = {
    Status.OK: "green",
    Status.WARNING: "yellow",
    Status.CRITICAL: "bold red",
    Status.UNKNOWN: "dim",
}
SNAPSHOT_LOG_LINES = 20
MAX_ROWS = 12


def dashboard(state: WatchState, now_s: float) -> Layout:
    """The full-screen view: connection on top, system, agents and jobs, then the event log."""
    layout = Layout()
    layout.split_column(
        Layout(connection_panel(state, now_s), name="connection", size=7 if _actors(state) else 6),
        Layout(name="body", ratio=2, minimum_size=8),
        Layout(TailLog(state), name="log", ratio=3),
    )
    layout["body"].split_row(
        Layout(system_panel(state), ratio=2),
        Layout(agents_panel(state), ratio=3),
        Layout(jobs_panel(state), ratio=4),
    )
    return layout


def snapshot(state: WatchState, now_s: float, *, log_lines: int = SNAPSHOT_LOG_LINES) -> Group:
    """Every panel, stacked at its natural height."""
    return Group(
        connection_panel(state, now_s),
        system_panel(state),
        agents_panel(state),
        jobs_panel(state),
        log_panel(state, log_lines),
    )


def connection_panel(state: WatchState, now_s: float) -> Panel:
    """URL, connection phase, epoch and seq, heartbeat age, the server's actors, resume counters."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_column(style="bold")
    grid.add_column()
    phase = Text(state.phase.value, style=PHASE_STYLES[state.phase])
    if state.phase is Phase.WAITING and state.retry_at_s is not None:
        phase.append(
            f" (retry in {max(0.0, state.retry_at_s - now_s):.1f}s, attempt {state.attempt})",
            style="red",
        )
    welcome = state.welcome
    grid.add_row("url", state.url, "state", phase)
    grid.add_row(
        "epoch",
        state.epoch or "-",
        "last seq",
        "-" if state.last_seq is None else str(state.last_seq),
    )
    grid.add_row(
        "server",
        f"{welcome.server_version}  client {welcome.client_id[:8]}" if welcome else "-",
        "heartbeat",
        heartbeat_text(state, now_s),
    )
    actors = _actors(state)
    if actors:
        grid.add_row("actors", actors_text(actors), "", "")
    grid.add_row(
        "history",
        f"{state.connects} connects, {state.resumes} resumed, {state.gaps} gaps, "
        f"{state.missing} lost",
        "error",
        Text(state.last_error or "-", style="red" if state.last_error else ""),
    )
    return Panel(grid, title="sigma watch", border_style=PHASE_STYLES[state.phase])


def heartbeat_text(state: WatchState, now_s: float) -> Text:
    """`seq 42, 3.1s ago, 3 clients`, coloured as `sigma check` would judge the age."""
    age_s = state.heartbeat_age_s(now_s)
    if state.heartbeat is None or age_s is None:
        return Text("none yet", style="dim")
    status = state.heartbeat_status(now_s) or Status.UNKNOWN
    clients = state.heartbeat.data.get("client_count")
    text = f"seq {state.heartbeat.seq}, {age_s:.1f}s ago"
    if clients is not None:
        text += f", {clients} clients"
    return Text(text, style=STATUS_STYLES[status])


def actors_text(actors: dict[str, object]) -> Text:
    """`hub running  poller restarting` from the latest heartbeat; not running stands out."""
    text = Text()
    for name, actor_state in actors.items():
        style = "green" if actor_state == "running" else "bold yellow"
        text.append(f"{name} ", style="dim").append(str(actor_state), style=style).append("  ")
    return text


def system_panel(state: WatchState) -> Panel:
    """CPU, memory and load from the latest system_status."""
    if "system_status" not in state.types:
        return _empty_panel("system", "not subscribed")
    if state.system is None:
        return _empty_panel("system", "no system_status yet")
    data = state.system.data
    memory = data.get("memory") if isinstance(data.get("memory"), dict) else {}
    load = data.get("load_average")
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True, min_width=6)
    grid.add_column(justify="right", no_wrap=True)
    grid.add_row("cpu", _percent(data.get("cpu_usage")))
    grid.add_row("memory", _percent(memory.get("percent") if memory else None))
    loads = load if isinstance(load, list) and len(load) == 3 else [None, None, None]
    for minutes, value in zip((1, 5, 15), loads, strict=True):
        grid.add_row(f"load {minutes}m", f"{value:.2f}" if isinstance(value, float | int) else "-")
    grid.add_row("seq", str(state.system.seq))
    return Panel(grid, title=_title("system", state.system), border_style=_border(state.system))


def agents_panel(state: WatchState) -> Panel:
    """One row per agent from agent_status events."""
    if "agent_status" not in state.types:
        return _empty_panel("agents", "not subscribed")
    table = _table("agent", "state", "job", "seq")
    for entity in list(state.agents.values())[-MAX_ROWS:]:
        data = entity.data
        table.add_row(
            entity.key,
            str(data.get("state", "-")),
            _short(data.get("current_job")),
            str(entity.seq),
            style="dim" if entity.stale else "",
        )
    return Panel(table, title=f"agents ({len(state.agents)})", border_style="blue")


def jobs_panel(state: WatchState) -> Panel:
    """The most recently updated compression jobs, newest first."""
    if "compression_update" not in state.types:
        return _empty_panel("compression jobs", "not subscribed")
    table = _table("job", "state", "progress", "path", "seq")
    for entity in reversed(list(state.jobs.values())[-MAX_ROWS:]):
        data = entity.data
        table.add_row(
            _short(entity.key),
            str(data.get("state", "-")),
            _percent(data.get("progress")),
            str(data.get("path", "-")),
            str(entity.seq),
            style="dim" if entity.stale else "",
        )
    return Panel(table, title=f"compression jobs ({len(state.jobs)})", border_style="blue")


class TailLog:
    """The log panel sized to its region: as many of the newest lines as fit, one row each."""

    def __init__(self, state: WatchState) -> None:
        self.state = state

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        height = options.height or SNAPSHOT_LOG_LINES + 2
        yield log_panel(self.state, max(height - 2, 1), wrap=False, height=height)


def log_panel(
    state: WatchState, lines: int, *, wrap: bool = True, height: int | None = None
) -> Panel:
    """The newest `lines` log lines, oldest first; long lines fold, or are cut when not `wrap`."""
    table = Table.grid(padding=(0, 1), expand=True)
    table.add_column(justify="right", style="dim", no_wrap=True, min_width=6)
    table.add_column(justify="right", no_wrap=True, min_width=4)
    table.add_column(style="magenta", no_wrap=True, min_width=18)
    table.add_column(overflow="fold" if wrap else "ellipsis", no_wrap=not wrap, ratio=1)
    for line in list(state.log)[-lines:]:
        style = LOG_STYLES[line.kind]
        table.add_row(
            _elapsed(state, line),
            "" if line.seq is None else str(line.seq),
            line.event_type or line.kind.value,
            Text(line.text, style=style),
        )
    return Panel(table, title=f"events ({state.logged} lines)", border_style="white", height=height)


def log_line(state: WatchState, line: LogLine) -> Text:
    """One log line as plain text with its style: `+1.2s  42 heartbeat beat 3 clients 1`."""
    seq = "" if line.seq is None else str(line.seq)
    label = line.event_type or line.kind.value
    return Text(f"{_elapsed(state, line)} {seq:>6} {label:<18} {line.text}", LOG_STYLES[line.kind])


def _elapsed(state: WatchState, line: LogLine) -> str:
    started_at_s = line.at_s if state.started_at_s is None else state.started_at_s
    return f"+{line.at_s - started_at_s:.1f}s"


def _actors(state: WatchState) -> dict[str, object]:
    actors = state.heartbeat.data.get("actors") if state.heartbeat else None
    return actors if isinstance(actors, dict) else {}


def _table(*columns: str) -> Table:
    table = Table(expand=True, box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=True, overflow="ellipsis")
    return table


def _title(name: str, entity: Entity) -> str:
    return f"{name} (stale)" if entity.stale else name


def _border(entity: Entity) -> str:
    return "dim" if entity.stale else "blue"


def _empty_panel(title: str, text: str) -> Panel:
    return Panel(Text(text, style="dim"), title=title, border_style="dim")


def _percent(value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.1f}%"
    return "-"


def _short(value: object) -> str:
    return "-" if value is None else str(value)[:8]
