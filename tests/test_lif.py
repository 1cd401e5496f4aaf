"""The fused LIF op against the reference (the spec): spikes equal, v_final and every gradient close.

Gradients are checked against autograd through ``lif_reference`` (the surrogate is not the true derivative of
the spike, so gradcheck of the spiking op is meaningless; it is used below where it applies: v_final of a LIF
that never fires is smooth). Run the GPU part with ``pytest tests -m cuda``.
"""
from __future__ import annotations

import itertools
import os

import pytest
import torch

from conftest import DEVICES, DTYPES, assert_close_dtype, make_input, requires_cuda
from ltl_ext.functional import lif, lif_reference
from ltl_ext.ops.params import SURROGATES

RESETS = ("soft", "hard")


def _params(kind: str, shape, dtype, device, seed=1):
    """LIF keyword arguments: "scalar" floats, or "tensor" per-neuron params (broadcast shapes) + v0, with grad."""
    if kind == "scalar":
        return dict(beta=0.8, alpha=1.0, threshold=0.9)
    g = torch.Generator().manual_seed(seed)
    pdtype = torch.float64 if dtype == torch.float64 else torch.float32
    last = shape[-1] if shape else 1
    mk = lambda s, lo, hi: (torch.rand(s, generator=g, dtype=torch.float64) * (hi - lo) + lo).to(pdtype).to(device)
    return dict(
        beta=mk((last,), 0.5, 1.0).requires_grad_(),                                # broadcast over leading dims
        alpha=mk(tuple(shape), 0.5, 1.5).requires_grad_(),                          # full neuron shape
        threshold=mk((1,) * len(shape), 0.6, 1.2).requires_grad_() if shape else 0.8,  # one value, as a tensor
        v0=(mk(tuple(shape), -0.5, 0.5)).requires_grad_(),
    )


def _run(fn, x, kw, gen_seed=7, return_v=True):
    """Forward + backward with random upstream gradients on spikes and v_final; returns outputs and grads."""
    x = x.detach().clone().requires_grad_()
    kw = {k: (v.detach().clone().requires_grad_(v.requires_grad) if isinstance(v, torch.Tensor) else v)
          for k, v in kw.items()}
    s, v = fn(x, return_v=True, **kw)
    g = torch.Generator().manual_seed(gen_seed)
    gs = torch.randn(s.shape, generator=g, dtype=torch.float64).to(s.dtype).to(s.device)
    gv = torch.randn(v.shape, generator=g, dtype=torch.float64).to(v.dtype).to(v.device)
    inputs = [x] + [t for t in kw.values() if isinstance(t, torch.Tensor) and t.requires_grad]
    loss = (s.double() * gs.double()).sum() + ((v.double() * gv.double()).sum() if return_v else 0)
    grads = torch.autograd.grad(loss, inputs)
    return s, v, grads


def _compare(x, kw, dtype, return_v=True):
    s, v, g = _run(lif, x, kw, return_v=return_v)
    s_ref, v_ref, g_ref = _run(lif_reference, x, kw, return_v=return_v)
    assert s.dtype == x.dtype and s.shape == x.shape and v.shape == x.shape[1:]
    torch.testing.assert_close(s, s_ref, rtol=0, atol=0, msg="spikes differ from the reference")
    assert_close_dtype(v, v_ref, dtype, msg="v_final")
    for i, (a, b) in enumerate(zip(g, g_ref)):
        assert a.shape == b.shape and a.dtype == b.dtype, (i, a.shape, b.shape, a.dtype, b.dtype)
        assert_close_dtype(a, b, dtype, msg=f"gradient of input {i}")


# ---- the grid ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("params", ["scalar", "tensor"])
@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("surrogate", list(SURROGATES))
@pytest.mark.parametrize("reset", RESETS)
def test_grid_float64(device, reset, surrogate, detach_reset, params):
    x = make_input((9, 3, 37), torch.float64, device, seed=3)
    kw = dict(reset=reset, surrogate=surrogate, detach_reset=detach_reset, v_reset=-0.1 if reset == "hard" else 0.0,
              **_params(params, (3, 37), torch.float64, device))
    _compare(x, kw, torch.float64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("surrogate", list(SURROGATES))
@pytest.mark.parametrize("reset", RESETS)
def test_grid_dtypes(device, dtype, reset, surrogate):
    x = make_input((8, 5, 67), dtype, device, seed=4)
    for params in ("scalar", "tensor"):
        kw = dict(reset=reset, surrogate=surrogate, **_params(params, (5, 67), dtype, device, seed=5))
        _compare(x, kw, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("wanted", [("beta",), ("alpha",), ("threshold",), ("v0",), ("beta", "threshold"),
                                    ("alpha", "threshold"), ("beta", "alpha")], ids="+".join)
@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_which_parameters_want_a_gradient(device, dtype, reset, detach_reset, wanted):
    """The backward computes only the parameter gradients asked for (a specialised loop for each case: only a
    threshold's, no threshold's, both): every subset against the reference, past one CPU block of neurons."""
    shape = (2, 300)
    x = make_input((7,) + shape, dtype, device, seed=5)
    kw = _params("tensor", shape, dtype, device)
    kw["threshold"] = kw["threshold"].detach().expand(shape).clone()      # a per-neuron threshold, [2, 300]
    for name in ("beta", "alpha", "threshold", "v0"):
        kw[name].requires_grad_(name in wanted)
    kw.update(reset=reset, detach_reset=detach_reset, v_reset=-0.1 if reset == "hard" else 0.0)
    _compare(x, kw, dtype)


@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("params", ["scalar", "tensor"])
def test_large_float32_cpu(reset, params):
    """Past the CPU kernels' size threshold (T N 4 bytes >= 16 MiB): inputs prefetched, grad_spikes read in the
    recompute pass, outputs through non-temporal stores; an odd N, so rows start unaligned (the stores' head and
    tail paths)."""
    shape = (16, 262147)
    x = make_input(shape, torch.float32, "cpu", seed=17)
    kw = dict(reset=reset, surrogate="sigmoid", v_reset=-0.1 if reset == "hard" else 0.0,
              **_params(params, shape[1:], torch.float32, "cpu", seed=18))
    _compare(x, kw, torch.float32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 300), (5, 1), (4, 7, 3, 5), (3, 2, 1, 4), (16, 1031)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("noncontig", [False, True])
def test_shapes(device, shape, noncontig):
    x = make_input(shape, torch.float32, device, seed=6, noncontig=noncontig)
    _compare(x, dict(beta=0.9, threshold=0.7, reset="hard"), torch.float32)
    kw = _params("tensor", shape[1:], torch.float32, device)
    kw.update(threshold=0.5, reset="soft", surrogate="atan")
    _compare(x, kw, torch.float32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["per_channel", "per_row", "hole", "zero_dim"])
def test_broadcast_parameters_in_their_own_shape(device, layout):
    """Parameters reach the kernel in their own broadcast shape (per channel [C, 1, 1]: period C, inner H * W; a
    [B, 1, 1, 1]; a shape with a hole, [C, 1, W], which the op materialises; a 0-d tensor); their gradients come
    back reduced to that shape, as autograd gives them through the reference."""
    x = make_input((6, 2, 3, 4, 5), torch.float64, device, seed=17)
    g = torch.Generator().manual_seed(18)
    shape = {"per_channel": (3, 1, 1), "per_row": (2, 1, 1, 1), "hole": (3, 1, 5), "zero_dim": ()}[layout]
    mk = lambda lo, hi: (torch.rand(shape, generator=g, dtype=torch.float64) * (hi - lo) + lo).to(device)
    kw = dict(beta=mk(0.5, 1.0).requires_grad_(), alpha=mk(0.5, 1.5).requires_grad_(),
              threshold=mk(0.6, 1.2).requires_grad_(), v0=mk(-0.5, 0.5).requires_grad_(), reset="hard",
              v_reset=-0.1)
    _compare(x, kw, torch.float64)


@pytest.mark.parametrize("device", DEVICES)
def test_parallel_split(device):
    """Enough neurons for several threads / blocks and a ragged tail: every neuron is computed once."""
    x = make_input((4, 70001), torch.float32, device, seed=8)
    kw = _params("tensor", (70001,), torch.float32, device)
    kw.update(threshold=1.0, surrogate="sigmoid")
    _compare(x, kw, torch.float32)


@pytest.mark.parametrize("device", DEVICES)
def test_long_sequence(device):
    """T longer than one shared-memory segment of the CUDA backward: V checkpoints per segment, H recomputed."""
    x = make_input((400, 33), torch.float32, device, seed=9, scale=0.5)
    _compare(x, dict(beta=0.95, threshold=1.0, reset="soft", surrogate="fast_sigmoid"), torch.float32)


@pytest.mark.parametrize("device", DEVICES)
def test_empty_neurons(device):
    for shape in [(3, 0), (2, 4, 0)]:
        x = torch.zeros(shape, device=device, requires_grad=True)
        s, v = lif(x, beta=0.9, return_v=True)
        assert s.shape == x.shape and v.shape == x.shape[1:]
        s.sum().backward()
        assert x.grad.shape == x.shape


@pytest.mark.parametrize("device", DEVICES)
def test_grad_only_through_v_or_spikes(device):
    x = make_input((6, 40), torch.float64, device, seed=10)
    for which in ("v", "s"):
        outs = []
        for fn in (lif, lif_reference):
            xx = x.detach().clone().requires_grad_()
            s, v = fn(xx, beta=0.9, threshold=0.8, reset="soft", return_v=True)
            (v.sum() if which == "v" else (s * torch.arange(s.numel(), device=device).view_as(s)).sum()).backward()
            outs.append(xx.grad)
        torch.testing.assert_close(outs[0], outs[1])
    # without return_v
    xx = x.detach().clone().requires_grad_()
    lif(xx, beta=0.9).sum().backward()
    xr = x.detach().clone().requires_grad_()
    lif_reference(xr, beta=0.9).sum().backward()
    torch.testing.assert_close(xx.grad, xr.grad)


@pytest.mark.parametrize("device", DEVICES)
def test_surrogate_alpha_and_v_reset(device):
    x = make_input((7, 3, 11), torch.float64, device, seed=11)
    for sur, a in itertools.product(SURROGATES, (0.5, 3.0)):
        _compare(x, dict(beta=0.7, threshold=0.6, reset="hard", v_reset=0.2, surrogate=sur, surrogate_alpha=a),
                 torch.float64)


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_subthreshold(device):
    """Where no neuron fires, the LIF is linear in (x, v0, beta, alpha): a true gradient, so gradcheck applies."""
    x = (torch.rand(5, 6, dtype=torch.float64, device=device) * 0.1).requires_grad_()
    v0 = (torch.rand(6, dtype=torch.float64, device=device) * 0.1).requires_grad_()
    beta = torch.full((6,), 0.8, dtype=torch.float64, device=device, requires_grad=True)
    alpha = torch.full((1,), 0.9, dtype=torch.float64, device=device, requires_grad=True)
    f = lambda x, v0, b, a: lif(x, beta=b, alpha=a, threshold=10.0, v0=v0, return_v=True)[1]
    assert torch.autograd.gradcheck(f, (x, v0, beta, alpha))


def test_learnable_threshold_and_beta_gradient_shapes():
    x = make_input((5, 2, 3, 4), torch.float32, seed=12)
    beta = torch.full((3, 1), 0.9, requires_grad=True)
    th = torch.tensor(0.8, requires_grad=True)
    lif(x, beta=beta, threshold=th).sum().backward()
    assert beta.grad.shape == beta.shape and th.grad.shape == th.shape
    h = torch.full((2, 3, 4), 0.9, dtype=torch.float16, requires_grad=True)
    lif(x.half(), beta=h).float().sum().backward()
    assert h.grad.dtype == torch.float16 and h.grad.shape == h.shape


# ---- compile-readiness ------------------------------------------------------------------------------------------
def _opcheck_samples(device):
    x = make_input((5, 7), torch.float32, device, seed=13)
    p = lambda v: torch.full((7,), v, device=device)
    yield (x, None, None, None, None, 0.9, 1.0, 1.0, "soft", 0.0, "sigmoid", 4.0, False)
    yield (x.clone().requires_grad_(), p(0.8).requires_grad_(), p(1.1), p(0.7).requires_grad_(),
           p(0.1).requires_grad_(), 0.0, 0.0, 0.0, "hard", 0.1, "atan", 2.0, True)
    xd = make_input((3, 4), torch.float64, device, seed=14).requires_grad_()
    yield (xd, None, None, None, None, 0.5, 2.0, 0.5, "hard", 0.0, "rect", 0.2, False)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    from torch.library import opcheck
    for args in _opcheck_samples(device):
        opcheck(torch.ops.ltl_ext.lif_fwd.default, args)
        x = args[0].detach()
        gs = torch.randn_like(x)
        gv = torch.randn(x.shape[1], dtype=x.dtype, device=device)
        bwd = (gs, gv, x) + tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args[1:]) + \
            (args[4] is not None, args[1] is not None, False, args[3] is not None)
        opcheck(torch.ops.ltl_ext.lif_bwd.default, bwd)
        opcheck(torch.ops.ltl_ext.lif_bwd.default, (None, gv) + bwd[2:])


_INDUCTOR = pytest.param("inductor", marks=pytest.mark.skipif(
    os.environ.get("LTL_EXT_TEST_INDUCTOR") != "1",
    reason="inductor compiles C++ for the surrounding ops (~80 s on 2 busy cores); set LTL_EXT_TEST_INDUCTOR=1"))


@pytest.mark.parametrize("backend", ["aot_eager", _INDUCTOR])
@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph(device, backend):
    def f(x, beta):
        s, v = lif(x * 2.0, beta=beta, threshold=0.6, reset="hard", surrogate="rect", return_v=True)
        return s.mean() + v.square().mean()

    x = make_input((6, 4, 9), torch.float32, device, seed=15)
    beta = torch.full((9,), 0.9, device=device)
    cf = torch.compile(f, fullgraph=True, backend=backend)
    outs = []
    for fn in (f, cf):
        xx, bb = x.clone().requires_grad_(), beta.clone().requires_grad_()
        y = fn(xx, bb)
        y.backward()
        outs.append((y, xx.grad, bb.grad))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b)


# ---- bad input --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [lif, lif_reference], ids=["lif", "reference"])
@pytest.mark.parametrize("case,exc,match", [
    (dict(x=torch.tensor(1.0)), ValueError, "time dimension"),
    (dict(x=torch.zeros(0, 3)), ValueError, "T = 0"),
    (dict(x=torch.zeros(3, 4, dtype=torch.int64)), TypeError, "float16, bfloat16, float32 or float64"),
    (dict(beta=torch.full((5,), 0.9)), ValueError, "does not broadcast"),
    (dict(threshold=torch.ones(2, 4)), ValueError, "does not broadcast"),
    (dict(threshold=0.0), ValueError, "threshold must lie in"),
    (dict(threshold=torch.tensor([1.0, -1.0, 1.0, 1.0])), ValueError, "threshold values must lie in"),
    (dict(beta=1.5), ValueError, "beta must lie in"),
    (dict(beta=-0.1), ValueError, "beta must lie in"),
    (dict(beta="0.9"), TypeError, "beta must be a float or a tensor"),
    (dict(beta=torch.full((4,), 1, dtype=torch.int32)), TypeError, "floating tensor"),
    (dict(reset="subtract"), ValueError, "reset must be one of"),
    (dict(surrogate="erf"), ValueError, "surrogate must be one of"),
    (dict(surrogate_alpha=-1.0), ValueError, "surrogate_alpha"),
    (dict(v0=torch.zeros(5)), ValueError, "v0 has shape"),
    (dict(beta=torch.full((4,), 0.9, device="meta")), ValueError, "same device"),
    (dict(v0=torch.zeros(4, device="meta")), ValueError, "same device"),
], ids=lambda v: None if not isinstance(v, str) else v[:20].replace(" ", "_"))
def test_bad_input(fn, case, exc, match):
    kw = dict(x=torch.zeros(3, 4), beta=0.9)
    kw.update(case)
    x = kw.pop("x")
    with pytest.raises(exc, match=match):
        fn(x, **kw)


def test_check_lif_values_where_values_are_set():
    """The validator nn.LIF calls when a value is set (the fused ops do not read GPU values per call)."""
    from ltl_ext.ops.params import check_lif_values
    check_lif_values(beta=torch.full((4,), 0.9), alpha=torch.randn(4), threshold=torch.full((4,), 0.5))
    check_lif_values(beta=1.0, threshold=1e-6)
    for kw, match in [(dict(beta=torch.tensor([0.5, 1.5])), "beta values must lie in"),
                      (dict(threshold=torch.tensor([0.5, 0.0])), "threshold values must lie in"),
                      (dict(alpha=torch.tensor([float("nan")])), "alpha values must lie in"),
                      (dict(threshold=-1.0), "threshold must lie in")]:
        with pytest.raises(ValueError, match=match):
            check_lif_values(**kw)


@requires_cuda
def test_no_host_sync_per_call_cuda():
    """A fused call with tensor parameters on the GPU, forward and backward, never synchronises with the host."""
    from ltl_ext.functional import tandem_loss, tandem_step
    x = make_input((8, 2, 64), torch.float32, "cuda", seed=21).requires_grad_()
    beta = torch.full((64,), 0.9, device="cuda", requires_grad=True)
    threshold = torch.full((2, 64), 0.7, device="cuda", requires_grad=True)
    y = torch.rand(2, 64, device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        s, v = lif(x, beta=beta, threshold=threshold, return_v=True)
        (s.sum() + v.sum()).backward()
        for mode in ("offline", "online"):
            tandem_loss(x, y, mode=mode, beta=beta, threshold=threshold)[1].backward()
        tandem_step(x[0], y, None, None, 0, beta=beta, threshold=threshold)[1].backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert x.grad is not None and beta.grad is not None and threshold.grad is not None


def test_gpu_tensor_on_cpu_only_build(monkeypatch):
    """A CUDA tensor reaching a build without CUDA kernels gets a message that says so and how to fix it."""
    from ltl_ext.ops import library as _ops
    from torch._subclasses.fake_tensor import FakeTensorMode
    monkeypatch.setattr(_ops, "HAS_CUDA_KERNELS", False)
    with FakeTensorMode():
        x = torch.empty(3, 4, device="cuda")
    with pytest.raises(RuntimeError, match="no CUDA kernels"):
        _ops.check_device(x, "lif")


@requires_cuda
def test_mixed_devices_cuda():
    x = torch.zeros(3, 4, device="cuda")
    with pytest.raises(ValueError, match="same device"):
        lif(x, beta=torch.full((4,), 0.9))
    with pytest.raises(ValueError, match="same device"):
        lif(x, beta=0.9, v0=torch.zeros(4))


@requires_cuda
def test_cuda_matches_cpu_kernel_large_cuda():
    """The CUDA and CPU kernels agree on a large float32 problem (spikes exactly, grads closely)."""
    x = make_input((16, 1 << 16), torch.float32, "cpu", seed=16)
    outs = []
    for dev in ("cpu", "cuda"):
        xx = x.detach().to(dev).requires_grad_()
        s, v = lif(xx, beta=0.9, threshold=1.0, reset="soft", surrogate="sigmoid", return_v=True)
        (s.sum() + v.sum()).backward()
        outs.append((s.cpu(), v.cpu(), xx.grad.cpu()))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=0, atol=0)
    torch.testing.assert_close(outs[0][1], outs[1][1])
    torch.testing.assert_close(outs[0][2], outs[1][2], rtol=1e-5, atol=1e-5)


def test_the_fused_op_runs_without_the_gil():
    """The op's kernel runs with the GIL released (as torch.ops runs it): another Python thread goes on meanwhile.
    With a long switch interval the other thread gets the GIL only when a thread gives it up, so it counts only
    while the kernel runs unlocked (a held GIL gives exactly 0). A loaded machine may not schedule it in time:
    any of a few calls will do."""
    import sys
    import threading
    import time
    x = torch.rand(16, 1 << 20)
    lif(x, beta=0.9)
    count, stop = [0], [False]

    def spin():
        while not stop[0]:
            count[0] += 1
    interval, threads = sys.getswitchinterval(), torch.get_num_threads()
    sys.setswitchinterval(0.2)
    torch.set_num_threads(1)                  # a core left for the other thread
    thread = threading.Thread(target=spin)
    seen = []
    try:
        thread.start()
        for _ in range(5):
            time.sleep(0.01)
            before = count[0]
            lif(x, beta=0.9)
            seen.append(count[0] - before)
            if seen[-1] > 1000:
                break
    finally:
        stop[0] = True
        thread.join()
        sys.setswitchinterval(interval)
        torch.set_num_threads(threads)
    assert seen[-1] > 1000, seen


def test_fast_entries_take_plain_calls_and_decline_the_rest():
    """The unboxed entries (ltl_ext._C.lif_fwd, tandem_offline_fwd, tandem_online) give what torch.ops gives for
    plain arguments and answer NotImplemented (so the wrapper takes torch.ops) for anything else: a wrong count, a
    tensor subclass, a bool where the schema wants a float, an active TorchFunctionMode."""
    from torch.overrides import TorchFunctionMode
    from ltl_ext.ops.library import _C
    ops = torch.ops.ltl_ext
    x, y = make_input((4, 3, 5), torch.float32, "cpu", seed=3), torch.rand(3, 5)
    lif_args = (x, None, None, None, None, 0.9, 1.0, 1.0, "soft", 0.0, "sigmoid", None, False)
    offline_args = (x, y, None, None, None, None, 0.9, 1.0, 1.0, "hard", 0.0, "rect", None, False)
    online_args = (x, y, None, None, None, None, None, 0.9, 1.0, 1.0, "soft", 0.0, "atan", 2.0, 0, 1,
                   True, True, True, True, True, True)
    for name, args in (("lif_fwd", lif_args), ("tandem_offline_fwd", offline_args), ("tandem_online", online_args)):
        fast, boxed = getattr(_C, name)(*args), getattr(ops, name)(*args)
        assert len(fast) == len(boxed) and all(torch.equal(a, b) for a, b in zip(fast, boxed)), name
        assert getattr(_C, name)(*args[:-1]) is NotImplemented, name
    # the in-place online op: the same outputs and the same state written, each on its own copy of the state
    state = torch.rand(3, 5), torch.randint(0, 4, (3, 5), dtype=torch.uint8)
    states = [state, tuple(t.clone() for t in state)]

    def inplace(v, c):
        return (x, y, None, None, None, v, c, 0.9, 1.0, 1.0, "soft", 0.0, "atan", 2.0, 4, 1, True, True, True, True,
                True)
    fast, boxed = _C.tandem_online_(*inplace(*states[0])), ops.tandem_online_(*inplace(*states[1]))
    assert len(fast) == len(boxed) == 7 and all(torch.equal(a, b) for a, b in zip(fast, boxed))
    assert all(torch.equal(a, b) for a, b in zip(states[0], states[1]))
    assert _C.tandem_online_(*inplace(*states[0])[:-1]) is NotImplemented

    class Sub(torch.Tensor):
        pass
    assert _C.lif_fwd(x.as_subclass(Sub), *lif_args[1:]) is NotImplemented
    assert _C.lif_fwd(*lif_args[:5], True, *lif_args[6:]) is NotImplemented          # a bool for beta_s
    with TorchFunctionMode():
        assert _C.lif_fwd(*lif_args) is NotImplemented


def test_forward_mode_ad_is_refused_not_zero():
    """The fused ops have no forward-mode formulas: a dual input used to give outputs without a tangent (read as 0 by
    torch.func.jvp and hessian, a silently wrong derivative). Now a clear error; reverse mode (torch.func.grad)
    still works."""
    import torch.autograd.forward_ad as fwAD
    from torch.func import grad, hessian, jvp
    x = make_input((4, 3), torch.float64, seed=22)
    with pytest.raises(NotImplementedError, match="forward-mode AD"):
        jvp(lambda x: lif(x, beta=0.9, threshold=10.0, return_v=True)[1], (x,), (torch.ones_like(x),))
    with pytest.raises(NotImplementedError, match="forward-mode AD"):     # functorch's wrapped duals too
        hessian(lambda x: (lif(x, beta=0.9, threshold=10.0, return_v=True)[1] ** 2).sum())(x)
    with fwAD.dual_level():
        beta = fwAD.make_dual(torch.tensor(0.9, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
        with pytest.raises(NotImplementedError, match="forward-mode AD"):
            lif(x, beta=beta)
        lif(x, beta=0.9)                              # no dual argument: fine inside a level
    g = grad(lambda x: lif(x, beta=0.9, threshold=0.7, return_v=True)[1].sum())(x)
    xx = x.clone().requires_grad_()
    lif(xx, beta=0.9, threshold=0.7, return_v=True)[1].sum().backward()
    torch.testing.assert_close(g, xx.grad, rtol=0, atol=0)


@pytest.mark.parametrize("fn", [lif, lif_reference], ids=["lif", "reference"])
def test_tensor_v_reset_is_refused(fn):
    """v_reset is a float: torch.ops used to read a tensor's value silently, so a learnable v_reset got no gradient."""
    v_reset = torch.tensor(0.2, requires_grad=True)
    with pytest.raises(ValueError, match="v_reset must be a finite float"):
        fn(torch.rand(3, 4), beta=0.9, reset="hard", v_reset=v_reset)
    fn(torch.rand(3, 4), beta=0.9, reset="hard", v_reset=1)      # an int is a number


def test_double_backward_is_refused_not_zero():
    """The op is differentiable once: a gradient of its gradient (create_graph=True: a gradient penalty, a Hessian)
    used to come out as zero or None, with a warning at most. The first-order gradient under create_graph=True is
    unchanged; differentiating it again raises, also when other terms reach the input (no silent missing term)."""
    from torch.func import jacrev
    x = (make_input((6, 4), torch.float64, seed=23) * 0.1 + 0.3).requires_grad_()

    def loss():
        s, v = lif(x, beta=0.9, threshold=0.7, return_v=True)
        return (s ** 2).sum() + (v ** 2).sum()
    plain, = torch.autograd.grad(loss(), x)
    g, = torch.autograd.grad(loss(), x, create_graph=True)
    torch.testing.assert_close(g.detach(), plain, rtol=0, atol=0)
    for second in (lambda: torch.autograd.grad(g.sum(), x, allow_unused=True),
                   lambda: torch.autograd.grad((g ** 2).sum() + x.sum(), x),
                   lambda: jacrev(jacrev(lambda x: lif(x, beta=0.9, threshold=0.7, return_v=True)[1].sum()))(x)):
        with pytest.raises(RuntimeError, match="differentiable once"):
            second()
