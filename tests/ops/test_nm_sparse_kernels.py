"""The N:M inference op (format "nm") against dense F.linear and the pure-PyTorch reference: every
pattern and CPU ISA, batch 1 and many with leading shapes, odd sizes, empty batch, non-contiguous
inputs, bfloat16; the layout's compression round trip and validation; bad input."""

import pytest
import torch
import torch.nn.functional as F

from sparseprune import ops, reference, select
from sparseprune.ops import formats, nm_format

TOL = dict(rtol=1e-4, atol=1e-4)  # float32 sums in another order
PATTERNS = [(2, 4), (1, 4), (4, 8), (3, 8), (1, 2)]


def nm_weight(rows, cols, n, m, gen, holes=True):
    """A random weight keeping the n largest of random scores in every group of m; with `holes`
    some kept weights are 0 too (groups keeping fewer than n)."""
    weight = torch.randn(rows, cols, generator=gen)
    keep = select.top_n_of_m(torch.rand(rows, cols, generator=gen), n, m)
    if holes:
        keep &= torch.rand(rows, cols, generator=gen) > 0.1
    return weight * keep


def parts(weight, pattern):
    values, row_ptr, indices = nm_format.compress(weight, pattern)
    nm_format.validate(values, row_ptr, indices, pattern, *weight.shape, "test")
    return values, indices


@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda p: f"{p[0]}:{p[1]}")
def test_nm_linear_matches_dense_on_every_isa(isa, pattern):
    n, m = pattern
    gen = torch.Generator().manual_seed(10 * n + m)
    for rows, groups in [(7, 13), (64, 24), (33, 128), (3, 1)]:
        cols = groups * m
        weight = nm_weight(rows, cols, n, m, gen)
        weight[1 % rows] = 0  # an empty row
        values, indices = parts(weight, pattern)
        bias = torch.randn(rows, generator=gen)
        for batch in (1, 2, 7, 33, 130):
            x = torch.randn(batch, cols, generator=gen)
            for b in (bias, None):
                got = ops.nm_linear(x, values, indices, b, n, m, weight.shape)
                torch.testing.assert_close(got, F.linear(x, weight, b), **TOL)
                torch.testing.assert_close(
                    got, reference.nm_linear(x, values, indices, b, n, m, weight.shape), **TOL)


def test_nm_linear_shapes_layouts_and_extremes(isa):
    gen = torch.Generator().manual_seed(3)
    weight = nm_weight(20, 44, 2, 4, gen)
    values, indices = parts(weight, (2, 4))
    bias = torch.randn(20, generator=gen)
    run = lambda x: ops.nm_linear(x, values, indices, bias, 2, 4, weight.shape)  # noqa: E731
    for x in (torch.randn(44, generator=gen),               # 1-D
              torch.randn(3, 5, 44, generator=gen),         # (batch, tokens, features)
              torch.randn(2, 1, 1, 44, generator=gen),      # leading ones: batch 2
              torch.randn(1, 1, 44, generator=gen),         # batch 1 with leading dims
              torch.randn(44, 6, generator=gen).t(),        # non-contiguous
              torch.randn(6, 88, generator=gen)[:, ::2]):   # strided last dimension
        torch.testing.assert_close(run(x), F.linear(x, weight, bias), **TOL)
    assert run(torch.randn(0, 44)).shape == (0, 20)         # empty batch
    assert run(torch.randn(2, 0, 44)).shape == (2, 0, 20)
    empty = torch.zeros(0, 44)                               # no outputs
    v0, i0 = parts(empty, (2, 4))
    assert ops.nm_linear(torch.randn(3, 44), v0, i0, None, 2, 4, (0, 44)).shape == (3, 0)
    v1, i1 = parts(torch.zeros(5, 0), (2, 4))                # no inputs: the bias
    torch.testing.assert_close(ops.nm_linear(torch.randn(3, 0), v1, i1, bias[:5], 2, 4, (5, 0)),
                               bias[:5].expand(3, 5))


def test_nm_linear_bfloat16(isa):
    gen = torch.Generator().manual_seed(4)
    weight = nm_weight(24, 64, 2, 4, gen).to(torch.bfloat16)
    values, indices = parts(weight, (2, 4))
    assert values.dtype == torch.bfloat16
    bias = torch.randn(24, generator=gen)
    for batch in (1, 9):
        x = torch.randn(batch, 64, generator=gen)
        expect = F.linear(x, weight.float(), bias)
        torch.testing.assert_close(ops.nm_linear(x, values, indices, bias, 2, 4, weight.shape),
                                   expect, **TOL)
        got = ops.nm_linear(x.bfloat16(), values, indices, bias.bfloat16(), 2, 4, weight.shape)
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got.float(), F.linear(x.bfloat16().float(), weight.float(),
                                                         bias.bfloat16().float()),
                                   rtol=2e-2, atol=2e-2)


def test_layout_round_trip_and_size():
    gen = torch.Generator().manual_seed(5)
    for pattern in PATTERNS:
        weight = nm_weight(9, 8 * 5, *pattern, gen)
        values, row_ptr, indices = formats.compress(weight, "nm", pattern)
        assert torch.equal(formats.to_dense(values, row_ptr, indices, "nm", 9, 40, pattern), weight)
        assert torch.equal(reference.nm_dense_weight(values, indices, *pattern, (9, 40)), weight)
    weight = nm_weight(64, 4096, 2, 4, gen)
    values, _, indices = formats.compress(weight, "nm", (2, 4))
    stored = values.numel() * 4 + indices.numel() * 4
    assert stored <= 0.55 * weight.numel() * 4  # 2:4 float32: 4 bytes + 2 bits per kept weight


def test_detect_patterns():
    gen = torch.Generator().manual_seed(6)
    assert nm_format.detect(nm_weight(8, 32, 2, 4, gen, holes=False)) == (2, 4)
    assert nm_format.detect(nm_weight(8, 32, 1, 4, gen, holes=False)) == (1, 4)
    w48 = torch.zeros(8, 32)
    w48[:, :3] = 1.0  # three of the first four: not 2:4, but 4:8
    assert nm_format.detect(w48) == (3, 8)
    assert nm_format.detect(torch.ones(8, 32)) is None
    assert nm_format.detect(torch.ones(8, 30)) is None
    assert "not a multiple" in nm_format.why_not(torch.ones(8, 30))
    with pytest.raises(ValueError, match="not 2:4"):
        nm_format.compress(torch.ones(8, 32), (2, 4))


def test_validate_rejects_malformed_layouts():
    gen = torch.Generator().manual_seed(7)
    values, row_ptr, indices = formats.compress(nm_weight(4, 16, 2, 4, gen), "nm", (2, 4))
    check = lambda v=values, r=row_ptr, i=indices, p=(2, 4), cols=16: nm_format.validate(  # noqa
        v, r, i, p, 4, cols, "w")
    check()
    with pytest.raises(ValueError, match="values must have shape"):
        check(v=values[:-1])
    with pytest.raises(TypeError, match="values must be"):
        check(v=values.double())
    with pytest.raises(ValueError, match="row_ptr"):
        check(r=row_ptr.flip(0))
    with pytest.raises(ValueError, match="indices must have shape"):
        check(i=indices[:, :0])
    with pytest.raises(ValueError, match="multiple of 4"):
        check(cols=18)
    dup = indices.clone()
    dup[0, 0] = 0  # both slots of group 0 at position 0
    with pytest.raises(ValueError, match="strictly ascending"):
        check(i=dup)
    v8, r8, i8 = formats.compress(nm_weight(2, 16, 1, 8, gen), "nm", (1, 8))
    bad = i8.clone()
    bad[0, 0] = 0xF  # position 15 in a 4-bit field, m = 8
    with pytest.raises(ValueError, match="position >= M"):
        nm_format.validate(v8, r8, bad, (1, 8), 2, 16, "w")


def test_nm_linear_bad_input():
    gen = torch.Generator().manual_seed(8)
    weight = nm_weight(6, 16, 2, 4, gen)
    values, indices = parts(weight, (2, 4))
    x = torch.randn(3, 16)
    with pytest.raises(ValueError, match="last dimension"):
        ops.nm_linear(torch.randn(3, 12), values, indices, None, 2, 4, weight.shape)
    with pytest.raises(ValueError, match="multiple of m = 4"):
        ops.nm_linear(x, values, indices, None, 2, 4, (6, 18))
    with pytest.raises(ValueError, match="1 <= n < m <= 8"):
        ops.nm_linear(x, values, indices, None, 4, 4, weight.shape)
    with pytest.raises(ValueError, match="values must be 1-D with 2 slots"):
        ops.nm_linear(x, values[:-2], indices, None, 2, 4, weight.shape)
    with pytest.raises(ValueError, match="indices must have shape"):
        ops.nm_linear(x, values, indices[:, :0], None, 2, 4, weight.shape)
    with pytest.raises(TypeError, match="input must be float32 or bfloat16"):
        ops.nm_linear(x.double(), values, indices, None, 2, 4, weight.shape)
    with pytest.raises(ValueError, match="bias must have shape"):
        ops.nm_linear(x, values, indices, torch.zeros(5), 2, 4, weight.shape)
    v8, _, i8 = formats.compress(nm_weight(2, 16, 1, 8, gen), "nm", (1, 8))
    bad = i8.clone()
    bad[1, 0] = 0xF
    with pytest.raises(ValueError, match="row 1 hold an in-group position >= m = 8"):
        ops.nm_linear(x, v8, bad, None, 1, 8, (2, 16))


def test_nm_linear_opcheck_and_no_backward():
    gen = torch.Generator().manual_seed(9)
    weight = nm_weight(8, 32, 2, 4, gen)
    values, indices = parts(weight, (2, 4))
    args = (torch.randn(5, 32), values, indices, torch.randn(8), 2, 4, [8, 32])
    torch.library.opcheck(torch.ops.sparseprune.nm_linear.default, args,
                          test_utils=("test_schema", "test_faketensor"))
    x = torch.randn(5, 32, requires_grad=True)
    with pytest.raises(RuntimeError, match="no backward"):
        ops.nm_linear(x, values, indices, None, 2, 4, [8, 32]).sum().backward()
