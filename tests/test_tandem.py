"""Fused local tandem loss (issue 3) against the pure-PyTorch references (the spec).

Every comparison runs the fused op and ``tandem_loss_reference`` / ``tandem_step_reference`` on the same inputs:
spikes equal, loss and every gradient (x, tensor beta/alpha/threshold, v0, target) close. Float64 checks the
formulas tightly; half types use the reference in the same dtype (both compute in float32). CUDA variants are
the same tests on the "cuda" device; they skip without a GPU.
"""
from __future__ import annotations

import pytest
import torch

from conftest import DEVICES, DTYPES, TOL
from ltl_ext.functional import (online_state, tandem_block, tandem_block_, tandem_block_reference,
                                tandem_block_reference_, tandem_loss, tandem_loss_reference, tandem_step,
                                tandem_step_reference)
from ltl_ext.ops.params import SURROGATES

_OPS = torch.ops.ltl_ext


def _close(actual, expected, dtype, what):
    """conftest's tolerance of ``dtype``, with atol relative to max |expected| (gradients here are ~1e-3)."""
    rtol, atol = TOL[dtype]
    expected = expected.detach()
    scale = max(float(expected.abs().max()), 1e-30) if expected.numel() else 1.0
    torch.testing.assert_close(actual.detach().to(expected.dtype), expected, rtol=rtol, atol=atol * scale,
                               msg=lambda m: f"{what}: {m}")


def _inputs(T, shape, dtype, device, per_neuron, with_v0=False, seed=0):
    """x [T, *shape] around the threshold (so neurons fire and the surrogate sees both sides), a target in
    [0, 1], and LIF keywords: scalars, or per-neuron tensors (of several broadcastable shapes) requiring grad."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn((T, *shape), generator=g, dtype=torch.float64) * 0.6 + 0.45).to(dtype).to(device)
    x.requires_grad_()
    y = torch.rand(shape, generator=g, dtype=torch.float64).to(dtype).to(device)
    if per_neuron:
        last = shape[-1]
        pd = dtype if dtype == torch.float64 else torch.float32
        kw = dict(beta=(torch.rand(last, generator=g, dtype=torch.float64) * 0.5 + 0.45).to(pd).to(device),
                  alpha=(torch.rand((*shape[:-1], 1) if len(shape) > 1 else (1,), generator=g,
                                    dtype=torch.float64) + 0.5).to(pd).to(device),
                  threshold=(torch.rand(shape, generator=g, dtype=torch.float64) * 0.5 + 0.5).to(pd).to(device))
        for v in kw.values():
            v.requires_grad_()
    else:
        kw = dict(beta=0.9, alpha=1.0, threshold=0.7)
    if with_v0:
        kw["v0"] = (torch.rand(shape, generator=g, dtype=torch.float64) * 0.5).to(dtype).to(device).requires_grad_()
    return x, y, kw


def _grads(loss, tensors):
    leaves = [t for t in tensors if t.requires_grad]
    gs = torch.autograd.grad(loss, leaves, allow_unused=True)
    return [torch.zeros_like(t) if gi is None else gi for t, gi in zip(leaves, gs)]


def _check_against_reference(x, y, kw, dtype, **extra):
    s, loss = tandem_loss(x, y, **kw, **extra)
    s_ref, loss_ref = tandem_loss_reference(x, y, **kw, **extra)
    assert s.shape == x.shape and s.dtype == x.dtype and not s.requires_grad
    assert loss.dtype == loss_ref.dtype and loss.shape == ()
    mismatch = (s != s_ref).float().mean().item()
    assert mismatch == 0.0, f"{mismatch:.2%} of the spikes differ from the reference"
    _close(loss, loss_ref, dtype, "loss")
    tensors = [x, y] + [v for v in kw.values() if isinstance(v, torch.Tensor)]
    names = ["x", "target"] + [k for k, v in kw.items() if isinstance(v, torch.Tensor)]
    for name, g, g_ref in zip([n for n, t in zip(names, tensors) if t.requires_grad],
                              _grads(loss, tensors), _grads(loss_ref, tensors)):
        assert g.shape == g_ref.shape and g.dtype == g_ref.dtype, name
        _close(g, g_ref, dtype, f"grad {name}")


# ---- the grid ------------------------------------------------------------------------------------------------

VARIANTS = [("offline", dict()), ("offline", dict(detach_reset=True)), ("online", dict(warmup=0)),
            ("online", dict(warmup=3))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variant", range(len(VARIANTS)), ids=["offline", "offline-detach", "online-w0",
                                                               "online-w3"])
@pytest.mark.parametrize("per_neuron", [False, True], ids=["scalar", "per_neuron"])
@pytest.mark.parametrize("surrogate", list(SURROGATES))
@pytest.mark.parametrize("reset", ["soft", "hard"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matches_reference(dtype, reset, surrogate, per_neuron, variant, device):
    mode, extra = VARIANTS[variant]
    x, y, kw = _inputs(6, (3, 7), dtype, device, per_neuron, with_v0=(mode == "offline" and per_neuron))
    kw.update(reset=reset, surrogate=surrogate, v_reset=0.1 if reset == "hard" else 0.0)
    _check_against_reference(x, y, kw, dtype, mode=mode, **extra)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["offline", "online"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_one_step_odd_sizes_and_strides(dtype, mode, device):
    # T = 1
    x, y, kw = _inputs(1, (5,), dtype, device, per_neuron=True)
    _check_against_reference(x, y, kw, dtype, mode=mode, reset="hard", surrogate="rect")
    # several neuron blocks with a ragged tail, trailing shape of rank 3, surrogate parameter set
    x, y, kw = _inputs(9, (2, 3, 97), dtype, device, per_neuron=False, seed=1)
    _check_against_reference(x, y, kw, dtype, mode=mode, reset="soft", surrogate="atan", surrogate_alpha=3.0,
                             **({"warmup": 4} if mode == "online" else {}))
    # a non-contiguous x (time not outermost in memory)
    base = (torch.randn(13, 4, 6, dtype=torch.float64) * 0.6 + 0.45).to(dtype).to(device)
    x = base.transpose(0, 1).detach().requires_grad_()  # [4, 13, 6], strides of a transpose
    assert not x.is_contiguous()
    y = torch.rand(13, 6, dtype=torch.float64).to(dtype).to(device)
    _check_against_reference(x, y, dict(beta=0.8, threshold=0.6), dtype, mode=mode, reset="hard",
                             surrogate="fast_sigmoid")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_long_T(dtype, device):
    """T = 100: on CUDA the offline backward keeps H in a global scratch instead of shared memory."""
    x, y, kw = _inputs(100, (37,), dtype, device, per_neuron=True, seed=3)
    _check_against_reference(x, y, kw, dtype, mode="offline", reset="soft", surrogate="sigmoid")
    _check_against_reference(x, y, kw, dtype, mode="online", warmup=90, reset="hard", surrogate="atan")


@pytest.mark.parametrize("device", DEVICES)
def test_target_out_of_range_and_its_gradient(device):
    x, y, kw = _inputs(5, (4, 3), torch.float64, device, per_neuron=False)
    y = (y * 3 - 1).requires_grad_()  # outside [0, 1] is allowed (an unnormalised teacher)
    for mode in ("offline", "online"):
        _check_against_reference(x, y, kw, torch.float64, mode=mode)


# ---- stepwise and blocks (memory that does not grow with T) == batched online ---------------------------------

def _step_as_block(x, y, v, c, t0, **kw):
    """tandem_step (and its reference) seen as a block of one step: the block test runs both forms."""
    s, loss, v, c = tandem_step(x[0], y, v, c, t0, **kw)
    return s.unsqueeze(0), loss, v, c


def _step_reference_as_block(x, y, v, c, t0, **kw):
    s, loss, v, c = tandem_step_reference(x[0], y, v, c, t0, **kw)
    return s.unsqueeze(0), loss, v, c


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("block", [1, 2, 3], ids=["step", "block2", "block3"])
@pytest.mark.parametrize("per_neuron", [False, True], ids=["scalar", "per_neuron"])
@pytest.mark.parametrize("reset,surrogate", [("hard", "rect"), ("soft", "sigmoid")])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_blocks_match_reference_and_sum_to_batched_online(dtype, reset, surrogate, per_neuron, block, device):
    """Online LTL one step at a time (tandem_step) or in blocks of n (tandem_block; the last block shorter) ==
    its reference at every block, and summed over the blocks == batched online (spikes, loss, gradients)."""
    op, ref = (_step_as_block, _step_reference_as_block) if block == 1 else (tandem_block, tandem_block_reference)
    T, warmup = 7, 2
    x, y, kw = _inputs(T, (3, 5), dtype, device, per_neuron)
    kw.update(reset=reset, surrogate=surrogate)
    tensors = [x] + [v for v in kw.values() if isinstance(v, torch.Tensor)]
    s_b, loss_b = tandem_loss(x, y, mode="online", warmup=warmup, **kw)
    g_b = _grads(loss_b, tensors)
    v = c = v_r = c_r = None
    total, total_r, spikes = 0, 0, []
    for t0 in range(0, T, block):
        s, l, v, c = op(x[t0:t0 + block], y, v, c, t0, warmup=warmup, **kw)
        s_r, l_r, v_r, c_r = ref(x[t0:t0 + block], y, v_r, c_r, t0, warmup=warmup, **kw)
        assert torch.equal(s, s_r) and s.dtype == s_r.dtype and not s.requires_grad
        assert v.dtype == v_r.dtype and c.dtype == c_r.dtype and not v.requires_grad and not c.requires_grad
        _close(v, v_r, dtype, f"v after the block at {t0}")
        _close(c, c_r, dtype, f"count after the block at {t0}")
        _close(l, l_r, dtype, f"loss of the block at {t0}")
        spikes.append(s)
        total, total_r = total + l, total_r + l_r
    assert torch.equal(torch.cat(spikes), s_b)
    _close(total, loss_b, dtype, "summed block losses")
    for g, g_r, gb in zip(_grads(total, tensors), _grads(total_r, tensors), g_b):
        _close(g, gb, dtype, "block grads vs batched")
        _close(g, g_r, dtype, "block grads vs reference")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("count_dtype", ["uint8", "math"])
@pytest.mark.parametrize("block", [1, 3], ids=["step", "block3"])
@pytest.mark.parametrize("per_neuron", [False, True], ids=["scalar", "per_neuron"])
@pytest.mark.parametrize("reset,surrogate", [("hard", "rect"), ("soft", "sigmoid")])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_inplace_blocks_match_reference_and_copying_blocks(dtype, reset, surrogate, per_neuron, block, count_dtype,
                                                           device):
    """tandem_block_ (the state updated in place, the count in uint8 or the math type) == its reference and ==
    tandem_block at every block: spikes, loss, state, gradients; the tensors handed in are the ones updated."""
    T, warmup = 7, 2
    x, y, kw = _inputs(T, (3, 5), dtype, device, per_neuron)
    kw.update(reset=reset, surrogate=surrogate)
    tensors = [x] + [v for v in kw.values() if isinstance(v, torch.Tensor)]
    v, c = online_state(x[0], T if count_dtype == "uint8" else 1000)
    assert v.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert c.dtype == (torch.uint8 if count_dtype == "uint8" else v.dtype)
    v_r, c_r = v.clone(), c.clone()
    v_c = c_c = None
    ptr = v.data_ptr(), c.data_ptr()
    total, total_r, total_c = 0, 0, 0
    for t0 in range(0, T, block):
        s, l = tandem_block_(x[t0:t0 + block], y, v, c, t0, warmup=warmup, **kw)
        s_r, l_r = tandem_block_reference_(x[t0:t0 + block], y, v_r, c_r, t0, warmup=warmup, **kw)
        s_c, l_c, v_c, c_c = tandem_block(x[t0:t0 + block], y, v_c, c_c, t0, warmup=warmup, **kw)
        assert torch.equal(s, s_r) and torch.equal(s, s_c) and not s.requires_grad
        assert (v.data_ptr(), c.data_ptr()) == ptr and c.dtype == c_r.dtype
        assert torch.equal(c, c_r) and torch.equal(c.to(c_c.dtype), c_c), f"count after the block at {t0}"
        _close(v, v_r, dtype, f"v after the block at {t0}")
        assert torch.equal(v, v_c), f"v after the block at {t0} vs tandem_block"
        assert torch.equal(l, l_c)
        _close(l, l_r, dtype, f"loss of the block at {t0}")
        total, total_r, total_c = total + l, total_r + l_r, total_c + l_c
    for g, g_r, g_c in zip(_grads(total, tensors), _grads(total_r, tensors), _grads(total_c, tensors)):
        _close(g, g_r, dtype, "in-place grads vs reference")
        assert torch.equal(g, g_c), "in-place grads vs tandem_block"


@pytest.mark.parametrize("device", DEVICES)
def test_inplace_state_at_a_million_neurons(device):
    """N = 2^20 (several CPU threads' blocks, many CUDA blocks): after 3 blocks the uint8 count and the in-place V
    equal the reference's (spikes and count exactly) and the copying op's, bit for bit; a count of 255 steps is
    exact."""
    N, T = 2 ** 20, 3
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(T, N, generator=g) * 0.6 + 0.45).to(device)
    y = torch.rand(N, generator=g).to(device)
    v, c = online_state(x[0], T)
    v_r, c_r = v.clone(), c.clone()
    v_c = c_c = None
    for t in range(T):
        s, l = tandem_block_(x[t:t + 1], y, v, c, t, beta=0.9, threshold=0.7)
        s_r, l_r = tandem_block_reference_(x[t:t + 1], y, v_r, c_r, t, beta=0.9, threshold=0.7)
        s_c, l_c, v_c, c_c = tandem_block(x[t:t + 1], y, v_c, c_c, t, beta=0.9, threshold=0.7)
        assert torch.equal(s, s_r) and torch.equal(s, s_c) and torch.equal(l, l_c)
        _close(l, l_r, torch.float32, f"loss of the block at {t}")
    assert torch.equal(c, c_r) and torch.equal(c.float(), c_c)
    _close(v, v_r, torch.float32, "v after 3 blocks")
    assert torch.equal(v, v_c)
    v, c = online_state(x[0, :4096], 255)
    tandem_block_(torch.full((255, 4096), 5.0, device=device), y[:4096], v, c, 0, beta=0.9, threshold=0.7)
    assert int(c.min()) == int(c.max()) == 255


def test_inplace_bad_input_and_version():
    x, y = torch.randn(2, 3), torch.rand(3)
    v, c = online_state(x[0], 2)
    for op in (tandem_block_, tandem_block_reference_):
        with pytest.raises(ValueError, match="at most 255 steps"):
            op(x, y, v, c, 254, beta=0.9)
        with pytest.raises(ValueError, match="in place"):
            op(x, y, None, c, 0, beta=0.9)
    with pytest.raises(TypeError, match="state v must be Float"):
        tandem_block_(x, y, v.double(), c, 0, beta=0.9)
    with pytest.raises(TypeError, match="count must be Float .or uint8"):
        tandem_block_(x, y, v, c.int(), 0, beta=0.9)
    with pytest.raises(ValueError, match="neuron shape"):
        tandem_block_(x, y, v[:2], c, 0, beta=0.9)
    with pytest.raises(ValueError, match="neuron shape"):
        tandem_block_(x, y, torch.zeros(6)[::2], c, 0, beta=0.9)
    with pytest.raises(ValueError, match="carry no gradient"):
        tandem_block_(x, y, v.clone().requires_grad_(), c, 0, beta=0.9)
    with pytest.raises(TypeError, match="x_t must be a tensor"):
        online_state([0.0], 3)
    # the state in the wrong dtype: both refuse it (the reference used to round the state into it, silently)
    for op in (tandem_block_, tandem_block_reference_):
        with pytest.raises(TypeError, match="state v must be"):
            op(x.double(), y.double(), v.clone(), c.clone(), 0, beta=0.9)
    # autograd learns of the update: a graph that saved the state refuses to use it afterwards
    w = torch.tensor(2.0, requires_grad=True)
    saved = w * v
    tandem_block_(x, y, v, c, 0, beta=0.9)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        saved.sum().backward()


def test_block_bad_input():
    x, y = torch.randn(4, 3), torch.rand(3)
    with pytest.raises(ValueError, match="t0 must be"):
        tandem_block(x, y, None, None, -1, beta=0.9)
    with pytest.raises(ValueError, match="t0 must be"):
        tandem_block_reference(x, y, None, None, True, beta=0.9)
    with pytest.raises(ValueError, match="count has shape"):
        tandem_block(x, y, torch.zeros(3), torch.zeros(5), 2, beta=0.9)


@pytest.mark.parametrize("block,step", [(tandem_block, tandem_step), (tandem_block_reference, tandem_step_reference)])
def test_a_block_after_the_first_needs_the_state(block, step):
    """None is the zero state before step 0 only: a block (or step) at t0 > 0 without the state of the steps before
    it would compute its rates as if they had never spiked; the kernel and the reference both refuse it."""
    x, y = torch.randn(4, 3), torch.rand(3)
    _, _, v, c = block(x[:2], y, None, None, 0, beta=0.9)
    block(x[2:], y, v, c, 2, beta=0.9)                          # continued with the state: fine
    for state, missing in (((None, None), "v and count"), ((v, None), "count"), ((None, c), "v")):
        with pytest.raises(ValueError, match=f"step 2 continues a run, but {missing} is None"):
            block(x[2:], y, *state, 2, beta=0.9)
    with pytest.raises(ValueError, match="step 3 continues a run"):
        step(x[3], y, None, None, 3, beta=0.9)


@pytest.mark.parametrize("device", DEVICES)
def test_stepwise_backward_per_step_accumulates(device):
    """The trainer's constant-memory loop: backward after every step, grads accumulate into the leaves."""
    T = 6
    x, y, kw = _inputs(T, (8,), torch.float64, device, per_neuron=True)
    xs = [x[t].detach().clone().requires_grad_() for t in range(T)]
    v = c = None
    for t in range(T):
        _, l_t, v, c = tandem_step(xs[t], y, v, c, t, warmup=1, **kw)
        l_t.backward()
    _, loss_b = tandem_loss_reference(x, y, mode="online", warmup=1, **kw)
    gx_b, *gp_b = torch.autograd.grad(loss_b, [x] + list(kw.values()))
    _close(torch.stack([xi.grad for xi in xs]), gx_b, torch.float64, "grad x")
    for p, gb in zip(kw.values(), gp_b):
        _close(p.grad, gb, torch.float64, "grad param")


# ---- memory: what the backward keeps --------------------------------------------------------------------------

def _saved_bytes(fn):
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return total[0], out


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_saved_memory_batched(mode):
    T, N = 16, 4096
    x = torch.randn(T, N).requires_grad_()
    y = torch.rand(N)
    theta = torch.full((N,), 0.7, requires_grad=True)
    kw = dict(mode=mode, warmup=4 if mode == "online" else 0, beta=0.9, threshold=theta, reset="hard",
              surrogate="rect")
    fused, (_, loss) = _saved_bytes(lambda: tandem_loss(x, y, **kw))
    ref, _ = _saved_bytes(lambda: tandem_loss_reference(x, y, **kw))
    per_step = (fused - 8 * 4 * N) / (T * N)  # allow a few [N] float vectors
    assert per_step <= 4.0, f"fused {mode} saves {fused / (T * N):.2f} B/neuron-step"
    assert fused < ref
    loss.backward()
    assert x.grad is not None and theta.grad is not None


def test_saved_memory_stepwise_is_constant_in_T():
    N = 4096
    y = torch.rand(N)
    for T in (4, 32):
        v = c = None
        worst = 0
        for t in range(T):
            x_t = torch.randn(N, requires_grad=True)
            b, (_, l_t, v, c) = _saved_bytes(lambda: tandem_step(x_t, y, v, c, t, beta=0.9, threshold=0.7))
            worst = max(worst, b)
            l_t.backward()
        assert worst <= 8 * 4 * N, f"stepwise saves {worst} B for N={N} at T={T}"


# ---- op registration ------------------------------------------------------------------------------------------

def _op_args(T, N, dtype, device, per_neuron, requires_grad):
    sd = torch.float64 if dtype == torch.float64 else torch.float32
    x = (torch.randn(T, N, dtype=torch.float64) * 0.6 + 0.45).to(dtype).to(device).requires_grad_(requires_grad)
    y = torch.rand(N, dtype=sd, device=device)
    p = [(torch.rand(N, dtype=sd, device=device) * 0.4 + 0.5).requires_grad_(requires_grad) if per_neuron else None
         for _ in range(3)]
    return x, y, p


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("per_neuron", [False, True], ids=["scalar", "per_neuron"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_opcheck(dtype, per_neuron, device):
    from torch.library import opcheck

    x, y, (b, a, th) = _op_args(5, 33, dtype, device, per_neuron, requires_grad=True)
    lif = (0.9, 1.0, 0.7, "hard", 0.0, "sigmoid", 4.0, False)
    opcheck(_OPS.tandem_offline_fwd, (x, y, b, a, th, None, *lif))
    with torch.no_grad():
        _, _, err = _OPS.tandem_offline_fwd(x, y, b, a, th, None, *lif)
    g = torch.tensor(1.5, dtype=dtype, device=device)
    opcheck(_OPS.tandem_offline_bwd, (g, x.detach(), err, None if b is None else b.detach(), None, None, None,
                                      *lif, False, b is not None, False, False))
    need = [x.requires_grad, b is not None, a is not None, th is not None, False]
    lif_on = lif[:-1]
    opcheck(_OPS.tandem_online, (x, y, b, a, th, None, None, *lif_on, 0, 2, False, *need))
    v = torch.rand(33, dtype=y.dtype, device=device)
    c = torch.randint(0, 3, (33,), device=device).to(y.dtype)
    opcheck(_OPS.tandem_online, (x[:1], y, b, a, th, v, c, *lif_on, 3, 1, True, *need))
    for count in (c, c.to(torch.uint8)):
        opcheck(_OPS.tandem_online_, (x[:2], y, b, a, th, v.clone(), count.clone(), *lif_on, 3, 1, *need))


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_torch_compile_fullgraph(mode):
    x, y, kw = _inputs(4, (2, 9), torch.float32, "cpu", per_neuron=True)

    def f(x, y, theta):
        s, loss = tandem_loss(x, y, mode=mode, warmup=1, beta=0.9, threshold=theta, reset="hard", surrogate="rect")
        return s.sum() + loss

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    out = compiled(x, y, kw["threshold"])
    out.backward()
    gx, gt = x.grad.clone(), kw["threshold"].grad.clone()
    x.grad = kw["threshold"].grad = None
    f(x, y, kw["threshold"]).backward()
    torch.testing.assert_close(gx, x.grad)
    torch.testing.assert_close(gt, kw["threshold"].grad)


# ---- determinism ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["offline", "online"])
def test_loss_is_bit_identical_for_any_thread_count(mode, device):
    """Deterministic: per-block loss partials reduced in a fixed order (CPU: whatever the thread count)."""
    x = (torch.randn(8, 1 << 16) * 0.6 + 0.45).to(device)     # large enough to split over 4 threads
    y = torch.rand(1 << 16).to(device)
    old = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3, 4):
            torch.set_num_threads(n)
            xi = x.clone().requires_grad_()
            _, loss = tandem_loss(xi, y, mode=mode, warmup=2, beta=0.9, threshold=0.7)
            loss.backward()
            results.append((loss.detach(), xi.grad))
    finally:
        torch.set_num_threads(old)
    for loss, gx in results[1:]:
        assert torch.equal(loss, results[0][0]) and torch.equal(gx, results[0][1])


# ---- float16 under loss scaling (issue 10.3) ------------------------------------------------------------------

_LOSS_SCALES = (65536.0, 1024.0)  # GradScaler's initial scale, and one where float16 used to flush 85 %


@pytest.fixture(scope="module")
def fp16_online_problem():
    """x [16, 2^20] in float16, its target, and the float64 reference gradient dL/dx of the online loss."""
    T, N = 16, 1 << 20
    g = torch.Generator().manual_seed(10)
    x = (torch.randn(T, N, generator=g) * 0.6 + 0.45).half()
    y = torch.rand(N, generator=g)
    kw = dict(mode="online", beta=0.9, threshold=1.0, surrogate="sigmoid")
    x64 = x.double().requires_grad_()
    tandem_loss_reference(x64, y.double(), **kw)[1].backward()
    return x, y, kw, x64.grad


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("scale", _LOSS_SCALES, ids=lambda s: f"scale{int(s)}")
def test_fp16_online_gradient_under_loss_scaling(fp16_online_problem, scale, device):
    """The scaled float16 gradient matches the float64 one: none non-finite, < 1 % of the gradients that float16 can
    hold flushed to zero, median relative error <= 1e-2 (the loss scaled as GradScaler does: by a float32 scalar)."""
    x, y, kw, grad64 = fp16_online_problem
    xx = x.to(device, copy=True).requires_grad_()
    _, loss = tandem_loss(xx, y.half().to(device), **kw)
    assert loss.dtype == torch.float32
    (loss * torch.tensor(scale, device=device)).backward()
    got, ref = xx.grad.double().cpu(), grad64 * scale
    assert torch.isfinite(got).all(), f"{(~torch.isfinite(got)).sum().item()} non-finite gradients"
    held = ref.abs() >= 2.0 ** -24  # the smallest float16 subnormal: what a float16 gradient can hold at all
    assert held.double().mean() > 0.9, "the problem should exercise float16's range, not sit below it"
    flushed = ((got == 0) & held).double().sum() / held.sum()
    assert flushed < 0.01, f"{100 * flushed:.2f} % of the gradients flushed to zero"
    rel = ((got - ref).abs() / ref.abs())[held].median()
    assert rel <= 1e-2, f"median relative error {rel:.3g}"


# ---- bad input ------------------------------------------------------------------------------------------------

def test_bad_input():
    x = torch.randn(5, 3, 4)
    y = torch.rand(3, 4)
    with pytest.raises(ValueError, match="target has shape"):
        tandem_loss(x, torch.rand(4, 3), beta=0.9)
    with pytest.raises(ValueError, match="target has shape"):
        tandem_step(x[0], torch.rand(12), None, None, 0, beta=0.9)
    bad = y.clone()
    bad[1, 2] = float("nan")
    for mode in ("offline", "online"):
        with pytest.raises(ValueError, match="NaN"):
            tandem_loss(x, bad, mode=mode, beta=0.9)
    with pytest.raises(ValueError, match="NaN"):
        tandem_step(x[0], bad, None, None, 0, beta=0.9)
    with pytest.raises(ValueError, match="warmup"):
        tandem_loss(x, y, mode="online", warmup=5, beta=0.9)
    with pytest.raises(ValueError, match="warmup"):
        tandem_loss(x, y, mode="online", warmup=-1, beta=0.9)
    with pytest.raises(ValueError, match="mode"):
        tandem_loss(x, y, mode="batch", beta=0.9)
    with pytest.raises(ValueError, match="t must be"):
        tandem_step(x[0], y, None, None, -1, beta=0.9)
    with pytest.raises(ValueError, match="count has shape"):
        tandem_step(x[0], y, torch.zeros(x.shape[1:]), torch.zeros(5), 1, beta=0.9)
    with pytest.raises(ValueError, match="beta"):
        tandem_loss(x, y, beta=1.5)
    with pytest.raises(TypeError):
        tandem_loss(x.int(), y, beta=0.9)
    with pytest.raises(TypeError, match="target"):
        tandem_loss(x, y.int(), beta=0.9)
    # v_reset is a number: a (learnable) tensor used to be read as one silently, without a gradient
    v_reset = torch.tensor(0.2, requires_grad=True)
    for call in (lambda: tandem_loss(x, y, reset="hard", v_reset=v_reset, beta=0.9),
                 lambda: tandem_loss(x, y, mode="online", reset="hard", v_reset=v_reset, beta=0.9),
                 lambda: tandem_step(x[0], y, None, None, 0, reset="hard", v_reset=v_reset, beta=0.9),
                 lambda: tandem_block_(x, y, *online_state(x[0], 5), 0, reset="hard", v_reset=v_reset, beta=0.9)):
        with pytest.raises(ValueError, match="v_reset must be a finite float"):
            call()
    # forward-mode AD is refused, not answered with a zero tangent
    from torch.func import jvp
    for mode in ("offline", "online"):
        with pytest.raises(NotImplementedError, match="forward-mode AD"):
            jvp(lambda x: tandem_loss(x, y, mode=mode, beta=0.9)[1], (x,), (torch.ones_like(x),))
    # outside [0, 1] is fine; warmup = T - 1 is the last legal value
    tandem_loss(x, y * 4 - 2, mode="online", warmup=4, beta=0.9)
    # the op itself checks what reaches it without the Python wrapper
    with pytest.raises(ValueError, match="target"):
        _OPS.tandem_offline_fwd(x.reshape(5, 12), torch.rand(11), None, None, None, None, 0.9, 1.0, 0.7, "soft",
                                0.0, "sigmoid", 4.0, False)
    with pytest.raises(ValueError, match="surrogate"):
        _OPS.tandem_offline_fwd(x.reshape(5, 12), torch.rand(12), None, None, None, None, 0.9, 1.0, 0.7, "soft",
                                0.0, "relu", 4.0, False)


def test_empty_neurons():
    x = torch.randn(4, 0, requires_grad=True)
    for mode in ("offline", "online"):
        s, loss = tandem_loss(x, torch.rand(0), mode=mode, beta=0.9)
        _, loss_ref = tandem_loss_reference(x, torch.rand(0), mode=mode, beta=0.9)
        assert s.shape == (4, 0) and torch.isnan(loss) and torch.isnan(loss_ref)


def test_double_backward_is_refused_not_zero():
    """Every tandem op is differentiable once: a second derivative through it raises instead of silently missing
    (the online ops' backward returns saved local gradients, which had no history at all)."""
    x = (torch.rand(5, 4, dtype=torch.float64) * 0.8).requires_grad_()
    y = torch.rand(4, dtype=torch.float64)
    calls = {"offline": lambda: tandem_loss(x, y, beta=0.9, threshold=0.5)[1],
             "online": lambda: tandem_loss(x, y, mode="online", beta=0.9, threshold=0.5)[1],
             "block": lambda: tandem_block(x, y, None, None, 0, beta=0.9, threshold=0.5)[1],
             "block_": lambda: tandem_block_(x, y, *online_state(x[0], 5), 0, beta=0.9, threshold=0.5)[1]}
    for name, loss in calls.items():
        plain, = torch.autograd.grad(loss(), x)
        g, = torch.autograd.grad(loss(), x, create_graph=True)
        torch.testing.assert_close(g.detach(), plain, rtol=0, atol=0, msg=name)
        with pytest.raises(RuntimeError, match="differentiable once"):
            torch.autograd.grad((g ** 2).sum() + x.sum(), x)
