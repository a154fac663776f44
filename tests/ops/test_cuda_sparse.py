"""The sparse inference kernels on CUDA (csr and bitmap; spmv at batch 1, spmm beyond; direct
stride-1 convolutions and chunked unfolded strided ones) against dense ``F.linear`` / ``F.conv2d``
on the device and against the CPU kernels, within float32 rounding (no bit-identity is promised:
the sums run in another order). Skipped without a GPU."""

import pytest
import torch
import torch.nn.functional as F

from sparseprune import ops
from sparseprune.ops import formats

from cuda_helpers import DEVICE, assert_close_rel, exact_fp32, full_or_dry, needs_gpu

pytestmark = needs_gpu

FORMATS = formats.FORMATS
FACTOR = 8  # float32 sums of up to a few thousand terms, in three different orders


def pruned(shape, density, gen):
    weight = torch.randn(shape, generator=gen)
    return weight * (torch.rand(shape, generator=gen) < density)


def parts_on(weight2d, format, device):
    parts = formats.compress(weight2d, format)
    formats.validate(*parts, format, *weight2d.shape)
    return [p.to(device) for p in parts]


def linear_everywhere(x, weight, bias, format):
    """(dense on CUDA, sparse on CUDA, sparse on CPU) outputs."""
    with exact_fp32():
        dense = F.linear(x.to(DEVICE), weight.to(DEVICE), None if bias is None else bias.to(DEVICE))
        got = ops.sparse_linear(x.to(DEVICE), *parts_on(weight, format, DEVICE),
                                None if bias is None else bias.to(DEVICE), format, weight.shape)
    cpu = ops.sparse_linear(x, *parts_on(weight, format, "cpu"), bias, format, weight.shape)
    return dense, got, cpu


def assert_linear(x, weight, bias, format):
    dense, got, cpu = linear_everywhere(x, weight, bias, format)
    assert got.device.type == DEVICE and got.shape == dense.shape
    assert_close_rel([dense], [got], ["sparse vs dense on CUDA"], torch.float32, FACTOR)
    assert_close_rel([cpu], [got], ["sparse CUDA vs sparse CPU"], torch.float32, FACTOR)


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize("density", [0.5, 0.1, 0.01])
def test_linear_matches_dense(format, density):
    gen = torch.Generator().manual_seed(round(1000 * density) + FORMATS.index(format))
    shapes = full_or_dry([(37, 53), (64, 96), (33, 1000), (3, 1), (300, 4099)], [(37, 53), (3, 1)])
    for out_features, in_features in shapes:
        weight = pruned((out_features, in_features), density, gen)
        weight[min(1, out_features - 1)] = 0          # an empty row
        weight[:, in_features // 2] = 0                 # an empty column
        bias = torch.randn(out_features, generator=gen)
        for batch in full_or_dry((1, 2, 7, 33, 130), (1, 7)):
            x = torch.randn(batch, in_features, generator=gen)
            for b in (bias, None):
                assert_linear(x, weight, b, format)


@pytest.mark.parametrize("format", FORMATS)
def test_linear_shapes_layouts_and_extremes(format):
    gen = torch.Generator().manual_seed(7)
    weight = pruned((20, 45), 0.3, gen)
    bias = torch.randn(20, generator=gen)
    assert_linear(torch.randn(4, 3, 45, generator=gen), weight, bias, format)  # leading dims
    assert_linear(torch.randn(45, 6, generator=gen).t(), weight, bias, format)  # non-contiguous
    assert_linear(torch.randn(45, generator=gen), weight, bias, format)         # one vector
    misaligned = torch.randn(5 * 45 + 1, generator=gen)[1:].view(5, 45)         # odd address
    assert_linear(misaligned, weight, bias, format)
    assert_linear(torch.randn(5, 45, generator=gen), torch.zeros(20, 45), bias, format)  # empty
    assert_linear(torch.randn(5, 45, generator=gen), pruned((20, 45), 1.1, gen), None, format)
    parts = parts_on(weight, format, DEVICE)
    assert ops.sparse_linear(torch.randn(0, 45, device=DEVICE), *parts, None, format,
                             (20, 45)).shape == (0, 20)


CONVS = [  # in, out, kernel, stride, padding, dilation, groups, input H x W, batch
    (3, 8, (3, 3), (1, 1), (1, 1), (1, 1), 1, (9, 11), 2),
    (4, 6, (1, 1), (1, 1), (0, 0), (1, 1), 1, (7, 5), 3),    # pointwise: the image is X
    (5, 7, (1, 1), (2, 2), (0, 0), (1, 1), 1, (9, 9), 2),    # strided 1x1: unfolded
    (4, 6, (3, 2), (2, 3), (2, 1), (2, 1), 2, (13, 17), 2),  # groups, stride, dilation, padding
    (6, 6, (3, 3), (1, 1), (1, 1), (1, 1), 6, (8, 8), 1),    # depthwise
    (4, 6, (3, 2), (1, 1), (2, 0), (2, 3), 2, (11, 13), 2),  # stride 1: direct, dilated, groups
    (16, 24, (5, 5), (1, 1), (0, 0), (1, 1), 1, (37, 40), 2),  # wide rows
    (64, 32, (3, 3), (2, 2), (1, 1), (1, 1), 1, (128, 128), 9),  # unfolded > 64 MB: 2 launches
]


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize("density", [0.5, 0.1, 0.01])
def test_conv2d_matches_dense(format, density):
    gen = torch.Generator().manual_seed(round(1000 * density) + 10 + FORMATS.index(format))
    for cin, cout, k, stride, padding, dilation, groups, hw, batch in CONVS:
        weight = pruned((cout, cin // groups, *k), density, gen)
        weight[0] = 0                                    # an empty output channel
        bias = torch.randn(cout, generator=gen)
        x = torch.randn(batch, cin, *hw, generator=gen)
        args = (stride, padding, dilation, groups)
        with exact_fp32():
            dense = F.conv2d(x.to(DEVICE), weight.to(DEVICE), bias.to(DEVICE), *args)
            got = ops.sparse_conv2d(x.to(DEVICE), *parts_on(weight.reshape(cout, -1), format, DEVICE),
                                    bias.to(DEVICE), format, weight.shape, *args)
        cpu = ops.sparse_conv2d(x, *parts_on(weight.reshape(cout, -1), format, "cpu"), bias,
                                format, weight.shape, *args)
        label = f"conv {cin}->{cout} k{k} s{stride}"
        assert_close_rel([dense], [got], [f"{label}: sparse vs dense on CUDA"], torch.float32,
                         FACTOR)
        assert_close_rel([cpu], [got], [f"{label}: CUDA vs CPU"], torch.float32, FACTOR)


@pytest.mark.parametrize("format", FORMATS)
def test_conv2d_unbatched_noncontiguous_and_empty(format):
    gen = torch.Generator().manual_seed(3)
    weight = pruned((8, 3, 3, 3), 0.4, gen)
    parts = parts_on(weight.reshape(8, -1), format, DEVICE)

    def run(x):
        return ops.sparse_conv2d(x, *parts, None, format, weight.shape, (1, 1), (1, 1), (1, 1), 1)

    w = weight.to(DEVICE)
    unbatched = torch.randn(3, 10, 12, generator=gen).to(DEVICE)
    channels_last = torch.randn(2, 12, 10, 3, generator=gen).to(DEVICE).permute(0, 3, 2, 1)
    strided_rows = torch.randn(2, 3, 20, 12, generator=gen).to(DEVICE)[:, :, ::2]
    with exact_fp32():
        for x in (unbatched, channels_last, strided_rows):
            assert_close_rel([F.conv2d(x, w, None, 1, 1)], [run(x)], ["conv"], torch.float32,
                             FACTOR)
    assert run(torch.randn(0, 3, 10, 12, device=DEVICE)).shape == (0, 8, 10, 12)
