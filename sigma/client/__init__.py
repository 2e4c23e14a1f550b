"""The client side of Sigma's wire protocol, for programs that consume a gateway's events.

`connection`: one WebSocket connection to a gateway, its welcome and its frames;
`tls`: whose certificates the client tools trust (`--cafile`).
"""
