"""Bad input gets a clear exception naming the argument and the value received; never a crash,
never a silently wrong answer."""

import math

import pytest
import torch
from torch import nn

import sparseprune as sp
from sparseprune import functional as F
from sparseprune import ops
from sparseprune.ops.rng import rng_state

RNG = rng_state(1, 2)
W, S = torch.randn(4, 5), torch.randn(4, 5)


@pytest.mark.parametrize("call,error,pattern", [
    (lambda: F.aslp_weight(W, torch.randn(5, 4)), ValueError, r"scores must have the weight's shape \[4, 5\], got \[5, 4\]"),
    (lambda: F.aslp_weight(W, S.int()), TypeError, "scores must be float32, float64, bfloat16 or float16, got Int"),
    (lambda: F.aslp_weight(W.long(), S), TypeError, "weight must be float32.*got Long"),
    (lambda: F.aslp_weight(W, S, temperature=0.0), ValueError, "temperature must be a finite number in \\[0.001, 1e\\+30\\], got 0.0"),
    (lambda: F.aslp_weight(W, S, temperature=-1), ValueError, "temperature .* got -1"),
    (lambda: F.aslp_weight(W, S, temperature=math.nan), ValueError, "temperature .* got nan"),
    (lambda: F.aslp_weight(W, S, temperature=math.inf), ValueError, "temperature .* got inf"),
    (lambda: F.aslp_weight(W, S, temperature="1"), TypeError, "temperature must be a number, got str"),
    (lambda: F.aslp_weight(W, S, torch.ones(2)), ValueError, r"scale must hold exactly one element.*\[2\]"),
    (lambda: F.aslp_weight(W, S, torch.ones(1, dtype=torch.int64)), TypeError, "scale must be float32, got Long"),
    (lambda: F.aslp_weight(W, S.to("meta")), ValueError, "same device.*meta"),
    (lambda: F.aslp_weight(W, "scores"), TypeError, "scores must be a Tensor, got str"),
    (lambda: F.aslp_weight(W, torch.full((4, 5), math.nan)), ValueError, "scores contain NaN"),
    (lambda: F.masked_linear(torch.randn(3, 6), W, S), ValueError, r"last dimension must equal in_features = 5, got input of shape \[3, 6\]"),
    (lambda: F.masked_linear(torch.randn(3, 5).double(), W, S), TypeError, "input and weight must have the same dtype, got Double and Float"),
    (lambda: F.masked_linear(torch.randn(3, 5), W, S, torch.randn(3)), ValueError, r"bias must have shape \(4,\), got \[3\]"),
    (lambda: F.masked_linear(torch.randn(3, 5), W, S, method="supermask2"), ValueError, "method must be one of aslp, supermask, edge_popup, got .supermask2."),
    (lambda: F.masked_linear(torch.randn(3, 5), W[0], S[0]), ValueError, r"weight must be 2-D \(out_features, in_features\), got shape \[5\]"),
    (lambda: F.masked_conv2d(torch.randn(1, 3, 8, 8), torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3)), ValueError, "input has 3 channels but weight expects 2"),
    (lambda: F.masked_conv2d(torch.randn(8, 8), torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3)), ValueError, r"input must be 3-D \(C, H, W\) or 4-D"),
    (lambda: F.masked_conv2d(torch.randn(1, 2, 8, 8), torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3), stride=0), ValueError, r"stride must be two integers >= 1, got \[0, 0\]"),
    (lambda: F.masked_conv2d(torch.randn(1, 2, 8, 8), torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3), padding="full"), ValueError, "padding must be an int, a pair, 'valid' or 'same', got 'full'"),
    (lambda: F.masked_conv2d(torch.randn(1, 2, 8, 8), torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3), stride=2, padding="same"), ValueError, "padding='same' needs stride 1"),
    (lambda: F.masked_conv2d(torch.randn(1, 2, 8, 8), torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3), groups=3), ValueError, "groups must be >= 1 and divide out_channels = 4, got 3"),
    (lambda: ops.aslp_weight(W, S, None, 1.0, torch.tensor([1, 2, 3])), ValueError, r"rng must be a contiguous CPU int64 tensor \[seed, offset\], got Long tensor of shape \[3\]"),
    (lambda: ops.aslp_weight(W, S, None, 1.0, torch.tensor([1.0, 2.0])), ValueError, "rng must be .* got Float"),
    (lambda: ops.philox_bits(-1, 0, 0), ValueError, "numel must be in \\[0, 2\\^61\\), got -1"),
])
def test_bad_op_arguments(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_nan_scores_in_a_layer_raise():
    layer = sp.convert(nn.Linear(5, 4), "aslp")
    with torch.no_grad():
        layer.scores[2, 3] = math.nan
    with pytest.raises(ValueError, match="sparseprune::masked_linear: scores contain NaN"):
        layer(torch.randn(2, 5))


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(method="nope"), "unknown method 'nope'; available: aslp, edge_popup, .*supermask"),
    (dict(method="aslp", tempreature=2.0), "unknown option\\(s\\) 'tempreature' for method 'aslp'; valid options: temperature"),
    (dict(method="aslp", rescale="dwr2"), "rescale must be one of \\(None, 'smart', 'dwr'\\), got 'dwr2'"),
    (dict(method="aslp", temperature=0), "temperature must be a finite number in \\[0.001, 1e\\+30\\], got 0"),
    (dict(method="aslp", init_logit=math.inf), "init_logit must be a finite number, got inf"),
    (dict(method="aslp", scores_dtype=torch.int32), "scores_dtype must be a floating dtype or None"),
])
def test_convert_rejects_unknown_methods_and_options(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        sp.convert(nn.Sequential(nn.Linear(3, 2)), **kwargs)


def test_convert_without_matching_layers():
    with pytest.raises(ValueError, match="no layer of a covered kind matched"):
        sp.convert(nn.Sequential(nn.ReLU()), "aslp")
    with pytest.raises(ValueError, match="include='fc'"):
        sp.convert(nn.Sequential(nn.Linear(2, 2)), "aslp", include="fc")


@pytest.mark.parametrize("density", [0, -0.5, 1.5, math.nan, "0.5", True])
def test_finalize_rejects_bad_density(density):
    model = sp.convert(nn.Sequential(nn.Linear(3, 2)), "aslp")
    with pytest.raises(ValueError, match="density must be a number in \\(0, 1\\], got"):
        sp.finalize(model, density=density)


def test_finalize_rejects_bad_scope_and_nan_scores():
    model = sp.convert(nn.Sequential(nn.Linear(3, 2)), "aslp")
    with pytest.raises(ValueError, match="scope must be one of \\('global', 'local'\\), got 'layer'"):
        sp.finalize(model, density=0.5, scope="layer")
    with torch.no_grad():
        model[0].scores[0, 0] = math.nan
    with pytest.raises(ValueError, match="scores contain NaN"):
        sp.finalize(model, density=0.5)


def test_empty_and_non_contiguous_inputs_are_valid():
    x = torch.randn(0, 5)
    assert F.masked_linear(x, W, S).shape == (0, 4)
    wide = torch.randn(8, 10)
    assert F.aslp_weight(wide[:, ::2], torch.randn(8, 10)[:, 1::2]).shape == (8, 5)
    conv_in = torch.randn(2, 3, 9, 9).permute(0, 1, 3, 2)
    assert F.masked_conv2d(conv_in, torch.randn(2, 3, 3, 3), torch.randn(2, 3, 3, 3)).shape == (2, 2, 7, 7)


@pytest.mark.parametrize("call,error,pattern", [
    (lambda: F.edge_popup_weight(W, S, density=0), ValueError, r"density must be a number in \(0, 1\], got 0"),
    (lambda: F.edge_popup_weight(W, S, density=1.5), ValueError, r"density must be a number in \(0, 1\], got 1.5"),
    (lambda: F.edge_popup_weight(W, S, density=math.nan), ValueError, r"density must be .* got nan"),
    (lambda: F.masked_linear(torch.randn(3, 5), W, S, method="edge_popup"), ValueError, r"density must be a number in \(0, 1\], got None"),
    (lambda: F.masked_linear(torch.randn(3, 5), W, S, method="edge_popup", density=0.5, rescale="dwr"), ValueError, "rescale applies to aslp and supermask, not edge_popup"),
    (lambda: F.masked_linear(torch.randn(3, 5), W, S, method="aslp", density=0.5), ValueError, "density applies to edge_popup, not aslp"),
    (lambda: F.supermask_weight(W, S, torch.ones(1), rescale="dwr"), ValueError, "scale .* goes with rescale='smart' and only with it, got rescale='dwr'"),
    (lambda: F.supermask_weight(W, S, rescale="smart"), ValueError, "goes with rescale='smart' and only with it, got rescale='smart' and no scale"),
    (lambda: F.supermask_weight(W, S, rescale="DWR"), ValueError, r"rescale must be one of \(None, 'smart', 'dwr'\), got 'DWR'"),
    (lambda: F.edge_popup_weight(W, torch.full((4, 5), math.nan), density=0.5), ValueError, "scores contain NaN"),
    (lambda: ops.masked_weight(W, S, None, "edge_popup", "dwr", 1.0, 0.5, RNG), ValueError, "rescale='dwr' applies to stochastic masks"),
    (lambda: ops.masked_weight(W, S, None, "topk", "none", 1.0, 0.5, RNG), ValueError, "method must be aslp, supermask or edge_popup, got 'topk'"),
    (lambda: ops.masked_weight(W, S, None, "edge_popup", "none", 1.0, 0.0, RNG), ValueError, r"density must be in \(0, 1\], got 0"),
])
def test_bad_mask_method_arguments(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(method="edge_popup", density=2), r"density must be a number in \(0, 1\], got 2"),
    (dict(method="edge_popup", weight_init="xavier"), "weight_init must be one of .* got 'xavier'"),
    (dict(method="edge_popup", scale_fan=True), "scale_fan applies to weight_init='signed_constant'"),
    (dict(method="supermask", rescale="smrt"), "rescale must be one of .* got 'smrt'"),
    (dict(method="supermask", temperature=2.0), "unknown option\\(s\\) 'temperature' for method 'supermask'"),
])
def test_convert_rejects_bad_method_options(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        sp.convert(nn.Sequential(nn.Linear(3, 2)), **kwargs)


def test_edge_popup_rejects_an_empty_layer():
    with pytest.raises(ValueError, match="edge_popup needs a layer with weights .* shape \\(4, 0\\)"):
        sp.convert(nn.Linear(0, 4), "edge_popup")
