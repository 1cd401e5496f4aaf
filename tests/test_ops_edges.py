"""The public fused ops on inputs nobody tuned for (a new user's pass): arguments of the wrong kind refused clearly by
the op and its reference alike, and parameters in every legal broadcast shape against the reference."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from ltl_ext.nn import LIF
from ltl_ext.functional import (lif, lif_reference, online_state, tandem_block, tandem_block_, tandem_block_reference,
                                tandem_block_reference_, tandem_loss, tandem_loss_reference, tandem_step,
                                tandem_step_reference)


def _problem(T=4, shape=(3,), dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn((T, *shape), generator=g, dtype=torch.float64) * 0.6 + 0.45).to(dtype)
    return x, torch.rand(shape, generator=g, dtype=torch.float64).to(dtype)


def _every_op(x, y, **kw):
    """One call of every public op and its reference on (x, y) with the keywords ``kw``."""
    v, c = online_state(x[0], x.shape[0])
    return {
        "lif": lambda: lif(x, beta=0.9, **kw), "lif_reference": lambda: lif_reference(x, beta=0.9, **kw),
        **{f"{fn.__name__}-{mode}": (lambda fn=fn, mode=mode: fn(x, y, mode=mode, beta=0.9, **kw))
           for fn in (tandem_loss, tandem_loss_reference) for mode in ("offline", "online")},
        **{fn.__name__: (lambda fn=fn: fn(x, y, None, None, 0, beta=0.9, **kw))
           for fn in (tandem_block, tandem_block_reference)},
        **{fn.__name__: (lambda fn=fn: fn(x[0], y, None, None, 0, beta=0.9, **kw))
           for fn in (tandem_step, tandem_step_reference)},
        **{fn.__name__: (lambda fn=fn: fn(x, y, v.clone(), c.clone(), 0, beta=0.9, **kw))
           for fn in (tandem_block_, tandem_block_reference_)},
    }


def _refused_by_all(calls: dict, exc: type, match: str) -> None:
    """Every call raises ``exc`` with a message matching ``match``; a failure lists the ops that did not."""
    failed = []
    for name, call in calls.items():
        try:
            call()
            failed.append(f"{name}: no error")
        except exc as e:
            if not re.search(match, str(e)):
                failed.append(f"{name}: {type(e).__name__}: {e}")
        except Exception as e:   # another exception: the unclear error the test is about
            failed.append(f"{name}: {type(e).__name__}: {e}")
    assert not failed, "\n".join(failed)


@pytest.mark.parametrize("value", [torch.tensor(2.0, requires_grad=True), True, np.float32(2.0)],
                         ids=["learnable_tensor", "True", "numpy_float32"])
def test_surrogate_alpha_is_a_number(value):
    """The fused ops read a tensor surrogate_alpha by value (a learnable one silently got no gradient) and True as
    1.0, where the references refuse both: now every op refuses them, as it does a tensor v_reset."""
    x, y = _problem()
    _refused_by_all(_every_op(x, y, surrogate_alpha=value), ValueError, "surrogate_alpha must be a positive float")
    for call in _every_op(x, y, surrogate_alpha=3).values():   # an int is a number
        call()


@pytest.mark.parametrize("value", ["False", 1, None], ids=["string", "int", "None"])
def test_detach_reset_is_a_bool(value):
    """detach_reset="False" ran the references and nn.LIF with the reset detached (bool("False") is True), and the
    fused ops answered with the dispatcher's schema message: now every op, its reference and nn.LIF refuse it."""
    x, y = _problem()
    _refused_by_all(_every_op(x, y, detach_reset=value), TypeError, "detach_reset must be True or False")
    with pytest.raises(TypeError, match="detach_reset must be True or False"):
        LIF(0.9, 1.0, detach_reset=value)
    for call in _every_op(x, y, detach_reset=np.bool_(True)).values():   # numpy's bool is a bool
        call()


@pytest.mark.parametrize("fn", [tandem_block_, tandem_block_reference_])
def test_inplace_state_that_shares_memory_is_refused(fn):
    """tandem_block_(x, y, v, v, ...) took the same tensor as v and count, each update overwriting the other: a wrong
    state with no error. State that shares memory with the other state or the inputs is refused before any write."""
    x, y = _problem()
    v, c = online_state(x[0], 4)
    v32 = torch.zeros(x.shape[1:])
    flat = torch.zeros(2 * x[0].numel())
    for args, names in [((x, y, v32, v32), "v and count"), ((x, y, flat[:3], flat[1:4]), "v and count"),
                        ((x, y, x[0], c), "x and v"), ((x, y, v, y), "target and count")]:
        before = [t.clone() for t in args]
        with pytest.raises(ValueError, match=f"{names} share memory"):
            fn(*args, 0, beta=0.9)
        assert all(torch.equal(a, b) for a, b in zip(args, before))
    fn(x, y, v, c, 0, beta=0.9)   # a state of its own
    state = torch.zeros(2, *x.shape[1:])
    fn(x, y, state[0], state[1], 0, beta=0.9)   # views of one buffer that do not overlap


@pytest.mark.parametrize("target", [[0.5, 0.5, 0.5], 0.5], ids=["list", "float"])
def test_a_target_that_is_not_a_tensor_is_a_type_error(target):
    """The fused tandem ops answered a non-tensor target with an AttributeError (online, blocks, steps) or the
    dispatcher's schema message (offline); the references with a TypeError. Now all say the same."""
    x, _ = _problem()
    calls = {name: call for name, call in _every_op(x, target).items() if not name.startswith("lif")}
    _refused_by_all(calls, TypeError, "target must be a floating tensor")


@pytest.mark.parametrize("x", [torch.zeros(0, 3), torch.tensor(0.5)], ids=["T0", "0d"])
def test_online_loss_without_time_steps_names_x(x):
    """An online tandem_loss of an x without time steps blamed the warmup ("warmup = 0 leaves no step to learn
    from with T = 0"); it is x's error, said as the offline mode and the reference say it."""
    y = torch.rand(3)
    for fn in (tandem_loss, tandem_loss_reference):
        with pytest.raises(ValueError, match="x has T = 0|leading time dimension"):
            fn(x, y, mode="online", beta=0.9)


@pytest.mark.parametrize("fn", [tandem_block, tandem_block_reference, tandem_block_, tandem_block_reference_])
@pytest.mark.parametrize("x,exc,match", [(torch.zeros(0, 3), ValueError, "T = 0"),
                                         (torch.tensor(0.5), ValueError, "leading time dimension"),
                                         ([[0.5, 0.5, 0.5]], TypeError, "x must be a torch.Tensor")],
                         ids=["n0", "0d", "list"])
def test_block_of_no_steps_or_no_tensor(fn, x, exc, match):
    """The reference blocks answered a block of no steps with torch.stack's "expects a non-empty TensorList", and the
    in-place one a 0-d or list x with an IndexError / AttributeError: now the op's messages."""
    v, c = online_state(torch.zeros(3), 4)
    with pytest.raises(exc, match=match):
        fn(x, torch.rand(3), v, c, 0, beta=0.9)


def test_reference_inplace_state_of_another_shape_is_refused_before_any_write():
    """tandem_block_reference_ with a count of another shape wrote v, then failed in count.copy_ with a broadcast
    RuntimeError: half a state update. Now a ValueError as the op's, before anything is written."""
    x, y = _problem()
    for bad in ("v", "count"):
        v, c = online_state(x[0], 4)
        state = {"v": v, "count": c}
        state[bad] = torch.zeros(1, dtype=state[bad].dtype)
        before = {k: t.clone() for k, t in state.items()}
        for fn in (tandem_block_, tandem_block_reference_):
            with pytest.raises(ValueError, match=f"in-place state {bad} must be a .*neuron shape"):
                fn(x, y, state["v"], state["count"], 0, beta=0.9)
        assert all(torch.equal(state[k], before[k]) for k in state)


# ---- parameters in every broadcast shape, against the reference ------------------------------------------------
_LAYOUTS = {"per_channel": (3, 1, 1), "batch_channel": (1, 3, 1, 1), "per_feature": (4, 5), "per_row": (2, 1, 1, 1),
            "hole": (3, 1, 5), "one": ()}


@pytest.mark.parametrize("layout", list(_LAYOUTS))
@pytest.mark.parametrize("op", ["offline", "online", "block"])
def test_tandem_parameters_in_every_broadcast_shape(op, layout):
    """beta / alpha / threshold of every legal broadcast shape over neurons [B, C, H, W], some learnable and some
    not, x transposed (non-contiguous): loss and every gradient as the reference's (float64)."""
    g = torch.Generator().manual_seed(1)
    shape = _LAYOUTS[layout]
    mk = lambda lo, hi: torch.rand(shape, generator=g, dtype=torch.float64) * (hi - lo) + lo   # noqa: E731
    x = (torch.randn(5, 3, 2, 4, 5, generator=g, dtype=torch.float64) * 0.6 + 0.45).transpose(1, 2)
    y = torch.rand(2, 3, 4, 5, generator=g, dtype=torch.float64)
    kw = dict(beta=mk(0.5, 1.0).requires_grad_(), alpha=mk(0.5, 1.5), threshold=mk(0.6, 1.2).requires_grad_(),
              reset="hard", v_reset=0.1)
    calls = {"offline": (tandem_loss, tandem_loss_reference, lambda f, x: f(x, y, **kw)[1]),
             "online": (tandem_loss, tandem_loss_reference, lambda f, x: f(x, y, mode="online", warmup=1, **kw)[1]),
             "block": (tandem_block, tandem_block_reference,
                       lambda f, x: f(x, y, torch.full(y.shape, 0.2, dtype=torch.float64), torch.ones_like(y), 2,
                                      warmup=1, **kw)[1])}
    fused, reference, loss_of = calls[op]
    results = []
    for f in (fused, reference):
        xx = x.detach().requires_grad_()
        loss = loss_of(f, xx)
        results.append((loss, *torch.autograd.grad(loss, [xx, kw["beta"], kw["threshold"]])))
    for name, a, b in zip(["loss", "x", "beta", "threshold"], *results):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("op", ["lif", "offline", "online"])
def test_no_neurons_with_a_broadcast_learnable_parameter(op):
    """A neuron dim of size 0 with a parameter broadcast over it (per channel) divided by zero in the C++ gradient
    reduction: the process died of SIGFPE. The parameter's gradient is zeros of its shape, as the reference's."""
    x = torch.randn(5, 2, 3, 0, 5, dtype=torch.float64, requires_grad=True)
    grads = []
    for fused in (True, False):
        beta = torch.full((3, 1, 1), 0.9, dtype=torch.float64, requires_grad=True)
        if op == "lif":
            out = (lif if fused else lif_reference)(x, beta=beta).sum()
        else:
            fn = tandem_loss if fused else tandem_loss_reference
            out = fn(x, torch.rand(2, 3, 0, 5, dtype=torch.float64), mode=op, beta=beta)[1]
        if out.requires_grad:
            out.backward()
        grads.append(beta.grad)
    assert grads[0] is not None and torch.equal(grads[0], torch.zeros(3, 1, 1, dtype=torch.float64))
    assert grads[1] is None or torch.equal(grads[0], grads[1])


@pytest.mark.parametrize("op", ["lif", "offline", "online"])
def test_non_reentrant_checkpointing_gives_the_plain_gradient(op):
    """The LIF op's backward unpacked its saved tensors with autograd off, so a non-reentrant torch.utils.checkpoint
    recomputed nothing and raised CheckpointError ('saved during forward: 1, during recomputation: 0')."""
    from torch.utils.checkpoint import checkpoint
    x0, y = _problem(shape=(6,), dtype=torch.float64)

    def run(x):
        if op == "lif":
            return lif(x * 1.0, beta=0.9).sum()
        return tandem_loss(x * 1.0, y, mode=op, beta=0.9)[1]
    x = x0.clone().requires_grad_(True)
    checkpoint(run, x, use_reentrant=False).backward()
    plain = x0.clone().requires_grad_(True)
    run(plain).backward()
    assert torch.equal(x.grad, plain.grad)
