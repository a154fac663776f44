"""sparseprune.prune_at_init: exact kept counts, schedules, SynFlow without data, FORCE vs
Iter-SNIP revival, fixed masks through optimizers, training flags, memory, bad input."""

import copy
import ctypes
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import sparseprune as sp
from sparseprune.pruning import METHODS, compute_masks, densities
from sparseprune.pruning.scores import SCORERS

DATA_METHODS = ("snip", "grasp", "iter_snip", "force")


@pytest.fixture(autouse=True)
def _one_thread():
    # Many tiny ops: on a shared 2-core machine two OpenMP threads cost far more than they give.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def net():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(6 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 3))


def data(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.arange(n) % 3


def options(method, **extra):
    """The arguments each method needs on `net()`, with short schedules."""
    if method in DATA_METHODS:
        extra.setdefault("data", [data(seed=s) for s in range(3)])
    if method == "grasp":
        extra.setdefault("samples_per_class", 2)
    if method == "synflow":
        extra.setdefault("input_shape", (1, 8, 8))
    if SCORERS[method].iterative:
        extra.setdefault("iterations", 3)
    return extra


def layer_sizes(model):
    return {n: m.weight.numel() for n, m in model.named_modules()
            if type(m) in (nn.Linear, nn.Conv2d)}


# ------------------------------------------------------------------------------ exact counts

@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("density", [0.37, 0.05])
def test_global_scope_keeps_exactly_round_density_times_n(method, density):
    model = net()
    n = sum(layer_sizes(model).values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 5 % may empty a layer; tested separately
        pruned = sp.prune_at_init(model, method, density=density, **options(method))
    report = sp.sparsity_report(pruned)
    assert report.kept == round(density * n) and report.total == n
    for _, layer in sp.masked_layers(pruned):  # pruned weights are exactly 0
        assert layer.method.name == "fixed"
        assert torch.equal(layer.weight[~layer.mask], torch.zeros(int((~layer.mask).sum())))


@pytest.mark.parametrize("method", METHODS)
def test_local_scope_keeps_round_density_times_n_in_every_layer(method):
    model = net()
    sizes = layer_sizes(model)
    masks = compute_masks(model, method, density=0.23, scope="local", **options(method))
    assert {n: int(m.sum()) for n, m in masks.items()} == \
        {n: round(0.23 * size) for n, size in sizes.items()}


def test_density_one_keeps_everything_and_ties_break_by_position():
    model = net()
    assert all(m.all() for m in compute_masks(model, "snip", density=1.0,
                                              data=data()).values())
    layer = nn.Linear(4, 5, bias=False)
    with torch.no_grad():
        layer.weight.fill_(0.5)  # all magnitudes tie: the first round(d * N) positions win
    mask = compute_masks(layer, "magnitude", density=0.35)[""]
    assert mask.reshape(-1).tolist() == [True] * 7 + [False] * 13


def test_random_global_density_is_about_d_in_every_layer():
    model = nn.Sequential(nn.Linear(200, 100), nn.ReLU(), nn.Linear(100, 50))
    masks = compute_masks(model, "random", density=0.3,
                          generator=torch.Generator().manual_seed(1))
    for name, mask in masks.items():
        n = mask.numel()
        # binomial-like spread: 5 standard deviations
        assert abs(float(mask.float().mean()) - 0.3) < 5 * math.sqrt(0.3 * 0.7 / n), name
    assert sum(int(m.sum()) for m in masks.values()) == round(0.3 * 25000)


# --------------------------------------------------------------------------------- schedules

def test_densities_schedules():
    assert densities(0.01, 2) == [0.1, 0.01]
    exp = densities(0.2, 4, "exponential")
    assert [round(d, 12) for d in exp] == [round(0.2 ** (t / 4), 12) for t in range(1, 5)]
    assert densities(0.1, 3, "linear") == pytest.approx([0.7, 0.4, 0.1])
    assert densities(0.1, 3, "linear")[-1] == 0.1  # exactly the target
    with pytest.raises(ValueError, match=r"density must be a number in \(0, 1\], got 0"):
        densities(0, 3)
    with pytest.raises(ValueError, match="iterations must be an int >= 1, got 2.0"):
        densities(0.1, 2.0)
    with pytest.raises(ValueError, match="schedule must be one of \\('exponential', 'linear'\\)"):
        densities(0.1, 2, "exp")


@pytest.mark.parametrize("method", ["synflow", "iter_snip", "force"])
@pytest.mark.parametrize("schedule", ["exponential", "linear"])
@pytest.mark.parametrize("scope", ["global", "local"])
def test_iterative_schedules_hit_every_intermediate_density(method, schedule, scope):
    model = net()
    sizes = layer_sizes(model)
    seen = []
    compute_masks(model, method, density=0.1, scope=scope, schedule=schedule,
                  callback=lambda step, d, masks: seen.append((step, d, masks)),
                  **options(method, iterations=4))
    targets = densities(0.1, 4, schedule)
    assert [s for s, _, _ in seen] == [1, 2, 3, 4]
    assert [d for _, d, _ in seen] == targets
    for _, d, masks in seen:
        if scope == "global":
            assert sum(int(m.sum()) for m in masks.values()) == round(d * sum(sizes.values()))
        else:
            assert all(int(masks[n].sum()) == round(d * sizes[n]) for n in sizes)
    if method != "force":  # no revival: every mask is inside the previous one
        for (_, _, before), (_, _, after) in zip(seen, seen[1:]):
            assert all(not (after[n] & ~before[n]).any() for n in sizes)


def test_default_iterations_per_method():
    steps = {}
    for method, kwargs in [("synflow", dict(input_shape=(1, 8, 8))),
                           ("force", dict(data=data())), ("iter_snip", dict(data=data())),
                           ("snip", dict(data=data()))]:
        count = []
        compute_masks(net(), method, density=0.5, callback=lambda *a: count.append(1), **kwargs)
        steps[method] = len(count)
    assert steps == {"synflow": 100, "force": 10, "iter_snip": 10, "snip": 1}


# ---------------------------------------------------------------------------------- SynFlow

def test_synflow_needs_no_data_and_is_reproducible_from_the_seed():
    def masks(seed):
        torch.manual_seed(seed)
        return compute_masks(net(), "synflow", density=0.1, input_shape=(1, 8, 8),
                             iterations=5)
    a, b, c = masks(3), masks(3), masks(4)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)


def test_synflow_reads_only_the_input_shape_from_data():
    model = net()
    x, y = data()
    from_data = compute_masks(model, "synflow", density=0.2, iterations=2, data=[(x, y)])
    from_shape = compute_masks(model, "synflow", density=0.2, iterations=2,
                               input_shape=(1, 8, 8))
    assert all(torch.equal(from_data[n], from_shape[n]) for n in from_data)


# ----------------------------------------------------------------------- FORCE vs Iter-SNIP

def revival_case():
    """Linear(2 -> 3), one example x = (1, 1) of class 0; W = [[3, 3], [1, 1], [-2, 2.5]].

    Scores are |W_ij| * |p_i - [i = 0]|. At the dense point p = (0.978, 0.018, 0.004): W[2, 0]
    (score 0.008) is the lowest and step 1 (keep 5 of 6) prunes it. Without that inhibitory
    weight class 2's logit goes from 0.5 to 2.5, p = (0.954, 0.017, 0.029): FORCE, scoring the
    dense weights at the sparse point, now gives W[2, 0] 2 * 0.029 = 0.058 against 0.017 for
    row 1, so step 2 (keep 4) brings it back. Iter-SNIP scores the masked weight: 0, pruned for
    good.
    """
    layer = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, 3.0], [1.0, 1.0], [-2.0, 2.5]]))
    return layer, (torch.ones(1, 2), torch.tensor([0]))


@pytest.mark.parametrize("method", ["force", "iter_snip"])
def test_force_revives_a_pruned_weight_and_iter_snip_does_not(method):
    layer, batch = revival_case()
    steps = []
    compute_masks(layer, method, density=4 / 6, iterations=2, data=batch,
                  callback=lambda step, d, masks: steps.append(masks[""]))
    first, final = steps
    assert first.tolist() == [[True, True], [True, True], [False, True]]
    revived = final & ~first
    if method == "force":
        assert revived.tolist() == [[False, False], [False, False], [True, False]]
        assert final.tolist() == [[True, True], [False, False], [True, True]]
    else:
        assert not revived.any()
        assert int(final.sum()) == 4


# -------------------------------------------------------------------- training the sparse net

@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2),
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2),
    lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=1e-2),
    lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=1e-1),
], ids=["sgd-nesterov-wd", "sgd-momentum-wd", "adam-l2", "adamw"])
def test_pruned_weights_stay_zero_through_optimizer_steps(make_opt):
    model = sp.prune_at_init(net(), "snip", density=0.2, data=data())
    layers = sp.masked_layers(model)
    kept_before = {n: layer.weight[layer.mask].clone() for n, layer in layers}
    opt = make_opt(model.parameters())
    for step in range(5):
        x, y = data(seed=10 + step)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        for _, layer in layers:
            assert torch.equal(layer.weight.grad[~layer.mask],
                               torch.zeros(int((~layer.mask).sum())))
        opt.step()
    for name, layer in layers:
        assert (layer.weight[~layer.mask] == 0).all(), name
        assert not torch.equal(layer.weight[layer.mask], kept_before[name]), name


def test_state_dict_round_trip_keeps_the_mask():
    model = sp.prune_at_init(net(), "magnitude", density=0.3)
    state = copy.deepcopy(model.state_dict())
    assert "0.mask" in state and state["0.mask"].dtype == torch.bool
    fresh = sp.convert(net(), "fixed")
    fresh.load_state_dict(state)
    x, _ = data()
    torch.testing.assert_close(fresh(x), model(x))
    assert sp.sparsity_report(fresh).kept == sp.sparsity_report(model).kept


# ----------------------------------------------------------------- side effects, flags, memory

@pytest.mark.parametrize("method", METHODS)
def test_scoring_restores_training_flags_and_leaves_the_model_alone(method):
    model = net()
    model.train()
    model[3].eval()  # a mixed state must come back as it was
    model[6].eval()
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.25)
    before = copy.deepcopy(model.state_dict())
    flags = {n: m.training for n, m in model.named_modules()}
    with torch.no_grad():  # scoring enables gradients itself
        compute_masks(model, method, density=0.3, **options(method))
    assert {n: m.training for n, m in model.named_modules()} == flags
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(torch.equal(p.grad, torch.full_like(p, 0.25)) for p in model.parameters())
    pruned = sp.prune_at_init(model, method, density=0.3, **options(method))
    assert {n: m.training for n, m in pruned.named_modules()} == flags
    assert isinstance(pruned[3], sp.nn.MaskedConv2d) and not pruned[3].training


def test_dropout_and_batch_norm_are_in_eval_mode_while_scoring():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(),
                          nn.Dropout(0.5), nn.Linear(32, 3)).train()
    stats = copy.deepcopy(model[2].state_dict())
    a = sp.pruning.compute_scores(model, "snip", data=data())
    b = sp.pruning.compute_scores(model, "snip", data=data())
    assert all(torch.equal(a[n], b[n]) for n in a)  # no dropout noise
    assert all(torch.equal(v, stats[k]) for k, v in model[2].state_dict().items())
    assert model.training


class _MallocPeak(TorchDispatchMode):
    """Peak bytes in use (glibc mallinfo2) after any op, relative to the start."""

    class _Info(ctypes.Structure):
        _fields_ = [(f, ctypes.c_size_t) for f in ("arena", "ordblks", "smblks", "hblks",
                                                   "hblkhd", "usmblks", "fsmblks", "uordblks",
                                                   "fordblks", "keepcost")]

    def __init__(self):
        super().__init__()
        libc = ctypes.CDLL("libc.so.6")
        self._mallinfo2 = libc.mallinfo2
        self._mallinfo2.restype = self._Info

    def in_use(self):
        info = self._mallinfo2()
        return info.uordblks + info.hblkhd

    def __enter__(self):
        self.base, self.peak = self.in_use(), 0
        return super().__enter__()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.peak = max(self.peak, self.in_use() - self.base)
        return out


def _has_mallinfo2():
    try:
        ctypes.CDLL("libc.so.6").mallinfo2
        return True
    except (OSError, AttributeError):
        return False


# Weight-sized float32 buffers a scorer may hold at its peak, beyond the model: the gradient that
# becomes the scores (1) plus at most one extra copy; SynFlow's copy and gradient are float64
# (2 + 2); GraSP also holds the differentiable gradient of its Hessian-vector product.
_BUDGET = {"snip": 1, "magnitude": 1, "random": 1, "iter_snip": 2, "force": 2, "synflow": 4,
           "grasp": 4}


@pytest.mark.skipif(not _has_mallinfo2(), reason="needs glibc's mallinfo2")
@pytest.mark.parametrize("method", METHODS)
def test_scoring_holds_at_most_one_extra_copy_of_the_weights(method):
    model = nn.Sequential(nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 10))
    weight_bytes = sum(m.weight.numel() * 4 for m in (model[0], model[2]))
    x, y = torch.randn(20, 512), torch.arange(20) % 10
    kwargs = dict(data=[(x, y)], samples_per_class=2 if method == "grasp" else None,
                  input_shape=(512,))
    masks = {"0": torch.rand(1024, 512) < 0.5, "2": torch.rand(10, 1024) < 0.5}
    if method not in DATA_METHODS:
        del kwargs["data"], kwargs["samples_per_class"]
    sp.pruning.compute_scores(model, method, **kwargs)  # warm up one-time allocations
    with _MallocPeak() as tracker:
        scores = sp.pruning.compute_scores(model, method, masks=masks, **kwargs)
    del scores
    assert tracker.peak / weight_bytes < _BUDGET[method] + 0.25


# ------------------------------------------------------------------ min_layer_density, warnings

def funnel():
    """A wide layer and a tiny one whose scores are far smaller: global magnitude pruning
    empties the tiny one."""
    model = nn.Sequential(nn.Linear(50, 40), nn.ReLU(), nn.Linear(40, 2))
    with torch.no_grad():
        model[0].weight.uniform_(1.0, 2.0)
        model[2].weight.uniform_(-0.01, 0.01)
    return model


def test_a_layer_going_to_zero_density_warns_with_its_name():
    with pytest.warns(UserWarning, match=r"layer '2' keeps no weight"):
        masks = compute_masks(funnel(), "magnitude", density=0.5)
    assert not masks["2"].any()


def test_min_layer_density_keeps_every_layer_alive_and_the_total_exact():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        masks = compute_masks(funnel(), "magnitude", density=0.5, min_layer_density=0.1)
    assert int(masks["2"].sum()) == 8  # ceil(0.1 * 80)
    assert int(masks["0"].sum()) + 8 == round(0.5 * 2080)
    local = compute_masks(funnel(), "magnitude", density=0.01, scope="local",
                          min_layer_density=0.05)
    # max(round(d * N_l), ceil(min_layer_density * N_l)): max(20, 100) and max(1, 4)
    assert [int(local[n].sum()) for n in ("0", "2")] == [100, 4]


def test_min_layer_density_larger_than_the_budget_is_an_error():
    with pytest.raises(ValueError, match=r"min_layer_density=0.6 keeps at least 1248 weights"):
        compute_masks(funnel(), "magnitude", density=0.5, min_layer_density=0.6)


# ------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs,error,pattern", [
    (dict(method="snip", density=0.0), ValueError, r"density must be a number in \(0, 1\], got 0.0"),
    (dict(method="snip", density=1.5), ValueError, r"density must be a number in \(0, 1\], got 1.5"),
    (dict(method="snip", density=-0.1), ValueError, r"density .* got -0.1"),
    (dict(method="snip", density=math.nan), ValueError, r"density .* got nan"),
    (dict(method="snip", density=True), ValueError, r"density .* got True"),
    (dict(method="snip", density="0.1"), ValueError, r"density .* got '0.1'"),
    (dict(method="snipp", density=0.1), ValueError, r"unknown method 'snipp'; valid methods: snip, grasp"),
    (dict(method="snip", density=0.1, data=None), ValueError, r"method 'snip' needs data= .*got data=None"),
    (dict(method="force", density=0.1, data=None), ValueError, r"method 'force' needs data="),
    (dict(method="synflow", density=0.1, data=None), ValueError, r"method 'synflow' needs data= or input_shape="),
    (dict(method="snip", density=0.1, scope="layer"), ValueError, r"scope must be one of \('global', 'local'\), got 'layer'"),
    (dict(method="force", density=0.1, schedule="cosine"), ValueError, r"schedule must be one of \('exponential', 'linear'\), got 'cosine'"),
    (dict(method="force", density=0.1, iterations=0), ValueError, r"iterations must be an int >= 1 or None, got 0"),
    (dict(method="snip", density=0.1, iterations=5), ValueError, r"'snip' is one-shot, got iterations=5"),
    (dict(method="snip", density=0.1, batches=0), ValueError, r"batches must be an int >= 1, got 0"),
    (dict(method="random", density=0.1, batches=2), ValueError, r"'random' uses no data, got batches=2"),
    (dict(method="snip", density=0.1, min_layer_density=1.2), ValueError, r"min_layer_density must be a number in \[0, 1\], got 1.2"),
    (dict(method="grasp", density=0.1, samples_per_class=0), ValueError, r"samples_per_class must be an int >= 1 or None, got 0"),
    (dict(method="synflow", density=0.1, input_shape=(1, 0, 8)), ValueError, r"input_shape must be .* got \(1, 0, 8\)"),
    (dict(method="random", density=0.1, generator=3), TypeError, r"generator must be a torch.Generator or None, got int"),
    (dict(method="snip", density=0.1, loss_fn="ce"), TypeError, r"loss_fn must be a callable .* got str"),
    (dict(method="snip", density=0.1, data=5), TypeError, r"data must be an iterable of \(inputs, targets\) batches .* got int"),
    (dict(method="snip", density=0.1, data=[]), ValueError, r"data yielded no batch"),
    (dict(method="snip", density=0.1, data=[torch.ones(3)]), TypeError, r"data must yield \(inputs, targets\) pairs"),
    (dict(method="grasp", density=0.1, data=[(torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 0, 1]))]), ValueError, r"samples_per_class=10: data holds fewer examples than that of class\(es\) \[0, 1, 2\]"),
    (dict(method="snip", density=0.1, exclude="*"), ValueError, r"model has no prunable layer: no layer of a covered kind matched \(include=None, exclude='\*'\)"),
])
def test_bad_input_gets_a_clear_error(kwargs, error, pattern):
    kwargs.setdefault("data", [data()])
    with pytest.raises(error, match=pattern):
        sp.prune_at_init(net(), **kwargs)


def test_non_finite_scores_are_an_error_naming_the_layer():
    def nan_loss(out, y):
        return (out * float("nan")).sum()
    with pytest.raises(ValueError, match=r"snip: the scores of layer '0' contain NaN values"):
        sp.prune_at_init(net(), "snip", density=0.5, data=data(), loss_fn=nan_loss)


def test_bad_models():
    with pytest.raises(ValueError, match="model has no prunable layer"):
        sp.prune_at_init(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)), "magnitude", density=0.5)
    with pytest.raises(TypeError, match="model must be an nn.Module, got str"):
        sp.prune_at_init("lenet", "magnitude", density=0.5)
    tied = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    tied[1].weight = tied[0].weight
    with pytest.raises(ValueError, match="layers '0' and '1' share one weight"):
        sp.prune_at_init(tied, "magnitude", density=0.5)


def test_a_failed_call_leaves_the_model_unchanged():
    model = net()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError):
        sp.prune_at_init(model, "grasp", density=0.1, data=[data()], samples_per_class=50)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not sp.masked_layers(model) and model.training
