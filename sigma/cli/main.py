"""The `sigma` command: `serve`, `engine`, `config check`, clients `check`, `watch`, `fault`.

Exit status: 0 after a clean stop (Ctrl-C or SIGTERM), 1 when the supervision tree gave up,
2 for a configuration or usage error (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
import trio

from sigma import __version__
from sigma.cli.fault import add_fault_commands, run_fault_command
from sigma.config.loading import Config, load_config, parse_config, resolve_config_path
from sigma.errors import ConfigError, SupervisorError, leaves
from sigma.log import configure_logging

log = structlog.get_logger("sigma.cli")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)
HARD_EXIT_MARGIN_S = 5.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sigma", description="Sigma real-time event gateway")
    parser.add_argument("--version", action="version", version=f"sigma {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def add_common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--config",
            help="configuration file (default: $SIGMA_CONFIG, ./supervisor.toml, or built-in)",
        )
        sub.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
        sub.add_argument("--log-format", choices=["console", "json"])

    serve = commands.add_parser("serve", help="run the gateway with its whole supervision tree")
    add_common(serve)
    serve.add_argument("--host", help="gateway address (overrides [gateway] host)")
    serve.add_argument("--port", type=int, help="gateway port (overrides [gateway] port)")

    engine = commands.add_parser("engine", help="run the JSON-RPC engine on its own")
    add_common(engine)
    engine.add_argument("--host", help="engine address (overrides [engine] host)")
    engine.add_argument("--port", type=int, help="engine port (overrides [engine] port)")

    # `check` and `watch` parse their own arguments (see `main`); listed here for `sigma -h`.
    commands.add_parser("check", help="monitoring probe, Nagios plugin style (`sigma check -h`)")
    commands.add_parser("watch", help="live terminal view of the event stream (`sigma watch -h`)")

    add_fault_commands(
        commands.add_parser("fault", help="arm or clear fault points of a running server")
    )

    config = commands.add_parser("config", help="configuration tools")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    check = config_commands.add_parser(
        "check", help="validate a file and print the effective configuration"
    )
    check.add_argument("file", nargs="?", help="the file (default: as `serve` would pick it)")
    return parser


def load_effective_config(
    path: str | None,
    *,
    section: str | None = None,
    host: str | None = None,
    port: int | None = None,
) -> Config:
    """Load the configuration `serve` or `engine` would run with, `--host`/`--port` applied."""
    resolved = resolve_config_path(path)
    config = load_config(resolved)
    overrides = {key: value for key, value in (("host", host), ("port", port)) if value is not None}
    if section is None or not overrides:
        return config
    raw = config.model_dump(mode="json")
    raw[section] = {**raw[section], **overrides}
    return parse_config(raw, source="command line")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `sigma` command; returns the process exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["check"]:  # a Nagios plugin: its usage errors exit 3 (UNKNOWN), not 2
        from sigma.cli.probe import check_main

        return check_main(argv[1:])
    if argv[:1] == ["watch"]:
        from sigma.cli.watch.run import watch_main

        return watch_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "fault":
        return run_fault_command(args)
    try:
        if args.command == "config":
            return _config_check(args.file)
        section = "gateway" if args.command == "serve" else "engine"
        config = load_effective_config(args.config, section=section, host=args.host, port=args.port)
    except ConfigError as error:
        print(f"sigma: {error}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(
        args.log_level or config.logging.level, args.log_format or config.logging.format
    )
    if args.command == "serve":
        from sigma.app.serving import serve

        return run_until_signalled(lambda **kw: serve(config, **kw), config, "Sigma")
    from sigma.engine.server import run_engine

    return run_until_signalled(lambda **kw: run_engine(config.engine, **kw), config, "Sigma engine")


def _config_check(file: str | None) -> int:
    resolved = resolve_config_path(file)
    config = load_config(resolved)
    print(f"# {resolved or 'built-in defaults'}: valid")
    print(_as_toml(config.redacted_dump()))
    return EXIT_OK


def _as_toml(data: dict[str, Any], prefix: str = "", *, array_item: bool = False) -> str:
    """`data` as TOML: scalars, then arrays of tables (`[[faults.points]]`), then tables."""
    arrays = {k: v for k, v in data.items() if _is_table_array(v)}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    scalars = {
        k: v for k, v in data.items() if k not in arrays and k not in tables and v is not None
    }
    lines = [f"[{prefix}]"] if prefix and scalars else []
    if array_item:
        lines = [f"[[{prefix}]]"]  # even when empty: it is what adds the item
    lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in scalars.items()]
    for key, items in arrays.items():
        name = f"{prefix}.{_toml_key(key)}" if prefix else _toml_key(key)
        lines += [line for item in items for line in ("", _as_toml(item, name, array_item=True))]
    for key, table in tables.items():
        name = f"{prefix}.{_toml_key(key)}" if prefix else _toml_key(key)
        lines += ["", _as_toml(table, name)]
    return "\n".join(lines).strip("\n")


def _is_table_array(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").isalnum() else f'"{key}"'


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def run_until_signalled(start: Callable[..., Awaitable[object]], config: Config, name: str) -> int:
    """Run `start` under trio until SIGINT/SIGTERM, then shut down in order; exit status.

    A child that cannot be stopped is not waited for forever: once the shutdown has taken
    longer than the configured timeouts allow, the process exits with status 1.
    """
    hard_deadline_s = (
        config.gateway.drain_timeout_s
        + 6 * config.supervisor.shutdown_timeout_s
        + HARD_EXIT_MARGIN_S
    )

    async def run() -> None:
        with trio.open_signal_receiver(*SHUTDOWN_SIGNALS) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(_start_and_report, start, name)
                async for signum in signals:
                    log.info("Shutting down", signal=signal.Signals(signum).name)
                    _arm_hard_exit(hard_deadline_s)
                    nursery.cancel_scope.cancel()
                    break

    failed = False
    try:
        trio.run(run)
    except* SupervisorError as group:
        failed = True
        for cause in leaves(group):
            log.error(f"{name} gave up: the supervision tree could not keep running: {cause}")
    except* Exception as group:
        failed = True
        for cause in leaves(group):
            log.error(f"{name} stopped: {type(cause).__name__}: {cause}")
    if failed:
        return EXIT_FAILED
    log.info(f"{name} stopped cleanly")
    return EXIT_OK


async def _start_and_report(
    start: Callable[..., Awaitable[object]],
    name: str,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda **kw: start(**kw))
        settle_garbage_collector()
        log.info(f"{name} running", pid=os.getpid())
        task_status.started()


GC_YOUNG_THRESHOLD = 100_000
"""Allocations between young-generation collections (CPython's default is 700)."""


def settle_garbage_collector() -> None:
    """Tune CPython's cycle collector for a long-running server, once everything has started.

    Every event and frame allocates short-lived objects that reference counting frees; the
    default thresholds still run the cycle collector thousands of times a second, and its full
    passes walk every long-lived object (one task and many objects per client), which measured
    as about a third of the server's CPU under load. Freezing what exists after start-up takes
    those objects out of every later pass, and a higher young threshold makes passes rare.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 50, 100)


def _arm_hard_exit(after_s: float) -> None:
    def exit_now() -> None:
        log.error("Shutdown did not finish in time; exiting", after_s=after_s)
        os._exit(EXIT_FAILED)

    timer = threading.Timer(after_s, exit_now)
    timer.daemon = True
    timer.start()
