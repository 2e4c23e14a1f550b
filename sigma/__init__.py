"""Sigma: a real-time event gateway on trio.

An engine speaks JSON-RPC 2.0, an rpc-poller turns its answers into typed events, a hub fans them
out to WebSocket clients through one bounded sender per client, and an OTP-style supervisor keeps
every part running.
"""

__version__ = "0.1.0"
