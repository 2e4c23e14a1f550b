"""Sigma's test kit: fault-injection tests against a real Sigma, and the checker of what arrived.

Installed with `sigma-gateway`, it is a pytest plugin (`sigma.testing.plugin`, entry point
`pytest11`) whose fixtures run a tree in-process or `sigma serve` as a subprocess, arm fault
points, connect clients and check deliveries. docs/testing.md is the user's guide.

Reading order: `ledger` (`DeliveryLedger`, the one seq/epoch/gap/duplicate checker), `tree`
(`run_tree`, `SigmaTree`, `test_config`), `process` (`run_process`, `SigmaProcess`,
`RemoteFaults`), `supervision` (`SupervisionWatch`), `load` (`Publisher`), `plugin`.
"""

from sigma.testing.ledger import ClientLedger, DeliveryLedger, Loss, latency_summary
from sigma.testing.load import Publisher, PublishFailed
from sigma.testing.process import RemoteFaults, ServerFailed, SigmaProcess, run_process
from sigma.testing.supervision import SupervisionWatch
from sigma.testing.tree import TEST_API_KEY, SigmaTree, run_tree, test_config

__all__ = [
    "TEST_API_KEY",
    "ClientLedger",
    "DeliveryLedger",
    "Loss",
    "PublishFailed",
    "Publisher",
    "RemoteFaults",
    "ServerFailed",
    "SigmaProcess",
    "SigmaTree",
    "SupervisionWatch",
    "latency_summary",
    "run_process",
    "run_tree",
    "test_config",
]
