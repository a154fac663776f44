"""``python -m sparseprune``: the same as the ``sparseprune`` console script."""

from .cli import main

raise SystemExit(main())
