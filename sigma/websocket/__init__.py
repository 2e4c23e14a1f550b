"""The WebSocket protocol on the server side (RFC 6455), built on wsproto.

Read `frames` (encoding unmasked server frames once, for every client).
"""
