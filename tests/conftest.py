"""Shared fixtures: every test starts from torch.manual_seed(0); `isa` runs a test once per CPU ISA
this machine supports (the kernels are switched in-process and restored afterwards)."""

import pytest
import torch

import sparseprune as sp


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(params=sp.supported_cpu_isas())
def isa(request):
    before = sp.cpu_isa()
    sp.set_cpu_isa(request.param)
    yield request.param
    sp.set_cpu_isa(before)


def run_on_each_isa(fn):
    """{isa: fn()} for every supported ISA, restoring the active one afterwards."""
    before = sp.cpu_isa()
    try:
        results = {}
        for name in sp.supported_cpu_isas():
            sp.set_cpu_isa(name)
            results[name] = fn()
        return results
    finally:
        sp.set_cpu_isa(before)
