"""The per-client sender: writes one client's backlog, many frames per write, then stops.

An idle client costs no sender at all: the hub writes straight to its socket (`Outbox.flush`
through `ServerConnection.try_write`). Only when the socket does not take everything at once
does the outbox ask the session to start `send_backlog` as a task; it runs while there is a
backlog and returns as soon as the queue is empty, so its task lives only as long as the client
is behind.

Reads: the client's `Outbox` (`take_batch`). Writes: the client's `ServerConnection` (`write`,
`send_close`), the socket's only writer (see there why no lock is needed).

Frames arrive already encoded by the hub (server frames are unmasked and uncompressed, so their
bytes are the same for every client). A batch is joined and written at once: what the socket
takes right away with one system call, the rest with an awaited `send_all`.

Fault point `sender.write` (`sigma.faults`) is passed before each batch is written: `raise`
crashes the session (its client gets 1011), `drop` cuts the connection as if the client had
vanished (`PeerGone`).
"""

from __future__ import annotations

import trio

from sigma.errors import PeerGone
from sigma.faults import FaultPoint
from sigma.hub.frames import reply_frame
from sigma.hub.outbox import Outbox
from sigma.protocol.replies import missed_events_notice
from sigma.websocket.connection import ServerConnection


async def send_backlog(outbox: Outbox, connection: ServerConnection, fault: FaultPoint) -> None:
    """Write every batch the outbox holds until it is empty; once it is closed, the close frame.

    Returns when the queue is empty (the outbox then writes directly again) or after the close
    frame. Raises `PeerGone` when the socket breaks. Cancellation may stop it in the middle of
    a write, after which the connection is `broken` and can only be aborted.
    """
    while True:
        if connection.owes:
            await connection.write(b"")  # the rest of a frame the hub began, before all else
        batch = outbox.take_batch()
        if not batch:  # the outbox no longer counts on this sender: return without awaiting
            close = outbox.close_reason
            if close is not None:
                await connection.send_close(close.code, close.reason)
            return
        chunks = [frame.data for frame in batch]
        del batch  # not kept alive while the write waits
        dropped = outbox.take_dropped()
        if dropped:
            chunks.insert(0, reply_frame(missed_events_notice(dropped)).data)
        if fault.armed and await fault.hit():
            raise PeerGone("fault injected at sender.write: connection cut")
        await connection.write(b"".join(chunks))
        await trio.lowlevel.checkpoint()  # lets more frames gather into the next batch
