"""The JSON-RPC 2.0 engine: host status and compression jobs over HTTP `POST /rpc`.

Start it with `await nursery.start(run_engine, config.engine)`; the `EngineHandle` it starts with
names the URL to POST to. Read top-down:

- `server`: HTTP on `sigma.http` (keep-alive), routing, `run_engine` and `EngineHandle`;
- `jsonrpc`: envelopes, the `Method` registry and the dispatcher (single, batch, notifications);
- `methods`: `system.status`, `storage.status`, `health`;
- `compression_methods`: `agents.list`, `compression.jobs.submit|list|get|cancel`;
- `openrpc`: `rpc.discover`, generated from the registry's pydantic models;
- `workers`, `jobs`, `compressor`, `paths`: the queue and workers, the job life cycle, the
  chunked compression a worker thread runs, and keeping every file inside the data directory;
- `models`: the bases of every params and result model.

Wire choices left open by JSON-RPC 2.0: a notification, or a batch made only of notifications,
is answered with HTTP 200 and an empty body; an unknown job id is the application error -32001
(see `compression_methods`); request objects with members other than `jsonrpc`, `method`,
`params` and `id` are invalid (-32600).
"""

from sigma.engine.server import EngineHandle, run_engine

__all__ = ["EngineHandle", "run_engine"]
