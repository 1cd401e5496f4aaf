"""Issue 10: how close do teacher- and randomly-initialised LTL students get to their teacher in a few epochs?

One teacher (``cnn_small(channels=(16, 32, 32), hidden=128)``, SGD + Nesterov, lr 0.05 on a per-epoch cosine) is
trained on the first ``--train-limit`` Fashion-MNIST training images (the idx files are shuffled), then each
student is converted from it (``convert(init=..., mode=...)``: the user's LIF kept, the scale in the weights,
balanced at the mode's target percentile) and trained with ``LocalTandemTrainer`` at the `train` command's
defaults (Adam lr 1e-3, batch 64, T = 16, warm-up 12 online), evaluated on the first ``--test-limit`` test images
after every epoch (reported, never used to select anything). Each student's row in
``docs/results/<--name>.json`` (keyed by data size, mode, init and lr; other rows kept) is rewritten after every
epoch, with the load average.

Long runs go in pieces (``--pieces``: one teacher epoch or one student epoch per invocation, students also
checkpoint every 100 steps under ``--work``; the exit status is 3 while work is left: run the same
command again), on one core::

    flock /tmp/ltl_long.lock nice -n 10 env OMP_NUM_THREADS=1 .venv/bin/python scripts/init_study.py --pieces
    flock /tmp/ltl_long.lock nice -n 10 env OMP_NUM_THREADS=1 .venv/bin/python scripts/init_study.py --pieces \\
        --train-limit 0 --test-limit 0 --inits teacher                                   # full data
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evidence import RESULTS_DIR, write_artefact  # noqa: E402

from ltl_ext import LocalTandemTrainer, evaluate_ann, train_teacher  # noqa: E402
from ltl_ext.data.idx import read_idx_split  # noqa: E402
from ltl_ext.ltl.convert import TARGET_PERCENTILE, convert  # noqa: E402
from ltl_ext.nn.zoo import cnn_small  # noqa: E402

MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training-set pixel statistics


def load(data_dir: Path, split: str, limit: int):
    images, labels = read_idx_split(data_dir, split)
    if limit:
        images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(images.copy()).float().div_(255).sub_(MEAN).div_(STD).unsqueeze(1)
    return x, torch.from_numpy(labels.astype("int64"))


def loader(x, y, shuffle: bool, seed: int, batch: int = 64) -> DataLoader:
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=shuffle,
                      generator=torch.Generator().manual_seed(seed) if shuffle else None)


def fit_teacher(x, y, epochs: int, seed: int, work: Path, pieces: bool) -> Optional[nn.Module]:
    """The teacher, trained (SGD + Nesterov, lr 0.05 on a per-epoch cosine, ``train_teacher``'s other defaults)
    one epoch per piece: ``work/teacher.partial.pt`` keeps the finished epochs, ``work/teacher.pt`` the result.
    With ``pieces``, returns ``None`` after one epoch while more are left (run the script again)."""
    torch.manual_seed(seed)
    teacher = cnn_small(num_classes=10, in_channels=1, channels=(16, 32, 32), hidden=128)
    final, partial = work / "teacher.pt", work / "teacher.partial.pt"
    if final.exists():
        teacher.load_state_dict(torch.load(final, weights_only=True))
        return teacher.eval()
    done = 0
    if partial.exists():
        state = torch.load(partial, weights_only=True)
        teacher.load_state_dict(state["model"])
        done = state["epochs"]
    while done < epochs:
        lr = 0.05 * 0.5 * (1 + math.cos(math.pi * done / epochs))
        train_teacher(teacher, loader(x, y, True, seed + done), 1, lr=lr, schedule="constant", device="cpu",
                      progress=False)
        done += 1
        torch.save({"model": teacher.state_dict(), "epochs": done}, partial)
        print(f"# teacher epoch {done}/{epochs} (lr {lr:.4f})", flush=True)
        if pieces and done < epochs:
            return None
    torch.save(teacher.state_dict(), final)
    return teacher.eval()


TEACHER_RECIPE = "cnn_small(16,32,32; 128), SGD+Nesterov lr 0.05 per-epoch cosine, batch 64"
MORE = 3   # exit status of a piece that left work to do: run the same command again


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    ap.add_argument("--train-limit", type=int, default=10000, help="first N training images (0 = all 60k)")
    ap.add_argument("--test-limit", type=int, default=2000, help="first N test images (0 = all 10k)")
    ap.add_argument("--teacher-epochs", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=2, help="LTL epochs per student")
    ap.add_argument("--time-steps", "-T", type=int, default=16)
    ap.add_argument("--modes", nargs="+", default=["offline", "online"], choices=["offline", "online"])
    ap.add_argument("--inits", nargs="+", default=["teacher", "random"], choices=["teacher", "random"])
    ap.add_argument("--lrs", nargs="+", type=float, default=[1e-3], help="LTL Adam lr (the CLI's default 1e-3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="init_study", help="artefact name under docs/results/")
    ap.add_argument("--work", type=Path, default=Path("runs/init_study"), help="teachers and student checkpoints")
    ap.add_argument("--pieces", action="store_true", help="stop after each teacher epoch / student epoch (resume "
                    "by running the same command again; students also checkpoint every 100 steps)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    x_train, y_train = load(args.data_dir, "train", args.train_limit)
    x_test, y_test = load(args.data_dir, "test", args.test_limit)
    data = {"train_images": len(x_train), "test_images": len(x_test), "time_steps": args.time_steps}
    test_loader = loader(x_test, y_test, False, 0, batch=256)
    work = args.work / f"train{len(x_train)}_teacher{args.teacher_epochs}_seed{args.seed}"
    work.mkdir(parents=True, exist_ok=True)

    teacher = fit_teacher(x_train, y_train, args.teacher_epochs, args.seed, work, args.pieces)
    if teacher is None:
        return MORE
    teacher_acc = evaluate_ann(teacher, test_loader, "cpu")
    print(f"# teacher {teacher_acc:.2f} % on {len(x_test)} test images", flush=True)

    path = RESULTS_DIR / f"{args.name}.json"
    for mode in args.modes:
        for init in args.inits:
            for lr in args.lrs:
                if not run_student(args, data, work, teacher, teacher_acc, x_train, y_train, test_loader, path,
                                   mode, init, lr):
                    return MORE
    return 0


def run_student(args, data, work, teacher, teacher_acc, x_train, y_train, test_loader, path, mode, init, lr) -> bool:
    """Train (or resume) one student to ``args.epochs``, its test accuracy after each epoch written to the
    artefact as it comes. Returns False when it stopped early (``--pieces``)."""
    tag = f"{mode}_{init}_lr{lr:g}"
    ckpt, meta_path = work / f"{tag}.pt", work / f"{tag}.json"
    torch.manual_seed(args.seed)
    student = convert(teacher, init=init, mode=mode, calib_data=x_train[:1024])
    if ckpt.exists():
        trainer = LocalTandemTrainer.load(ckpt, teacher=teacher, student=student, device="cpu", distributed=False)
        meta = json.loads(meta_path.read_text())
    else:
        trainer = LocalTandemTrainer(teacher, student, time_steps=args.time_steps, mode=mode, lr=lr,
                                     percentile=TARGET_PERCENTILE[mode], device="cpu", distributed=False)
        meta = {"before": trainer.evaluate(test_loader)["student_acc"], "accs": []}
        meta_path.write_text(json.dumps(meta))
    train_loader, trained = loader(x_train, y_train, True, args.seed), 0
    while True:
        if len(meta["accs"]) < trainer.epoch:     # test figures after each epoch; nothing is selected on them
            meta["accs"].append(trainer.evaluate(test_loader)["student_acc"])
            meta_path.write_text(json.dumps(meta))
            write_row(path, dict(data, teacher=TEACHER_RECIPE, teacher_epochs=args.teacher_epochs, mode=mode,
                                 init=init, lr=lr,
                                 percentile=TARGET_PERCENTILE[mode], teacher_acc=teacher_acc,
                                 student_acc_before=meta["before"], student_acc=meta["accs"],
                                 gap=[round(teacher_acc - a, 2) for a in meta["accs"]],
                                 local_loss=[h["local_loss"] for h in trainer.history],
                                 seconds=[round(h["seconds"], 1) for h in trainer.history],
                                 load_average=list(os.getloadavg())))
        if trainer.epoch >= args.epochs:
            return True
        if args.pieces and trained:
            return False
        trainer.fit(train_loader, trainer.epoch + 1, checkpoint=ckpt, checkpoint_every=100, progress=False)
        trained += 1


def write_row(path: Path, row: dict) -> None:
    print(json.dumps(row), flush=True)
    rows = json.loads(path.read_text()).get("rows", []) if path.exists() else []
    key = ("train_images", "mode", "init", "lr")
    rows = [r for r in rows if tuple(r.get(k) for k in key) != tuple(row[k] for k in key)] + [row]
    write_artefact(path.stem, {"rows": rows})


if __name__ == "__main__":
    sys.exit(main())
