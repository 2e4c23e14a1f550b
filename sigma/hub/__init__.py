"""The hub: numbers every event and fans it out to the clients subscribed to its type.

Read in this order:
- `messages`: the inbox contract every producer imports;
- `intake`: the gate event producers pass to reach the inbox: it stops taking events (the
  publish API waits, then is refused; internal producers wait) while joins, leaves and commands
  go on;
- `state`: numbering, resume history, the client table and subscriptions (no I/O);
- `history`: what the numbering keeps: recent frames for resume, idempotency keys' seqs;
- `overload`: when one client lags far behind the rest, and when the whole herd lags (pure);
- `outbox`: one client's bounded queue and its slow-client policies;
- `actor`: the thin layer around `state` that acts on each inbox message;
- `loop`: `run_hub`, the task the supervisor runs: how the actor takes messages from the inbox.
"""
