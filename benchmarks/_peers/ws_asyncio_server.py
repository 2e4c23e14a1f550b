"""Peer server for the fan-out benchmark: Python `websockets` (asyncio) with `broadcast()`.

Usage: `python ws_asyncio_server.py PORT` (listens on 127.0.0.1 only; stops on SIGTERM/SIGINT).

- `/ws` (any path but `/publish`): a subscriber. It is registered, then sent a welcome
  (`{"type": "notification", ..., "seq": null, "data": {"kind": "welcome"}}`), so a client that has
  the welcome knows it will receive every later event.
- `/publish`: the publisher's control connection. Each text frame is a JSON array of
  `{"type": ..., "data": ...}`; every item gets the next `seq` and a server timestamp, is encoded
  once with the same envelope as Sigma's events (`type`, `timestamp`, `seq`, `data`) and handed to
  `websockets.asyncio.server.broadcast()`; then `{"seqs": [...]}` is sent back.

Pings are off (`ping_interval=None`) and compression is off, as for Sigma in the benchmark.
`broadcast()` has no backpressure: a client that stops reading makes its write buffer grow (see
the stalled-client scenario).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from datetime import UTC, datetime

from websockets.asyncio.server import ServerConnection, broadcast, serve

try:
    import orjson

    dumps = orjson.dumps
    loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is in the benchmark's environment
    import json

    def dumps(obj: object) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    loads = json.loads

SUBSCRIBERS: set[ServerConnection] = set()
STATE = {"seq": 0}


def welcome() -> bytes:
    return dumps(
        {
            "type": "notification",
            "timestamp": datetime.now(UTC).isoformat(),
            "seq": None,
            "data": {"kind": "welcome"},
        }
    )


async def publisher(ws: ServerConnection) -> None:
    async for message in ws:
        seqs = []
        for item in loads(message):
            STATE["seq"] += 1
            seq = STATE["seq"]
            seqs.append(seq)
            frame = dumps(
                {
                    "type": item["type"],
                    "timestamp": datetime.now(UTC).isoformat(),
                    "seq": seq,
                    "data": item["data"],
                }
            )
            broadcast(SUBSCRIBERS, frame, text=True)
        await ws.send(dumps({"seqs": seqs}), text=True)


async def handler(ws: ServerConnection) -> None:
    if ws.request is not None and ws.request.path == "/publish":
        await publisher(ws)
        return
    SUBSCRIBERS.add(ws)
    try:
        await ws.send(welcome(), text=True)
        await ws.wait_closed()
    finally:
        SUBSCRIBERS.discard(ws)


async def main(port: int) -> None:
    stop = asyncio.get_running_loop().create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.cancel)
    async with serve(
        handler,
        "127.0.0.1",
        port,
        ping_interval=None,
        compression=None,
        max_size=16 * 1024 * 1024,
        backlog=1024,
    ):
        print(f"listening on 127.0.0.1:{port}", flush=True)
        with contextlib.suppress(asyncio.CancelledError):
            await stop


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
