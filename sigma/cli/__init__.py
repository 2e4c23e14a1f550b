from sigma.cli.main import main

__all__ = ["main"]
