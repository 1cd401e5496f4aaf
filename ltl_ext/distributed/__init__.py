"""Multi-process training: a thin layer over PyTorch's own engine (``torch.distributed``, DDP, ``torchrun``).

Nothing here is home-made: processes are launched by ``torchrun``, gradients are averaged by
:class:`~torch.nn.parallel.DistributedDataParallel` (NCCL on GPUs, gloo on CPU), data is split by
:class:`~torch.utils.data.distributed.DistributedSampler`. This module only gathers the few decisions LTL needs
in one place, so that the trainer reads the same with one process or many::

    dist = Distributed.setup()                 # from torchrun's RANK / WORLD_SIZE / LOCAL_RANK, else one process
    student = dist.wrap(student)               # DDP (or the bare model when alone): student(x), student.step(x_t)
    loader = dist.shard_loader(loader, train=True)  # this rank's part of every (global) batch
    with dist.guard("training"):
        for epoch in ...:
            dist.set_epoch(loader, epoch)
            ...
            with student.no_sync():            # the LTL engine: many backwards per batch...
                ...
            student.average_gradients()        # ...and one all-reduce
    totals = dist.all_sum({"correct": c, "count": n})          # metrics over all ranks
    if dist.is_main: save / log / plot
    dist.close()

LTL specifics (ltl-method.md §3-4):

- The loader's batch is the global batch: N processes run batch / N samples each (a DistributedSampler for
  per-sample loaders, :class:`ShardedBatches` for ltl_ext.data's whole-batch loaders), so a run on N processes
  takes the same steps with the same learning rate as on one, only faster.
- Every layer has its own local loss (and the readout its CE), so every parameter gets a gradient in every
  step: DDP runs with ``find_unused_parameters=False``. Each rank computes its own layers' losses on its share of
  the batch; DDP averages the gradients, which equals the gradient of the global-batch mean when the ranks hold
  equal shares (training shares are padded to be equal).
- The LTL engine calls ``backward`` many times per batch (once per layer, inside the forward; once per time
  step in the constant-memory online mode). It runs the whole step under ``student.no_sync()`` (DDP's, forward
  *and* backward inside it) so gradients accumulate locally, then calls ``student.average_gradients()``: one
  all-reduce per batch. (``sync_if(last)`` is DDP's own route for a step whose last backward reaches every
  parameter.) Stepwise calls go through DDP's forward too (``student.step``).
- Buffers are not broadcast at each forward (``forward_sync_buffers=False``): the stepwise LIF state (``v``,
  ``count``) is per rank, as each rank runs its own samples. They are synchronised once, at wrapping.
- The teacher is not wrapped: it runs in eval mode without gradients; :meth:`Distributed.broadcast_module`
  makes every rank hold rank 0's copy.
- Per-batch percentile normalisation of the targets is a statistic of the batch: :meth:`Distributed.percentile`
  returns the exact percentile of the global batch (only the top ``(1 - q)`` share of each rank's values travels),
  so that N processes with local batch b reproduce one process with batch N * b.

Failures: the process group has a timeout (``timeout_s``, default ``LTL_DIST_TIMEOUT`` or 600 s). A rank that
raises inside :meth:`Distributed.guard` (or a ``with Distributed.setup() as dist:`` block) says so on stderr and
stops; when its process exits its connections close, and its peers' next collective fails at once (at the latest
at the timeout, if the failed process lingers or hangs) with a :class:`DistributedError` that names the rank and
what it was doing, instead of hanging. Under ``torchrun`` the launcher also stops the other workers and prints the
failing rank's traceback.
"""
from .group import Distributed  # noqa: F401
from .launch import (DEFAULT_TIMEOUT_S, DistributedError, LaunchEnv, default_timeout_s, free_port,  # noqa: F401
                     launch_env)
from .replica import Replica  # noqa: F401
from .sampling import ShardedBatches, ShardSampler, SplitBatches  # noqa: F401

__all__ = ["DistributedError", "LaunchEnv", "launch_env", "Distributed", "Replica", "ShardSampler",
           "ShardedBatches", "SplitBatches", "free_port", "DEFAULT_TIMEOUT_S", "default_timeout_s"]
