"""Helpers of the reliability suite that `sigma.testing` does not cover: a count of trio tasks.

The suite's clients, their seq/epoch checks and its publisher come from `sigma.testing`
(`DeliveryLedger`, `SigmaTree.follow`, `Publisher`).
"""

from __future__ import annotations

import trio


def count_tasks() -> int:
    """Every task in this trio run: what leak checks compare before and after."""
    pending = [trio.lowlevel.current_root_task()]
    total = 0
    while pending:
        task = pending.pop()
        total += 1
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return total
