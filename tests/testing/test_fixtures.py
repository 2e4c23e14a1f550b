"""The plugin's fixtures used directly: the in-process tree, its client, the subprocess."""

from __future__ import annotations

import pytest
import trio

from sigma.client import Connected, Event, Stream
from sigma.faults import FaultSpec
from sigma.supervision.spec import ChildExited, ChildStarted
from sigma.testing import DeliveryLedger, SigmaProcess, SigmaTree
from sigma.testing.tree import test_config


async def test_the_client_fixture_reads_the_tree(
    sigma_tree: SigmaTree, sigma_client: Stream
) -> None:
    seqs = await sigma_tree.publish([{"type": "notification", "data": {"n": 1}}])
    with trio.fail_after(10):
        async for item in sigma_client:
            if isinstance(item, Event) and item.seq == seqs[0]:
                break
            assert isinstance(item, Connected | Event)


@pytest.mark.sigma_config(hub={"history_size": 7})
async def test_the_marker_overrides_the_config(sigma_tree: SigmaTree) -> None:
    assert sigma_tree.config.hub.history_size == 7
    assert sigma_tree.config.heartbeat.interval_s == 0.1  # the test defaults stay


async def test_supervision_waits_end_on_the_event_and_say_what_was_missing(
    sigma_tree: SigmaTree,
) -> None:
    sigma_tree.faults.arm(FaultSpec(point="heartbeat.tick", action="raise", once=True))
    latency_s = await sigma_tree.supervision.restarted("heartbeat")
    assert 0 <= latency_s < 5 and sigma_tree.restarts("heartbeat") == 1
    assert sigma_tree.supervision.restart_latencies_s("heartbeat") == [latency_s]
    assert sigma_tree.supervision.of(ChildExited, child_id="heartbeat", abnormal=True)
    with pytest.raises(AssertionError, match=r"no ChildStarted\(child_id='poller'\) within 0.05s"):
        await sigma_tree.supervision.wait_for(ChildStarted, child_id="poller", timeout_s=0.05)


def test_bad_overrides_fail_with_pydantic_saying_which_key(tmp_path: object) -> None:
    with pytest.raises(ValueError, match="queue_size"):
        test_config(tmp_path, hub={"queue_size": 0})  # type: ignore[arg-type]


@pytest.mark.sigma_config(heartbeat={"interval_s": 0.2})
async def test_the_subprocess_fixture_serves_and_arms_faults_over_http(
    sigma_server: SigmaProcess, sigma_ledger: DeliveryLedger
) -> None:
    async with trio.open_nursery() as nursery:
        import sigma.client
        from sigma.testing.tree import FAST_RECONNECT

        async def follow() -> None:
            async with sigma.client.connect(
                sigma_server.ws_url, reconnect=FAST_RECONNECT, connection_items=True
            ) as stream:
                await sigma_ledger.follow(stream)

        nursery.start_soon(follow)
        await sigma_ledger.wait_until(lambda ledger: ledger.received > 0)
        description = await sigma_server.faults.arm(
            FaultSpec(point="hub.publish", action="raise", once=True)
        )
        assert "once" in description
        await sigma_ledger.wait_until(lambda ledger: ledger.closes()[1012] >= 1)
        (last,) = await sigma_server.publish({"type": "notification", "data": {}})
        await sigma_ledger.wait_caught_up(last)
        points = {p["point"]: p for p in await sigma_server.faults.points()}
        assert points["hub.publish"]["fired"] == 1
        await sigma_server.faults.clear()
        nursery.cancel_scope.cancel()
    sigma_ledger.assert_clean()
    assert await sigma_server.stop() == 0
    assert "Sigma stopped cleanly" in sigma_server.log()
