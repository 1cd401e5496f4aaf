"""Progress bars and the epoch line on the console (tqdm, only on a terminal)."""
from __future__ import annotations

from typing import Any, Dict, Optional


def _progress(iterable, enabled: bool, **kw):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, leave=False, dynamic_ncols=True, disable=None, **kw)   # None: no bar off a terminal


def _len_or_none(loader) -> Optional[int]:
    try:
        return len(loader)
    except TypeError:
        return None


def _print_epoch(entry: Dict[str, Any]) -> None:
    from tqdm.auto import tqdm
    local = " ".join(f"{v:.4f}" for v in entry.get("local_loss", {}).values())
    msg = f"epoch {entry['epoch']}: loss {entry['loss']:.4f} (ce {entry['ce']:.3f}; local per layer {local})"
    if "val_student_acc" in entry:
        msg += f", validation: student {entry['val_student_acc']:.2f}% / teacher {entry['val_teacher_acc']:.2f}%"
    msg += f", {entry['seconds']:.1f}s"
    tqdm.write(msg)
