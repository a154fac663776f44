"""The random stream: Philox known answers, kernel stream == reference stream on every ISA,
uniforms in the open interval, logistic noise accuracy and distribution, seed plumbing."""

import math

import numpy as np
import pytest
import torch

import sparseprune as sp
from sparseprune import ops, reference
from sparseprune.ops.rng import next_rng, rng_state, seed_offset

# Random123's tests/kat_vectors, "philox4x32 10" lines: counter (4 words), key (2), expected (4).
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


def as_u32(t: torch.Tensor) -> np.ndarray:
    return t.numpy().view(np.uint32)


@pytest.mark.parametrize("counter,key,expected", KNOWN_ANSWERS)
def test_reference_philox_known_answers(counter, key, expected):
    out = reference.philox4x32_10(np.array(counter, dtype=np.uint32).reshape(4, 1), key)
    assert tuple(int(x) for x in out[:, 0]) == expected


def test_kernel_philox_known_answer(isa):
    # Elements 0..3 are block 0: counter (0, 0, offset low, offset high), key = seed. The other
    # known answers need counters far beyond any tensor; the kernel stream is checked against the
    # reference (which passes all of them) for many seeds and offsets below.
    counter, key, expected = KNOWN_ANSWERS[0]
    assert tuple(int(x) for x in as_u32(ops.philox_bits(4, 0, 0))) == expected


@pytest.mark.parametrize("numel", [1, 3, 63, 64, 65, 4097, 70001])
@pytest.mark.parametrize("seed,offset", [(0, 0), (12345, 678), (2**63 - 1, 2**62 + 5), (-1, -2)])
def test_kernel_stream_equals_reference(isa, numel, seed, offset):
    kernel = as_u32(ops.philox_bits(numel, seed, offset))
    expected = as_u32(reference.philox_bits(numel, seed, offset))
    np.testing.assert_array_equal(kernel, expected)


def test_uniform_open_interval_extremes():
    # k = 0 and k = 2^23 - 1 are the extreme uniforms; both stay strictly inside (0, 1).
    k = np.array([0, 2**23 - 1], dtype=np.float64)
    u = (k + 0.5) * 2.0**-23
    assert (u > 0).all() and (u < 1).all()
    assert np.float32(u[0]) > 0 and np.float32(u[1]) < 1 and np.float32(1 - u[1]) > 0


def test_logistic_noise_accuracy(isa):
    n = 1 << 20
    got = ops.logistic_noise(n, 99, 7).double()
    want = reference.logistic_noise(n, 99, 7)
    assert torch.isfinite(got).all()
    assert got.abs().max() < math.log(2**24)  # |L| is bounded because u is never 0 or 1
    assert (got - want).abs().max() < 2e-6


def test_logistic_noise_is_logistic():
    n = 1 << 20
    noise = ops.logistic_noise(n, 2024, 0).double()
    u = torch.sigmoid(noise).numpy()  # the logistic CDF maps L back to a uniform
    # Kolmogorov-Smirnov distance against U(0, 1); 1.95 / sqrt(n) is the 0.1% critical value.
    u.sort()
    grid = np.arange(1, n + 1) / n
    ks = max(np.abs(u - grid).max(), np.abs(u - (grid - 1 / n)).max())
    assert ks < 1.95 / math.sqrt(n)
    assert abs(noise.mean()) < 5 * math.pi / math.sqrt(3 * n)  # mean 0, variance pi^2 / 3


def _log_estimate_f32(x: np.ndarray) -> np.ndarray:
    """NumPy copy of log_estimate() in csrc/include/sparseprune/noise.h (FMAs via float64)."""
    bits = x.view(np.uint32)
    e = ((bits >> 23).astype(np.int64) - 127).astype(np.float32)
    f = ((bits & 0x7FFFFF) | 0x3F800000).view(np.float32) - np.float32(1)

    def fma(a, b, c):
        return (a.astype(np.float64) * b + c).astype(np.float32)

    p = np.full_like(f, np.float32(0.10968904197216034))
    for c in (-0.4000322222709656, 0.9834903478622437, 0.0004420172772370279):
        p = fma(p, f, np.float32(c))
    return fma(e, np.float32(0.6931471805599453), p)


def test_noise_estimate_bound_holds_for_every_uniform():
    # The forward pass decides most masks from a cheap estimate of L and computes L exactly only
    # within kLogisticEstimateBound (1e-3) of the decision boundary. Check the bound exhaustively
    # over all 2^23 uniforms the generator can produce, with room for the kernel's own L error.
    k = np.arange(2**23, dtype=np.float64)
    u = ((k + 0.5) * 2.0**-23).astype(np.float32)
    one_minus_u = (np.float32(1) - u).astype(np.float32)
    estimate = _log_estimate_f32(u).astype(np.float64) - _log_estimate_f32(one_minus_u)
    exact = np.log(u.astype(np.float64)) - np.log1p(-u.astype(np.float64))
    assert np.abs(estimate - exact).max() < 1e-3 - 1e-5


def test_forward_mask_matches_exact_noise_near_the_boundary(isa):
    # Scores placed right at -L make the estimate ambiguous for many elements, exercising the
    # exact fallback; forward masks must equal 1[s + L > 0] computed from the exact kernel noise.
    n = 300_000
    rng = rng_state(31, 4)
    noise = ops.logistic_noise(n, 31, 4)
    jitter = (torch.rand(n) - 0.5) * 4e-3
    scores = (-noise + jitter).float()
    masked = ops.aslp_weight(torch.ones(n), scores, None, 1.0, rng)
    exact = (scores + noise) > 0
    assert torch.equal(masked != 0, exact)
    assert 0.3 < exact.float().mean() < 0.7


def test_next_rng_follows_torch_manual_seed():
    torch.manual_seed(5)
    a = next_rng()
    torch.manual_seed(5)
    b = next_rng()
    assert torch.equal(a, b) and a.dtype == torch.int64 and a.shape == (2,)
    assert not torch.equal(a, next_rng())
    g = torch.Generator().manual_seed(1)
    assert torch.equal(next_rng(g), next_rng(torch.Generator().manual_seed(1)))


def test_rng_state_round_trip():
    for seed, offset in [(0, 0), (2**64 - 1, 2**63), (123, 2**40 + 7)]:
        assert seed_offset(rng_state(seed, offset)) == (seed, offset)


def _python_with_isa(value: str, tmp_path):
    import os
    import pathlib
    import subprocess
    import sys
    env = dict(os.environ, SPARSEPRUNE_CPU_ISA=value,
               PYTHONPATH=str(pathlib.Path(sp.__file__).parent.parent))
    code = "import sparseprune as sp; print(sp.cpu_isa())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=tmp_path)


def test_env_var_forces_isa(tmp_path):
    out = _python_with_isa("scalar", tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "scalar"
    bad = _python_with_isa("sse9", tmp_path)
    assert bad.returncode != 0
    assert "SPARSEPRUNE_CPU_ISA" in bad.stderr and "sse9" in bad.stderr and "avx2" in bad.stderr
    assert "Traceback" in bad.stderr  # an ordinary Python exception, not a crash


def test_set_cpu_isa_rejects_unknown():
    with pytest.raises(ValueError, match="unknown CPU ISA 'sse9'.*scalar"):
        sp.set_cpu_isa("sse9")
