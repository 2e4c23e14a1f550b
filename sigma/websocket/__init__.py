"""The WebSocket protocol on the server side (RFC 6455), built on wsproto's documented API.

Read `frames` (encoding unmasked server frames once, for every client), then `connection`
(`ServerConnection`: one upgraded socket, parsed by wsproto, written by this object only), and
`send_queue` (what the kernel still holds for a client, for the hub's overload rule).
"""
