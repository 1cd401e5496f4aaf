"""Traps in the public functional ops, found by a new user's pass: each test is one problem that answered wrongly, or
differently from its twin (op / reference), before its fix."""
from __future__ import annotations

import pytest
import torch

from ltl_ext.functional import (lif, lif_reference, online_state, surrogate_grad, tandem_block, tandem_block_,
                                tandem_block_reference, tandem_block_reference_, tandem_loss, tandem_loss_reference,
                                tandem_step, tandem_step_reference)
from ltl_ext.ops.params import check_lif_values


def _problem(T=4, shape=(2, 3), dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn((T, *shape), generator=g, dtype=torch.float64) * 0.6 + 0.45).to(dtype)
    return x, torch.rand(shape, generator=g, dtype=torch.float64).to(dtype)


def _warmup_loss(fn, x, y, beta):
    """The loss of a call made entirely inside the warmup (warmup = 10 > every step of x)."""
    if fn in (tandem_step, tandem_step_reference):
        return fn(x[0], y, None, None, 0, warmup=10, beta=beta)[1]
    if fn in (tandem_block_, tandem_block_reference_):
        return fn(x, y, *online_state(x[0], x.shape[0]), 0, warmup=10, beta=beta)[1]
    return fn(x, y, None, None, 0, warmup=10, beta=beta)[1]


@pytest.mark.parametrize("op,reference", [(tandem_step, tandem_step_reference), (tandem_block, tandem_block_reference),
                                          (tandem_block_, tandem_block_reference_)], ids=["step", "block", "block_"])
def test_reference_loss_in_warmup_has_zero_gradients_as_the_op(op, reference):
    """A reference step or block inside the warmup returned a loss outside the graph: ``loss.backward()`` raised
    'element 0 of tensors does not require grad' where the fused op's zero loss gives zero gradients."""
    x0, y0 = _problem()
    grads = []
    for fn in (op, reference):
        x, y = x0.clone().requires_grad_(), y0.clone().requires_grad_()
        beta = torch.full((3,), 0.9, dtype=torch.float64, requires_grad=True)
        loss = _warmup_loss(fn, x, y, beta)
        assert loss.requires_grad and float(loss.detach()) == 0.0, fn.__name__
        grads.append(torch.autograd.grad(loss, [x, y, beta]))
    for a, b in zip(*grads):
        assert torch.equal(a, torch.zeros_like(a)) and torch.equal(a, b)


@pytest.mark.parametrize("fn", [tandem_block_, tandem_block_reference_])
def test_inplace_block_takes_a_target_that_is_a_view_of_x(fn):
    """tandem_block_(x, x[-1], v, count, ...) was refused with 'x and target share memory; ... v and count must be
    tensors of their own': both are only read. Only the written state must not share memory with anything."""
    x, _ = _problem()
    results = []
    for target in (x[-1], x[-1].clone()):
        v, c = online_state(x[0], x.shape[0])
        s, loss = fn(x, target, v, c, 0, beta=0.9)
        results.append((s, loss, v, c))
    for a, b in zip(*results):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="x and v share memory"):   # the state still may not
        fn(x, x[-1], x[0], online_state(x[0], 4)[1], 0, beta=0.9)


@pytest.mark.parametrize("name,value", [("reset", None), ("reset", ["soft"]), ("surrogate", None)])
def test_reset_or_surrogate_that_is_not_a_string_is_the_references_error(name, value):
    """The fused ops answered reset=None (or a list) with the dispatcher's "Expected a value of type 'str'"
    RuntimeError, where the references say which values are legal: now every op says it."""
    x, y = _problem()
    v, c = online_state(x[0], x.shape[0])
    kw = {name: value, "beta": 0.9}
    calls = {"lif": lambda f: f(x, **kw), "offline": lambda f: f(x, y, **kw),
             "online": lambda f: f(x, y, mode="online", **kw), "block": lambda f: f(x, y, None, None, 0, **kw),
             "block_": lambda f: f(x, y, v, c, 0, **kw)}
    pairs = {"lif": (lif, lif_reference), "offline": (tandem_loss, tandem_loss_reference),
             "online": (tandem_loss, tandem_loss_reference), "block": (tandem_block, tandem_block_reference),
             "block_": (tandem_block_, tandem_block_reference_)}
    for kind, call in calls.items():
        for fn in pairs[kind]:
            with pytest.raises(ValueError, match=f"{name} must be one of"):
                call(fn)


@pytest.mark.parametrize("kw", [dict(threshold=torch.tensor([1.0, float("inf"), 1.0])),
                                dict(alpha=torch.tensor([1.0, -float("inf"), 1.0]))], ids=["threshold", "alpha"])
def test_infinite_threshold_or_alpha_is_refused_not_nan(kw):
    """A threshold tensor of inf (a neuron meant never to fire) was legal, '(0, inf]', yet the soft reset's
    H - threshold * S is inf * 0: NaN in V and every gradient, no error (an infinite alpha the same). The spec and
    the check made where values are set (nn.LIF) refuse infinities, and so does the fused CPU op's own value check
    (csrc/op.h), with the same bounds."""
    x, y = _problem(shape=(3,))
    name = next(iter(kw))
    with pytest.raises(ValueError, match=rf"{name} values must lie in .*, inf\)"):
        check_lif_values(**kw)
    for op in (lambda: lif(x, beta=0.9, **kw), lambda: tandem_loss(x, y, beta=0.9, **kw),
               lambda: tandem_loss(x, y, mode="online", beta=0.9, **kw)):
        with pytest.raises(ValueError, match=rf"{name} values must lie in .*, inf\)"):
            op()
    with pytest.raises(ValueError, match=rf"{name} values must lie in"):
        lif_reference(x, beta=0.9, **kw)
    with pytest.raises(ValueError, match=rf"{name} values must lie in"):
        tandem_loss_reference(x, y, beta=0.9, **kw)
    with pytest.raises(ValueError, match=r"threshold must lie in \(0.0, inf\), got inf"):   # not "(0, inf]"
        check_lif_values(threshold=float("inf"))


@pytest.mark.parametrize("steps", [None, "16", -1, 0, True, 16.0])
def test_online_state_steps_is_a_positive_int(steps):
    """online_state(x_t, None) failed with "'<=' not supported between 'NoneType' and 'int'", and steps = -1 or 0
    made a state for no run at all: a ValueError that says what steps is."""
    with pytest.raises(ValueError, match="steps must be the run's number of time steps"):
        online_state(torch.zeros(3), steps)


@pytest.mark.parametrize("kind", ["rect", "sigmoid", "atan", "fast_sigmoid"])
def test_surrogate_grad_refuses_a_non_positive_a(kind):
    """surrogate_grad(u, kind, a) took a <= 0, which the ops refuse as surrogate_alpha: a negative sigmoid or atan
    surrogate flips the sign of the gradient, a fast_sigmoid one divides by zero at |u| = -1/a. None is the
    surrogate's default, as for the ops."""
    u = torch.linspace(-1, 1, 9, dtype=torch.float64)
    for a in (-2.0, 0.0, float("nan"), True):
        with pytest.raises(ValueError, match="surrogate_alpha must be a positive float"):
            surrogate_grad(u, kind, a)
    default = {"rect": 0.2, "sigmoid": 4.0, "atan": 2.0, "fast_sigmoid": 25.0}[kind]
    assert torch.equal(surrogate_grad(u, kind, None), surrogate_grad(u, kind, default))


@pytest.mark.filterwarnings("ignore:There is a performance drop")   # vmap's fallback: no batching rule
@pytest.mark.parametrize("op", ["online", "block", "step"])
def test_online_gradients_of_vmapped_inputs(op):
    """vmap over the online op's inputs, backward outside it (per-sample betas, a hyperparameter sweep): a batched
    tensor reports requires_grad False, so the op wrote no local gradient for it, and autograd summed the empty
    gradient into zeros for a 0-d beta (no error) or refused it for x and the target. Now: the reference's gradients."""
    x0, y0 = _problem(shape=(3,))
    calls = {"online": lambda f, x, y, b: f(x, y, mode="online", warmup=1, beta=b)[1],
             "block": lambda f, x, y, b: f(x, y, None, None, 0, warmup=1, beta=b)[1],
             "step": lambda f, x, y, b: f(x[1], y, x[0].detach() * 0.5, torch.ones_like(x[0]), 1, beta=b)[1]}
    ops = {"online": (tandem_loss, tandem_loss_reference), "block": (tandem_block, tandem_block_reference),
           "step": (tandem_step, tandem_step_reference)}[op]
    betas = torch.tensor([0.5, 0.7, 0.9], dtype=torch.float64)
    grads = []
    for fused, fn in zip((True, False), ops):
        x, y, b = (t.clone().requires_grad_() for t in (x0, y0, betas))
        if fused:   # per-sample x [T], target [] and beta [], batched over the neurons / the sweep
            losses = torch.func.vmap(lambda xs, ys, bs: calls[op](fn, xs, ys, bs), in_dims=(1, 0, 0))(x, y, b)
        else:
            losses = torch.stack([calls[op](fn, x[:, i], y[i], b[i]) for i in range(3)])
        (losses * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)).sum().backward()
        grads.append((x.grad, y.grad, b.grad))
    assert torch.count_nonzero(grads[1][2]) > 0   # a gradient that zero would not pass for
    for name, a, b in zip(["x", "target", "beta"], *grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=lambda m: f"{name}: {m}")
