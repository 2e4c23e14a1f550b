"""This node's name, as `/health`, heartbeats and the welcome report it."""

from __future__ import annotations

import os
import socket

from sigma.config.pipeline import BrokerConfig


def node_id_of(config: BrokerConfig) -> str:
    """`[broker] node_id` when set, else `<hostname>-<pid>`: one name per running process.

    The default is stable for the life of the process and different for each of several
    `sigma serve` processes on one host (`[gateway] reuse_port`).
    """
    return config.node_id or f"{socket.gethostname()}-{os.getpid()}"
