"""Dead-peer detection for every client session, by one task instead of one per client.

A client counts as alive while anything arrives from it: frames, pongs, its close. `KeepAlive`
is the table of live sessions; its `run()` loop sweeps the table every `tick_s`, a quarter of
the shorter of `ping_interval_s` and `ping_timeout_s`:

- a client silent for `ping_interval_s` gets a WebSocket ping (its pong, like anything else it
  sends, counts as hearing from it);
- a client still silent `ping_timeout_s` after that ping is closed (1011).

So a ping goes out between `ping_interval_s` and `ping_interval_s + tick_s` after the client last
spoke, and a client that vanished is closed at most `ping_interval_s + ping_timeout_s +
2 * tick_s` after it went silent. A sweep costs a comparison or two per client; a task per
client, sleeping in a cancel scope, costs kilobytes of memory each.

The table belongs to the tree, not to the gateway that runs the sweep: sessions outlive a
gateway restart, and the next incarnation's sweep goes on watching them.
"""

from __future__ import annotations

from typing import Protocol

import trio

TICKS_PER_PERIOD = 4


class Peer(Protocol):
    """What the sweep needs of a session."""

    def heard_at(self) -> float:
        """When the client last sent anything (trio time)."""
        ...

    def send_ping(self) -> None:
        """Queue a WebSocket ping to the client."""
        ...

    def close_silent(self) -> None:
        """Close the client: it did not answer its ping in time."""
        ...


class KeepAlive:
    """The live sessions, each with when it was pinged and not answered yet (or None)."""

    def __init__(self, ping_interval_s: float, ping_timeout_s: float) -> None:
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s
        self.tick_s = min(ping_interval_s, ping_timeout_s) / TICKS_PER_PERIOD
        self._pinged_at: dict[Peer, float | None] = {}

    def __len__(self) -> int:
        return len(self._pinged_at)

    def add(self, peer: Peer) -> None:
        """Start watching `peer`."""
        self._pinged_at[peer] = None

    def discard(self, peer: Peer) -> None:
        """Stop watching `peer`; unknown peers are ignored."""
        self._pinged_at.pop(peer, None)

    def sweep(self, now: float) -> None:
        """Ping the clients that went quiet; close those that did not answer their ping."""
        closed: list[Peer] = []
        pinged_at = self._pinged_at
        for peer, pinged in pinged_at.items():
            heard = peer.heard_at()
            if pinged is not None and heard < pinged:
                if now - pinged >= self.ping_timeout_s:
                    closed.append(peer)
            elif now - heard >= self.ping_interval_s:
                pinged_at[peer] = now
                peer.send_ping()
            elif pinged is not None:
                pinged_at[peer] = None
        for peer in closed:
            del pinged_at[peer]
            peer.close_silent()

    async def run(self) -> None:
        """Sweep every `tick_s` until cancelled."""
        while True:
            await trio.sleep(self.tick_s)
            self.sweep(trio.current_time())
