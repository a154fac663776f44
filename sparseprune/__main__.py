"""``python -m sparseprune``: the same as the ``sparseprune`` console script."""

from .runner.cli import main

raise SystemExit(main())
