"""Multi-process LTL (ltl_ext.distributed): 2 processes, gloo on CPU, loopback, a tiny data set.

- the ranks stay in sync (bitwise identical parameters after every optimiser step), and the result equals one
  process with the same global batch, for offline, online (batched) and online constant-memory LTL (a backward
  per time step under ``no_sync``, one all-reduce per batch); per-batch percentile targets use the global batch;
- a rank that raises stops the other one with a clear error within the timeout;
- metrics, evaluation shards and the global percentile are exact.

The workers run in ``spawn``-ed processes with torchrun's environment variables, so ``Distributed.setup()`` takes
the same path as under ``torchrun``. Float64 throughout, so that "equal within float tolerance" is tight.
"""
from __future__ import annotations

import math
import os
import time
import traceback

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from ltl_ext import functional as LF
from ltl_ext.distributed import Distributed, DistributedError, ShardSampler, free_port, launch_env

WORLD = 2
T, WARMUP = 6, 3
LIF = dict(beta=0.9048, threshold=0.6, reset="hard", surrogate="rect")
N_SAMPLES, BATCH, EPOCHS = 32, 16, 2      # global batch 16 (8 per rank): 2 optimiser steps per epoch
MODES = ("offline", "online", "constant")


# ------------------------------------------------------------------------------------------------------------
# A tiny teacher / student pair with local tandem losses (ltl-method.md §3-4), on the functional floor
# ------------------------------------------------------------------------------------------------------------

def percentile_nearest_rank(a, p):
    """The definition (ltl_ext.tandem.percentile): the ceil(p/100 N)-th smallest element, in exact arithmetic."""
    from fractions import Fraction
    flat = a.reshape(-1).sort().values
    return flat[min(flat.numel(), max(1, math.ceil(Fraction(str(p)) * flat.numel() / 100))) - 1]


def test_one_percentile_for_one_process_and_many():
    """Issue 10 item 8: the single-process percentile and the distributed one (alone: its local branch) used two
    rank formulas that disagreed for 197 sizes up to 200k; one definition now, checked over every size."""
    from ltl_ext.ltl.tandem import nearest_rank, percentile
    single = Distributed.single("cpu")
    for n in list(range(1, 2001)) + [1000 * k for k in range(2, 201)]:
        for p in (99.0, 99.9, 50.0, 99.99):
            assert nearest_rank(n, p) == min(n, max(1, -(-int(round(p * 100)) * n // 10000))), (n, p)
    g = torch.Generator().manual_seed(0)
    for n in (1000, 1001, 4999, 70001, 200000):
        x = torch.rand(n, generator=g)
        for p in (99.0, 99.9):
            assert percentile(x, p) == single.percentile(x, p) == percentile_nearest_rank(x, p), (n, p)
    ties = torch.relu(torch.randn(30001, generator=g)).mul(8).round()   # half zeros, many equal values
    for p in (0.01, 25.0, 50.0, 75.0, 99.0, 99.9, 100.0):                # both sides of the top-k / select switch
        assert percentile(ties, p) == percentile_nearest_rank(ties, p), p


def make_data():
    g = torch.Generator().manual_seed(123)
    x = torch.randn(N_SAMPLES, 8, generator=g, dtype=torch.float64)
    y = (x[:, :3].argmax(1) + (x[:, 3] > 1).long()) % 3
    return TensorDataset(x, y)


def make_teacher(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3)).double()


class TinyStudent(nn.Module):
    """Two LIF layers trained by their own tandem losses, and a non-spiking readout trained by CE."""

    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.fc1, self.fc2, self.readout = nn.Linear(8, 16), nn.Linear(16, 12), nn.Linear(12, 3)
        self.double()

    def forward(self, x, targets, labels, mode):
        """Offline or batched-online LTL over T steps: returns (logits, total loss)."""
        inp = x.expand(T, *x.shape)
        losses = []
        for fc, y in zip((self.fc1, self.fc2), targets):
            inp, loss = LF.tandem_loss(fc(inp), y, mode=mode, warmup=WARMUP if mode == "online" else 0, **LIF)
            losses.append(loss)
        out = self.readout(inp)                                   # [T, B, classes]
        if mode == "offline":
            logits = out.mean(0)
            return logits, F.cross_entropy(logits, labels) + sum(losses)
        cum = torch.cumsum(out.detach(), 0) - out.detach() + out  # O[t] = O[t-1].detach() + out[t]
        steps = torch.arange(1, T + 1, dtype=x.dtype).view(T, 1, 1)
        ce = sum(F.cross_entropy(cum[t] / steps[t], labels) for t in range(WARMUP, T))
        return cum[WARMUP:].sum(0), ce + sum(losses)

    def reset_state(self):
        self.state = [(None, None), (None, None)]
        self.o = None

    def step(self, x, targets, labels, t):
        """Constant-memory online LTL, one time step: returns this step's loss (or None before the warm-up)."""
        inp, losses = x, []
        for i, (fc, y) in enumerate(zip((self.fc1, self.fc2), targets)):
            v, c = self.state[i]
            inp, loss, v, c = LF.tandem_step(fc(inp), y, v, c, t, warmup=WARMUP, **LIF)
            self.state[i] = (v, c)
            losses.append(loss)
        out = self.readout(inp)
        self.o = out if self.o is None else self.o.detach() + out
        if t < WARMUP:
            return None
        return F.cross_entropy(self.o / (t + 1), labels) + sum(losses)


def targets_of(teacher, x, dist):
    """Teacher activations -> targets in [0, 1], divided by the 99.9th percentile of the (global) batch."""
    with torch.no_grad():
        a1 = torch.relu(teacher[0](x)).clamp(max=2)
        a2 = torch.relu(teacher[2](a1)).clamp(max=2)
    return [(a / dist.percentile(a, 99.9)).clamp(0, 1) for a in (a1, a2)]


def train(dist, loader, mode, seed_student):
    """Returns the student's flat parameters after every optimiser step (and checks ranks agree on each)."""
    teacher = dist.broadcast_module(make_teacher(seed=dist.rank)).eval()   # rank 0's teacher everywhere
    student = TinyStudent(seed=seed_student)
    replica = dist.wrap(student)                                           # DDP: starts as rank 0's student
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    history = [torch.nn.utils.parameters_to_vector(student.parameters()).detach().clone()]
    all_reduces = [0]
    if dist.enabled:                       # count DDP's gradient all-reduces (one bucket for this tiny model)
        def counting_hook(state, bucket):
            all_reduces[0] += 1
            return allreduce_hook(state, bucket)
        replica.ddp.register_comm_hook(None, counting_hook)
    for epoch in range(EPOCHS):
        dist.set_epoch(loader, epoch)
        for x, labels in loader:
            targets = targets_of(teacher, x, dist)
            opt.zero_grad()
            if mode == "constant":
                student.reset_state()
                for t in range(T):
                    with replica.sync_if(t == T - 1):
                        loss = replica.step(x, targets, labels, t)
                        if loss is not None:
                            loss.backward()
            else:
                _, loss = replica(x, targets, labels, mode)
                loss.backward()
            opt.step()
            flat = torch.nn.utils.parameters_to_vector(student.parameters()).detach().clone()
            for other in dist.gather_object(flat):
                assert torch.equal(other, flat), "ranks out of sync"
            history.append(flat)
            if dist.enabled:               # once per batch, also with a backward per time step (no_sync)
                assert all_reduces[0] == 1, f"{mode}: {all_reduces[0]} all-reduces in one batch"
                all_reduces[0] = 0
    return torch.stack(history)


# ------------------------------------------------------------------------------------------------------------
# Workers (each a spawned process with torchrun's environment)
# ------------------------------------------------------------------------------------------------------------

def _torchrun_env(rank, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)


def _worker_train(rank, port, out_dir):
    _torchrun_env(rank, port)
    result = {}
    try:
        with Distributed.setup("cpu", timeout_s=20) as dist:
            assert (dist.rank, dist.world_size, dist.enabled, dist.is_main) == (rank, WORLD, True, rank == 0)
            ds = make_data()
            loader = dist.shard_loader(DataLoader(ds, batch_size=BATCH, shuffle=True), train=True, seed=0)
            assert isinstance(loader.sampler, DistributedSampler) and len(loader) == 2
            assert loader.batch_size == BATCH // WORLD
            for mode in MODES:
                result[mode] = train(dist, loader, mode, seed_student=100 + rank)
            # metrics: sums of counts, means of losses; evaluation shards without padding (an odd-sized set)
            result["sum"] = dist.all_sum({"correct": rank + 1, "count": 10 * (rank + 1)})
            result["mean"] = dist.all_mean({"loss": float(rank)})
            result["report"] = dist.weighted_mean({"samples": 1 + 2 * rank, "acc": [50.0, 100.0 * rank],
                                                   "rate": {"fc1": 0.1 + 0.3 * rank}}, weight=1 + 2 * rank)
            # whole-batch loaders (ltl_ext.data): every global batch is split across the ranks, padded for training
            result["batches"] = {}
            for is_train in (True, False):
                keyed = DataLoader(TensorDataset(torch.arange(10)), batch_size=None,
                                   sampler=_KeyedBatches([[0, 1, 2, 3], [4, 5, 6], [7, 8, 9], [9]]))
                keyed = dist.shard_loader(keyed, train=is_train)
                dist.set_epoch(keyed, 1)
                assert keyed.sampler.batches.epoch == 1
                result["batches"][is_train] = dist.gather_object([b[0].tolist() for b in keyed])
            odd = TensorDataset(torch.arange(7.0))
            ev = dist.shard_loader(DataLoader(odd, batch_size=2), train=False)
            assert isinstance(ev.sampler, ShardSampler)
            result["eval_count"] = dist.all_sum({"n": sum(len(b[0]) for b in ev)})["n"]
            seen = torch.cat([b[0] for b in ev])
            result["eval_seen"] = sorted(torch.cat(dist.gather_object(seen)).tolist())
            # the global percentile of uneven shares is the percentile of their union
            g = torch.Generator().manual_seed(rank)
            local = (torch.randn(1000 + 337 * rank, generator=g, dtype=torch.float64) + rank).relu_()
            union = torch.cat(dist.gather_object(local))
            result["percentiles"] = [(p, dist.percentile(local, p), percentile_nearest_rank(union, p))
                                     for p in (0.01, 50.0, 99.0, 99.9, 100.0)]
    except BaseException:
        result["error"] = traceback.format_exc()
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))


class _KeyedBatches(torch.utils.data.Sampler):
    """A sampler of whole batches of indices (as ltl_ext.data's), the same on every rank."""

    def __init__(self, batches):
        self.batches, self.epoch = batches, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        return (torch.tensor(b) for b in self.batches)

    def __len__(self):
        return len(self.batches)


def _worker_fail(rank, port, out_dir):
    """Rank 1 raises in its second step; rank 0 must stop with a DistributedError, well within the timeout."""
    _torchrun_env(rank, port)
    result, t0 = {}, time.monotonic()
    try:
        dist = Distributed.setup("cpu", timeout_s=5)
        with dist:
            loader = dist.shard_loader(DataLoader(make_data(), batch_size=BATCH, shuffle=True), train=True)
            student = TinyStudent(seed=0)
            replica = dist.wrap(student)
            teacher = make_teacher(0).eval()
            opt = torch.optim.Adam(student.parameters(), lr=1e-2)
            with dist.guard("training"):
                for i, (x, labels) in enumerate(loader):
                    if rank == 1 and i == 1:
                        raise ValueError("rank 1 breaks on purpose")
                    t0 = time.monotonic()
                    targets = targets_of(teacher, x, dist)
                    _, loss = replica(x, targets, labels, "offline")
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
    except BaseException as e:
        result.update(type=type(e).__name__, message=str(e), seconds=time.monotonic() - t0)
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))


def _spawn(target, tmp_path, deadline_s):
    """Start the ranks from a fork server that imported torch once (fast: no import per rank and per test; DDP's
    constructor imports torch._dynamo, seconds on a busy machine)."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torch._dynamo", "ltl_ext.distributed", __name__])
    port = free_port()
    procs = [ctx.Process(target=target, args=(r, port, str(tmp_path))) for r in range(WORLD)]
    for p in procs:
        p.start()
    end = time.monotonic() + deadline_s
    for p in procs:
        p.join(max(0.0, end - time.monotonic()))
    alive = [r for r, p in enumerate(procs) if p.is_alive()]
    for r in alive:
        procs[r].kill()
        procs[r].join()
    assert not alive, f"ranks {alive} still running after {deadline_s} s (hang)"
    missing = [(r, p.exitcode) for r, p in enumerate(procs) if not (tmp_path / f"rank{r}.pt").exists()]
    assert not missing, f"ranks (rank, exit code) {missing} died without a result"
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


# ------------------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------------------

def _single_process_reference(mode):
    """One process, the same global batch (2 x 8) in the same order as the two ranks' DistributedSamplers."""
    dist = Distributed.single("cpu")
    ds = make_data()
    sampler = DistributedSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=0)
    loader = DataLoader(ds, batch_size=BATCH, sampler=sampler)
    return train(dist, loader, mode, seed_student=100)


def test_two_ranks_stay_in_sync_and_equal_one_process(tmp_path):
    results = _spawn(_worker_train, tmp_path, deadline_s=90)
    for r, res in enumerate(results):
        assert "error" not in res, f"rank {r} failed:\n{res['error']}"
    for mode in MODES:
        h0, h1 = results[0][mode], results[1][mode]
        assert torch.equal(h0, h1), mode                       # (also checked after every step inside the ranks)
        ref = _single_process_reference(mode)
        assert h0.shape == ref.shape == (1 + EPOCHS * 2, h0.shape[1])
        assert not torch.allclose(h0[-1], h0[0]), f"{mode}: nothing was learned"
        torch.testing.assert_close(h0, ref, rtol=1e-9, atol=1e-11, msg=lambda m: f"{mode}: {m}")
    r0 = results[0]
    assert r0["sum"] == {"correct": 3.0, "count": 30.0}
    assert r0["mean"] == {"loss": 0.5}
    assert r0["report"] == {"samples": 4, "acc": [50.0, 75.0], "rate": {"fc1": pytest.approx(0.325)}}
    assert r0["batches"][True] == [[[0, 2], [4, 6], [7, 9], [9]], [[1, 3], [5, 4], [8, 7], [9]]]
    assert r0["batches"][False] == [[[0, 2], [4, 6], [7, 9], [9]], [[1, 3], [5], [8]]]
    assert r0["eval_count"] == 7 and r0["eval_seen"] == list(range(7))
    for p, got, want in r0["percentiles"]:
        assert got.item() == want.item(), (p, got, want)


def test_a_failing_rank_stops_the_other_with_a_clear_error(tmp_path):
    start = time.monotonic()
    r0, r1 = _spawn(_worker_fail, tmp_path, deadline_s=40)
    assert r1["type"] == "ValueError"
    assert r0["type"] == "DistributedError", r0
    assert "rank 0/2" in r0["message"] and "another rank failed" in r0["message"]
    assert r0["seconds"] < 5 + 3                                 # within the 5 s timeout (plus slack)
    assert time.monotonic() - start < 40


def test_single_process_is_a_no_op(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    assert launch_env() is None
    dist = Distributed.setup("cpu")
    assert (dist.rank, dist.world_size, dist.enabled, dist.is_main) == (0, 1, False, True)
    model = nn.Linear(2, 2)
    replica = dist.wrap(model)
    assert replica.module is model and replica.ddp is None
    replica.last_out = None                     # attributes are the model's, read and written
    assert model.last_out is None and replica.out_features == 2
    loader = DataLoader(TensorDataset(torch.arange(5.0)), batch_size=2)
    assert dist.shard_loader(loader, train=True) is loader
    assert dist.all_sum({"a": 2}) == {"a": 2.0}
    x = torch.rand(1000, dtype=torch.float64)
    for p in (0.01, 30.0, 99.9, 100.0):
        assert dist.percentile(x, p).item() == percentile_nearest_rank(x, p).item()
    with pytest.raises(DistributedError, match="torchrun"):
        Distributed.setup("cpu", required=True)
    dist.close()


def test_launch_env_reads_torchrun_variables():
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    e = launch_env(env)
    assert (e.rank, e.world_size, e.local_rank, e.local_world_size) == (3, 4, 1, 2)
    with pytest.raises(DistributedError, match="inconsistent"):
        launch_env({"RANK": "4", "WORLD_SIZE": "4"})


# ------------------------------------------------------------------------------------------------------------
# The trainer on 2 processes (LocalTandemTrainer(distributed=...)): equal to 1 process, resume, evaluation
# ------------------------------------------------------------------------------------------------------------

TRAINER_RUNS = (("offline", "batched"), ("online", "batched"), ("online", "constant"))


def make_trainer_teacher(seed):
    from ltl_ext import models
    torch.manual_seed(seed)
    return models.mlp(num_classes=3, in_features=8, hidden=(16, 12), batch_norm=False, dropout=0.0).double()


def make_trainer(teacher, mode, memory, dist, seed):
    from ltl_ext.train import LocalTandemTrainer
    return LocalTandemTrainer(teacher, time_steps=T, mode=mode, warmup=WARMUP, memory=memory, percentile=99.9,
                              lr=1e-2, device="cpu", seed=seed, distributed=dist)


def run_trainer(dist, loader, eval_loader, ckpt_dir, seed):
    """Each run: 2 epochs; then offline again, interrupted after 1 epoch and resumed from its checkpoint."""
    from ltl_ext.train import LocalTandemTrainer
    flat = lambda tr: torch.nn.utils.parameters_to_vector(tr.student.parameters()).detach().clone()  # noqa: E731
    out = {}
    for mode, memory in TRAINER_RUNS:
        trainer = make_trainer(make_trainer_teacher(seed), mode, memory, dist, seed)
        history = trainer.fit(loader, epochs=EPOCHS, progress=False)
        out[mode, memory] = (flat(trainer), [h["loss"] for h in history], trainer.evaluate(eval_loader))
        for other in dist.gather_object(out[mode, memory][0]):
            assert torch.equal(other, out[mode, memory][0]), "ranks out of sync"
    first = make_trainer(make_trainer_teacher(seed), "offline", "batched", dist, seed)
    first.fit(loader, epochs=1, progress=False, checkpoint=os.path.join(ckpt_dir, "ckpt.pt"))
    resumed = LocalTandemTrainer.load(os.path.join(ckpt_dir, "ckpt.pt"), teacher=make_trainer_teacher(seed),
                                      distributed=dist)
    resumed.fit(loader, epochs=EPOCHS, progress=False)
    out["resumed"] = flat(resumed)
    # one sample: rank 1's share is empty, which must count for nothing (it used to raise "no sample")
    one = resumed.evaluate(DataLoader(torch.utils.data.Subset(make_data(), [0]), batch_size=1))
    out["one_sample"] = (one["samples"], one["student_acc"])
    return out


def _worker_trainer(rank, port, out_dir):
    _torchrun_env(rank, port)
    result = {}
    try:
        with Distributed.setup("cpu", timeout_s=20) as dist:
            loader = DataLoader(make_data(), batch_size=BATCH, shuffle=True)
            eval_loader = DataLoader(make_data(), batch_size=5)
            result = run_trainer(dist, loader, eval_loader, out_dir, seed=100 + rank)   # rank 0's student wins
    except BaseException:
        result["error"] = traceback.format_exc()
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))


def test_trainer_on_two_ranks_equals_one_process(tmp_path):
    results = _spawn(_worker_trainer, tmp_path, deadline_s=120)
    for r, res in enumerate(results):
        assert "error" not in res, f"rank {r} failed:\n{res['error']}"
    ds = make_data()
    loader = DataLoader(ds, batch_size=BATCH, sampler=DistributedSampler(ds, num_replicas=1, rank=0, seed=0))
    ref = run_trainer(Distributed.single("cpu"), loader, DataLoader(ds, batch_size=5), str(tmp_path), seed=100)
    for key in TRAINER_RUNS:
        (p0, loss0, ev0), (p1, _, ev1), (pr, lossr, evr) = results[0][key], results[1][key], ref[key]
        assert torch.equal(p0, p1)
        assert not torch.allclose(p0, make_trainer_params_at_init()), key
        torch.testing.assert_close(p0, pr, rtol=1e-9, atol=1e-11, msg=lambda m: f"{key}: {m}")
        assert loss0 == pytest.approx(lossr, rel=1e-9), key                  # losses reduced over the ranks
        assert ev0 == ev1
        assert ev0["samples"] == evr["samples"] == N_SAMPLES
        for k in ("student_acc", "teacher_acc", "spikes_per_sample"):
            assert ev0[k] == pytest.approx(evr[k], rel=1e-9), (key, k)
        assert ev0["firing_rate"] == pytest.approx(evr["firing_rate"], rel=1e-9)
        assert ev0["acc_per_step"] == pytest.approx(evr["acc_per_step"], rel=1e-9)
    torch.testing.assert_close(results[0]["resumed"], results[0]["offline", "batched"][0], rtol=0, atol=0)
    assert results[0]["one_sample"] == results[1]["one_sample"] == ref["one_sample"]
    assert ref["one_sample"][0] == 1


def _worker_different_settings(rank, port, out_dir):
    """Rank 1 is launched with another T and learning rate than rank 0."""
    _torchrun_env(rank, port)
    result = {}
    try:
        with Distributed.setup("cpu", timeout_s=20) as dist:
            from ltl_ext.train import LocalTandemTrainer
            LocalTandemTrainer(make_trainer_teacher(0), time_steps=T + rank, warmup=WARMUP, lr=1e-2 * (1 + rank),
                               device="cpu", distributed=dist)
    except BaseException as e:
        result = {"type": type(e).__name__, "message": str(e)}
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))


def test_ranks_launched_with_different_settings_all_get_one_clear_error(tmp_path):
    for res in _spawn(_worker_different_settings, tmp_path, deadline_s=60):
        assert res.get("type") == "ValueError", res
        assert f"time_steps: rank 0 {T}, rank 1 {T + 1}" in res["message"], res
        assert "lr: rank 0 0.01, rank 1 0.02" in res["message"] and "warmup" not in res["message"], res


def make_trainer_params_at_init():
    return torch.nn.utils.parameters_to_vector(
        make_trainer(make_trainer_teacher(100), "offline", "batched", Distributed.single("cpu"), 100)
        .student.parameters()).detach()


def test_torchrun_cli_train(tmp_path):
    """``torchrun --nproc_per_node 2 -m ltl_ext train``: one table, one set of files (rank 0), 2 processes."""
    import json
    import subprocess
    import sys
    import numpy as np
    rng = np.random.default_rng(0)
    protos = rng.random((4, 8, 8))

    def draw(n):
        y = np.arange(n) % 4
        return (255 * (0.7 * protos[y] + 0.3 * rng.random((n, 8, 8)))).astype(np.uint8), y
    (xtr, ytr), (xte, yte) = draw(64), draw(32)
    np.savez(tmp_path / "tiny.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD),
           "-m", "ltl_ext", "train", "--data", "npz", "--data-dir", str(tmp_path / "tiny.npz"), "--arch", "mlp",
           "--hidden", "16", "--teacher-epochs", "1", "--epochs", "1", "-T", "2", "--batch-size", "16",
           "--out", str(out), "--quiet", "--val-fraction", "0"]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=180,
                          env=dict(os.environ, LTL_DIST_TIMEOUT="60", OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("student accuracy") == 1, done.stdout        # rank 0 alone prints the table
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["processes"] == WORLD and metrics["epochs"] == 1
    assert metrics["history"][0]["samples"] == 64
    for f in ("last.pt", "teacher.pt", "history.json"):
        assert (out / f).is_file(), f


def test_whole_batch_shares_are_the_one_process_batch_augmented_alike():
    """ltl_ext.data's batches carry an augmentation seed that draws each image's crop and flip in batch order: each
    rank loading only its share under that seed got the first images' draws (the same on both ranks, and not what
    one process gives those images). The ranks' shares now interleave into exactly the one-process batch."""
    import numpy as np
    from ltl_ext.data import make_loaders
    from ltl_ext.data.splits import DatasetSplits
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 255, (22, 3, 8, 8), dtype=np.uint8), np.arange(22) % 4
    train, _, test = make_loaders(DatasetSplits.from_arrays("tiny", x, y, x[:7], y[:7]), batch_size=8,
                                  test_batch_size=3, val_fraction=0, augment=True, seed=0)
    ranks = [Distributed(rank=r, world_size=WORLD) for r in range(WORLD)]   # no collective runs here
    for epoch in (0, 1):
        train.sampler.set_epoch(epoch)
        one = list(train)
        shares = []
        for d in ranks:
            loader = d.shard_loader(train, train=True)
            d.set_epoch(loader, epoch)
            shares.append(list(loader))
        assert [len(s) for s in shares] == [len(one)] * WORLD
        for i, (xb, yb) in enumerate(one):
            if len(yb) % WORLD:
                continue                                  # a padded last batch: checked below
            merged = torch.empty_like(xb)
            for r in range(WORLD):
                merged[r::WORLD] = shares[r][i][0]
            assert torch.equal(merged, xb), (epoch, i)
        assert [len(s[-1][1]) for s in shares] == [3, 3]          # 22 = 8 + 8 + 6: equal shares
    seen = [torch.cat([yb for _, yb in d.shard_loader(test, train=False)]) for d in ranks]
    assert sum(len(s) for s in seen) == 7 and sorted(torch.cat(seen).tolist()) == sorted(y[:7].tolist())
