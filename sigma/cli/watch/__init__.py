"""`sigma watch`: a live terminal view of a gateway that reconnects and resumes by itself.

Read `run` (the connection loop), `state` (what the view knows, no I/O), `summary` (one line per
event) and `view` (rendering with rich).
"""
