"""The `sigma` command: `main` parses the arguments and runs a subcommand.

Read `main` (the parser and every subcommand), then `fault` (`sigma fault`), `probe` and
`probe_verdict` (`sigma check`), and `watch/` (`sigma watch`). The CLI and the `sigma.testing`
pytest plugin are the only packages that import `sigma.app`.
"""

from sigma.cli.main import main

__all__ = ["main"]
