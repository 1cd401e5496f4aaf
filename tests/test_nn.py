"""ltl_ext.nn: LIF, ClampReLU, SpikingModel, encodings (floor 5)."""

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from ltl_ext import functional
from ltl_ext.nn import LIF, ClampReLU, SpikingModel, TandemRun, encode, lifs


def small_snn(T=4, neuron=None):
    neuron = neuron or (lambda: LIF(beta=0.9, threshold=0.5, reset="soft", surrogate="sigmoid"))
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), neuron(), nn.Conv2d(4, 4, 3, stride=2, padding=1),
                          neuron(), nn.Flatten(), nn.Linear(4 * 4 * 4, 5))
    return SpikingModel(model, time_steps=T)


def test_clamp_relu():
    x = torch.linspace(-3, 3, 13)
    assert torch.equal(ClampReLU(2.0)(x), x.clamp(0, 2))
    with pytest.raises(ValueError):
        ClampReLU(0.0)


def test_lif_folds_time_into_batch_and_matches_functional():
    torch.manual_seed(0)
    T, B = 5, 3
    lif = LIF(beta=0.8, threshold=0.3, reset="hard", time_steps=T)
    x = torch.randn(T * B, 2, 4, 4)
    s = lif(x)
    assert s.shape == x.shape and set(s.unique().tolist()) <= {0.0, 1.0}
    ref = functional.lif(x.view(T, B, 2, 4, 4), beta=0.8, threshold=0.3, reset="hard", surrogate="rect")
    assert torch.equal(s, ref.reshape_as(x))
    with pytest.raises(ValueError, match="multiple of time_steps"):
        lif(torch.randn(7, 2))


@pytest.mark.parametrize("learnable,names", [(False, set()), ("threshold", {"threshold"}), ("beta", {"beta"}),
                                             ("both", {"threshold", "beta"})])
def test_learnable_parameters(learnable, names):
    lif = LIF(learnable=learnable, surrogate="sigmoid", time_steps=4)
    assert {n for n, _ in lif.named_parameters()} == names
    assert {"beta", "threshold", "alpha"} - names <= {n for n, _ in lif.named_buffers()}
    x = torch.rand(4 * 2, 6, requires_grad=True)
    lif(x).sum().backward()
    for n in names:
        assert getattr(lif, n).grad is not None and getattr(lif, n).grad.abs().sum() > 0
    if names:  # out-of-range learnt values are clamped in the forward (to the op's range), not rejected by it
        with torch.no_grad():
            for n in names:
                getattr(lif, n).fill_(-1.0 if n == "threshold" else 1.5)
        kw = lif.lif_kwargs()
        if "threshold" in names:
            assert float(kw["threshold"].min()) == pytest.approx(lif.min_threshold)
        if "beta" in names:
            assert float(kw["beta"].max()) == 1.0
        out = lif(x)
        assert torch.isfinite(out).all() and set(out.unique().tolist()) <= {0.0, 1.0}


def test_per_neuron_parameters_buffers_and_state_dict():
    lif = LIF(time_steps=2)
    lif.threshold = torch.linspace(0.1, 1.0, 6)  # per-neuron [F]
    lif.beta = torch.full((6,), 0.5)
    assert "threshold" in dict(lif.named_buffers()) and lif.threshold.shape == (6,)
    x = torch.rand(2 * 3, 6) * 0.6
    s = lif(x)
    ref = functional.lif(x.view(2, 3, 6), beta=torch.full((6,), 0.5), threshold=torch.linspace(0.1, 1.0, 6),
                         reset="hard", surrogate="rect")
    assert torch.equal(s, ref.reshape_as(s))
    fresh = LIF(time_steps=2)  # scalar module accepts per-neuron values
    fresh.load_state_dict(lif.state_dict())
    assert torch.equal(fresh(x), s)
    back = LIF(time_steps=2)
    back.load_state_dict(LIF(threshold=0.25).state_dict())
    assert back.lif_kwargs()["threshold"] == 0.25  # the scalar fast path is refreshed on load
    # learnable: same shape keeps the Parameter object (optimisers hold it), a new shape makes a new one
    p = LIF(learnable="threshold")
    before = p.threshold
    p.threshold = 0.9
    assert p.threshold is before and float(p.threshold.detach()) == pytest.approx(0.9)
    p.threshold = torch.full((3,), 0.7)
    assert isinstance(p.threshold, nn.Parameter) and p.threshold.shape == (3,)


def test_parametrized_threshold_is_used():
    class Double(nn.Module):
        def forward(self, t):
            return t * 2

    lif = LIF(threshold=0.5, reset="soft", beta=1.0, time_steps=4)
    x = torch.full((4, 1), 0.5)
    assert lif(x).sum() == 4
    parametrize.register_parametrization(lif, "threshold", Double(), unsafe=True)
    assert float(lif.threshold) == 1.0 and lif(x).sum() == 2


def test_tandem_mode_offline_and_detached_spikes():
    torch.manual_seed(0)
    T, B = 6, 2
    lif = LIF(beta=1.0, threshold=0.5, reset="soft", surrogate="sigmoid", time_steps=T)
    x = torch.rand(T * B, 5, requires_grad=True)
    y = torch.rand(B, 5)
    with TandemRun({"lif": lif}, {"lif": y}, mode="offline") as run:
        s = lif(x)
    assert s.grad_fn is None and run.losses["lif"].requires_grad
    _, ref = functional.tandem_loss(x.view(T, B, 5), y, mode="offline", beta=1.0, threshold=0.5, reset="soft",
                                    surrogate="sigmoid")
    assert torch.allclose(run.losses["lif"], ref)
    # outside the run the LIF is a plain neuron again, with a graph through its spikes, and nothing on it
    assert lif(x).grad_fn is not None and not any(torch.is_tensor(v) and v.grad_fn is not None
                                                  for v in vars(lif).values())
    copy.deepcopy(lif)
    with pytest.raises(KeyError, match="no target"):
        TandemRun({"lif": lif}, {}, mode="offline")
    with pytest.raises(ValueError, match="mode"):
        TandemRun({"lif": lif}, {"lif": y}, mode="sideways")


def test_tandem_run_backward_as_you_go_equals_backward_of_the_sum():
    """Each layer's loss back-propagated inside the forward gives the gradients of one backward of the sum."""
    grads = []
    for backward in (False, True):
        torch.manual_seed(0)
        m = small_snn(T=4).double()
        lifs_ = dict(m.lifs())
        targets = {n: torch.rand(3, *shape, dtype=torch.float64) for n, shape in (("1", (4, 8, 8)), ("3", (4, 4, 4)))}
        with TandemRun(lifs_, targets, mode="offline", backward=backward) as run:
            out = m(torch.randn(3, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
        if backward:
            assert not any(v.requires_grad for v in run.losses.values())
            out.sum().backward()
        else:
            (out.sum() + run.total()).backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters()})
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-12, atol=0, msg=n)


def test_spiking_model_shapes_and_per_step_logits():
    torch.manual_seed(0)
    m = small_snn(T=4)
    x = torch.randn(3, 1, 8, 8)
    out, steps = m(x, return_steps=True)
    assert out.shape == (3, 5) and steps.shape == (4, 3, 5)
    assert torch.allclose(out, steps.mean(0)) and torch.equal(m(x), out)
    copy.deepcopy(m)                                      # nothing of the forward is kept on the modules
    assert all(l.time_steps == 4 for _, l in m.lifs())
    m.time_steps = 7
    assert all(l.time_steps == 7 for _, l in m.lifs()) and m(x).shape == (3, 5)


def test_state_does_not_leak_between_batches():
    torch.manual_seed(0)
    m = small_snn(T=5)
    a, b = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    alone = m(b)
    m(a)
    assert torch.equal(m(b), alone)
    # stepwise: per-step readout currents equal the batched forward's per-step logits
    _, batched = m(b, return_steps=True)
    m.reset_state()
    steps = torch.stack([m.step(b) for _ in range(5)])
    assert torch.allclose(steps, batched, atol=1e-6)
    with pytest.raises(RuntimeError, match="reset_state"):
        m.step(torch.randn(2, 1, 8, 8))
    m.reset_state()
    assert torch.equal(torch.stack([m.step(b) for _ in range(5)]), steps)


def test_stepwise_online_tandem_matches_batched():
    torch.manual_seed(0)
    T, B, warm = 6, 3, 2
    kw = dict(beta=0.9, threshold=0.4, reset="hard", surrogate="sigmoid")
    x = torch.rand(T * B, 4, requires_grad=True)
    y = torch.rand(B, 4)
    batched = LIF(**kw, time_steps=T)
    with TandemRun({"l": batched}, {"l": y}, mode="online", warmup=warm) as run:
        s = batched(x)
    run.losses["l"].backward()
    g_batched = x.grad.clone()
    x.grad = None
    step = LIF(**kw, stepwise=True)
    spikes = []
    with TandemRun({"l": step}, {"l": y}, mode="online", warmup=warm, backward=True) as run:
        for t in range(T):
            spikes.append(step(x[t * B:(t + 1) * B]))
    assert torch.equal(torch.cat(spikes), s)
    assert torch.allclose(x.grad, g_batched, atol=1e-6)
    with pytest.raises(RuntimeError, match="online"), TandemRun({"l": step}, {"l": y}, mode="offline"):
        step(x[:B])


def test_compact_targets_are_held_in_float16_and_handed_back_in_float32():
    """``compact_targets``: float32 targets live as float16 in the run; a LIF learns from their float32 value,
    exactly what the stepwise LIF would learn from the rounded target itself. Other dtypes stay; a target float16
    cannot hold is refused."""
    torch.manual_seed(0)
    T, B = 5, 3
    kw = dict(beta=0.9, threshold=0.4, surrogate="sigmoid")
    x = torch.rand(T * B, 6)
    y = torch.rand(B, 6)
    y64 = torch.rand(B, 6, dtype=torch.float64)
    other = LIF(**kw, stepwise=True)
    run = TandemRun({"l": LIF(**kw, stepwise=True), "d": other}, {"l": y, "d": y64}, mode="online",
                    compact_targets=True)
    assert run.targets["l"].dtype == torch.float16 and run.targets["d"] is y64
    assert run.target("l").dtype == torch.float32 and torch.equal(run.target("l"), y.half().float())
    assert run.target("d") is y64

    def learn(target, compact):
        lif = LIF(**kw, stepwise=True)
        xx = x.clone().requires_grad_()
        with TandemRun({"l": lif}, {"l": target}, mode="online", backward=True, compact_targets=compact) as r:
            spikes = torch.cat([lif(xx[t * B:(t + 1) * B]) for t in range(T)])
        return spikes, r.losses["l"], xx.grad

    compact, rounded = learn(y, True), learn(y.half().float(), False)
    for a, b in zip(compact, rounded):
        assert torch.equal(a, b)
    assert not torch.equal(learn(y, False)[1], compact[1])        # the rounding is there: the loss sees it
    with pytest.raises(ValueError, match="float16"):
        TandemRun({"l": LIF(**kw, stepwise=True)}, {"l": y * 1e6}, mode="online", compact_targets=True)


def test_learning_stepwise_state_is_updated_in_place_and_widens_past_255_steps():
    """A learning stepwise LIF keeps one copy of its state, updated in place, with its spike count in a byte per
    neuron; past 255 steps the count widens to float32, and the spikes and counts stay those of the batched LIF."""
    torch.manual_seed(0)
    T, B = 300, 2
    kw = dict(beta=0.9, threshold=0.3, reset="soft")
    x = torch.rand(T * B, 5)
    y = torch.rand(B, 5)
    step = LIF(**kw, stepwise=True)
    spikes = []
    with TandemRun({"l": step}, {"l": y}, mode="online", backward=True):
        for t in range(T):
            spikes.append(step(x[t * B:(t + 1) * B]))
            if t == 0:
                state = step.v, step.count
            if t == 254:
                assert step.count.dtype == torch.uint8 and step.v is state[0] and step.count is state[1]
    assert step.count.dtype == torch.float32 and step.v is state[0]
    batched = LIF(**kw, time_steps=T)(x).view(T, B, 5)
    assert torch.equal(torch.stack(spikes), batched)
    assert torch.equal(step.count, batched.sum(0))


def test_blocks_of_steps_match_the_batched_forward():
    torch.manual_seed(0)
    m = small_snn(T=5)
    b = torch.randn(4, 1, 8, 8)
    _, batched = m(b, return_steps=True)
    m.reset_state()
    blocks = torch.cat([m.step(b, steps=2), m.step(b, steps=2), m.step(b)]).view(5, 4, -1)
    assert torch.allclose(blocks, batched, atol=1e-6)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        m.step(b, steps=0)


@pytest.mark.parametrize("stepwise", [False, True], ids=["batched", "blocks"])
@pytest.mark.parametrize("param", ["scalar", "per_channel", "per_neuron", "batch_dim"])
@pytest.mark.parametrize("tandem", [None, "offline", "online"])
def test_lif_runs_channels_last_without_a_copy(param, tandem, stepwise):
    """A channels-last [T*B, C, H, W] current gives the spikes, losses and gradients of its NCHW twin, as
    channels-last spikes, and the plain LIF copies no activation on the way (no aten::copy_ / clone of one)."""
    if stepwise and tandem == "offline":
        pytest.skip("a stepwise LIF learns online only")
    T, B, C, H, W = 4, 2, 3, 5, 6
    g = torch.Generator().manual_seed(1)
    x = torch.rand(T * B, C, H, W, generator=g) * 1.5
    y = torch.rand(B, C, H, W, generator=g)
    threshold = {"scalar": 0.5, "per_channel": torch.rand(C, 1, 1, generator=g) + 0.3,
                 "per_neuron": torch.rand(C, H, W, generator=g) + 0.3,
                 # [1, C, 1, 1], the BatchNorm-style shape: channels-last once failed in a permute with it
                 "batch_dim": torch.rand(1, C, 1, 1, generator=g) + 0.3}[param]
    results = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        lif = LIF(beta=0.8, threshold=threshold, reset="soft", surrogate="sigmoid", learnable="threshold",
                  time_steps=T, stepwise=stepwise)
        xi = x.clone().to(memory_format=fmt).requires_grad_()
        run = TandemRun({"l": lif}, {"l": y}, mode=tandem, warmup=1) if tandem else None
        with run or torch.enable_grad():
            if stepwise:
                lif.block = 2
                s = torch.cat([lif(xi[:2 * B]), lif(xi[2 * B:])])
            else:
                s = lif(xi)
        weights = torch.arange(s.numel(), dtype=s.dtype).view(s.shape) / s.numel()
        loss = run.total() if run else (s * weights).sum()       # plain: the surrogate through a weighted sum
        grads = torch.autograd.grad(loss, [xi, lif.threshold], allow_unused=True)
        results.append((s, loss.detach(), grads))
    (s0, l0, g0), (s1, l1, g1) = results
    assert torch.equal(s0, s1) and s1.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(l1, l0)
    for a, b in zip(g0, g1):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(b, a)
    if tandem is None and not stepwise:
        lif = LIF(beta=0.8, threshold=threshold, time_steps=T)
        xc = x.to(memory_format=torch.channels_last)
        with torch.profiler.profile(record_shapes=True) as prof:
            lif(xc)
        per_step = B * C * H * W                 # a per-neuron parameter ([C, H, W] -> [H, W, C]) may be copied
        copies = [(e.name, e.input_shapes) for e in prof.events()
                  if e.name in ("aten::copy_", "aten::clone", "aten::contiguous")
                  and any(len(sh) and torch.Size(sh).numel() >= per_step for sh in e.input_shapes)]
        assert copies == [], copies


def test_encodings():
    x = torch.rand(2, 3)
    d = encode(x, 4, "direct")
    assert d.shape == (8, 3) and torch.equal(d.view(4, 2, 3)[3], x)
    torch.manual_seed(0)
    p = encode(x[:1].expand(2000, 3).contiguous(), 50, "poisson")
    assert set(p.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(p.view(50, 2000, 3).mean((0, 1)), x[0], atol=0.02)
    with pytest.raises(ValueError):
        encode(x, 4, "latency")


def test_lifs_and_repr():
    m = small_snn()
    assert [n for n, _ in lifs(m.model)] == ["1", "3"]
    assert "threshold=0.5" in repr(m) and "time_steps=4" in repr(m)


def test_torch_compile_small_spiking_model():
    torch.manual_seed(0)
    m = small_snn(T=2)
    x = torch.randn(2, 1, 8, 8)
    eager = m(x)
    compiled = torch.compile(m, backend="aot_eager", fullgraph=True)
    out = compiled(x)
    assert torch.allclose(out, eager, atol=1e-5)
    out.sum().backward()
    assert m.model[0].weight.grad is not None


def test_a_lif_without_time_steps_refuses_instead_of_running_with_t_1():
    """Issue 10 item 8: LIF alone, [B, ...] input, no T: before, it ran silently as T = 1 (no membrane memory)."""
    lif = LIF()
    with pytest.raises(ValueError, match="SpikingModel"):
        lif(torch.rand(4, 3))
    assert LIF(time_steps=2)(torch.rand(4, 3)).shape == (4, 3)
    model = SpikingModel(torch.nn.Sequential(torch.nn.Linear(3, 2), LIF()), time_steps=4)
    assert model(torch.rand(5, 3)).shape == (5, 2)                 # SpikingModel tells its LIFs T


def test_poisson_encoding_refuses_normalised_input():
    """Issue 10 item 8: Bernoulli(clamp(x, 0, 1)) of a mean/std-normalised image silently drops every negative
    value; intensities in [0, 1] are required."""
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        encode(torch.randn(2, 1, 4, 4), 3, "poisson")
    s = encode(torch.rand(2, 1, 4, 4), 3, "poisson")
    assert s.shape == (6, 1, 4, 4) and set(s.unique().tolist()) <= {0.0, 1.0}


def test_two_spiking_models_over_one_student_each_run_with_their_own_t():
    """Two wrappers of one student (accuracy against T, say): the LIFs kept the T of the last wrapper built, so the
    T = 8 one unfolded [8*B, ...] as 16 steps of B/2 samples, mixing samples and steps without an error."""
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(4, 6), LIF(beta=1.0, threshold=1.0, reset="soft"), nn.Linear(6, 3))
    x = torch.rand(4, 4)
    short = SpikingModel(student, time_steps=8)
    alone = short(x)
    long = SpikingModel(student, time_steps=16)
    assert torch.equal(short(x), alone)
    long(x)
    assert torch.equal(short(x), alone)
    long.reset_state()                       # long's step calls leave the LIFs stepwise ...
    long.step(x)
    assert torch.equal(short(x), alone)      # ... and short's forward still runs whole sequences
    with pytest.raises(RuntimeError, match="reset_state"):
        long.step(x)                         # long's sequence was cut by short's forward: refused, not resumed at rest
    long.reset_state()
    assert long.step(x).shape == (4, 3)


def test_a_per_channel_threshold_needs_the_neuron_dims():
    """A per-channel threshold given as [C] on [C, H, W] neurons lines up with W under broadcasting: with W == C
    (32 channels at 32x32, say) it ran as a per-column threshold without an error."""
    torch.manual_seed(0)
    C = H = W = 4
    per_channel = torch.tensor([0.2, 0.5, 1.0, 2.0])
    x = torch.rand(2 * 3, C, H, W) * 2
    with pytest.raises(ValueError, match=r"threshold has shape \(4,\).*\(4, 1, 1\) per channel"):
        LIF(threshold=per_channel, time_steps=2)(x)
    with pytest.raises(ValueError, match="beta has shape"):
        LIF(beta=torch.full((W,), 0.9), time_steps=2, stepwise=True)(x)
    got = LIF(threshold=per_channel.view(C, 1, 1), time_steps=2)(x)
    assert torch.equal(got, LIF(threshold=per_channel.view(C, 1, 1).expand(C, H, W), time_steps=2)(x))
    assert LIF(threshold=torch.rand(5) + 0.5, time_steps=2)(torch.rand(6, 5)).shape == (6, 5)   # [F] neurons


class _SharedNeuron(nn.Module):
    """One LIF at two places of a hand-written SNN (what convert leaves of a reused activation it cannot trace)."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 3)
        self.act = LIF(beta=0.9, threshold=0.5)

    def forward(self, x):
        return self.c(self.act(self.b(self.act(self.a(x)))))


def test_a_lif_used_at_two_places_is_refused_where_it_would_be_wrong():
    """Stepwise the two places would share one membrane, and in a tandem run one target would be learnt twice, each
    without a word: both raise, naming the LIF. Whole-sequence inference from rest (no state kept) stays allowed."""
    torch.manual_seed(0)
    m, x = SpikingModel(_SharedNeuron(), time_steps=4), torch.randn(5, 8)
    assert m(x).shape == (5, 3)
    m.reset_state()
    with pytest.raises(ValueError, match="LIF 'act' ran twice in one forward"):
        m.step(x)
    for mode in ("offline", "online"):
        run = TandemRun({"act": m.model.act}, {"act": torch.rand(5, 8)}, mode=mode)
        with pytest.raises(ValueError, match="LIF 'act' ran twice"), run:
            m(x)
    assert m(x).shape == (5, 3)   # after the errors the model runs as before


def test_lif_scalar_cache_never_hides_the_buffer_it_caches():
    """A 0-d threshold buffer is cached as a float for the op. Three legal ways of changing the buffer behind
    ``__setattr__`` ran the neuron with the old cached threshold, without a word: functional_call, parametrize's
    remove_parametrizations(leave_parametrized=True) and an in-place edit."""
    torch.manual_seed(0)
    x = torch.rand(4 * 3, 5) * 2
    want = LIF(threshold=1.2, time_steps=4)(x)
    lif = LIF(time_steps=4)                                                      # threshold 0.6, cached
    assert not torch.equal(lif(x), want)
    assert torch.equal(torch.func.functional_call(lif, {"threshold": torch.tensor(1.2)}, (x,)), want)
    assert not torch.equal(lif(x), want)                                         # the buffer is back

    class Twice(nn.Module):
        def forward(self, t):
            return 2 * t
    parametrize.register_parametrization(lif, "threshold", Twice())
    assert torch.equal(lif(x), want)
    parametrize.remove_parametrizations(lif, "threshold", leave_parametrized=True)
    assert torch.equal(lif(x), want)

    lif = LIF(time_steps=4)
    with torch.no_grad():
        lif.threshold.fill_(1.2)
    assert torch.equal(lif(x), want)
    assert torch.equal(copy.deepcopy(lif)(x), want) and isinstance(copy.deepcopy(lif).lif_kwargs()["threshold"],
                                                                   float)   # (a copy still takes the fast path)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_stepwise_inference_keeps_a_float32_membrane_for_16_bit_inputs(dtype):
    """The whole-sequence LIF keeps V in float32 for 16-bit inputs; stepwise inference carried V between steps in
    x's dtype, rounding it at every step: step() fired differently from forward() (~0.5 % of spikes in bf16)."""
    torch.manual_seed(0)
    T, B, N = 32, 16, 128
    x = (torch.rand(T * B, N) * 0.3).to(dtype)
    lif = LIF(beta=0.97, threshold=1.0, reset="soft", time_steps=T)
    whole = lif(x)
    lif.stepwise = True
    lif.reset_state()
    steps = torch.cat([lif(x[t * B:(t + 1) * B]) for t in range(T)])
    assert steps.dtype == dtype and lif.v.dtype == torch.float32
    assert torch.equal(steps, whole)


def test_encodings_refuse_what_they_cannot_encode():
    """NaN passed the poisson range check (rand < NaN is no spike: NaN pixels silently went dark), an integer
    batch failed deep in torch.rand_like, and a sequence model given a 1-D or 0-d tensor raised an IndexError."""
    x = torch.rand(2, 3)
    x[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        encode(x, 4, "poisson")
    with pytest.raises(TypeError, match="floating"):
        encode(torch.ones(2, 3, dtype=torch.uint8), 4, "poisson")
    m = SpikingModel(nn.Sequential(nn.Linear(3, 4), LIF()), time_steps=4, encoding="none")
    for bad in (torch.rand(3), torch.tensor(1.0)):
        with pytest.raises(ValueError, match="time-major sequences"):
            m(bad)
    with pytest.raises(ValueError, match="0-d"):
        SpikingModel(nn.Sequential(nn.Linear(3, 4), LIF()), time_steps=4)(torch.tensor(1.0))


@pytest.mark.parametrize("T", [0, -1, 2.7, True, "4"])
def test_a_lif_refuses_a_time_steps_that_is_not_a_positive_int(T):
    """LIF(time_steps=0) failed later with ZeroDivisionError, and 2.7 silently ran as T = 2."""
    with pytest.raises(ValueError, match="time_steps must be a positive int"):
        LIF(time_steps=T)
