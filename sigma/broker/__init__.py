"""The broker: who numbers events and who polls, for one process or a cluster of nodes.

`[broker] kind = "memory"` needs nothing here: the hub numbers events itself, as one process
always did. `kind = "redis"` makes every node sharing a Redis stream one gateway. Reading order:
`scripts` (the Lua that numbers events and guards the lease, run atomically in Redis),
`entries` (events as stream entries, and back), `node` (this node: its name, its queue of
publishes, the numbering call and its place in the stream), `stream` (a node's link: numbering
its producers' events and tailing the stream into its hub), `lease` (the poller leadership
lease), `leadership` (the poller runs only on the node that holds the lease).
"""
