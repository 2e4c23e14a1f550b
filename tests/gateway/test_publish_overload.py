"""Overload from outside: when the whole herd lags, publishers get 503 and clients are kept;
what was accepted then arrives in order once they read again."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import trio
from helpers import (
    API_KEY,
    Stack,
    eventually,
    make_config,
    paused_client,
    read_until,
    running_stack,
)

from sigma.config import ApiConfig, HubConfig

PAD = "x" * 4000
CLIENTS = 4


async def post(stack: Stack, body: object) -> httpx.Response:
    return await stack.http.post(
        "/api/publish", content=orjson.dumps(body), headers={"authorization": f"Bearer {API_KEY}"}
    )


async def test_a_lagging_herd_gets_publishers_503_and_loses_nothing_accepted() -> None:
    config = make_config(
        hub=HubConfig(queue_size=8), api=ApiConfig(key=API_KEY, publish_wait_s=0.2)
    )
    async with running_stack(config) as stack:
        clients = [await paused_client(stack.gateway.port) for _ in range(CLIENTS)]
        await eventually(lambda: len(stack.hub.state.clients) == CLIENTS)
        accepted: list[int] = []
        refused: httpx.Response | None = None
        with trio.fail_after(30):
            while refused is None:
                response = await post(stack, [{"type": "notification", "data": {"pad": PAD}}] * 4)
                if response.status_code == 503:
                    refused = response
                else:
                    assert response.status_code == 200, response.text
                    accepted += response.json()["seqs"]
        # What the publisher sees: a JSON error and when to come back; nothing was accepted.
        assert refused.json()["error"] == "overloaded"
        assert "most clients lag" in refused.json()["detail"]
        assert refused.headers["retry-after"] == "1"
        assert stack.hub.state.last_seq == accepted[-1]
        # Nobody was cut: they all lag together.
        assert stack.hub.state.slow_disconnects == 0
        assert len(stack.hub.state.clients) == CLIENTS
        assert stack.hub.state.herd.lagging
        scrape = (await stack.http.get("/metrics")).text
        assert 'sigma_publish_refused_total{reason="herd_lagging"} 1.0' in scrape
        assert "sigma_hub_herd_lagging 1.0" in scrape
        # The clients read again: everything accepted arrives, in order, with no gap.
        async with trio.open_nursery() as nursery:
            results: dict[int, list[dict[str, Any]]] = {}

            async def resume(index: int) -> None:
                results[index] = await read_until(clients[index], accepted[-1])

            for index in range(CLIENTS):
                nursery.start_soon(resume, index)
        for messages in results.values():
            seqs = [m["seq"] for m in messages if m["seq"] is not None]
            assert seqs == list(range(1, accepted[-1] + 1)) == accepted
        # Caught up: the hub takes events again.
        await eventually(lambda: stack.hub.accepts_events(trio.current_time()))
        response = await post(stack, {"type": "notification", "data": {}})
        assert response.json() == {"seq": accepted[-1] + 1}
        assert stack.hub.state.slow_disconnects == 0
        for client in clients:
            await client.aclose()


def test_retry_after_is_the_wait_in_whole_seconds_and_never_zero() -> None:
    from sigma.gateway.publish import overloaded_error
    from sigma.hub.intake import Overloaded

    assert overloaded_error(Overloaded("inbox_full", 2.5), 2.5).headers == (("retry-after", "3"),)
    error = overloaded_error(Overloaded("inbox_full", 0.0), 0.0)
    assert error.headers == (("retry-after", "1"),)
    assert (error.status, error.error) == (503, "overloaded")
    assert error.detail.startswith("the hub is behind")


def test_a_bad_publish_wait_is_refused_with_where_it_is() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="publish_wait_s"):
        ApiConfig(key="k", publish_wait_s=-1.0)
