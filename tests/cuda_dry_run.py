"""A pytest plugin that thins the CUDA tests' CPU dry run (tests/cuda_helpers.py):
``pytest -p cuda_dry_run`` (with tests/ on PYTHONPATH) and SPARSEPRUNE_CUDA_TESTS_SAMPLE=N keep
only every N-th parametrized case of each test function, the first always: enough to check the
tests' code in CI (benchmarks/gpu_check.py in CPU mode) within its time. Inert without the
variable; never loaded by a plain pytest run."""

import os


def pytest_collection_modifyitems(config, items):
    every = int(os.environ.get("SPARSEPRUNE_CUDA_TESTS_SAMPLE", "1"))
    if every <= 1:
        return
    seen: dict = {}
    keep, drop = [], []
    for item in items:
        key = (str(item.path), getattr(item, "originalname", item.name))
        index = seen.get(key, 0)
        seen[key] = index + 1
        (keep if index % every == 0 else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
