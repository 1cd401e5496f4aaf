"""The layer-wise LTL engine (ltl_ext.train.engine): same gradients as one backward of the summed loss, each layer's
graph freed before the next layer runs, spikes saved as bits, nothing left on the modules."""
from __future__ import annotations

import copy
import weakref

import pytest
import torch
from torch import nn

from ltl_ext.ltl import tandem
from ltl_ext.ltl.convert import convert
from ltl_ext.nn import LIF, SpikeStore, SpikingModel
from ltl_ext.nn.packing import pack_spikes, unpack_spikes
from ltl_ext.nn.zoo import cnn_small, mlp, resnet, vgg11, vgg16
from ltl_ext.train.config import LTLConfig
from ltl_ext.train.engine import ltl_step, readout_loss

ZOO = {  # name -> (teacher builder, input shape [B, ...])
    "vgg11": (lambda: vgg11(), (2, 3, 32, 32)),
    "vgg16": (lambda: vgg16(), (2, 3, 32, 32)),
    "resnet": (lambda: resnet(widths=(4, 8, 8), blocks=(1, 2, 1)), (2, 3, 16, 16)),
    "cnn_small": (lambda: cnn_small(input_size=12, channels=(3, 5, 6), hidden=7), (3, 1, 12, 12)),
    "mlp": (lambda: mlp(in_features=20, hidden=(9, 7)), (3, 20)),
}
MODES = [("offline", "batched", None), ("online", "batched", None), ("online", "batched", 3),
         ("online", "constant", None)]
MODE_IDS = ["offline", "online-blocks", "online-one-block", "constant"]


class _NoStep:
    """An optimiser that keeps the weights: the gradients are what is compared."""

    def __init__(self, model):
        self.model = model

    def zero_grad(self, set_to_none=True):
        self.model.zero_grad(set_to_none=set_to_none)

    def step(self):
        pass


def _setup(name, T=3, dtype=torch.float64):
    build, shape = ZOO[name]
    torch.manual_seed(0)
    teacher = build().eval().to(dtype)
    student = SpikingModel(convert(teacher, neuron=LIF(beta=0.9, threshold=0.3, surrogate="sigmoid")),
                           time_steps=T).to(dtype)
    x = torch.rand(*shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    y = torch.arange(shape[0]) % 10
    return teacher, student, x, y


def reference_grads(student, link, x, y, config):
    """The old form of the step: the whole student forward with every local loss kept, then ONE backward of
    ``ce_weight * CE + sum_l loss_l`` (the constant-memory mode's gradients are those of batched online LTL)."""
    student.zero_grad(set_to_none=True)
    with link.pairs.run(link.targets(x), mode=config.mode, warmup=config.warmup, pack_spikes=False) as run:
        _, steps = student(x, return_steps=True)
    (config.ce_weight * readout_loss(steps, y, config) + run.total()).backward()
    return {n: p.grad.clone() for n, p in student.named_parameters()}


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("mode,memory,time_block", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("name", list(ZOO))
def test_layerwise_gradients_equal_one_backward_of_the_sum(name, mode, memory, time_block, layout):
    """Every mode (online: blocks of 2 of T = 3 steps, one block of 3, one step at a time), in both layouts."""
    if layout == "channels_last" and name == "mlp":
        pytest.skip("no 4-d activations")
    teacher, student, x, y = _setup(name)
    config = LTLConfig(time_steps=3, mode=mode, warmup=1 if mode == "online" else 0, memory=memory,
                       ce_weight=0.7, time_block=time_block).check()
    link = tandem.Tandem(teacher, student)
    ref = reference_grads(student, link, x, y, config)           # NCHW
    if layout == "channels_last":
        student.to(memory_format=torch.channels_last)            # the same modules, their weights re-laid
    stats = ltl_step(student, link, _NoStep(student), x, y, config)
    got = {n: p.grad for n, p in student.named_parameters()}
    assert got.keys() == ref.keys() and all(g is not None for g in got.values())
    assert any(bool(g.abs().sum() > 0) for g in got.values())
    for n in ref:
        scale = float(ref[n].abs().max())
        torch.testing.assert_close(got[n], ref[n], rtol=1e-12, atol=1e-12 * scale, msg=n)
    assert set(stats) == {"loss", "ce"} | {f"local/{p.name}" for p in link.pairs}
    copy.deepcopy(student)                     # nothing of the step is left on the modules


def test_each_layer_learns_and_frees_its_graph_before_the_next_runs():
    """Offline VGG: when a LIF runs, the previous layers already have their weight gradients, and the previous
    layer's input current (saved by its tandem op for the backward) is gone."""
    teacher, student, x, y = _setup("vgg11", dtype=torch.float32)
    lifs = [m for _, m in student.lifs()]
    convs = [m for m in student.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == len(lifs) - 2          # 8 conv LIFs + 2 fc LIFs
    currents, seen = [], []

    def keep(module, args):                     # a weak reference to each LIF's input current
        currents.append(weakref.ref(args[0]))

    def check(module, args):
        i = lifs.index(module)
        seen.append(all(c.weight.grad is not None for c in convs[:min(i, len(convs))]))
        seen.append(all(r() is None for r in currents[:i]))

    hooks = [m.register_forward_pre_hook(check) for m in lifs] + [m.register_forward_pre_hook(keep) for m in lifs]
    config = LTLConfig(time_steps=2, mode="offline", warmup=0).check()
    ltl_step(student, tandem.Tandem(teacher, student), _NoStep(student), x, y, config)
    for h in hooks:
        h.remove()
    assert len(seen) == 2 * len(lifs) and all(seen), seen


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("n", [1, 7, 8, 9, 1000, 4099])
def test_spike_packing_round_trips_bit_exactly(dtype, n):
    s = (torch.rand(n, generator=torch.Generator().manual_seed(n)) < 0.3).to(dtype).view(-1, 1) if n % 2 else \
        (torch.rand(n, generator=torch.Generator().manual_seed(n)) < 0.3).to(dtype)
    packed, dt = pack_spikes(s)
    assert packed.element_size() == 1 and packed.shape == s.shape
    back = unpack_spikes(packed, dt)
    assert back.dtype == s.dtype and back.shape == s.shape and torch.equal(back, s)
    assert torch.equal(unpack_spikes(*pack_spikes(torch.ones(n, dtype=dtype))), torch.ones(n, dtype=dtype))


def test_saved_spikes_are_packed_and_gradients_do_not_change():
    teacher, student, x, y = _setup("cnn_small", dtype=torch.float32)
    config = LTLConfig(time_steps=4, mode="offline", warmup=0).check()
    link = tandem.Tandem(teacher, student)
    grads, packed = [], []
    for pack in (False, True):
        student.zero_grad(set_to_none=True)
        with link.pairs.run(link.targets(x), mode="offline", backward=True, pack_spikes=pack) as run:
            _, steps = student(x, return_steps=True)
        readout_loss(steps, y, config).backward()
        grads.append({n: p.grad.clone() for n, p in student.named_parameters()})
        packed.append(0 if run.spikes is None else run.spikes.packed)
    assert packed[1] >= 2                       # the 2nd conv and the hidden Linear saved packed spikes
    for n in grads[0]:
        assert torch.equal(grads[1][n], grads[0][n]), n


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("alive", [True, False], ids=["spikes-alive", "spikes-freed"])
def test_saved_spikes_come_back_exactly_alive_or_freed(alive, layout):
    """A conv saves the spikes it reads as bytes; its backward gets them back bit for bit: the float tensor itself
    while the caller still holds it (no second copy), the unpacked bytes once it was freed."""
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    conv = nn.Conv2d(4, 3, 3, padding=1).to(memory_format=fmt)
    s = (torch.rand(6, 4, 5, 5, generator=torch.Generator().manual_seed(0)) < 0.4).float().to(memory_format=fmt)
    expected = torch.autograd.grad(conv(s).square().sum(), conv.weight)[0]
    store, given = SpikeStore(), []
    spikes = store.mark(s.clone(memory_format=torch.preserve_format))
    original_unpack = store._unpack

    def unpack(saved):
        out = original_unpack(saved)
        given.append(out)
        return out
    store._unpack = unpack
    with store:
        out = conv(spikes)
    ident = id(spikes)
    if not alive:
        del spikes
    (grad,) = torch.autograd.grad(out.square().sum(), conv.weight)
    assert store.packed == 1 and torch.equal(grad, expected)
    restored = [t for t in given if t.shape == s.shape]
    assert len(restored) == 1 and torch.equal(restored[0], s)
    assert (id(restored[0]) == ident) == alive


def test_spike_store_leaves_other_tensors_alone():
    store = SpikeStore()
    w = torch.randn(3, 4, requires_grad=True)
    s = store.mark((torch.rand(5, 4) < 0.5).float())
    other = torch.rand(5, 4)
    with store:
        out = (s @ w.t()).sum() + (other @ w.t()).sum()
    out.backward()
    assert store.packed == 1 and torch.allclose(w.grad, (s + other).sum(0).expand(3, 4))


def test_the_trainer_leaves_no_hook_on_the_teacher_and_closes():
    from ltl_ext.train import LocalTandemTrainer
    teacher = cnn_small(input_size=12, channels=(3, 5, 6), hidden=7)

    def hooks():
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in teacher.modules())
    x, y = torch.rand(4, 1, 12, 12), torch.arange(4)
    with LocalTandemTrainer(teacher, time_steps=2, device="cpu", distributed=False) as trainer:
        trainer.train_step(x, y)
        assert hooks() == 0 and trainer.teacher is teacher and not teacher.training
        assert not any(p.requires_grad for p in teacher.parameters())
        copy.deepcopy(trainer.student)
    assert hooks() == 0


def test_peak_tensors_follows_what_ops_create():
    """scripts/peak_tensors.py (issue 12's floor analysis): a storage an op creates counts until it is freed; an
    in-place update or a view of an existing tensor is not new; the peak keeps the live set of its moment."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    from peak_tensors import MIB, LiveTensors
    base = torch.zeros(1 << 18)                       # 1 MiB that exists before: its updates and views are not new
    with LiveTensors() as mode:
        a = torch.ones(1 << 18)                       # + 1 MiB
        b = a * 2                                     # + 1 MiB: the peak (2 MiB)
        base.add_(1)
        _ = base.view(2, -1)
        del a, b                                      # both freed
        c = torch.ones(1 << 17)                       # + 0.5 MiB
    assert mode.peak == 2 * MIB and mode.bytes == MIB // 2
    assert sorted(op for _, _, op in mode.at_peak.values()) == ["mul.Tensor", "ones.default"]
    del c


@pytest.mark.parametrize("stride,padding,chunk", [(1, 1, 3), (2, 1, 8), (1, 0, 5)])
def test_step_profile_weight_grad_by_unfold_is_the_weight_gradient(stride, padding, chunk):
    """scripts/step_profile.py times a convolution's weight gradient as GEMMs on unfolded input: it must be the
    weight gradient autograd computes (float64; a batch that the chunks do not divide)."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    from step_profile import weight_grad_by_unfold
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(7, 4, 9, 9, generator=g, dtype=torch.float64) < 0.3).double()
    w = torch.randn(6, 4, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.nn.functional.conv2d(x, w, stride=stride, padding=padding)
    go = torch.randn(y.shape, generator=g, dtype=torch.float64)
    y.backward(go)
    got = weight_grad_by_unfold(x, go, w.detach(), [stride] * 2, [padding] * 2, chunk=chunk)
    torch.testing.assert_close(got, w.grad, rtol=1e-12, atol=1e-12)


def test_step_profile_ltl_vs_bptt_counts_the_passes_each_method_runs():
    """step_profile's convolution ratio: LTL runs the forward and the weight gradient of every layer, BPTT those and
    the input gradient of every layer but the first (the image needs none), in the layout asked for."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    from step_profile import ltl_vs_bptt
    rows = [{"forward_s": 1.0, "weight_grad_s": 2.0, "input_grad_s": 100.0,
             "forward_cl_s": 1.0, "weight_grad_cl_s": 1.0, "input_grad_cl_s": 100.0},
            {"forward_s": 3.0, "weight_grad_s": 4.0, "input_grad_s": 5.0,
             "forward_cl_s": 2.0, "weight_grad_cl_s": 2.0, "input_grad_cl_s": 4.0}]
    assert ltl_vs_bptt(rows) == round(10 / 15, 3)
    assert ltl_vs_bptt(rows, "_cl") == round(6 / 10, 3)


# ============================================================================ the step against the method, by hand
def _hand_pair(conv: bool, learnable=False):
    """A tiny teacher and a student of the same layout (float64), LIFs in place of the ClampReLUs; the CNN's last
    neurons feed a pooling and a flatten before the readout."""
    from ltl_ext.nn import ClampReLU

    def build(act):
        if conv:
            return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), copy.deepcopy(act),
                                 nn.Conv2d(3, 4, 3, stride=2, padding=1), copy.deepcopy(act), nn.AvgPool2d(3),
                                 nn.Flatten(), nn.Linear(4, 3))
        return nn.Sequential(nn.Linear(6, 8), copy.deepcopy(act), nn.Linear(8, 5), copy.deepcopy(act),
                             nn.Linear(5, 3))
    torch.manual_seed(0)
    teacher = build(ClampReLU(2.0)).double()
    student = build(LIF(beta=0.9, threshold=0.3, reset="soft", surrogate="sigmoid", learnable=learnable)).double()
    with torch.no_grad():
        for m in student:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(3.0)                       # enough current to fire
    if learnable:
        student[1].threshold = torch.linspace(0.2, 0.5, 3 if conv else 8, dtype=torch.float64).view(
            (3, 1, 1) if conv else (8,))
    shape = (4, 1, 6, 6) if conv else (5, 6)
    x = 2 * torch.rand(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return teacher, student, x, torch.arange(shape[0]) % 3


def _by_hand(teacher, student, x, y, T, mode, warmup, p, ce_weight):
    """ltl-method.md §2-§4 written out: y_l = clamp(a_l / pct_p(a_l), 0, 1) (nearest rank, zeros included); each
    layer's loss from the pure-PyTorch references on its detached input spikes, back-propagated alone; offline
    CE(mean_t O[t]), online sum_{t >= warmup} CE(O[t] / (t+1)) with O[t-1] detached."""
    import math

    import torch.nn.functional as F

    from ltl_ext.functional import lif_reference, tandem_loss_reference
    student.zero_grad(set_to_none=True)
    B, a = x.shape[0], x
    h = x.unsqueeze(0).expand(T, *x.shape).reshape(T * B, *x.shape[1:])
    for t_mod, s_mod in zip(teacher, student):
        a = t_mod(a).detach()
        if not isinstance(s_mod, LIF):
            h = s_mod(h)
            continue
        flat = a.flatten().sort().values
        target = (a / flat[math.ceil(p / 100 * flat.numel()) - 1]).clamp(0, 1)
        kw = dict(beta=s_mod.beta, threshold=s_mod.threshold, reset=s_mod.reset, surrogate=s_mod.surrogate)
        hs = h.reshape(T, B, *h.shape[1:])
        if mode == "offline":
            s = lif_reference(hs, **kw)
            loss = ((s.sum(0) / T - target) ** 2).mean()
        else:
            s, loss = tandem_loss_reference(hs, target, mode="online", warmup=warmup, **kw)
        loss.backward()
        h = s.detach().reshape(h.shape)
    steps = h.reshape(T, B, -1)
    if mode == "offline":
        ce = F.cross_entropy(steps.mean(0), y)
    else:
        ce, before = 0.0, torch.zeros_like(steps[0])
        for t in range(T):
            o = before.detach() + steps[t]
            if t >= warmup:
                ce = ce + F.cross_entropy(o / (t + 1), y)
            before = o
    (ce_weight * ce).backward()
    return {n: q.grad.clone() for n, q in student.named_parameters()}


@pytest.mark.parametrize("learnable", [False, "both"])
@pytest.mark.parametrize("conv", [False, True], ids=["mlp", "cnn-pool"])
@pytest.mark.parametrize("mode,warmup,extra", [
    ("offline", 0, {}), ("online", 2, {}), ("online", 3, {"time_block": 3}), ("online", 0, {"time_block": 1}),
    ("online", 1, {"memory": "constant", "compact_targets": False})],
    ids=["offline", "online-blocks-2", "online-blocks-3", "online-steps", "constant"])
def test_one_trainer_step_gives_the_gradients_of_the_method(conv, learnable, mode, warmup, extra):
    """Not the engine against itself: a LocalTandemTrainer step's gradients (read before the optimiser step) equal
    those computed from the method's equations with the reference ops, in every mode (blocks of 2 and 3 of T = 4
    steps, warm-up inside and at a block boundary), learnable per-neuron thresholds and betas included."""
    from ltl_ext.train import LocalTandemTrainer
    teacher, student, x, y = _hand_pair(conv, learnable)
    expected = _by_hand(teacher, student, x, y, 4, mode, warmup, 99.0, 0.7)
    trainer = LocalTandemTrainer(teacher, copy.deepcopy(student), time_steps=4, mode=mode, warmup=warmup,
                                 percentile=99.0, ce_weight=0.7, device="cpu", distributed=False, **extra)
    got = {}
    trainer.optimizer.step = lambda *a, **k: got.update(
        {n: q.grad.clone() for n, q in trainer.student.model.named_parameters()})
    trainer.train_step(x, y)
    assert got.keys() == expected.keys() and all(bool(g.abs().sum() > 0) for g in expected.values())
    for n in expected:
        torch.testing.assert_close(got[n], expected[n], rtol=1e-9, atol=1e-12, msg=n)


def test_measuring_losses_leaves_the_running_target_scales_alone():
    """percentile="running": the scales move once per training batch, never when the losses are only measured
    (``local_losses`` on validation data); before any training the batch's own percentile stands in."""
    from ltl_ext.train import LocalTandemTrainer
    teacher, student, x, y = _hand_pair(conv=False)
    trainer = LocalTandemTrainer(teacher, student, time_steps=4, percentile="running", device="cpu",
                                 distributed=False)
    trainer.local_losses([(x, y)])
    assert trainer.link.normaliser.scales == {}
    trainer.train_step(x, y)
    before = {k: v.clone() for k, v in trainer.link.normaliser.scales.items()}
    trainer.local_losses([(3 * x, y)])
    after = trainer.link.normaliser.scales
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_an_online_step_leaves_the_student_running_whole_sequences():
    """The blockwise online step runs the LIFs stepwise; after it they are back to whole sequences with no state,
    so a bare run of the model over [T*B, ...] (or export_nir) is the same as before training."""
    from ltl_ext.nn import encode
    from ltl_ext.train import LocalTandemTrainer
    teacher, student, x, y = _hand_pair(conv=False)
    trainer = LocalTandemTrainer(teacher, student, time_steps=4, mode="online", lr=1e-12, device="cpu",
                                 distributed=False)
    bare = trainer.student.model
    before = bare(encode(x, 4))
    trainer.optimizer.step = lambda *a, **k: None
    trainer.train_step(x, y)
    assert not any(m.stepwise or m.v is not None or m.count is not None for m in trainer.student.modules()
                   if isinstance(m, LIF))
    torch.testing.assert_close(bare(encode(x, 4)), before, rtol=0, atol=0)


def test_spikes_updated_in_place_are_not_stored_as_bits():
    """A spike tensor updated in place after its LIF (``out += identity``, SEW-ResNet style) holds 2s; the next
    layer's weight gradient must see them, not their bits (the spikes are freed before that backward)."""
    class SEW(nn.Module):
        def __init__(self, act):
            super().__init__()
            self.l1, self.a1 = nn.Linear(6, 8), copy.deepcopy(act)
            self.l2, self.a2 = nn.Linear(8, 8), copy.deepcopy(act)
            self.l3, self.a3 = nn.Linear(8, 5), copy.deepcopy(act)
            self.fc = nn.Linear(5, 3)
            self.in_place = False

        def forward(self, x):
            h = self.a1(self.l1(x))
            out = self.a2(self.l2(h))
            if self.in_place:
                out += h
            else:
                out = out + h
            del h
            out = self.l3(out)          # the summed spikes live on only in l3's saved input
            return self.fc(self.a3(out))

    from ltl_ext.nn import ClampReLU
    torch.manual_seed(0)
    teacher = SEW(ClampReLU(2.0)).double()
    student = SpikingModel(SEW(LIF(beta=0.9, threshold=0.3, reset="soft", surrogate="sigmoid")),
                           time_steps=3).double()
    x, y = 2 * torch.rand(5, 6, dtype=torch.float64), torch.arange(5) % 3
    config = LTLConfig(time_steps=3, mode="offline", warmup=0).check()
    link = tandem.Tandem(teacher, student)
    grads = []
    for in_place in (False, True):
        student.model.in_place = in_place
        ltl_step(student, link, _NoStep(student), x, y, config)
        grads.append({n: p.grad.clone() for n, p in student.named_parameters()})
    assert bool(grads[0]["model.l3.weight"].abs().sum() > 0)
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-12, atol=1e-14, msg=n)


@pytest.mark.parametrize("kwargs", [{"memory": "constant"}, {"mode": "offline"}])
def test_calibrate_runs_any_mode_from_a_trainer_with_online_blocks(kwargs):
    """A trainer built with ``time_block`` calibrates in the constant-memory and offline modes too (the blocks
    apply to batched online LTL only)."""
    from ltl_ext.train import LocalTandemTrainer
    teacher, student, x, y = _hand_pair(conv=False)
    trainer = LocalTandemTrainer(teacher, student, time_steps=4, mode="online", time_block=2, device="cpu",
                                 distributed=False)
    out = trainer.calibrate(copy.deepcopy(student), [(x, y)], steps=1, **kwargs)
    assert out["steps"] == 1 and out["loss"] > 0


@pytest.mark.parametrize("kwargs", [{"ce_weight": -1.0}, {"ce_weight": float("nan")}, {"ce_weight": float("inf")},
                                    {"lr": float("inf")}, {"weight_decay": float("inf")}, {"lr": True}])
def test_bad_weights_and_rates_are_refused(kwargs):
    """A negative readout weight would ascend the CE; NaN or infinite weights and rates make NaN weights a step
    later: each is refused when the run is defined, naming the argument."""
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        LTLConfig(**kwargs).check()
    LTLConfig(ce_weight=0.0).check()            # a readout that learns nothing is allowed
