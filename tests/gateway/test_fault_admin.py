"""`/admin/faults` and `sigma fault ...`: off by default, loopback only, clear errors."""

from __future__ import annotations

import functools
from typing import Any

import orjson
import pytest
import trio
import trio.testing
from helpers import make_config, running_stack

from sigma.cli.main import main
from sigma.config import FaultsConfig
from sigma.faults import Faults
from sigma.gateway.server import Gateway
from sigma.health import HealthBoard
from sigma.supervision.supervisor import DynamicSupervisor

ADMIN = "/admin/faults"


def admin_config(**faults: Any) -> Any:
    return make_config(faults=FaultsConfig(admin=True, **faults))


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE", "PUT"])
async def test_the_endpoint_does_not_exist_unless_turned_on(method: str) -> None:
    async with running_stack() as stack:
        response = await stack.http.request(method, ADMIN, content=b"{}")
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"


async def test_arm_list_and_clear(faults: Faults) -> None:
    async with running_stack(admin_config(), faults=faults) as stack:
        listed = (await stack.http.get(ADMIN)).json()["points"]
        assert [row["point"] for row in listed] == [
            "connection.try_write",
            "engine.method",
            "heartbeat.tick",
            "hub.publish",
            "poller.call",
            "sender.write",
        ]
        assert not any(row["armed"] for row in listed)

        armed = await stack.http.post(
            ADMIN, json={"point": "poller.call", "action": "raise", "every": 3}
        )
        assert armed.status_code == 200
        assert armed.json()["description"] == "raise every 3 hit(s)"
        assert faults.point("poller.call").armed
        await stack.http.post(ADMIN, json={"point": "heartbeat.tick", "action": "drop"})

        one = await stack.http.delete(ADMIN, params={"point": "poller.call"})
        assert one.status_code == 200
        assert not faults.point("poller.call").armed and faults.point("heartbeat.tick").armed
        everything = await stack.http.delete(ADMIN)
        assert not any(row["armed"] for row in everything.json()["points"])
        assert (await stack.http.put(ADMIN)).status_code == 405


@pytest.mark.parametrize(
    ("body", "error", "detail"),
    [
        (b"{not json", "invalid_json", ""),
        (b'{"point": "nowhere", "action": "raise"}', "invalid_fault", "unknown fault point"),
        (b'{"point": "poller.call", "action": "explode"}', "invalid_fault", "action:"),
        (b'{"point": "poller.call", "action": "raise", "seed": 1}', "invalid_fault", "seed goes"),
        (b'{"point": "hub.publish", "action": "drop"}', "invalid_fault", "drop is not supported"),
        (b'{"point": "poller.call", "action": "raise", "x": 1}', "invalid_fault", "x: Extra"),
    ],
)
async def test_a_bad_fault_is_400_saying_what_is_wrong(
    body: bytes, error: str, detail: str, faults: Faults
) -> None:
    async with running_stack(admin_config(), faults=faults) as stack:
        response = await stack.http.post(ADMIN, content=body)
        assert response.status_code == 400
        assert response.json()["error"] == error
        assert detail in response.json()["detail"]
        assert not any(row["armed"] for row in faults.snapshot())
        unknown = await stack.http.delete(ADMIN, params={"point": "nowhere"})
        assert unknown.status_code == 400 and "unknown fault point" in unknown.text


async def test_only_loopback_peers_are_answered(faults: Faults) -> None:
    """A peer whose address is not loopback (as `accept` named it) gets 403."""
    config = admin_config()
    hub_send, _hub_receive = trio.open_memory_channel[Any](1)
    gateway = Gateway(config, hub_send, DynamicSupervisor("sessions"), HealthBoard(), faults=faults)
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(gateway.handle_connection, server, "203.0.113.7")
        body = b'{"point": "poller.call", "action": "raise"}'
        await client.send_all(
            b"POST /admin/faults HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        response = b""
        with trio.fail_after(5):
            while chunk := await client.receive_some():
                response += chunk
    assert response.startswith(b"HTTP/1.1 403 ")
    assert orjson.loads(response.split(b"\r\n\r\n", 1)[1])["detail"].endswith("loopback peers only")
    assert not faults.point("poller.call").armed


# --- the command line ----------------------------------------------------------------------------


async def run_cli(*argv: str) -> int:
    return await trio.to_thread.run_sync(functools.partial(main, list(argv)))


def printed(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """What the command printed: stdout without the in-process server's log lines."""
    return [line for line in capsys.readouterr().out.splitlines() if not line.startswith("20")]


async def test_sigma_fault_arm_list_clear(
    faults: Faults, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_stack(admin_config(), faults=faults) as stack:
        url = ("--url", stack.gateway.http_url)
        assert await run_cli("fault", "arm", "heartbeat.tick", "drop", "--every", "4", *url) == 0
        assert printed(capsys) == ["armed heartbeat.tick: drop every 4 hit(s)"]
        assert faults.point("heartbeat.tick").spec is not None

        arm_delay = ("fault", "arm", "poller.call", "delay", "--delay", "0.5", "--once", *url)
        assert await run_cli(*arm_delay) == 0
        prob = ("--probability", "0.25", "--seed", "9")
        assert await run_cli("fault", "arm", "engine.method", "raise", *prob, *url) == 0
        capsys.readouterr()

        assert await run_cli("fault", "list", *url) == 0
        table = printed(capsys)
        assert table[0].split() == ["point", "state", "hits", "fired"]
        rows = {line.split()[0]: line for line in table[1:]}
        assert "delay 0.5s once" in rows["poller.call"]
        assert "raise with probability 0.25 (seed 9)" in rows["engine.method"]
        assert "disarmed" in rows["sender.write"]

        assert await run_cli("fault", "clear", "poller.call", *url) == 0
        assert printed(capsys) == ["cleared poller.call"]
        assert not faults.point("poller.call").armed
        assert await run_cli("fault", "clear", *url) == 0
        assert not any(row["armed"] for row in faults.snapshot())


async def test_sigma_fault_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    async with running_stack() as stack:  # the admin endpoint is off
        url = ("--url", stack.gateway.http_url)
        assert await run_cli("fault", "list", *url) == 1
        err = capsys.readouterr().err
        assert err.startswith("sigma: the server refused (HTTP 404)")
        assert "[faults] admin = true" in err
        # Checked before anything is sent: a usage error.
        assert await run_cli("fault", "arm", "hub.publish", "drop", *url) == 2
        assert "drop is not supported at hub.publish" in capsys.readouterr().err
        assert await run_cli("fault", "arm", "poller.call", "raise", "--seed", "3", *url) == 2
        assert "seed goes with probability" in capsys.readouterr().err
        assert await run_cli("fault", "list", "--url", "ftp://x") == 2
    # Nothing listens there any more.
    assert await run_cli("fault", "clear", *url) == 1
    assert "cannot reach" in capsys.readouterr().err


def test_sigma_fault_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["fault", "arm", "nowhere", "raise"],
        ["fault", "arm", "poller.call", "raise", "--once", "--every", "2"],
        ["fault"],
    ):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
    assert "invalid choice: 'nowhere'" in capsys.readouterr().err
