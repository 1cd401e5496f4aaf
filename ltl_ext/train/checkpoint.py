"""Checkpoint files: written atomically, read with ``weights_only=True``, checked before use.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (nothing else, so the safe
``weights_only`` unpickler reads it). It always carries ``format`` (this module's version tag) and ``kind`` (what
wrote it, e.g. ``"ltl_trainer"``); :func:`load_checkpoint` checks both and turns every way a file can be wrong
(missing, truncated, not a torch file, from another tool) into a :class:`CheckpointError` with one clear line.
"""
from __future__ import annotations

import json
import os
import random
import tempfile
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
from torch import Tensor

#: v2: models carry their input normalisation (``Normalize`` in their state) and loaders yield raw [0, 1] inputs; a
#: v1 model expects inputs normalised by whatever data it is given, so it is refused rather than run on raw ones.
FORMAT = "ltl_ext-checkpoint-v2"
_OLD_FORMATS = {"ltl_ext-checkpoint-v1": "an older ltl_ext whose models did not carry their input normalisation "
                                         "(their accuracy depended on the data passed beside them); retrain it"}


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used: missing, corrupt, or written for something else."""


def save_checkpoint(state: Dict[str, Any], path, *, kind: str) -> Path:
    """Write ``state`` to ``path`` atomically: a temp file in the same folder, fsync, then rename.

    An interrupted save leaves the previous checkpoint intact (never a half-written file under ``path``).
    """
    path = Path(path)
    _check_plain(state, "state")         # before anything is written: the old file stays
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(state, format=FORMAT, kind=kind)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


#: what the ``weights_only`` loader reads back: containers are walked, other values must be tensors or of exactly
#: these types (a NumPy float is a ``float`` subclass, which it refuses)
_PLAIN = {torch.Size, torch.device, torch.dtype, bool, int, float, complex, str, bytes, bytearray, type(None)}
_CONTAINERS = (dict, OrderedDict, Counter, list, tuple, set)


def _check_plain(obj, where: str) -> None:
    """Refuse what :func:`load_checkpoint` could not read back (a NumPy float in a teacher's ``meta``, say), naming
    where it is. Why: ``torch.save`` writes anything, and the file would then be refused as corrupt when loaded."""
    if type(obj) in _CONTAINERS:
        items = obj.items() if isinstance(obj, dict) else enumerate(obj)
        for key, value in items:
            _check_plain(value, f"{where}[{key!r}]")
    elif not isinstance(obj, Tensor) and type(obj) not in _PLAIN and type(obj) not in _user_safe_types():
        raise TypeError(f"checkpoint {where} is a {type(obj).__module__}.{type(obj).__qualname__}, which the safe "
                        f"(weights_only) loader cannot read back: store it as a number, string, list, dict or tensor "
                        f"(e.g. float(x), x.tolist())")


def _user_safe_types() -> set:
    """Types the user allowed with ``torch.serialization.add_safe_globals`` (entries may be ``(type, name)``)."""
    return {g[0] if isinstance(g, tuple) else g for g in torch.serialization.get_safe_globals()}


def load_checkpoint(path, *, kind: Optional[str] = None, map_location="cpu") -> Dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; ``kind`` (if given) must match the writer's."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (or is not a file)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, random bytes, a pickle with code in it ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {path} is corrupt or not a ltl_ext checkpoint "
                              f"({type(e).__name__}: {first[:200]})") from None
    if isinstance(state, dict) and state.get("format") in _OLD_FORMATS:
        raise CheckpointError(f"{path} was written by {_OLD_FORMATS[state['format']]}")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a torch file but not a ltl_ext checkpoint "
                              f"(expected format {FORMAT!r})")
    if kind is not None and state.get("kind") != kind:
        raise CheckpointError(f"{path} holds a {state.get('kind')!r} checkpoint, expected {kind!r}")
    return state


# --------------------------------------------------------------------------------------------------- RNG state
def rng_state() -> Dict[str, Any]:
    """Every global RNG a training run draws from (torch CPU/CUDA, Python, NumPy), as weights_only-safe data."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": _to_lists(random.getstate()),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_to_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def _to_lists(x):
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x):
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x


def write_json(path, obj) -> Path:
    """Write ``obj`` as indented JSON, atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    tmp.replace(path)
    return path


def _json_default(o):
    if isinstance(o, Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
