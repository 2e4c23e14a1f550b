"""The server edge: the listening socket, HTTP routes, the WebSocket upgrade and each session.

Read in this order:
- `run`: `run_gateway` and `GatewayHandle`; `listeners`: binding and the accept loop;
- `server`: `Gateway`, each connection's HTTP routes and WebSocket upgrade; `tls`: its TLS
  handshake first, when the port speaks TLS;
- `publish`: `POST /api/publish`, through the hub's intake (`503 overloaded` when it is closed);
- `upgrade`: the checks an upgrade request must pass (handshake, Origin, token);
- `resume_request`: what an upgrade asks for in its URL (`since`, `epoch`, `types`);
- `auth`, `limits`: JWT verification, connection and message limits (pure decisions);
- `session`: one WebSocket client from its 101 to its close (on a
  `sigma.websocket.connection.ServerConnection`), and `sender`, which writes its backlog;
- `client_frames`: the session's receive loop and its answers to what the client sends;
- `session_settings`: the limits and timings every session of one gateway shares;
- `keepalive`: one sweep that pings quiet clients and closes silent ones;
- `admin_faults`: `/admin/faults`, arming fault points from loopback.
"""
