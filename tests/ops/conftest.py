"""tests/ops: thinning of the CUDA tests' CPU dry run (tests/cuda_helpers.py). With
SPARSEPRUNE_CUDA_TESTS_SAMPLE=N (N > 1) only every N-th parametrized case of each test function
is kept, the first always: enough to check the tests' code in CI (benchmarks/gpu_check.py in CPU
mode) within its time. Inert without the variable."""

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
