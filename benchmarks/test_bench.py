"""pytest-benchmark suites over the same workloads as run.py (which adds the ratios and the floor):

    .venv/bin/python -m pytest benchmarks --benchmark-only --benchmark-group-by=param:isa

Never part of `make test`: timings are measured, not asserted.
"""

import pytest

import sparseprune as sp

import cases

ISAS = sp.supported_cpu_isas()


@pytest.fixture(params=[i for i in ISAS if i != "scalar"])
def isa(request):
    before = sp.cpu_isa()
    sp.set_cpu_isa(request.param)
    yield request.param
    sp.set_cpu_isa(before)


@pytest.mark.parametrize("shape", [(4096, 4096), (256, 8192), (128, 128, 3, 3)])
def test_mask_fused(benchmark, isa, shape):
    benchmark.pedantic(cases.mask_fused(shape), rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("shape", [(4096, 4096), (128, 128, 3, 3)])
def test_mask_reference(benchmark, shape):
    benchmark.pedantic(cases.mask_reference(shape), rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("name", list(cases.MASKS))
def test_mask_methods_fused(benchmark, isa, name):
    benchmark.pedantic(cases.mask_fused((2048, 2048), name), rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("kind", ["dense", "fused", "reference"])
def test_conv4_step(benchmark, isa, kind):
    benchmark.pedantic(cases.conv_step(kind), rounds=10, warmup_rounds=2)


@pytest.mark.parametrize("kind", ["fused", "reference"])
def test_reparam(benchmark, isa, kind):
    benchmark.pedantic(cases.reparam((2048, 2048), kind), rounds=5, warmup_rounds=1)
