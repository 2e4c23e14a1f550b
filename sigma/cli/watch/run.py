"""`sigma watch`: a live terminal view of the event stream, and the thin loop that feeds it.

`Watcher.run` keeps one connection to the gateway: it connects, reads the welcome, narrows the
subscriptions to `--types` (plus `heartbeat`), and feeds every decoded frame to a `WatchState`
(`sigma.cli.watch.state`, which decides everything: resume, gaps, what is shown). When the
connection ends or cannot be made it waits an exponential backoff (`Backoff`, reset by each welcome)
and
reconnects with `?since=<last seq>&epoch=<epoch>`, so a dropped connection is a gap-free pause
and a server whose numbering restarted shows a marked GAP. It exits only when cancelled.

The view (`sigma.cli.watch.view`) is redrawn by its own task: a full-screen `rich.live.Live` on a
terminal, or, headless (`--no-live`, or stdout not a terminal), each log line printed as it
happens and the whole view printed once at the end. `--max-seconds` bounds the run.

Exit status: 0, or 1 when the run ended without ever being welcomed; 2 for a usage error.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import random
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import trio
from rich.console import Console
from rich.live import Live
from trio_websocket import ConnectionClosed, WebSocketConnection

from sigma.backoff import Backoff
from sigma.cli.probe import seconds_argument, url_argument
from sigma.cli.watch.state import ALL_TYPES, LOG_SIZE, WatchState
from sigma.cli.watch.view import dashboard, log_line, snapshot
from sigma.client.connection import (
    DEFAULT_URL,
    GatewayProtocolError,
    GatewayUnavailable,
    connect,
    decode_server_frame,
    describe_close,
    receive_welcome,
    resume_url,
)
from sigma.client.tls import tls_context
from sigma.protocol import ALL_EVENT_TYPES

CONNECT_TIMEOUT_S = 10.0
REFRESH_S = 0.25
"""How often the live view is redrawn (heartbeat ages and countdowns move on their own)."""
RECONNECT_BACKOFF = Backoff(min_s=0.5, max_s=15.0, factor=0.2)
TOKEN_ENV_VAR = "SIGMA_TOKEN"


@dataclass(frozen=True)
class WatchOptions:
    """What to watch and how to reconnect."""

    url: str = DEFAULT_URL
    types: frozenset[str] = ALL_TYPES
    token: str | None = field(default=None, repr=False)
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    ssl_context: ssl.SSLContext | None = None
    """Verifies a `wss://` gateway (`tls_context`); None: the system's trusted CAs."""
    backoff: Backoff = RECONNECT_BACKOFF


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
        """Connect, feed the state, reconnect with backoff; until cancelled.

        Resource handling: one connection at a time, closed before the next attempt.
        Error handling: every connection failure and close is reported to the state and
        retried; frames that cannot be decoded are reported and skipped.
        """
        task_status.started()
        attempt = 0
        while True:
            resume = self.state.connecting(trio.current_time())
            self._touch()
            url = self.options.url
            if resume is not None:
                url = resume_url(url, resume.since, resume.epoch)
            reason = "connection dropped"  # when even the close timed out
            try:
                async with connect(
                    url,
                    timeout_s=self.options.connect_timeout_s,
                    token=self.options.token,
                    ssl_context=self.options.ssl_context,
                ) as ws:
                    welcome = await receive_welcome(ws, self.options.connect_timeout_s)
                    attempt = 0
                    self.state.welcomed(welcome, trio.current_time())
                    self._touch()
                    for change in self.state.subscription_changes(welcome.subscriptions):
                        await ws.send_message(change.model_dump_json())
                    await self._receive(ws)
            except ConnectionClosed as exc:
                reason = describe_close(exc)
            except (GatewayUnavailable, GatewayProtocolError) as exc:
                reason = str(exc)
            delay_s = self.options.backoff.delay_s(attempt, self._rng)
            attempt += 1
            self.state.disconnected(reason, trio.current_time(), delay_s)
            self._touch()
            await trio.sleep(delay_s)

    async def _receive(self, ws: WebSocketConnection) -> None:
        """Feed every frame to the state until the connection closes (`ConnectionClosed`)."""
        while True:
            frame = await ws.get_message()
            try:
                message = decode_server_frame(frame)
            except GatewayProtocolError as exc:
                self.state.malformed(str(exc), trio.current_time())
            else:
                self.state.received(message, trio.current_time())
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
    parser.add_argument(
        "--url",
        type=url_argument,
        default=DEFAULT_URL,
        help=f"the gateway's WebSocket ({DEFAULT_URL})",
    )
    parser.add_argument(
        "--types",
        type=_types,
        nargs="+",
        metavar="TYPE[,TYPE]",
        help="show only these event types (heartbeat is subscribed anyway, for liveness)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV_VAR) or None,
        help=f"a JWT sent as 'Authorization: Bearer' (default ${TOKEN_ENV_VAR})",
    )
    parser.add_argument(
        "--timeout",
        type=seconds_argument,
        default=CONNECT_TIMEOUT_S,
        metavar="S",
        help=f"seconds for each connection attempt and its welcome ({CONNECT_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--cafile",
        metavar="FILE",
        help="for a wss:// URL: trust only the CA certificate(s) in this PEM file "
        "(default: the system's trusted CAs)",
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
