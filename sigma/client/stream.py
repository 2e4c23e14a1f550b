"""`Stream`: a gateway's events, across reconnects and resumes, saying what it missed.

    async with sigma.client.connect("ws://127.0.0.1:12080/ws", types=["agent_status"]) as stream:
        async for item in stream:
            ...  # an Event, or a Gap / Duplicate / Notice (sigma.client.items)

One background task keeps one connection at a time. It reads the welcome, narrows the
subscriptions to `types`, and hands every frame on: events (through `Sequencer`, which spots gaps
and duplicates) and notices to the iterator, replies to the request that waits for them. When
the connection ends it waits a delay from `Reconnect` and connects again with
`?since=<last seq>&epoch=<epoch>`, re-applying the subscriptions the caller asked for.

What a close code or a refused upgrade makes the stream do is told in `sigma.client.reconnect`,
with the figures (`Reconnect`); `connect()` (`sigma.client.connecting`) opens a stream.
"""

from __future__ import annotations

import itertools
import random
import ssl
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from sigma.client.connection import (
    GatewayProtocolError,
    GatewayRefused,
    GatewayUnavailable,
    Welcome,
    decode_server_frame,
    describe_close,
    open_connection,
    receive_welcome,
    resume_url,
)
from sigma.client.errors import GatewayClosed, RequestFailed, StreamClosed, TokenExpired
from sigma.client.items import Connected, Disconnected, Notice, StreamItem
from sigma.client.link import Link, PendingRequest
from sigma.client.reconnect import (
    CLIENT_AT_FAULT,
    RESUMABLE_SLOWLY,
    RETRIED_STATUSES,
    UNAUTHORIZED,
    Reconnect,
    TokenSource,
)
from sigma.client.sequence import Sequencer
from sigma.protocol.client_frames import (
    ClientFrame,
    ListSubscriptions,
    Ping,
    Refresh,
    Subscribe,
    Unsubscribe,
)
from sigma.protocol.codes import CloseCode
from sigma.protocol.event_types import ALL_EVENT_TYPES, KNOWN_EVENT_TYPES
from sigma.protocol.server_messages import Event, Reply


def checked_types(types: Iterable[str]) -> frozenset[str]:
    """`types` as a set, refused with a `ValueError` naming them when empty or not all known."""
    chosen = frozenset(types)
    unknown = sorted(chosen - KNOWN_EVENT_TYPES)
    if unknown or not chosen:
        raise ValueError(
            f"unknown or no event types {unknown}; expected some of {', '.join(ALL_EVENT_TYPES)}"
        )
    return chosen


class Stream:
    """What `connect()` yields: an async iterator of `StreamItem`s, and requests on the stream.

    Iterating yields events of the subscribed types, gaps, duplicates and notices (and, with
    `connection_items=True`, `Connected`/`Disconnected`). It ends (`StopAsyncIteration`) only when
    the `async with` block is left; an error that ends the stream (see `sigma.client.reconnect`) is
    raised from the iteration, and from any request waiting at the time.

    Requests (`subscribe`, `unsubscribe`, `list_subscriptions`, `ping`, `refresh`) wait for a
    connection, send, and return the server's answer; a connection lost before the answer makes
    them send again on the next one. An `error` answer raises `RequestFailed`. The subscriptions
    a request leaves in place are re-applied after every reconnect.
    """

    def __init__(
        self,
        url: str,
        *,
        types: frozenset[str] | None,
        token: str | None,
        token_source: TokenSource | None,
        sequencer: Sequencer,
        reconnect: Reconnect,
        connect_timeout_s: float,
        ssl_context: ssl.SSLContext | None,
        connection_items: bool,
        buffer: int,
        rng: random.Random,
        retry_first: bool,
    ) -> None:
        self.url = url
        self.wanted_types = types
        """The event types the caller asked for (None: whatever the server allows)."""
        self._token = token
        self._token_source = token_source
        self._sequencer = sequencer
        self._reconnect = reconnect
        self._connect_timeout_s = connect_timeout_s
        self._ssl_context = ssl_context
        self._connection_items = connection_items
        self._rng = rng
        self._send, self._receive = trio.open_memory_channel[StreamItem](buffer)
        self._link: Link | None = None
        self._link_changed = trio.Event()
        self._ids = itertools.count(1)
        self._error: BaseException | None = None
        self._first_welcome = trio.Event()
        self._ended = False
        self._retry_first = retry_first
        self.connects = 0
        """Connections welcomed so far."""
        self.last_welcome: Welcome | None = None
        """The latest welcome (kept after its connection is gone)."""

    # --- what the caller reads -------------------------------------------------------------

    @property
    def epoch(self) -> str | None:
        """The epoch of the last welcome (None before the first)."""
        return self._sequencer.epoch

    @property
    def last_seq(self) -> int | None:
        """The highest `seq` seen in `epoch`: where the next reconnect resumes."""
        return self._sequencer.last_seq

    @property
    def welcome(self) -> Welcome | None:
        """The current connection's welcome, None while disconnected."""
        return self._link.welcome if self._link is not None else None

    @property
    def error(self) -> BaseException | None:
        """What ended the stream, once it has ended with an error."""
        return self._error

    async def wait_welcomed(self) -> None:
        """Return once the stream has been welcomed once (or has ended trying)."""
        await self._first_welcome.wait()

    @property
    def subscriptions(self) -> frozenset[str]:
        """This connection's subscriptions, as the server last confirmed them."""
        return self._sequencer.server_types

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> StreamItem:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            if self._error is not None:
                raise self._error from None
            raise StopAsyncIteration from None

    # --- requests ----------------------------------------------------------------------------

    async def subscribe(self, types: Iterable[str]) -> frozenset[str]:
        """Add event types; returns the subscriptions after the change."""
        chosen = checked_types(types)
        reply = await self._request(
            lambda rid: Subscribe(action="subscribe", types=sorted(chosen), id=rid)
        )
        return self._confirm(reply)

    async def unsubscribe(self, types: Iterable[str]) -> frozenset[str]:
        """Remove event types; returns the subscriptions after the change."""
        chosen = checked_types(types)
        reply = await self._request(
            lambda rid: Unsubscribe(action="unsubscribe", types=sorted(chosen), id=rid)
        )
        return self._confirm(reply)

    async def list_subscriptions(self) -> frozenset[str]:
        """The subscriptions, as the server has them."""
        reply = await self._request(
            lambda rid: ListSubscriptions(action="list_subscriptions", id=rid)
        )
        return frozenset(reply.data["subscriptions"])

    async def ping(self) -> float:
        """An application-level round trip; returns its time in seconds."""
        started = trio.current_time()
        await self._request(lambda rid: Ping(action="ping", id=rid))
        return trio.current_time() - started

    async def refresh(self, token: str) -> datetime:
        """Extend the session with a new token; returns when it now expires.

        The token is also the one the next reconnect presents.
        """
        reply = await self._request(lambda rid: Refresh(action="refresh", token=token, id=rid))
        self._token = token
        return datetime.fromisoformat(str(reply.data["expires_at"]))

    def _confirm(self, reply: Reply) -> frozenset[str]:
        confirmed = frozenset(reply.data["subscriptions"])
        self.wanted_types = confirmed
        return confirmed

    async def _request(self, build: Callable[[str], ClientFrame]) -> Reply:
        while True:
            link = await self._wait_link()
            request_id = f"c{next(self._ids)}"
            waiting = link.pending[request_id] = PendingRequest()
            try:
                await link.ws.send_message(build(request_id).model_dump_json(exclude_none=True))
            except ConnectionClosed:
                link.pending.pop(request_id, None)
                await self._link_lost(link)
                continue
            await waiting.done.wait()
            if waiting.reply is None:
                continue  # the connection was lost first: send again on the next one
            if waiting.reply.type == "error":
                data = waiting.reply.data
                raise RequestFailed(str(data.get("code")), str(data.get("message")))
            return waiting.reply

    async def _wait_link(self) -> Link:
        while self._link is None:
            if self._ended:
                raise self._error or StreamClosed("the stream has ended")
            await self._link_changed.wait()
        return self._link

    async def _link_lost(self, link: Link) -> None:
        while self._link is link:
            await self._link_changed.wait()

    # --- the connection loop -------------------------------------------------------------------

    def _set_link(self, link: Link | None) -> None:
        if self._link is not None:
            self._link.lost()
        self._link = link
        self._link_changed.set()
        self._link_changed = trio.Event()

    async def run(self) -> None:
        """Keep a connection until cancelled or until an error ends the stream."""
        try:
            await self._run()
        except (GatewayClosed, GatewayUnavailable, GatewayProtocolError) as exc:
            self._error = exc
        finally:
            self._ended = True
            self._set_link(None)
            self._first_welcome.set()
            self._send.close()

    async def _run(self) -> None:
        failures = 0
        while True:
            resume = self._sequencer.resume_point
            url = resume_url(self.url, *resume) if resume is not None else self.url
            code: int | None = None
            welcomed = False
            deadline = trio.current_time() + self._connect_timeout_s
            try:
                async with open_connection(
                    url,
                    timeout_s=self._connect_timeout_s,
                    token=self._token,
                    ssl_context=self._ssl_context,
                ) as ws:
                    left_s = max(0.0, deadline - trio.current_time())
                    welcome = await receive_welcome(ws, left_s)
                    welcomed = True
                    failures = 0
                    await self._welcomed(ws, welcome, url, resume[0] if resume else None)
                    await self._pump(ws)
            except ConnectionClosed as exc:
                code = int(exc.reason.code) if exc.reason is not None else 1006
                reason = describe_close(exc)
                closed = (TokenExpired if code == CloseCode.TOKEN_EXPIRED else GatewayClosed)(
                    f"closed with {reason}", code, exc.reason.reason if exc.reason else None
                )
                if code == CloseCode.TOKEN_EXPIRED:
                    await self._fresh_token(closed)
                if code in CLIENT_AT_FAULT or not self._reconnect.enabled:
                    raise closed from None
            except GatewayRefused as exc:
                reason = str(exc)
                if not self._reconnect.enabled:
                    raise
                if exc.status == UNAUTHORIZED and failures == 0:
                    await self._fresh_token(exc)
                elif not self._retried(exc.status, failures + 1):
                    raise
            except (GatewayUnavailable, GatewayProtocolError) as exc:
                reason = str(exc)
                if isinstance(exc, GatewayUnavailable):
                    code = exc.close_code
                if not self._reconnect.enabled or not (self.connects or self._retry_first):
                    raise
                if self._gave_up(failures + 1):
                    raise
            finally:
                self._set_link(None)
            if not welcomed:
                failures += 1
            delay_s = self._delay_s(code, failures)
            if self._connection_items:
                await self._send.send(Disconnected(reason, code, delay_s))
            await trio.sleep(delay_s)

    def _retried(self, status: int, failures: int) -> bool:
        """Whether an upgrade refused with HTTP `status` is tried again."""
        if status not in RETRIED_STATUSES and status < 500:
            return False
        return not self._gave_up(failures) and bool(self.connects or self._retry_first)

    def _gave_up(self, failures: int) -> bool:
        limit = self._reconnect.max_attempts
        return limit is not None and failures >= limit

    def _delay_s(self, code: int | None, failures: int) -> float:
        backoff = self._reconnect.backoff
        if code in RESUMABLE_SLOWLY:
            return backoff.max_s
        attempt = max(0, failures - 1)
        if code == CloseCode.SLOW_CONSUMER:
            attempt += self._reconnect.slow_consumer_doublings
        return backoff.delay_s(attempt, self._rng)

    async def _fresh_token(self, error: GatewayClosed | GatewayRefused) -> None:
        if self._token_source is None:
            raise error
        self._token = await self._token_source()

    async def _welcomed(
        self, ws: WebSocketConnection, welcome: Welcome, url: str, since: int | None
    ) -> None:
        gap = self._sequencer.welcomed(welcome)
        self.connects += 1
        self.last_welcome = welcome
        self._set_link(Link(ws, welcome))
        if self._connection_items:
            await self._send.send(Connected(url, welcome, since))
        if gap is not None:
            await self._send.send(gap)
        self._first_welcome.set()
        await self._align_subscriptions(ws, frozenset(welcome.subscriptions))

    async def _align_subscriptions(self, ws: WebSocketConnection, granted: frozenset[str]) -> None:
        """Make the server's subscriptions the caller's (the answers are not awaited)."""
        wanted = self.wanted_types
        if wanted is None:
            return
        extra, missing = granted - wanted, wanted - granted
        if extra:
            frame = Unsubscribe(action="unsubscribe", types=sorted(extra), id=f"a{next(self._ids)}")
            await ws.send_message(frame.model_dump_json())
        if missing:
            frame2 = Subscribe(action="subscribe", types=sorted(missing), id=f"a{next(self._ids)}")
            await ws.send_message(frame2.model_dump_json())

    async def _pump(self, ws: WebSocketConnection) -> None:
        while True:
            message = decode_server_frame(await ws.get_message())
            if isinstance(message, Event):
                gap, item = self._sequencer.event(message)
                if gap is not None:
                    await self._send.send(gap)
                if self.wanted_types is None or message.type in self.wanted_types:
                    await self._send.send(item)
            else:
                await self._reply(message)

    async def _reply(self, message: Reply) -> None:
        data: dict[str, Any] = message.data
        if message.type == "subscriptions":
            self._sequencer.subscribed(data["subscriptions"])
        request_id = data.get("request_id")
        link = self._link
        if link is not None and isinstance(request_id, str) and request_id in link.pending:
            waiting = link.pending.pop(request_id)
            waiting.reply = message
            waiting.done.set()
        elif message.type == "notification" and data.get("kind") == "events_dropped":
            await self._send.send(self._sequencer.dropped(int(data.get("dropped", 0))))
        elif message.type != "pong":
            await self._send.send(Notice(message))
