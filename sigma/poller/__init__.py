"""The rpc-poller: polls the engine and turns its answers and failures into typed events.

Read `actor` (the loop, one schedule per method) then `changes` (what counts as a change worth
an event, and the retry backoff after failures).
"""
