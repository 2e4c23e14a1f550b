"""The pytest plugin as a user meets it: test files run by pytest's `pytester` in a subprocess."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

PREFIX = r"(E|\s+\|)\s+"
"""How pytest starts a line of the failure's message (inside an exception group, or not)."""
INI = """
[pytest]
trio_mode = true
"""

TEN_POLLER_CRASHES = """
from sigma.faults import FaultSpec


async def test_ten_poller_crashes_under_load_lose_nothing(sigma_tree, sigma_ledger):
    await sigma_tree.follow(sigma_ledger, count=5)
    async with sigma_tree.load(batch=5, period_s=0.02) as load:
        for _ in range(10):
            sigma_tree.faults.arm(FaultSpec(point="poller.call", action="raise", once=True))
            await sigma_tree.supervision.restarted("poller")
    assert sigma_tree.restarts("poller") == 10 and load.published > 0
    await sigma_ledger.wait_caught_up(await sigma_tree.publish_marker())
    sigma_ledger.assert_clean()
    print("FIGURES", sigma_ledger.figures())
"""

STALLED_SENDER_DROPS = """
import pytest
from sigma.faults import FaultSpec


@pytest.mark.sigma_config(hub={"slow_client_policy": "drop_oldest", "queue_size": 4})
async def test_a_stalled_sender_loses_nothing(sigma_tree, sigma_ledger):
    await sigma_tree.follow(sigma_ledger, count=1)
    stall = FaultSpec(point="sender.write", action="delay", delay_s=0.5, once=True)
    sigma_tree.faults.arm(stall)
    await sigma_tree.publish({"type": "notification", "data": {}})  # the sender stalls on it
    await sigma_tree.publish([{"type": "notification", "data": {"n": n}} for n in range(50)])
    await sigma_ledger.wait_caught_up(await sigma_tree.publish_marker())
    sigma_ledger.assert_no_loss()
"""


def test_a_users_test_that_crashes_the_poller_ten_times_passes(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_user=TEN_POLLER_CRASHES)
    result = pytester.runpytest_subprocess("-q", "-s", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.re_match_lines([r"FIGURES .*'clients': 5.*'lost': 0.*'duplicated': 0"])


def test_a_users_test_that_loses_events_fails_saying_what_was_lost(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_user=STALLED_SENDER_DROPS)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines(
        [
            PREFIX + r"AssertionError: DeliveryLedger: 1 of 1 client\(s\) lost or doubled events "
            r"\(\d+ events checked, \d+ lost, 0 duplicated\):",
            PREFIX + r"client 0: lost \d+ event\(s\): seq \d+-\d+ in epoch \w+ \(events_dropped\)",
        ]
    )
