"""The collectives LTL needs, as methods of :class:`~ltl_ext.distributed.group.Distributed`: metrics summed or
averaged over the ranks (also nested reports), objects gathered or broadcast, the global-batch percentile, the
barrier.

Each is a cheap no-op (or the local answer) in a one-process job, so callers never branch on the number of
processes; with several, each runs inside ``self.guard(..., collective=True)``, which turns a failed or timed-out
collective into a :class:`~ltl_ext.distributed.launch.DistributedError`.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Sequence, Union

import torch
import torch.distributed as torch_dist
from torch import Tensor

from ..ltl.tandem import nearest_rank


class Collectives:
    """The base class of :class:`~ltl_ext.distributed.group.Distributed`: its collectives. ``Distributed``
    provides what they use: ``enabled``, ``world_size``, ``device``, ``backend`` and ``guard``."""

    def _comm_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")

    def all_sum(self, values: Mapping[str, Union[float, int, Tensor]]) -> Dict[str, float]:
        """Sums over all ranks of scalar metrics (correct counts, sample counts, summed losses), in one
        collective, in float64. Every rank must pass the same keys. Alone, the values themselves as floats."""
        keys = sorted(values)
        vec = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self._comm_device())
        if self.enabled and keys:
            with self.guard("reducing metrics", collective=True):
                torch_dist.all_reduce(vec, op=torch_dist.ReduceOp.SUM)
        return dict(zip(keys, vec.tolist()))

    def all_mean(self, values: Mapping[str, Union[float, int, Tensor]]) -> Dict[str, float]:
        """Means over ranks (e.g. each rank's mean loss over equal shares)."""
        return {k: v / self.world_size for k, v in self.all_sum(values).items()}

    def weighted_mean(self, report: Any, weight: float, *, sum_keys: Sequence[str] = ("samples",)) -> Any:
        """``sum_r report_r * weight_r / sum_r weight_r`` for every number in ``report`` (nested dicts and lists of
        numbers; other values are kept as this rank's). With ``weight`` the rank's sample count,
        per-rank accuracies, firing rates and spikes per sample become the exact global ones. Top-level keys in
        ``sum_keys`` (sample counts) are summed instead."""
        if not self.enabled:
            return report
        if isinstance(report, Mapping) and any(k in report for k in sum_keys):
            summed = self.all_sum({k: report[k] for k in sum_keys if k in report})
            rest = self.weighted_mean({k: v for k, v in report.items() if k not in summed}, weight, sum_keys=())
            return {k: (type(report[k])(summed[k]) if k in summed else rest[k]) for k in report}
        leaves: List[float] = []
        _numbers(report, leaves)
        vec = torch.tensor(leaves + [1.0], dtype=torch.float64, device=self._comm_device()) * float(weight)
        with self.guard("reducing metrics", collective=True):
            torch_dist.all_reduce(vec, op=torch_dist.ReduceOp.SUM)
        total = vec[-1].item()
        out = (vec[:-1] / total if total else vec[:-1]).tolist()
        return _renumber(report, iter(out))

    def gather_object(self, obj: Any) -> List[Any]:
        """Every rank's ``obj`` (picklable), in rank order, on every rank (e.g. RNG states for a checkpoint)."""
        if not self.enabled:
            return [obj]
        out: List[Any] = [None] * self.world_size
        with self.guard("gathering objects", collective=True):
            torch_dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        with self.guard("broadcasting an object", collective=True):
            torch_dist.broadcast_object_list(box, src=src)
        return box[0]

    @torch.no_grad()
    def percentile(self, x: Tensor, p: float) -> Tensor:
        """The p-th percentile (nearest rank, 0 < p <= 100, as :func:`ltl_ext.tandem.percentile`) of all elements
        of every rank's ``x`` together: the per-batch target scale of the global batch.

        Exact and cheap: the k-th smallest of N values is the smallest of the top N - k + 1, so each rank sends
        only its top values (0.1 % of them for the 99.9th percentile). Alone, the local percentile.
        """
        if not 0 < p <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {p}")
        flat = x.detach().reshape(-1)
        if not flat.is_floating_point() or flat.dtype in (torch.float16, torch.bfloat16):
            flat = flat.float()
        sizes = [flat.numel()]
        dev = self._comm_device()
        if self.enabled:
            with self.guard("computing the global percentile", collective=True):
                counts = [torch.zeros(1, dtype=torch.int64, device=dev) for _ in range(self.world_size)]
                torch_dist.all_gather(counts, torch.tensor([flat.numel()], dtype=torch.int64, device=dev))
                sizes = [int(c.item()) for c in counts]
        n = sum(sizes)
        if n == 0:
            raise ValueError("percentile of an empty tensor")
        k = nearest_rank(n, p)                              # the k-th smallest ...
        top = n - k + 1                                     # ... is the smallest of the top n - k + 1
        if not self.enabled:
            return flat.kthvalue(k).values
        width = min(top, max(sizes))
        mine = flat.topk(min(width, flat.numel())).values.to(dev)
        padded = torch.full((width,), -math.inf, dtype=flat.dtype, device=dev)
        padded[: mine.numel()] = mine
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        with self.guard("computing the global percentile", collective=True):
            torch_dist.all_gather(parts, padded)
        return torch.cat(parts).topk(top).values[-1].to(x.device)

    def barrier(self, what: str = "barrier") -> None:
        """Wait for every rank (e.g. after rank 0 wrote a checkpoint the others will read)."""
        if self.enabled:
            with self.guard(what, collective=True):
                if self.backend == "nccl":
                    torch_dist.barrier(device_ids=[self.device.index])
                else:
                    torch_dist.barrier()


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _numbers(obj, out: List[float]) -> None:
    if _is_number(obj):
        out.append(float(obj))
    elif isinstance(obj, Mapping):
        for k in sorted(obj):
            _numbers(obj[k], out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _numbers(v, out)


def _renumber(obj, it):
    if _is_number(obj):
        v = next(it)
        return int(round(v)) if isinstance(obj, int) else v
    if isinstance(obj, Mapping):
        new = {k: _renumber(obj[k], it) for k in sorted(obj)}
        return {k: new[k] for k in obj}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_renumber(v, it) for v in obj)
    return obj
