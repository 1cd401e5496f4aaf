"""The command line (floor 7): ``demo`` (the main job), ``train``, ``eval``, ``info``, ``robustness``.

One module per subcommand, each with ``add_parser(subparsers)`` and ``run(args)``. This floor only parses
arguments, calls the trainer and the data loaders, prints a short table and writes files; all training logic
lives below it. A user error (wrong path, wrong format, bad flag value, a corrupt checkpoint) ends with one line
on stderr and exit status 2, not a traceback; set ``LTL_EXT_DEBUG=1`` to see the traceback anyway.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, Sequence

from . import demo, eval as eval_cmd, export, info, robustness, train
from .common import ARCHS, DATASETS, UserError  # noqa: F401

COMMANDS = (demo, train, eval_cmd, info, robustness, export)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ltl_ext",
                                description="Local Tandem Learning: train spiking neural networks from ANN "
                                            "teachers.")
    sub = p.add_subparsers(dest="command", metavar="{demo,train,eval,info,robustness,export}")
    sub.required = True
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    if "TORCHELASTIC_ERROR_FILE" in os.environ:      # under torchrun: the failing rank's traceback goes to it
        from torch.distributed.elastic.multiprocessing.errors import record
        return record(_main)(argv)
    return _main(argv)


def _main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = os.environ.get("LTL_EXT_DEBUG", "") not in ("", "0")
    try:
        out = args.func(args)
        return int(out or 0)
    except KeyboardInterrupt:
        print("ltl_ext: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the user-facing boundary
        if debug or not _is_user_error(e):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"ltl_ext {args.command}: error: {msg}", file=sys.stderr)
        return 2


def _is_user_error(e: BaseException) -> bool:
    from ..train.checkpoint import CheckpointError
    from ..distributed import DistributedError
    kinds: List[type] = [UserError, CheckpointError, DistributedError, FileNotFoundError, NotADirectoryError,
                         IsADirectoryError, PermissionError]
    from ..data import DataError
    kinds.append(DataError)
    return isinstance(e, tuple(kinds))
