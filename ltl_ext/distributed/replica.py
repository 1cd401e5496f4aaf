"""The student as DDP holds it: one gradient all-reduce per batch, stepwise calls through DDP's forward."""
from __future__ import annotations

import contextlib
import inspect
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as torch_dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel


class _Entry(nn.Module):
    """Routes DDP's ``forward`` to any method of the model (``forward``, ``step``), so every training call is seen
    by DDP (which prepares its gradient all-reduce in ``forward``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *args, _ltl_method: str = "forward", **kwargs):
        if _ltl_method == "forward":
            return self.model(*args, **kwargs)
        return getattr(self.model, _ltl_method)(*args, **kwargs)


class Replica:
    """The training handle of a student: ``replica(x)``, ``replica.step(x_t)``, ``replica.sync_if(last)``.

    With several processes it calls the model through DDP; alone, it calls the model itself. ``module`` is the
    bare model (for evaluation, checkpoints, attribute access), identical on every rank.
    """

    def __init__(self, module: nn.Module, ddp: Optional[DistributedDataParallel] = None):
        self.module = module
        self.ddp = ddp

    def __call__(self, *args, **kwargs):
        return self.call("forward", *args, **kwargs)

    def step(self, *args, **kwargs):
        """One time step of a stepwise model (``module.step``), through DDP."""
        return self.call("step", *args, **kwargs)

    def call(self, method: str, *args, **kwargs):
        if self.ddp is None:
            fn = self.module if method == "forward" else getattr(self.module, method)
            return fn(*args, **kwargs)
        return self.ddp(*args, _ltl_method=method, **kwargs)

    def no_sync(self):
        """DDP's ``no_sync`` (forward and backward inside it accumulate gradients locally); a no-op alone."""
        return contextlib.nullcontext() if self.ddp is None else self.ddp.no_sync()

    def sync_if(self, sync: bool):
        """``no_sync()`` unless ``sync``: wrap each step's forward and backward, with ``sync`` true on the last."""
        return contextlib.nullcontext() if sync else self.no_sync()

    @torch.no_grad()
    def average_gradients(self, bucket_bytes: int = 25 << 20) -> None:
        """Average every parameter's gradient over the ranks, as DDP would: for steps whose backwards all ran
        under :meth:`no_sync` (the layer-wise LTL engine back-propagates inside the forward, where DDP's own
        reducer does not expect it). Gradients travel flattened, in buckets of about ``bucket_bytes``; a
        parameter without a gradient gets zeros, so that every rank sends the same layout. A no-op alone."""
        if self.ddp is None:
            return
        params = [p for p in self.module.parameters() if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        group, n = self.ddp.process_group, torch_dist.get_world_size(self.ddp.process_group)
        bucket: List[Tensor] = []

        def flush():
            flat = torch._utils._flatten_dense_tensors(bucket)
            torch_dist.all_reduce(flat, group=group)
            flat.div_(n)
            for g, avg in zip(bucket, torch._utils._unflatten_dense_tensors(flat, bucket)):
                g.copy_(avg)
            bucket.clear()

        size = 0
        for p in params:
            if bucket and (size + p.grad.numel() * p.grad.element_size() > bucket_bytes
                           or p.grad.dtype != bucket[0].dtype or p.grad.device != bucket[0].device):
                flush()
                size = 0
            bucket.append(p.grad)
            size += p.grad.numel() * p.grad.element_size()
        if bucket:
            flush()

    def train(self, mode: bool = True) -> "Replica":
        self.module.train(mode)
        return self

    def eval(self) -> "Replica":
        return self.train(False)

    def parameters(self):
        return self.module.parameters()

    # Any other attribute (``reset_state``, ``time_steps`` ...) is the bare model's, read and
    # written; only ``__call__`` and ``step`` compute through DDP.
    _OWN = ("module", "ddp")

    def __getattr__(self, name: str):
        if name in Replica._OWN:
            raise AttributeError(name)
        return getattr(self.module, name)

    def __setattr__(self, name: str, value) -> None:
        if name in Replica._OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self.module, name, value)


def _ddp_kwargs() -> Dict[str, Any]:
    params = inspect.signature(DistributedDataParallel.__init__).parameters
    # per-rank buffers (stepwise LIF state) must not be overwritten by rank 0's at every forward
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}


# ---------------------------------------------------------------------------------------------------------------
# One process's view of the job
# ---------------------------------------------------------------------------------------------------------------
