"""The hub: numbers every event and fans it out to the clients subscribed to its type.

Read in this order:
- `messages`: the inbox contract every producer imports;
- `state`: numbering, resume history, the client table and subscriptions (no I/O);
- `outbox`: one client's bounded queue and its slow-client policies;
- `actor`: the thin loop around `state` that the supervisor runs.
"""
