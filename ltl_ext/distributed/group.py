"""``Distributed``: this process's part in the job: joining it, the student's DDP handle, this rank's share of
the data, failures and teardown (the collectives it offers: :mod:`.collectives`)."""
from __future__ import annotations

import contextlib
import datetime
import inspect
import os
import sys
import time
from typing import Any, Dict, Mapping, Optional, Union

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler
from torch.utils.data.distributed import DistributedSampler

from .collectives import Collectives
from .launch import (DistributedError, _is_comm_error, _local_device, check_timeout_s, default_timeout_s,
                     launch_env)
from .replica import Replica, _ddp_kwargs, _Entry
from .sampling import BatchShare, ShardedBatches, ShardSampler, SplitBatches


class Distributed(Collectives):
    """One process's view of a (possibly single-process) job. With ``world_size == 1`` every method is a cheap
    no-op, so callers never branch on the number of processes.

    Build it with :meth:`setup` (reads the torchrun environment) or :meth:`single`.
    """

    def __init__(self, *, rank: int = 0, world_size: int = 1, local_rank: int = 0,
                 device: Union[str, torch.device] = "cpu", backend: Optional[str] = None,
                 timeout_s: Optional[float] = None, owns_group: bool = False):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.device = torch.device(device)
        self.backend = backend
        self.timeout_s = default_timeout_s() if timeout_s is None else check_timeout_s(timeout_s)
        self._owns_group = owns_group
        self._closed = False

    # -- construction ----------------------------------------------------------------------------------------
    @classmethod
    def single(cls, device: Union[None, str, torch.device] = None) -> "Distributed":
        """A one-process job on ``device`` (default: CUDA when present, else CPU)."""
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return cls(device=device)

    @classmethod
    def setup(cls, device: Union[None, str, torch.device] = None, *, backend: Optional[str] = None,
              timeout_s: Optional[float] = None, required: bool = False,
              environ: Optional[Mapping[str, str]] = None) -> "Distributed":
        """Join the job described by the torchrun environment, or run alone when there is none (or one process).

        - ``device``: ``None`` picks ``cuda:LOCAL_RANK`` when CUDA is present, else CPU; ``"cuda"`` means
          ``cuda:LOCAL_RANK``; an explicit ``"cuda:i"`` or ``"cpu"`` is kept.
        - ``backend``: ``None`` picks NCCL for CUDA devices and gloo for CPU.
        - ``timeout_s``: how long a collective waits for the other ranks before failing (default
          ``LTL_DIST_TIMEOUT`` or 600 s).
        - ``required``: raise if not launched by torchrun (for ``distributed=True``).
        """
        timeout_s = default_timeout_s() if timeout_s is None else check_timeout_s(timeout_s)
        env = launch_env(environ)
        if env is None:
            if required:
                raise DistributedError("distributed=True needs the torchrun environment (RANK, WORLD_SIZE, ...): "
                                       "launch with  torchrun --nproc_per_node N -m ltl_ext train ...")
            return cls.single(device)
        if env.world_size == 1 and not torch_dist.is_initialized():
            return cls.single(_local_device(device, env.local_rank))
        if not torch_dist.is_available():
            raise DistributedError("this PyTorch build has no torch.distributed")
        dev = _local_device(device, env.local_rank)
        if dev.type == "cuda":
            if dev.index is None or dev.index >= torch.cuda.device_count():
                raise DistributedError(f"rank {env.rank}: LOCAL_RANK={env.local_rank} but only "
                                       f"{torch.cuda.device_count()} CUDA device(s) visible; use "
                                       f"--nproc_per_node <= {torch.cuda.device_count()}")
            torch.cuda.set_device(dev)
        if backend is None:
            backend = "nccl" if dev.type == "cuda" and torch_dist.is_nccl_available() else "gloo"
        owns = False
        if torch_dist.is_initialized():        # the caller set the group up already: adopt it
            backend = torch_dist.get_backend()
        else:
            kwargs: Dict[str, Any] = {"backend": backend, "init_method": "env://",
                                      "timeout": datetime.timedelta(seconds=timeout_s)}
            if dev.type == "cuda" and "device_id" in inspect.signature(torch_dist.init_process_group).parameters:
                kwargs["device_id"] = dev
            try:
                torch_dist.init_process_group(**kwargs)
            except Exception as e:
                raise DistributedError(f"rank {env.rank}/{env.world_size}: could not join the process group "
                                       f"({backend}, MASTER_ADDR={os.environ.get('MASTER_ADDR')}, MASTER_PORT="
                                       f"{os.environ.get('MASTER_PORT')}, timeout {timeout_s:g} s): {e}") from e
            owns = True
        return cls(rank=torch_dist.get_rank(), world_size=torch_dist.get_world_size(), local_rank=env.local_rank,
                   device=dev, backend=backend, timeout_s=timeout_s, owns_group=owns)

    # -- who am I ---------------------------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        """True with more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that logs, shows progress bars, writes checkpoints, metrics and plots."""
        return self.rank == 0

    def __repr__(self) -> str:
        return (f"Distributed(rank={self.rank}, world_size={self.world_size}, device={self.device}, "
                f"backend={self.backend})")

    def print(self, *args, **kwargs) -> None:
        """``print`` on rank 0 only."""
        if self.is_main:
            print(*args, **kwargs)

    # -- models -----------------------------------------------------------------------------------------------
    def wrap(self, student: nn.Module, **ddp_kwargs) -> Replica:
        """The student's training handle: DDP over it with several processes (parameters and buffers start as
        rank 0's), the bare model alone. Move the model to ``self.device`` first. Extra arguments go to DDP."""
        if not self.enabled:
            return Replica(student)
        kwargs = dict(_ddp_kwargs(), find_unused_parameters=False)
        kwargs.update(ddp_kwargs)
        if self.device.type == "cuda":
            kwargs.setdefault("device_ids", [self.device.index])
        with self.guard("wrapping the student in DDP", collective=True):
            ddp = DistributedDataParallel(_Entry(student), **kwargs)
            # rank 0's buffers too (LIF thresholds balanced on this rank's calibration data, say): before torch
            # 2.13, broadcast_buffers=False (the only way to keep the stepwise state per rank) also left them out
            # of DDP's sync at wrapping, so the ranks trained with different thresholds
            for b in student.buffers():
                self._broadcast(b, 0)
        return Replica(student, ddp)

    @torch.no_grad()
    def broadcast_module(self, module: nn.Module, src: int = 0) -> nn.Module:
        """Copy rank ``src``'s parameters and buffers into ``module`` on every rank (e.g. the teacher)."""
        if self.enabled:
            named = list(module.named_parameters()) + list(module.named_buffers())
            self._check_same_layout(named, src)
            with self.guard("broadcasting a model", collective=True):
                for _, t in named:
                    self._broadcast(t, src)
        return module

    def _broadcast(self, t: torch.Tensor, src: int) -> None:
        if t.device.type != self.device.type and self.backend == "nccl":
            tmp = t.detach().to(self.device)
            torch_dist.broadcast(tmp, src)
            t.detach().copy_(tmp)
        else:
            torch_dist.broadcast(t.detach(), src)

    def _check_same_layout(self, named, src: int) -> None:
        """Every rank's model must hold the tensors of rank ``src``'s (names, shapes, dtypes). Why: other models
        (another --teacher file on another machine) made the broadcast abort the process, hang until the timeout,
        or copy tensors of equal size into the wrong places; every rank now gets the same error, naming them."""
        layouts = self.gather_object([f"{name} {tuple(t.shape)} {t.dtype}" for name, t in named])
        want = layouts[src]
        for rank, got in enumerate(layouts):
            if got != want:
                diff = [f"{g} where rank {src} has {w}" for g, w in zip(got, want) if g != w][:3]
                if len(got) != len(want):
                    diff.append(f"{len(got)} tensors where rank {src} has {len(want)}")
                raise ValueError(f"the model broadcast from rank {src} (e.g. the teacher) differs on rank {rank}: "
                                 f"{'; '.join(diff)}; give every rank the same model")

    # -- data -------------------------------------------------------------------------------------------------
    def train_sampler(self, dataset, *, shuffle: bool = True, seed: int = 0,
                      drop_last: bool = False) -> Optional[DistributedSampler]:
        """A :class:`DistributedSampler` (equal shares; call :meth:`set_epoch` each epoch), or ``None`` alone."""
        if not self.enabled:
            return None
        return DistributedSampler(dataset, num_replicas=self.world_size, rank=self.rank, shuffle=shuffle,
                                  seed=seed, drop_last=drop_last)

    def eval_sampler(self, dataset) -> Optional[ShardSampler]:
        """An unpadded shard of ``dataset`` for evaluation (sum the counts with :meth:`all_sum`), or ``None``."""
        return ShardSampler(len(dataset), self.rank, self.world_size) if self.enabled else None

    def shard_loader(self, loader: DataLoader, *, train: bool, seed: int = 0) -> DataLoader:
        """The same loader over this rank's part of the data. **The loader's batch stays the global batch**: each
        of N ranks runs ``batch_size / N`` samples of it, so N processes train like one (same batches, steps per
        epoch and learning rate), only faster.

        - A loader over whole-batch keys (``batch_size=None``, e.g. :func:`ltl_ext.data.make_loaders`): every
          batch is split across ranks (:class:`ShardedBatches`; padded to equal shares when ``train``).
        - A per-sample loader (``batch_size=b``): ``train`` uses a :class:`DistributedSampler` (shuffled if the
          loader shuffles; seed ``seed``, a new order per :meth:`set_epoch`) with batches of b / N (b must be a
          multiple of N); evaluation an unpadded :class:`ShardSampler` with batches of b. Both go over the whole
          dataset, so the loader's sampler must be the plain one (``shuffle=True`` or ``False``): for part of a
          dataset, pass ``torch.utils.data.Subset(dataset, indices)``.
        - Any other iterable of whole batches (a list of ``(inputs, labels)``, ``ltl_ext.data.SequenceBatches``):
          every batch is split across ranks (:class:`SplitBatches`; padded to equal shares when ``train``).

        Alone, or for a loader already split, ``loader`` is returned unchanged.
        """
        if not self.enabled or isinstance(loader, SplitBatches):
            return loader
        if not isinstance(loader, DataLoader):
            # (it failed with "'list' object has no attribute 'sampler'", though fit takes lists of batches)
            return SplitBatches(loader, self.rank, self.world_size, pad=train)
        sampler = loader.sampler
        if hasattr(sampler, "num_replicas") and hasattr(sampler, "rank"):     # a DistributedSampler or one like it
            if (sampler.num_replicas, sampler.rank) != (self.world_size, self.rank):
                # else every rank trained on the share of the rank it was built for: samples twice or never
                raise DistributedError(f"the loader's {type(sampler).__name__} splits the data for rank "
                                       f"{sampler.rank} of {sampler.num_replicas}, but this is rank {self.rank} of "
                                       f"{self.world_size}: build it with this rank and world size (the default of "
                                       f"DistributedSampler(dataset)), or pass the loader unsplit")
            return loader
        if isinstance(sampler, (ShardSampler, ShardedBatches)):
            return loader
        if isinstance(loader.dataset, torch.utils.data.IterableDataset):
            raise DistributedError("an IterableDataset cannot be split across ranks by a sampler; "
                                   "shard it yourself per rank")
        kwargs = dict(num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                      timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
                      persistent_workers=loader.persistent_workers, generator=loader.generator)
        if loader.num_workers > 0:
            kwargs["prefetch_factor"] = loader.prefetch_factor
        if loader.multiprocessing_context is not None:
            kwargs["multiprocessing_context"] = loader.multiprocessing_context
        if loader.batch_size is None and loader.batch_sampler is None:        # whole-batch keys
            sampler = ShardedBatches(loader.sampler, self.rank, self.world_size, pad=train)
            return DataLoader(BatchShare(loader.dataset), batch_size=None, sampler=sampler, **kwargs)
        if loader.batch_size is None or type(loader.batch_sampler) is not torch.utils.data.BatchSampler:
            raise DistributedError("a DataLoader with a custom batch_sampler cannot be split automatically; "
                                   "build one per rank with Distributed.train_sampler()")
        _check_whole_dataset_sampler(loader)
        if not train:
            return DataLoader(loader.dataset, batch_size=loader.batch_size, drop_last=loader.drop_last,
                              sampler=self.eval_sampler(loader.dataset), **kwargs)
        if loader.batch_size % self.world_size:
            raise DistributedError(f"the batch size {loader.batch_size} is the global batch: it must be a "
                                   f"multiple of the {self.world_size} processes")
        sampler = self.train_sampler(loader.dataset, shuffle=not isinstance(loader.sampler, SequentialSampler),
                                     seed=seed)
        return DataLoader(loader.dataset, batch_size=loader.batch_size // self.world_size, sampler=sampler,
                          drop_last=loader.drop_last, **kwargs)

    @staticmethod
    def set_epoch(loader_or_sampler, epoch: int) -> None:
        """``sampler.set_epoch(epoch)`` when the loader's sampler has one (a new shuffle per epoch)."""
        sampler = getattr(loader_or_sampler, "sampler", loader_or_sampler)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)

    # -- failures and teardown --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def guard(self, what: str = "training", *, collective: bool = False):
        """Turn a failed or timed-out collective into a :class:`DistributedError`; on any other exception in this
        rank, say which rank failed (stderr) and stop using the group (no barrier on the way out).

        A failure is recognised by where it comes from, never by the words of its message: a
        ``torch.distributed.DistError`` anywhere, and anything raised inside a ``collective=True`` block (which
        holds nothing but collective calls; gloo reports a dead peer as a plain ``RuntimeError``)."""
        if not self.enabled:
            yield
            return
        try:
            yield
        except DistributedError:
            raise
        except Exception as e:
            if collective or _is_comm_error(e):
                self._leave_broken_group()
                raise DistributedError(
                    f"rank {self.rank}/{self.world_size}: {what} failed: another rank failed, was killed or did "
                    f"not answer within the timeout ({self.timeout_s:g} s); see the first failing rank's error "
                    f"above. [{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}]"
                ) from e
            print(f"[ltl_ext rank {self.rank}/{self.world_size}] {what}: {type(e).__name__}: {e} -- stopping this "
                  f"rank; the others stop when it exits (or at the {self.timeout_s:g} s timeout)", file=sys.stderr,
                  flush=True)
            self._abort()
            raise

    def _abort(self) -> None:
        """After a failure: this rank stops using the group and leaves it without a barrier. The group is not
        destroyed here: DDP still holds it, and destroying it under DDP can deadlock (torch's gloo worker thread
        needs the GIL to drop a failed collective's tensors while the destructor joins it with the GIL held).
        The peers stop when this process exits (its connections close: at once) or at the timeout."""
        self._closed = True

    def _leave_broken_group(self) -> None:
        """After a failed collective: destroy the broken group, so that this process exits cleanly. First let
        torch's gloo worker thread drop the failed collective (it needs the GIL for that, and the group's
        destructor joins it while holding the GIL)."""
        if self._closed or not (self._owns_group and torch_dist.is_initialized()):
            self._closed = True
            return
        self._closed = True
        time.sleep(0.2)
        with contextlib.suppress(Exception):
            torch_dist.destroy_process_group()

    def close(self) -> None:
        """Wait for every rank, then destroy the process group (if this object created it). Idempotent."""
        if self._closed:
            return
        if self.enabled and self._owns_group and torch_dist.is_initialized():
            try:
                self.barrier("closing")
            finally:
                self._closed = True
                if torch_dist.is_initialized():      # a failed barrier destroyed it already (and said why)
                    torch_dist.destroy_process_group()
        self._closed = True

    def __enter__(self) -> "Distributed":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.close()
        else:
            if self.enabled and not self._closed and not isinstance(exc, DistributedError) \
                    and not _is_comm_error(exc):
                print(f"[ltl_ext rank {self.rank}/{self.world_size}] failed: {exc_type.__name__}: {exc}",
                      file=sys.stderr, flush=True)
            self._abort()


def _check_whole_dataset_sampler(loader: DataLoader) -> None:
    """A per-sample loader is split by a sampler of the whole dataset in its order or shuffled (DistributedSampler,
    ShardSampler), which stands in for the loader's own: refuse a sampler that draws another set. Why: a
    ``SubsetRandomSampler`` (a train/validation split of one dataset), a weighted or a with-replacement sampler was
    silently replaced, and every rank trained or evaluated on the whole dataset."""
    sampler = loader.sampler
    if isinstance(sampler, SequentialSampler):
        return
    if isinstance(sampler, RandomSampler) and not sampler.replacement \
            and sampler.num_samples == len(sampler.data_source):
        return
    raise DistributedError(f"the loader's {type(sampler).__name__} cannot be split across ranks: the split goes over "
                           f"the whole dataset in order or shuffled. For part of a dataset pass "
                           f"torch.utils.data.Subset(dataset, indices) with shuffle=True (training) or False; for "
                           f"another sampling give each rank its own sampler, with the attributes num_replicas and "
                           f"rank (as DistributedSampler has)")
