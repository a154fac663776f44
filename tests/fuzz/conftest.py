"""The property-based suite (issue 20): hypothesis over every public op and the save/load path.
SPARSEPRUNE_FUZZ_EXAMPLES sets the examples per property (default 25; `make sanitize` runs 15)."""

import os

import pytest
from hypothesis import HealthCheck, settings

from fuzz.guard import Worker

settings.register_profile(
    "sparseprune", max_examples=int(os.environ.get("SPARSEPRUNE_FUZZ_EXAMPLES", "25")),
    deadline=None, derandomize=True, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture])
settings.load_profile("sparseprune")


@pytest.fixture(scope="session")
def worker():
    w = Worker()
    yield w
    w.close()
