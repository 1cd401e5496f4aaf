"""The job as torchrun describes it, its timeout, and how a failed peer is recognised."""
from __future__ import annotations

import math
import numbers
import os
import socket
from dataclasses import dataclass
from typing import Mapping, Optional

import torch
import torch.distributed as torch_dist


DEFAULT_TIMEOUT_S = 600.0      # seconds a collective waits for the other ranks; LTL_DIST_TIMEOUT overrides it
MAX_TIMEOUT_S = 1e9            # torch holds the timeout in int64 nanoseconds: 1e10 s overflowed into "timed out"


def default_timeout_s() -> float:
    """``LTL_DIST_TIMEOUT`` (seconds) if set, else :data:`DEFAULT_TIMEOUT_S`."""
    text = os.environ.get("LTL_DIST_TIMEOUT", "")
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_TIMEOUT_S:
        # 0 or 1e10 made joining fail at once as "timed out after 0ms" (read as a network problem), inf and nan a
        # bare OverflowError / ValueError
        raise DistributedError(f"LTL_DIST_TIMEOUT must be a number of seconds in (0, {MAX_TIMEOUT_S:g}], got "
                               f"{text!r} (unset it for the default {DEFAULT_TIMEOUT_S:g} s)")
    return value


def check_timeout_s(timeout_s) -> float:
    """``timeout_s`` as a float, refused unless it is a number of seconds in (0, :data:`MAX_TIMEOUT_S`]."""
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, numbers.Real):
        raise TypeError(f"timeout_s must be a number of seconds, got {timeout_s!r}")
    value = float(timeout_s)
    if not 0 < value <= MAX_TIMEOUT_S:
        raise ValueError(f"timeout_s must be in (0, {MAX_TIMEOUT_S:g}] seconds, got {timeout_s!r} (None: "
                         f"LTL_DIST_TIMEOUT or {DEFAULT_TIMEOUT_S:g} s)")
    return value


class DistributedError(RuntimeError):
    """A collective failed or timed out: another rank failed, was killed, or stopped responding."""


# ---------------------------------------------------------------------------------------------------------------
# The launcher's environment
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LaunchEnv:
    """What ``torchrun`` tells a worker: its global rank, the number of processes, its rank on this machine."""
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int


def launch_env(environ: Optional[Mapping[str, str]] = None) -> Optional[LaunchEnv]:
    """The torchrun environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ...), or ``None`` when not launched by it."""
    env = os.environ if environ is None else environ
    if ("RANK" in env) != ("WORLD_SIZE" in env):
        # one without the other is a hand-made launch gone wrong: run alone, every process would train on all the
        # data and write the same files
        have, missing = ("RANK", "WORLD_SIZE") if "RANK" in env else ("WORLD_SIZE", "RANK")
        raise DistributedError(f"{have}={env[have]} is set but {missing} is not: launch with torchrun (it sets "
                               f"both), set {missing} too, or unset {have} to run one process")
    if "RANK" not in env:
        return None
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local_rank = int(env.get("LOCAL_RANK", rank))
        local_world = int(env.get("LOCAL_WORLD_SIZE", world))
    except ValueError as e:
        raise DistributedError(f"malformed torchrun environment: {e}") from None
    if world < 1 or not 0 <= rank < world or not 0 <= local_rank < local_world:
        raise DistributedError(f"inconsistent torchrun environment: RANK={rank} WORLD_SIZE={world} "
                               f"LOCAL_RANK={local_rank} LOCAL_WORLD_SIZE={local_world}")
    return LaunchEnv(rank, world, local_rank, local_world)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now on ``host`` (for tests and single-machine launches without torchrun)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------------------------
# Samplers
# ---------------------------------------------------------------------------------------------------------------


def _local_device(device, local_rank: int) -> torch.device:
    if device is None:
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        return torch.device(f"cuda:{local_rank}")
    return dev


#: what torch.distributed raises when a peer, the backend or the store fails (DistBackendError, DistNetworkError,
#: DistStoreError are its subclasses; timeouts are DistBackendError). By type, never by words in a message: a
#: user's RuntimeError that mentions "socket" is the user's error, not a broken job.
_COMM_ERRORS = (torch_dist.DistError,)


def _is_comm_error(e: BaseException) -> bool:
    return isinstance(e, _COMM_ERRORS)
