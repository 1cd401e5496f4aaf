"""Edges of multi-process training (ltl_ext.distributed) a user meets: data that is not a plain DataLoader, samplers
that must not be replaced, models or settings that differ across ranks, a peer gone before ``close``.

Checks that need no process group run in this process on :class:`Distributed` objects of each rank (sharding
makes no collective); the others run 2 processes with gloo on CPU, started as tests/test_distributed.py starts them.
"""
from __future__ import annotations

import os
import time
import traceback

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, SubsetRandomSampler, TensorDataset, WeightedRandomSampler
from torch.utils.data.distributed import DistributedSampler

from ltl_ext.distributed import Distributed, DistributedError, launch_env
from test_distributed import BATCH, EPOCHS, WORLD, _spawn, _torchrun_env, make_data, make_trainer, \
    make_trainer_teacher

RANKS = [Distributed(rank=r, world_size=WORLD) for r in range(WORLD)]      # no collective runs on these


def _samples(loader):
    return torch.cat([b[0] for b in loader]).tolist()


# ------------------------------------------------------------------------------------------------------------
# Samplers and loaders (in this process)
# ------------------------------------------------------------------------------------------------------------

def test_a_sampler_that_draws_part_of_the_dataset_is_refused_not_replaced():
    """A SubsetRandomSampler (a train/validation split of one dataset), a list of indices, a weighted or a
    with-replacement sampler was silently replaced by a split of the whole dataset: every rank trained (and
    evaluated) on all of it, validation samples included."""
    ds = TensorDataset(torch.arange(20))
    part = list(range(8))
    for sampler in (SubsetRandomSampler(part), part, WeightedRandomSampler([1.0] * 20, 20),
                    RandomSampler(ds, replacement=True), RandomSampler(ds, num_samples=8)):
        for train in (True, False):
            with pytest.raises(DistributedError, match="Subset"):
                RANKS[0].shard_loader(DataLoader(ds, batch_size=4, sampler=sampler), train=train)
    # the plain samplers still split the whole dataset, each sample once
    for shuffle in (True, False):
        for train in (True, False):
            shares = [_samples(d.shard_loader(DataLoader(ds, batch_size=4, shuffle=shuffle), train=train))
                      for d in RANKS]
            assert sorted(shares[0] + shares[1]) == list(range(20))
    subset = torch.utils.data.Subset(ds, part)           # the way the error points to
    shares = [_samples(d.shard_loader(DataLoader(subset, batch_size=4, shuffle=True), train=True)) for d in RANKS]
    assert sorted(shares[0] + shares[1]) == part


def test_a_distributed_sampler_built_for_another_rank_is_refused():
    """A loader already split (its sampler has num_replicas and rank) was passed through unchanged, also when it
    was built for another rank or world size: the ranks then trained on the same share."""
    ds = TensorDataset(torch.arange(10))
    mine = DataLoader(ds, batch_size=2, sampler=DistributedSampler(ds, num_replicas=WORLD, rank=1))
    assert RANKS[1].shard_loader(mine, train=True) is mine
    with pytest.raises(DistributedError, match="rank 1 of 2, but this is rank 0 of 2"):
        RANKS[0].shard_loader(mine, train=True)
    wrong_size = DataLoader(ds, batch_size=2, sampler=DistributedSampler(ds, num_replicas=4, rank=0))
    with pytest.raises(DistributedError, match="rank 0 of 4"):
        RANKS[0].shard_loader(wrong_size, train=True)


def test_a_list_of_batches_is_split_across_the_ranks():
    """fit takes a list of (inputs, labels) batches; with several processes it failed with "'list' object has no
    attribute 'sampler'". Each batch is now the global batch, split across the ranks as a whole-batch loader's."""
    x = torch.arange(22.0).view(11, 2)
    batches = [(x[:4], torch.arange(4)), (x[4:7], torch.arange(4, 7)), (x[7:], torch.arange(7, 11)),
               (x[:0], torch.arange(0))]
    train = [d.shard_loader(batches, train=True) for d in RANKS]
    assert [len(s) for s in train] == [4, 4]
    shares = [list(s) for s in train]
    assert [b[1].tolist() for b in shares[0]] == [[0, 2], [4, 6], [7, 9]]
    assert [b[1].tolist() for b in shares[1]] == [[1, 3], [5, 4], [8, 10]]      # padded: equal shares
    for s in shares:
        for xb, yb in s:
            assert torch.equal(xb, x[yb])
    assert [len(list(s)) for s in train] == [3, 3]                              # re-iterable (epochs)
    evaluation = [[b[1].tolist() for b in d.shard_loader(batches, train=False)] for d in RANKS]
    assert evaluation == [[[0, 2], [4, 6], [7, 9]], [[1, 3], [5], [8, 10]]]    # no padding
    assert RANKS[0].shard_loader(train[0], train=True) is train[0]                # already split


def test_time_major_sequence_batches_are_split_along_the_batch():
    """ltl_ext.data.SequenceBatches (x [T, B, ...], encoding="none") is not a DataLoader either: its batches are split
    along B, the labels' axis, and the ranks' shares interleave into the one-process batch."""
    from ltl_ext.data.sequences import SequenceBatches
    g = torch.Generator().manual_seed(0)
    xs, ys = torch.rand(10, 3, 2, generator=g), torch.arange(10)                  # 10 sequences of T=3 steps
    one = list(SequenceBatches(xs, ys, 4, shuffle=True, seed=1))
    shares = [list(d.shard_loader(SequenceBatches(xs, ys, 4, shuffle=True, seed=1), train=False)) for d in RANKS]
    for i, (xb, yb) in enumerate(one):
        merged_x, merged_y = torch.empty_like(xb), torch.empty_like(yb)
        for r in range(WORLD):
            merged_x[:, r::WORLD], merged_y[r::WORLD] = shares[r][i]
        assert torch.equal(merged_x, xb) and torch.equal(merged_y, yb), i
    with pytest.raises(DistributedError, match="batch size 4"):                     # no axis of the batch size
        list(RANKS[0].shard_loader([(torch.zeros(3, 5), torch.arange(4))], train=True))


# ------------------------------------------------------------------------------------------------------------
# The launch environment and the timeout (in this process)
# ------------------------------------------------------------------------------------------------------------

def test_rank_without_world_size_is_an_error_not_a_lone_run():
    """RANK without WORLD_SIZE (or the reverse) ran each process alone, on all the data, writing the same files."""
    for env, missing in (({"RANK": "1"}, "WORLD_SIZE"), ({"WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "RANK")):
        with pytest.raises(DistributedError, match=f"{missing} is not"):
            launch_env(env)
    assert launch_env({}) is None


@pytest.mark.parametrize("value", ["0", "-5", "inf", "nan", "1e10"])
def test_a_timeout_that_torch_cannot_hold_is_refused_by_name(monkeypatch, value):
    """LTL_DIST_TIMEOUT=0 (or 1e10) made joining fail at once with "timed out after 0ms", read as a network
    problem; inf and nan failed with a bare OverflowError / ValueError."""
    monkeypatch.setenv("LTL_DIST_TIMEOUT", value)
    for k in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(DistributedError, match="LTL_DIST_TIMEOUT must be a number of seconds in"):
        Distributed.setup("cpu")


def test_a_timeout_argument_out_of_range_is_refused():
    for bad in (0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="timeout_s must be in"):
            Distributed(timeout_s=bad)
    for bad in (True, "10"):
        with pytest.raises(TypeError, match="timeout_s must be a number"):
            Distributed(timeout_s=bad)
    assert Distributed(timeout_s=30).timeout_s == 30.0


# ------------------------------------------------------------------------------------------------------------
# Two processes
# ------------------------------------------------------------------------------------------------------------

def _run(rank, port, out_dir, body):
    _torchrun_env(rank, port)
    try:
        result = body(rank)
    except BaseException as e:
        result = {"type": type(e).__name__, "message": str(e), "trace": traceback.format_exc()}
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))


def _different_teachers(rank):
    messages = []
    with Distributed.setup("cpu", timeout_s=5) as dist:
        # rank 1 was given another model: the same number of tensors of other shapes, then more tensors
        for model in (nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 2)) if rank == 0 else
                      nn.Sequential(nn.Linear(6, 4), nn.Linear(4, 2)),
                      nn.Sequential(*[nn.Linear(3, 3) for _ in range(2 + rank)])):
            try:
                dist.broadcast_module(model)
            except ValueError as e:
                messages.append(str(e))
        dist.broadcast_module(nn.Linear(2, 2))                   # the group is still usable
    return {"messages": messages}


def _worker_different_teachers(rank, port, out_dir):
    _run(rank, port, out_dir, _different_teachers)


def test_models_that_differ_across_ranks_get_one_clear_error(tmp_path):
    """broadcast_module (the teacher) with another model on rank 1: the process was aborted by gloo ("Received data
    size doesn't match"), or its peer waited for the timeout, or equal-sized tensors were copied into the wrong
    places. Every rank now raises the same ValueError, naming the tensors."""
    results = _spawn(_worker_different_teachers, tmp_path, deadline_s=40)
    for res in results:
        assert "type" not in res, res
        shapes, count = res["messages"]
        assert "differs on rank 1: 0.weight (4, 6) torch.float32 where rank 0 has 0.weight (6, 4)" in shapes
        assert "differs on rank 1: 6 tensors where rank 0 has 4" in count
    assert results[0] == results[1]


def _fallback_buffers(rank):
    import ltl_ext.distributed.group as group
    group._ddp_kwargs = lambda: {"broadcast_buffers": False}      # what torch < 2.13 is given
    with Distributed.setup("cpu", timeout_s=20) as dist:
        model = nn.Linear(2, 2)
        model.register_buffer("threshold", torch.tensor([1.0 + rank]))   # balanced on this rank's data, say
        torch.nn.init.constant_(model.weight, float(rank))
        dist.wrap(model)
        return {"threshold": model.threshold.item(), "weight": model.weight.sum().item()}


def _worker_fallback_buffers(rank, port, out_dir):
    _run(rank, port, out_dir, _fallback_buffers)


def test_wrap_gives_every_rank_rank_0s_buffers_on_every_torch(tmp_path):
    """Before torch 2.13 the stepwise state could stay per rank only with broadcast_buffers=False, which also kept
    the buffers (LIF thresholds, ...) out of DDP's sync at wrapping: the ranks trained with their own."""
    results = _spawn(_worker_fallback_buffers, tmp_path, deadline_s=60)
    for res in results:
        assert "type" not in res, res
    assert [r["threshold"] for r in results] == [1.0, 1.0]
    assert [r["weight"] for r in results] == [0.0, 0.0]


def _peer_gone_before_close(rank):
    dist = Distributed.setup("cpu", timeout_s=5)
    if rank == 1:
        dist._abort()                 # leaves without closing: its connections close when the process exits
        return {}
    deadline = time.monotonic() + 20
    while not os.path.exists(os.path.join(os.environ["EDGE_OUT"], "rank1.pt")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    dist.close()
    return {}


def _worker_peer_gone(rank, port, out_dir):
    os.environ["EDGE_OUT"] = out_dir
    _run(rank, port, out_dir, _peer_gone_before_close)


def test_close_after_the_peer_is_gone_says_so(tmp_path):
    """close() after a peer died: its barrier failed (and destroyed the group), then close destroyed it again and
    raised "AssertionError: Process group cannot be None" in place of the DistributedError."""
    r0, r1 = _spawn(_worker_peer_gone, tmp_path, deadline_s=40)
    assert r1 == {}
    assert r0.get("type") == "DistributedError", r0
    assert "closing failed" in r0["message"]


def _trainer_on_lists(rank):
    with Distributed.setup("cpu", timeout_s=30) as dist:
        return _fit_lists(dist)


def _fit_lists(dist):
    x, y = make_data().tensors
    batches = [(x[:BATCH], y[:BATCH]), (x[BATCH:BATCH + 10], y[BATCH:BATCH + 10]), (x[BATCH + 10:], y[BATCH + 10:])]
    trainer = make_trainer(make_trainer_teacher(0), "offline", "batched", dist, 0)
    history = trainer.fit(batches, epochs=EPOCHS, progress=False)
    report = trainer.evaluate(batches)
    flat = torch.nn.utils.parameters_to_vector(trainer.student.parameters()).detach()
    return {"params": flat, "loss": [h["loss"] for h in history], "samples": [h["samples"] for h in history],
            "eval": (report["samples"], report["student_acc"])}


def _worker_trainer_on_lists(rank, port, out_dir):
    _run(rank, port, out_dir, _trainer_on_lists)


def test_the_trainer_on_a_list_of_batches_equals_one_process(tmp_path):
    results = _spawn(_worker_trainer_on_lists, tmp_path, deadline_s=90)
    for res in results:
        assert "type" not in res, res
    ref = _fit_lists(Distributed.single("cpu"))
    assert torch.equal(results[0]["params"], results[1]["params"])
    torch.testing.assert_close(results[0]["params"], ref["params"], rtol=1e-9, atol=1e-11)
    assert results[0]["loss"] == pytest.approx(ref["loss"], rel=1e-9)
    assert results[0]["samples"] == ref["samples"] == [32] * EPOCHS
    assert results[0]["eval"][0] == ref["eval"][0] == 32
    assert results[0]["eval"][1] == pytest.approx(ref["eval"][1], rel=1e-12)


class _Interrupted(Exception):
    pass


def _resume_mid_epoch(rank):
    from ltl_ext.train import LocalTandemTrainer
    from ltl_ext.train.callbacks import Callback, CallbackList

    class StopAtStep2(Callback):                 # an interruption after step 1's checkpoint
        def on_step_end(self, trainer, step, stats):
            if step == 2:
                raise _Interrupted()

    ckpt = os.path.join(os.environ["EDGE_OUT"], "mid_epoch.pt")
    with Distributed.setup("cpu", timeout_s=30) as dist:
        loader = DataLoader(make_data(), batch_size=BATCH, shuffle=True)
        whole = make_trainer(make_trainer_teacher(0), "offline", "batched", dist, 0)
        uninterrupted = whole.fit(loader, epochs=1, progress=False)[0]
        first = make_trainer(make_trainer_teacher(0), "offline", "batched", dist, 0)
        first.callbacks = CallbackList([StopAtStep2()])
        with pytest.raises(_Interrupted):
            first.fit(loader, epochs=1, progress=False, checkpoint=ckpt, checkpoint_every=1)
        resumed = LocalTandemTrainer.load(ckpt, teacher=make_trainer_teacher(0), distributed=dist)
        step = resumed.step_in_epoch
        entry = resumed.fit(loader, epochs=1, progress=False)[0]
        keys = ("loss", "ce", "samples")
        return {"step": step, "uninterrupted": {k: uninterrupted[k] for k in keys},
                "resumed": {k: entry[k] for k in keys}}


def _worker_resume_mid_epoch(rank, port, out_dir):
    os.environ["EDGE_OUT"] = out_dir
    _run(rank, port, out_dir, _resume_mid_epoch)


def test_a_mid_epoch_resume_logs_the_epoch_loss_of_an_uninterrupted_run(tmp_path):
    """The checkpoint held rank 0's partial sums of the epoch's losses; restored on every rank and summed over the
    ranks at the epoch's end, they counted twice: the resumed epoch logged another loss (1.2172 for 1.2046) and
    more samples than it has."""
    results = _spawn(_worker_resume_mid_epoch, tmp_path, deadline_s=90)
    for res in results:
        assert "type" not in res, res
        assert res["step"] == 1
        assert res["resumed"]["samples"] == res["uninterrupted"]["samples"] == 32
        assert res["resumed"]["loss"] == pytest.approx(res["uninterrupted"]["loss"], rel=1e-12)
        assert res["resumed"]["ce"] == pytest.approx(res["uninterrupted"]["ce"], rel=1e-12)


def test_the_csv_logger_writes_on_rank_0_only(tmp_path):
    """A CSVLogger given to a trainer under torchrun wrote from every rank through one temporary file (a race that
    could fail with FileNotFoundError), and TensorBoardLogger made one event file per rank."""
    from types import SimpleNamespace

    from ltl_ext.train.callbacks import CSVLogger
    entry = {"epoch": 1, "loss": 0.5}
    for rank in (1, 0):
        trainer = SimpleNamespace(dist=Distributed(rank=rank, world_size=WORLD))
        CSVLogger(tmp_path / f"rank{rank}.csv").on_epoch_end(trainer, entry)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0.csv"]


def test_tensorboard_writes_on_rank_0_only(tmp_path):
    pytest.importorskip("torch.utils.tensorboard")
    from types import SimpleNamespace

    from ltl_ext.train.callbacks import TensorBoardLogger
    entry = {"epoch": 1, "loss": 0.5}
    for rank in (1, 0):
        logger = TensorBoardLogger(tmp_path / f"tb{rank}", every=1)
        trainer = SimpleNamespace(dist=Distributed(rank=rank, world_size=WORLD))
        logger.on_step_end(trainer, 1, {"loss": 0.5})
        logger.on_epoch_end(trainer, entry)
        logger.close()
    assert not (tmp_path / "tb1").exists() and any((tmp_path / "tb0").iterdir())
