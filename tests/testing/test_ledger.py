"""`DeliveryLedger` on hand-made stream items: what it counts and what its failures say."""

from __future__ import annotations

from typing import Any

import pytest

from sigma.client import Connected, Disconnected, Duplicate, Event, Gap, Welcome
from sigma.testing import DeliveryLedger
from sigma.testing.ledger import ClientLedger


def welcome(*, epoch: str = "e1", last_seq: int = 0, recovered: bool | None = None) -> Welcome:
    return Welcome(
        kind="welcome",
        client_id="c",
        subscriptions=["heartbeat"],
        last_seq=last_seq,
        epoch=epoch,
        heartbeat_interval=1.0,
        server_version="0",
        recovered=recovered,
    )


def event(seq: int) -> Event:
    return Event(type="heartbeat", seq=seq, data={})


def feed(ledger: DeliveryLedger, client: ClientLedger, *items: Any) -> None:
    for item in items:
        ledger.record(client, item)


async def test_a_clean_run_with_a_recovered_resume_passes_and_counts() -> None:
    ledger = DeliveryLedger()
    client = ledger.client()
    feed(ledger, client, Connected("u", welcome(last_seq=4), None), event(5), event(6))
    feed(ledger, client, Disconnected("code 1012 (hub restarted)", 1012, 0.01))
    feed(ledger, client, Connected("u", welcome(last_seq=9, recovered=True), 6))
    feed(ledger, client, event(7), event(8))
    ledger.assert_clean()
    figures = ledger.figures()
    assert figures["events_checked"] == 4 and figures["resumes"] == 1
    assert figures["close_codes"] == {"1012": 1} and figures["resume_latency"]["count"] == 1


async def test_losses_name_the_client_and_the_seqs() -> None:
    ledger = DeliveryLedger()
    a, b = ledger.client("a"), ledger.client("b")
    feed(ledger, a, Connected("u", welcome(), None), event(1), event(4), event(5), event(9))
    feed(ledger, b, Connected("u", welcome(), None), event(1), event(2))
    with pytest.raises(AssertionError) as failed:
        ledger.assert_no_loss()
    message = str(failed.value)
    assert message.splitlines() == [
        "DeliveryLedger: 1 of 2 client(s) lost or doubled events (6 events checked, 5 lost, "
        "0 duplicated):",
        "  client a: lost 5 event(s): seq 2-3 in epoch e1 (hole), seq 6-8 in epoch e1 (hole)",
    ]
    ledger.assert_no_duplicates()


async def test_duplicates_are_named_with_their_count() -> None:
    ledger = DeliveryLedger()
    client = ledger.client("x")
    feed(ledger, client, Connected("u", welcome(), None), event(1), event(2), event(2))
    feed(ledger, client, Duplicate(event(2)), Duplicate(event(1)))
    with pytest.raises(AssertionError, match=r"client x: 3 duplicate\(s\): seq 1 x2, seq 2 x3"):
        ledger.assert_clean()
    ledger.assert_no_loss()


async def test_unrecovered_resumes_and_new_epochs_are_losses() -> None:
    ledger = DeliveryLedger()
    client = ledger.client("r")
    feed(ledger, client, Connected("u", welcome(last_seq=10), None))
    feed(ledger, client, Connected("u", welcome(last_seq=30, recovered=False), 10))
    feed(ledger, client, Gap("not_recovered", "e1", "e1", 10, 30, 20), event(31))
    feed(ledger, client, Connected("u", welcome(epoch="e2", last_seq=3), 31))
    feed(ledger, client, Gap("new_epoch", "e2", "e1", 31, 3, None), event(4))
    assert client.unrecovered == 2 and client.lost == 23 and client.unknown_losses == 1
    with pytest.raises(AssertionError) as failed:
        ledger.assert_no_loss()
    assert (
        "client r: lost 23 event(s) and 1 unknown run(s): seq 11-30 in epoch e1 (not_recovered), "
        "an unknown number of event(s) in epoch e1 (new_epoch, after seq 31), "
        "seq 1-3 in epoch e2 (new_epoch)"
    ) in str(failed.value)


async def test_a_dropped_notice_explains_the_hole_once() -> None:
    ledger = DeliveryLedger()
    client = ledger.client("d")
    feed(ledger, client, Connected("u", welcome(), None), event(1))
    feed(ledger, client, Gap("events_dropped", "e1", "e1", 1, None, 3), event(5))
    assert client.lost == 3 and client.losses[0].why == "events_dropped"


async def test_a_narrow_client_is_not_held_to_contiguity_and_an_empty_ledger_is_not_clean() -> None:
    ledger = DeliveryLedger()
    narrow = ledger.client("n", contiguous=False)
    with pytest.raises(AssertionError, match="no event was checked"):
        ledger.assert_clean()
    feed(ledger, narrow, Connected("u", welcome(), None), event(3), event(9))
    ledger.assert_clean()
    with pytest.raises(AssertionError, match="before its welcome"):
        ledger.record(ledger.client("early"), event(1))


async def test_wait_caught_up_names_the_clients_behind() -> None:
    ledger = DeliveryLedger()
    feed(ledger, ledger.client("slow"), Connected("u", welcome(), None), event(1))
    with pytest.raises(AssertionError, match=r"reached seq 5 within 0.1s: client slow at seq 1$"):
        await ledger.wait_caught_up(5, timeout_s=0.1)
