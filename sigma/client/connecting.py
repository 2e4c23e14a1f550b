"""`connect()`: open a `Stream` of a gateway's events, run it in the background, close both on exit.

async with sigma.client.connect("ws://127.0.0.1:12080/ws", types=["agent_status"]) as stream:
    async for item in stream:
        ...  # an Event, or a Gap / Duplicate / Notice (sigma.client.items)
"""

from __future__ import annotations

import math
import random
import ssl
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import trio

from sigma.client.connection import check_ws_url
from sigma.client.reconnect import Reconnect, TokenSource
from sigma.client.sequence import Sequencer
from sigma.client.stream import Stream, checked_types
from sigma.errors import leaves
from sigma.protocol.event_types import ALL_EVENT_TYPES


@asynccontextmanager
async def connect(
    url: str,
    *,
    types: Iterable[str] | None = None,
    token: str | None = None,
    token_source: TokenSource | None = None,
    since: int | None = None,
    epoch: str | None = None,
    reconnect: Reconnect = Reconnect(),
    connect_timeout_s: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
    connection_items: bool = False,
    wait_connected: bool = True,
    buffer: int = 256,
    rng: random.Random | None = None,
) -> AsyncIterator[Stream]:
    """Open a `Stream` of the gateway at `url` (`ws://host:port/ws`, or `wss://`).

    - `types`: the event types to receive (default: all the server allows, the opt-in
      `supervision` included: the URL asks for every type with `?types=`, and the server grants
      those the token allows);
    - `token`: a JWT sent as `Authorization: Bearer`; `token_source`: an async callable asked for
      a fresh one when the server closes with 4001 or refuses the upgrade with 401;
    - `since`/`epoch`: resume from a position saved earlier (both or neither);
    - `reconnect`: delays and limits (`Reconnect`); `connect_timeout_s`: for each connection's
      handshake and its welcome together; `ssl_context`: how a `wss://` server is verified;
    - `connection_items`: also yield `Connected`/`Disconnected`;
    - `wait_connected`: enter only once welcomed, raising the first connection's error if it
      fails (`GatewayUnavailable`, `GatewayRefused`, `GatewayProtocolError`); with False, enter
      at once and keep trying in the background as after a lost connection;
    - `buffer`: items that may wait for the caller; a caller slower than that holds up reading,
      and the server treats it as a slow consumer (4008);
    - `rng`: the jitter's random source.

    Resource handling: one background task and one connection at a time, both gone on exit.
    """
    check_ws_url(url)
    if connect_timeout_s <= 0 or not math.isfinite(connect_timeout_s):
        raise ValueError(f"connect_timeout_s must be a positive number (got {connect_timeout_s})")
    if buffer < 1:
        raise ValueError(f"buffer must be >= 1 (got {buffer})")
    if types is None and "types=" not in url:
        url += ("&" if "?" in url else "?") + "types=" + ",".join(ALL_EVENT_TYPES)
    stream = Stream(
        url,
        types=checked_types(types) if types is not None else None,
        token=token,
        token_source=token_source,
        sequencer=Sequencer(since=since, epoch=epoch),
        reconnect=reconnect,
        connect_timeout_s=connect_timeout_s,
        ssl_context=ssl_context,
        connection_items=connection_items,
        buffer=buffer,
        rng=rng if rng is not None else random.Random(),
        retry_first=not wait_connected,
    )
    failed: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream.run)
            if wait_connected:
                await stream.wait_welcomed()
                if stream.error is not None and not stream.connects:
                    failed = stream.error
                    nursery.cancel_scope.cancel()
            if failed is None:
                try:
                    yield stream
                finally:
                    nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # `run` keeps its errors for the caller, so the group holds what the body raised.
        found = leaves(group)
        only = found[0] if len(found) == 1 else None
        if only is None:
            raise
        raise only from None
    if failed is not None:
        raise failed
