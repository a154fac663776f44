"""The sparse inference ops against dense F.linear / F.conv2d: every format, every CPU ISA, random
weights under random masks of several densities, empty rows and columns, odd shapes, batch 1 and
many, non-contiguous and empty inputs; opcheck; bad input."""

import pytest
import torch
import torch.nn.functional as F

from sparseprune import ops, reference
from sparseprune.ops import formats

FORMATS = formats.FORMATS
TOL = dict(rtol=1e-4, atol=1e-4)  # float32 sums of up to ~1000 terms in another order


def pruned(shape, density, gen):
    """A random weight under a random mask that keeps about `density` of it."""
    weight = torch.randn(shape, generator=gen)
    return weight * (torch.rand(shape, generator=gen) < density)


def seed_of(format, density):
    return 1000 * FORMATS.index(format) + round(1000 * density)


def compressed(weight2d, format):
    parts = formats.compress(weight2d, format)
    formats.validate(*parts, format, *weight2d.shape)
    return parts


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize("density", [0.5, 0.1, 0.01])
def test_linear_matches_dense_on_every_isa(isa, format, density):
    gen = torch.Generator().manual_seed(seed_of(format, density))
    for out_features, in_features in [(37, 53), (64, 96), (33, 1000), (3, 1)]:
        weight = pruned((out_features, in_features), density, gen)
        weight[1] = 0                                   # an empty row
        weight[:, in_features // 2] = 0                 # an empty column
        bias = torch.randn(out_features, generator=gen)
        parts = compressed(weight, format)
        for batch in (1, 2, 7, 33, 100, 130):  # 100: a partial vector after 6 full ones
            x = torch.randn(batch, in_features, generator=gen)
            for b in (bias, None):
                got = ops.sparse_linear(x, *parts, b, format, weight.shape)
                torch.testing.assert_close(got, F.linear(x, weight, b), **TOL)


@pytest.mark.parametrize("format", FORMATS)
def test_linear_shapes_layouts_and_extremes(isa, format):
    gen = torch.Generator().manual_seed(7)
    weight = pruned((20, 45), 0.3, gen)
    parts = compressed(weight, format)
    bias = torch.randn(20, generator=gen)
    run = lambda x: ops.sparse_linear(x, *parts, bias, format, weight.shape)  # noqa: E731
    x3 = torch.randn(4, 3, 45, generator=gen)            # leading dimensions are kept
    torch.testing.assert_close(run(x3), F.linear(x3, weight, bias), **TOL)
    xt = torch.randn(45, 6, generator=gen).t()            # non-contiguous
    torch.testing.assert_close(run(xt), F.linear(xt, weight, bias), **TOL)
    x1 = torch.randn(45, generator=gen)                   # a single vector
    torch.testing.assert_close(run(x1), F.linear(x1, weight, bias), **TOL)
    assert run(torch.randn(0, 45)).shape == (0, 20)       # an empty batch
    empty = compressed(torch.zeros(20, 45), format)      # nothing kept: the bias alone
    out = ops.sparse_linear(torch.randn(5, 45), *empty, bias, format, (20, 45))
    torch.testing.assert_close(out, bias.expand(5, 20))
    full = pruned((20, 45), 1.1, gen)                     # everything kept
    torch.testing.assert_close(run_with(full, format, x3), F.linear(x3, full), **TOL)
    none = compressed(torch.zeros(0, 45), format)         # no rows at all
    assert ops.sparse_linear(torch.randn(2, 45), *none, None, format, (0, 45)).shape == (2, 0)


def run_with(weight, format, x):
    return ops.sparse_linear(x, *compressed(weight, format), None, format, weight.shape)


CONVS = [  # in, out, kernel, stride, padding, dilation, groups, input H x W, batch
    (3, 8, (3, 3), (1, 1), (1, 1), (1, 1), 1, (9, 11), 2),
    (4, 6, (1, 1), (1, 1), (0, 0), (1, 1), 1, (7, 5), 3),    # pointwise: the image is X
    (5, 7, (1, 1), (2, 2), (0, 0), (1, 1), 1, (9, 9), 2),    # strided 1x1: unfolded
    (4, 6, (3, 2), (2, 3), (2, 1), (2, 1), 2, (13, 17), 2),  # groups, stride, dilation, padding
    (6, 6, (3, 3), (1, 1), (1, 1), (1, 1), 6, (8, 8), 1),    # depthwise
    (4, 6, (3, 2), (1, 1), (2, 0), (2, 3), 2, (11, 13), 2),  # stride 1: direct, dilated, groups
    (16, 24, (5, 5), (1, 1), (0, 0), (1, 1), 1, (37, 40), 2),  # wide rows: many column chunks
    (16, 12, (5, 5), (2, 2), (2, 2), (1, 1), 1, (64, 70), 1),  # strided: two unfold chunks
]


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize("density", [0.5, 0.1, 0.01])
def test_conv2d_matches_dense_on_every_isa(isa, format, density):
    gen = torch.Generator().manual_seed(seed_of(format, density) + 1)
    for cin, cout, k, stride, padding, dilation, groups, hw, batch in CONVS:
        weight = pruned((cout, cin // groups, *k), density, gen)
        weight[0] = 0                                    # an empty output channel
        bias = torch.randn(cout, generator=gen)
        parts = compressed(weight.reshape(cout, -1), format)
        x = torch.randn(batch, cin, *hw, generator=gen)
        got = ops.sparse_conv2d(x, *parts, bias, format, weight.shape, stride, padding, dilation,
                                groups)
        expect = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
        torch.testing.assert_close(got, expect, **TOL)


@pytest.mark.parametrize("format", FORMATS)
def test_conv2d_unbatched_noncontiguous_and_empty(format):
    gen = torch.Generator().manual_seed(3)
    weight = pruned((8, 3, 3, 3), 0.4, gen)
    parts = compressed(weight.reshape(8, -1), format)
    run = lambda x: ops.sparse_conv2d(x, *parts, None, format, weight.shape, (1, 1), (1, 1),  # noqa: E731
                                      (1, 1), 1)
    x = torch.randn(3, 10, 12, generator=gen)
    torch.testing.assert_close(run(x), F.conv2d(x, weight, None, 1, 1), **TOL)
    xt = torch.randn(2, 12, 10, 3, generator=gen).permute(0, 3, 2, 1)  # channels-last view
    torch.testing.assert_close(run(xt), F.conv2d(xt, weight, None, 1, 1), **TOL)
    assert run(torch.randn(0, 3, 10, 12)).shape == (0, 8, 10, 12)


@pytest.mark.parametrize("format", FORMATS)
def test_reference_matches_the_kernels(format):
    gen = torch.Generator().manual_seed(5)
    weight = pruned((6, 2, 3, 3), 0.5, gen)
    parts = compressed(weight.reshape(6, -1), format)
    x = torch.randn(2, 4, 7, 7, generator=gen)
    args = (parts[0], parts[1], parts[2], None, format, weight.shape, (1, 1), (0, 0), (1, 1), 2)
    torch.testing.assert_close(ops.sparse_conv2d(x, *args), reference.sparse_conv2d(x, *args),
                               **TOL)
    lw = pruned((5, 9), 0.5, gen)
    largs = (*compressed(lw, format), None, format, lw.shape)
    xl = torch.randn(3, 9, generator=gen)
    torch.testing.assert_close(ops.sparse_linear(xl, *largs), reference.sparse_linear(xl, *largs),
                               **TOL)


def opcheck_samples():
    gen = torch.Generator().manual_seed(11)
    samples = []
    for format in FORMATS:
        lw = pruned((6, 40), 0.3, gen)
        samples.append((torch.ops.sparseprune.sparse_linear,
                        (torch.randn(3, 40), *compressed(lw, format), torch.randn(6), format,
                         [6, 40])))
        cw = pruned((4, 2, 3, 3), 0.3, gen)
        samples.append((torch.ops.sparseprune.sparse_conv2d,
                        (torch.randn(2, 4, 6, 6), *compressed(cw.reshape(4, -1), format), None,
                         format, [4, 2, 3, 3], [1, 1], [1, 1], [1, 1], 2)))
    return samples


@pytest.mark.parametrize("op,args", opcheck_samples())
def test_opcheck(op, args):
    torch.library.opcheck(op, args)


def test_backward_is_refused():
    parts = compressed(torch.eye(4), "csr")
    x = torch.randn(2, 4, requires_grad=True)
    y = ops.sparse_linear(x, *parts, None, "csr", (4, 4))
    with pytest.raises(RuntimeError, match="no backward"):
        y.sum().backward()


W = torch.eye(5)[:4]
CSR = formats.compress(W, "csr")
BITMAP = formats.compress(W, "bitmap")


@pytest.mark.parametrize("call,error,pattern", [
    (lambda: ops.sparse_linear(torch.randn(2, 6), *CSR, None, "csr", (4, 5)), ValueError,
     r"input's last dimension must equal in_features = 5, got input of shape \[2, 6\]"),
    (lambda: ops.sparse_linear(torch.randn(2, 5).double(), *CSR, None, "csr", (4, 5)), TypeError,
     "input must be float32 .* got Double"),
    (lambda: ops.sparse_linear(torch.randn(2, 5), *CSR, None, "coo", (4, 5)), ValueError,
     "format must be 'csr' or 'bitmap', got 'coo'"),
    (lambda: ops.sparse_linear(torch.randn(2, 5), *CSR, None, "bitmap", (4, 5)), ValueError,
     r"bitmap indices must have shape \(4, 1\)"),
    (lambda: ops.sparse_linear(torch.randn(2, 5), CSR[0].double(), *CSR[1:], None, "csr", (4, 5)),
     TypeError, "values must be float32, got Double"),
    (lambda: ops.sparse_linear(torch.randn(2, 5), CSR[0], CSR[1].long(), CSR[2], None, "csr",
                               (4, 5)), TypeError, "row_ptr must be int32, got Long"),
    (lambda: ops.sparse_linear(torch.randn(2, 5), *CSR, None, "csr", (3, 5)), ValueError,
     r"row_ptr must have shape \(4,\) for 3 rows, got \[5\]"),
    (lambda: ops.sparse_linear(torch.randn(2, 5), CSR[0][:2], CSR[1], CSR[2][:2], None, "csr",
                               (4, 5)), ValueError, r"row_ptr must run from 0 to the number of values \(2\), got 0 .. 4"),
    (lambda: ops.sparse_linear(torch.randn(2, 5), *BITMAP, torch.randn(3), "bitmap", (4, 5)),
     ValueError, r"bias must have shape \(4,\), got \[3\]"),
    (lambda: ops.sparse_linear(torch.randn(2, 5), *BITMAP, None, "bitmap", (4,)), ValueError,
     r"weight_shape must be \(out_features, in_features\), got \[4\]"),
    (lambda: ops.sparse_conv2d(torch.randn(1, 3, 8, 8), *CSR, None, "csr", (4, 5, 1, 1), (1, 1),
                               (0, 0), (1, 1), 1), ValueError, "input has 3 channels but the weight expects 5"),
    (lambda: ops.sparse_conv2d(torch.randn(8, 8), *CSR, None, "csr", (4, 5, 1, 1), (1, 1),
                               (0, 0), (1, 1), 1), ValueError, r"input must be 3-D \(C, H, W\) or 4-D"),
    (lambda: ops.sparse_conv2d(torch.randn(1, 5, 8, 8), *CSR, None, "csr", (4, 5, 1, 1), (0, 1),
                               (0, 0), (1, 1), 1), ValueError, r"stride must be two integers >= 1, got \[0, 1\]"),
    (lambda: ops.sparse_conv2d(torch.randn(1, 5, 8, 8), *CSR, None, "csr", (4, 5, 1, 1), (1, 1),
                               (0, 0), (1, 1), 3), ValueError, "groups must be >= 1 and divide out_channels = 4, got 3"),
    (lambda: ops.sparse_conv2d(torch.randn(1, 5, 2, 2), *formats.compress(torch.ones(4, 45), "csr"),
                               None, "csr", (4, 5, 3, 3), (1, 1), (0, 0), (1, 1), 1), ValueError,
     r"the padded input \(2 x 2\) is smaller than the dilated kernel \(3 x 3\)"),
])
def test_bad_arguments(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


@pytest.mark.parametrize("format", FORMATS)
def test_compress_round_trips_and_validation_catches_damage(format):
    gen = torch.Generator().manual_seed(13)
    weight = pruned((9, 70), 0.3, gen)
    values, row_ptr, indices = formats.compress(weight, format)
    assert torch.equal(formats.to_dense(values, row_ptr, indices, format, 9, 70), weight)
    assert values.numel() == int(torch.count_nonzero(weight))
    bad_ptr = row_ptr.clone()
    bad_ptr[3] = bad_ptr[4] + 1
    with pytest.raises(ValueError, match="row_ptr must rise"):
        formats.validate(values, bad_ptr, indices, format, 9, 70)
    bad = indices.clone()
    if format == "csr":
        bad[0] = 70
        with pytest.raises(ValueError, match=r"column indices must lie in \[0, 70\)"):
            formats.validate(values, row_ptr, bad, format, 9, 70)
    else:
        bad[0, -1] |= 1 << 31  # column 95 of a 70-column weight
        with pytest.raises(ValueError, match="bits set past the last column"):
            formats.validate(values, row_ptr, bad, format, 9, 70)
