"""`SessionSettings`: the limits and timings every session of one gateway shares.

The gateway builds one from its configuration when it starts (`sigma.gateway.server.Gateway`)
and hands it to each `sigma.gateway.session.ClientSession` it upgrades.
"""

from __future__ import annotations

from dataclasses import dataclass

from sigma.hub.outbox import SlowClientPolicy


@dataclass(frozen=True)
class SessionSettings:
    """Limits and timings shared by every session of one gateway."""

    queue_size: int
    slow_client_policy: SlowClientPolicy
    max_frame_bytes: int
    handshake_timeout_s: float
    close_timeout_s: float
    messages_per_s: float = 0.0  # 0: client frames are not rate limited
    message_burst: int = 1
    abuse_excess_frames: int = 1
    abuse_window_s: float = 1.0
    log_debug: bool = True
    """Whether debug lines are logged: read once, when the gateway starts, so that a session
    that logs nothing at debug does not build a bound logger per connection to find out."""
