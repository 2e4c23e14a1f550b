"""`sigma watch`: a live terminal view of the event stream, and the thin loop that feeds it.

`Watcher.run` reads one `sigma.client` stream (`connect(..., connection_items=True)`), which keeps
the connection, narrows the subscriptions to `--types` (plus `heartbeat`), reconnects with
full-jitter backoff and resumes with `?since=<last seq>&epoch=<epoch>`, so a dropped connection
is a gap-free pause and a server whose numbering restarted shows a marked GAP. The watcher hands
each item to a `WatchState` (`sigma.cli.watch.state`, which decides what is shown). It exits only
when cancelled, or when the stream ends with an error that reconnecting cannot cure (a refused
token, a close for a protocol violation), which it shows before it stops.

The view (`sigma.cli.watch.view`) is redrawn by its own task: a full-screen `rich.live.Live` on a
terminal, or, headless (`--no-live`, or stdout not a terminal), each log line printed as it
happens and the whole view printed once at the end. `--max-seconds` bounds the run.

Exit status: 0, or 1 when the run ended without ever being welcomed; 2 for a usage error.
"""

from __future__ import annotations

import argparse
import functools
import math
import random
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import trio
from rich.console import Console
from rich.live import Live

from sigma.backoff import FullJitter
from sigma.cli.options import add_gateway_options, seconds_argument
from sigma.cli.watch.state import ALL_TYPES, LOG_SIZE, WatchState
from sigma.cli.watch.view import dashboard, log_line, snapshot
from sigma.client import (
    DEFAULT_URL,
    GatewayClosed,
    GatewayProtocolError,
    GatewayUnavailable,
    Reconnect,
    connect,
)
from sigma.client.tls import tls_context
from sigma.protocol.event_types import ALL_EVENT_TYPES

CONNECT_TIMEOUT_S = 10.0
REFRESH_S = 0.25
"""How often the live view is redrawn (heartbeat ages and countdowns move on their own)."""
RECONNECT_BACKOFF = FullJitter(min_s=0.5, max_s=15.0)


@dataclass(frozen=True)
class WatchOptions:
    """What to watch and how to reconnect."""

    url: str = DEFAULT_URL
    types: frozenset[str] = ALL_TYPES
    token: str | None = field(default=None, repr=False)
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    ssl_context: ssl.SSLContext | None = None
    """Verifies a `wss://` gateway (`tls_context`); None: the system's trusted CAs."""
    backoff: FullJitter = RECONNECT_BACKOFF


class Watcher:
    """Feeds `state` from the gateway, reconnecting for ever; see the module docstring."""

    def __init__(
        self, options: WatchOptions, state: WatchState, *, rng: random.Random | None = None
    ) -> None:
        self.options = options
        self.state = state
        self._rng = rng if rng is not None else random.Random()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        """Return at the next change of `state`."""
        await self._changed.wait()

    async def wait_for(self, predicate: Callable[[WatchState], bool]) -> None:
        """Return once `predicate(state)` holds (checked after every change)."""
        while not predicate(self.state):
            await self.wait_changed()

    def _touch(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Feed the state from the stream until cancelled (or until the stream ends for good).

        Resource handling: the stream holds one connection at a time and closes it on exit.
        Error handling: lost connections and failed attempts are reported to the state and
        retried by the stream; an error that ends the stream is logged to the state.
        """
        task_status.started()
        self.state.connecting(trio.current_time())
        self._touch()
        try:
            async with connect(
                self.options.url,
                types=self.state.wanted_types,
                token=self.options.token,
                ssl_context=self.options.ssl_context,
                reconnect=Reconnect(backoff=self.options.backoff),
                connect_timeout_s=self.options.connect_timeout_s,
                connection_items=True,
                wait_connected=False,
                rng=self._rng,
            ) as stream:
                async for item in stream:
                    self.state.apply(item, trio.current_time())
                    self._touch()
        except (GatewayClosed, GatewayUnavailable, GatewayProtocolError) as exc:
            self.state.ended(str(exc), trio.current_time())
            self._touch()


async def show_live(watcher: Watcher, console: Console, *, refresh_s: float = REFRESH_S) -> None:
    """Redraw the full-screen view every `refresh_s` until cancelled."""
    with Live(console=console, auto_refresh=False, screen=True) as live:
        while True:
            live.update(dashboard(watcher.state, trio.current_time()), refresh=True)
            await trio.sleep(refresh_s)


async def print_log(watcher: Watcher, console: Console) -> None:
    """Print each new log line as it is logged, until cancelled."""
    printed = 0
    while True:
        state = watcher.state
        new = min(state.logged - printed, len(state.log))
        for line in list(state.log)[len(state.log) - new :]:
            console.print(log_line(state, line), soft_wrap=True)
        printed = state.logged
        await watcher.wait_changed()


async def watch(
    options: WatchOptions,
    state: WatchState,
    console: Console,
    *,
    live: bool,
    max_seconds: float | None = None,
) -> None:
    """Run the watcher and its view for `max_seconds` (or until cancelled).

    Headless (`live=False`), the whole view is printed once at the end, cancelled or not.
    """
    watcher = Watcher(options, state)
    try:
        with trio.move_on_after(math.inf if max_seconds is None else max_seconds):
            async with trio.open_nursery() as nursery:
                await nursery.start(watcher.run)
                nursery.start_soon(show_live if live else print_log, watcher, console)
    finally:
        if not live:
            console.print(snapshot(state, trio.current_time()))


# --- the command line ----------------------------------------------------------------------------


def _types(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in ALL_EVENT_TYPES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown event type(s) {', '.join(unknown) or text!r}; "
            f"expected some of {', '.join(ALL_EVENT_TYPES)}"
        )
    return names


def watch_parser() -> argparse.ArgumentParser:
    """The parser of `sigma watch`."""
    parser = argparse.ArgumentParser(
        prog="sigma watch",
        description="Live terminal view of a Sigma gateway: connection, heartbeat, system "
        "status, agents, compression jobs and the event log. Reconnects by itself and resumes "
        "where it left off; a restarted server shows as a marked GAP.",
        epilog="Exit status: 0, or 1 when the run ended without ever connecting; 2 for a "
        "usage error.",
    )
    add_gateway_options(
        parser,
        timeout_s=CONNECT_TIMEOUT_S,
        timeout_help="seconds for each connection attempt and its welcome",
    )
    parser.add_argument(
        "--types",
        type=_types,
        nargs="+",
        metavar="TYPE[,TYPE]",
        help="show only these event types (heartbeat is subscribed anyway, for liveness)",
    )
    parser.add_argument(
        "--max-seconds", type=seconds_argument, metavar="S", help="stop after S seconds"
    )
    parser.add_argument(
        "--no-live",
        action="store_true",
        help="no full-screen view: print log lines as they come and the whole view at the end "
        "(the default when stdout is not a terminal)",
    )
    parser.add_argument(
        "--log-size", type=int, default=LOG_SIZE, metavar="N", help=f"log lines kept ({LOG_SIZE})"
    )
    return parser


def watch_main(argv: Sequence[str], *, console: Console | None = None) -> int:
    """Run `sigma watch` with `argv` (after the word `watch`); returns the exit status."""
    parser = watch_parser()
    args = parser.parse_args(argv)
    if args.log_size < 1:
        parser.error("--log-size must be at least 1")
    try:
        context = tls_context(args.url, args.cafile)
    except ValueError as exc:
        parser.error(str(exc))
    types = frozenset(name for group in args.types or [list(ALL_EVENT_TYPES)] for name in group)
    options = WatchOptions(
        url=args.url,
        types=types,
        token=args.token,
        connect_timeout_s=args.timeout,
        ssl_context=context,
    )
    state = WatchState(args.url, types=types, log_size=args.log_size)
    console = console or Console()
    run = functools.partial(
        watch,
        options,
        state,
        console,
        live=console.is_terminal and not args.no_live,
        max_seconds=args.max_seconds,
    )
    try:
        trio.run(run)
    except* KeyboardInterrupt:
        pass
    return 0 if state.connects else 1
