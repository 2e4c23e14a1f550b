"""`python -m sigma`: the same as the `sigma` console script."""

from sigma.cli.main import main

raise SystemExit(main())
