"""Issue 10: how close do teacher- and randomly-initialised LTL students get to their teacher in a few epochs?

One teacher (``cnn_small(channels=(16, 32, 32), hidden=128)``, the CLI's SGD recipe) is trained on the first
``--train-limit`` Fashion-MNIST training images (stratification is not needed: the idx files are shuffled), then
each student is converted from it (``convert(init=..., mode=...)``: the user's LIF kept, the scale in the weights,
thresholds balanced at the mode's target percentile) and trained with ``LocalTandemTrainer`` at the `train`
command's defaults (Adam, batch 64, T = 16, warm-up 12 online), evaluated on the first ``--test-limit`` test
images after every epoch (reported, never used to select anything). Each finished run is written at once to
``docs/results/<--name>.json`` (rows keyed by data size, mode, init and lr; ``--append`` keeps the rows of earlier
invocations), with the load average.

    flock /tmp/ltl_heavy.lock .venv/bin/python scripts/init_study.py                         # 10k subset, 4 runs
    flock /tmp/ltl_heavy.lock .venv/bin/python scripts/init_study.py --train-limit 0 --test-limit 0 \\
        --inits teacher --modes offline --append --teacher-cache runs/init_study/teacher_full.pt   # full data
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
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


def main() -> None:
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
    ap.add_argument("--append", action="store_true", help="keep the artefact's rows from earlier invocations")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--teacher-cache", default=None, help="load the teacher from this file if it exists, else "
                    "train it and save it there (same data, epochs and seed)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    x_train, y_train = load(args.data_dir, "train", args.train_limit)
    x_test, y_test = load(args.data_dir, "test", args.test_limit)
    data = {"train_images": len(x_train), "test_images": len(x_test), "time_steps": args.time_steps}
    test_loader = loader(x_test, y_test, False, 0, batch=256)

    torch.manual_seed(args.seed)
    teacher = cnn_small(num_classes=10, in_channels=1, channels=(16, 32, 32), hidden=128)
    t0 = time.perf_counter()
    cache = Path(args.teacher_cache) if args.teacher_cache else None
    if cache is not None and cache.exists():   # the same teacher for runs split over several invocations
        teacher.load_state_dict(torch.load(cache, weights_only=True))
    else:
        train_teacher(teacher, loader(x_train, y_train, True, args.seed), args.teacher_epochs, lr=0.05,
                      device="cpu", progress=False)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            torch.save(teacher.state_dict(), cache)
    teacher.eval()
    teacher_acc = evaluate_ann(teacher, test_loader, "cpu")
    print(f"# teacher {teacher_acc:.2f} % on {len(x_test)} test images ({time.perf_counter() - t0:.0f} s)",
          flush=True)

    path = RESULTS_DIR / f"{args.name}.json"
    rows = json.loads(path.read_text()).get("rows", []) if args.append and path.exists() else []
    for mode in args.modes:
        for init in args.inits:
            for lr in args.lrs:
                torch.manual_seed(args.seed)
                student = convert(teacher, init=init, mode=mode, calib_data=x_train[:1024])
                trainer = LocalTandemTrainer(teacher, student, time_steps=args.time_steps, mode=mode, lr=lr,
                                             percentile=TARGET_PERCENTILE[mode], device="cpu", distributed=False)
                before = trainer.evaluate(test_loader)["student_acc"]
                train_loader, accs = loader(x_train, y_train, True, args.seed), []
                for epoch in range(1, args.epochs + 1):   # test figures after each epoch; nothing is selected on them
                    history = trainer.fit(train_loader, epoch, progress=False)
                    accs.append(trainer.evaluate(test_loader)["student_acc"])
                row = dict(data, teacher_epochs=args.teacher_epochs, mode=mode, init=init, lr=lr,
                           percentile=TARGET_PERCENTILE[mode], teacher_acc=teacher_acc, student_acc_before=before,
                           student_acc=accs, gap=[round(teacher_acc - a, 2) for a in accs],
                           local_loss=[h["local_loss"] for h in history],
                           seconds=[round(h["seconds"], 1) for h in history], load_average=list(os.getloadavg()))
                print(json.dumps(row), flush=True)
                key = ("train_images", "mode", "init", "lr")
                rows = [r for r in rows if tuple(r.get(k) for k in key) != tuple(row[k] for k in key)] + [row]
                write_artefact(args.name, {"rows": rows})


if __name__ == "__main__":
    main()
