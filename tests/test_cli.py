"""Every CLI command on tiny data, in-process: demo, train (+ resume), eval, info, robustness, and user errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ltl_ext.cli import main

TINY = ["--epochs", "1", "--teacher-epochs", "1", "--quiet"]
WITH_TEACHER = ["--epochs", "1", "--quiet"]   # TINY for a run given its --teacher (it trains none)


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    """4 classes of 8x8 grey images (a prototype per class plus noise) as x_train, y_train, x_test, y_test."""
    rng = np.random.default_rng(0)
    protos = rng.random((4, 8, 8))

    def draw(n):
        y = np.arange(n) % 4
        return (255 * (0.7 * protos[y] + 0.3 * rng.random((n, 8, 8)))).astype(np.uint8), y
    (xtr, ytr), (xte, yte) = draw(64), draw(32)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    return path


@pytest.fixture(scope="module")
def run(npz, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    rc = main(["train", "--data", "npz", "--data-dir", str(npz), "--arch", "cnn_small", "--channels", "4,8,8",
               "--hidden", "16", "-T", "2", "--batch-size", "16", "--out", str(out)] + TINY)
    assert rc == 0
    return out


def test_train_writes_metrics_plots_and_checkpoints(run):
    m = json.loads((run / "metrics.json").read_text())
    for key in ("teacher_acc", "student_acc", "val_student_acc", "val_teacher_acc", "selected_epoch", "epochs",
                "mode", "time_steps", "seconds", "history"):
        assert key in m
    assert m["epochs"] == 1 and m["mode"] == "offline" and m["time_steps"] == 2
    assert m["evaluated_on"].startswith("test") and m["test_samples"] == 32          # the test set, once
    assert all("student_acc" not in h and "val_student_acc" in h for h in m["history"])   # epochs: validation
    for f in ("best.pt", "last.pt", "settings.json", "teacher.pt", "accuracy.png", "local_loss.png", "acc_per_step.png", "history.json"):
        assert (run / f).is_file(), f


def test_train_resume_and_reuse_teacher(run, npz, tmp_path, capsys):
    rc = main(["train", "--data", "npz", "--data-dir", str(npz), "--arch", "cnn_small", "--channels", "4,8,8",
               "--hidden", "16", "-T", "2", "--batch-size", "16", "--out", str(run), "--resume", "--epochs", "2",
               "--teacher-epochs", "1", "--quiet"])
    assert rc == 0
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2
    rc = main(["train", "--data", "npz", "--data-dir", str(npz), "--teacher", str(run / "teacher.pt"), "-T", "4",
               "--mode", "online", "--memory", "constant", "--batch-size", "16", "--out", str(tmp_path),
               "--schedule", "step:1:0.5", "--grad-clip", "5", "--weight-decay", "1e-4"] + WITH_TEACHER)
    assert rc == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["mode"] == "online" and m["memory"] == "constant" and m["config"]["warmup"] == 3
    assert m["config"]["compact_targets"] is True                  # the default; --exact-targets turns it off
    assert m["config"]["schedule"] == "step:1:0.5" and m["config"]["grad_clip"] == 5.0
    import csv
    rows = list(csv.DictReader(open(tmp_path / "history.csv")))    # the CSV log: always on
    assert len(rows) == m["epochs"] and {"loss", "lr", "images_per_s", "val_student_acc"} <= set(rows[0])
    assert "student accuracy, test" in capsys.readouterr().out


def test_runs_are_not_overwritten(npz, tmp_path, capsys):
    base = ["train", "--data", "npz", "--data-dir", str(npz), "--arch", "mlp", "--hidden", "8", "-T", "2",
            "--batch-size", "16", "--out", str(tmp_path)] + WITH_TEACHER
    assert main(base + ["--teacher-epochs", "1"]) == 0
    before = {f: (tmp_path / f).read_bytes() for f in ("last.pt", "metrics.json", "teacher.pt")}
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "holds a run already" in err and "--resume" in err and "--overwrite" in err
    assert all((tmp_path / f).read_bytes() == b for f, b in before.items())          # nothing was touched
    assert main(base + ["--resume", "--lr", "0.5", "-T", "3"]) == 2                  # other settings: named
    err = capsys.readouterr().err
    assert "--lr 0.001 -> 0.5" in err and "--time-steps 2 -> 3" in err
    assert main(base + ["--resume", "--overwrite"]) == 2
    assert main(["train", "--data", "npz", "--data-dir", str(npz), "--out", str(tmp_path / "none"), "--resume",
                 "--quiet"]) == 2
    assert "no checkpoint to resume" in capsys.readouterr().err
    assert main(base + ["--overwrite", "--seed", "3"]) == 0                            # explicitly replaced
    assert json.loads((tmp_path / "settings.json").read_text())["seed"] == 3


def test_eval_does_not_depend_on_the_data_beside_the_test_set(run, npz, tmp_path, capsys):
    """The 34.0 % vs 14.9 % trap: the same checkpoint and test images, other training images in the .npz."""
    data = dict(np.load(npz))
    bright = dict(data, x_train=(200 + data["x_train"] // 5).astype(np.uint8))       # another mean and std
    np.savez(tmp_path / "bright.npz", **bright)
    reports = []
    for i, path in enumerate((npz, tmp_path / "bright.npz")):
        assert main(["eval", str(run / "best.pt"), "--data", "npz", "--data-dir", str(path), "--out",
                     str(tmp_path / str(i)), "--quiet"]) == 0
        reports.append({k: v for k, v in json.loads((tmp_path / str(i) / "eval.json").read_text()).items()
                        if k != "data" and k != "checkpoint"})
    assert reports[0] == reports[1]
    m = json.loads((run / "metrics.json").read_text())
    assert reports[0]["student_acc"] == m["student_acc"] and reports[0]["teacher_acc"] == m["teacher_acc"]


def test_eval(run, npz, tmp_path, capsys):
    rc = main(["eval", str(run / "best.pt"), "--data", "npz", "--data-dir", str(npz), "--out", str(tmp_path),
               "--quiet"])
    assert rc == 0
    assert "student accuracy" in capsys.readouterr().out
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["samples"] == 32 and len(report["acc_per_step"]) == 2


def test_demo_smoke(tmp_path, capsys):
    rc = main(["demo", "--out", str(tmp_path), "--limit", "40", "--time-steps", "2"] + TINY)
    assert rc == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert {"teacher_acc", "student_acc", "val_student_acc", "epochs", "mode", "time_steps", "seconds"} <= set(m)
    assert m["data"] == "embedded" and m["epochs"] == 1
    out = capsys.readouterr().out
    assert "teacher accuracy" in out and "spikes per sample" in out
    assert main(["demo", "--out", str(tmp_path), "--limit", "40", "--time-steps", "2"] + TINY) == 0   # its own run


@pytest.mark.parametrize("foreign", ["train run", "user's checkpoint"])
def test_demo_refuses_a_folder_it_did_not_write(tmp_path, capsys, foreign):
    """demo --out replaces only the demo's own earlier run: a `train` run or a user's checkpoints stay untouched."""
    files = {"settings.json": b"{}", "teacher.pt": b"t", "last.pt": b"l"} if foreign == "train run" else \
        {"last.pt": b"mine", "best.pt": b"mine too"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    assert main(["demo", "--out", str(tmp_path), "--limit", "40", "--time-steps", "2"] + TINY) == 2
    assert "did not write" in capsys.readouterr().err
    assert {f.name: f.read_bytes() for f in tmp_path.iterdir()} == files


def test_info_tells_which_kernels_run(capsys, monkeypatch):
    from ltl_ext.cli import info as info_cmd
    from ltl_ext.ops import build_info
    real = build_info()
    assert main(["info"]) == 0
    lines = {line.split("  ")[1].strip(): line for line in capsys.readouterr().out.splitlines() if "  " in line}
    assert ("AVX2 path" in lines["CPU kernels"]) == (real.get("cpu_vector_path") == "avx2")
    assert ("fused CUDA kernels on" in lines["CUDA kernels"]) == bool(real.get("cuda_kernels")
                                                                       and real.get("cuda_available"))
    assert lines["threads per kernel"].split()[3] == str(real.get("parallel_threads_used", "n/a"))
    # every case, from the build information alone
    rows = dict(info_cmd.kernels({"compiled": False, "error": "ltl_ext._C could not be loaded. To rebuild..."}))
    assert rows["CPU kernels"].startswith("NONE") and "reference" in rows["CPU kernels"]
    rows = dict(info_cmd.kernels({"compiled": True, "cpu_vector_path": "default", "cuda_kernels": False,
                                  "cuda_available": True, "openmp": False, "parallel_threads_used": 1}))
    assert "no AVX2" in rows["CPU kernels"] and "NOT built in" in rows["CUDA kernels"]
    assert "without OpenMP" in rows["threads per kernel"]
    rows = dict(info_cmd.kernels({"compiled": True, "cpu_vector_path": "avx2", "cuda_kernels": True,
                                  "cuda_available": False, "openmp": True, "parallel_threads_used": 4}))
    assert "no CUDA device is visible" in rows["CUDA kernels"] and rows["threads per kernel"].startswith("4 ")


def test_robustness_delegated(run, npz, tmp_path):
    pytest.importorskip("ltl_ext.hw.robustness")
    rc = main(["robustness", "--checkpoint", str(run / "best.pt"), "--data", "npz", "--data-dir", str(npz),
               "--sigmas", "0.2", "--chips", "1", "--steps", "2", "--no-devices", "--no-control",
               "--batch-size", "16", "--out", str(tmp_path), "--quiet"])
    assert rc == 0
    res = json.loads((tmp_path / "robustness.json").read_text())
    assert [e["sigma"] for e in res["sweep"]] == [0.2] and len(res["sweep"][0]["chips"]) == 1
    chip = res["sweep"][0]["chips"][0]
    assert 0 <= chip["before"] <= 100 and 0 <= chip["after"] <= 100 and res["checkpoint"].endswith("best.pt")


@pytest.mark.parametrize("argv,needle", [
    (["train", "--data", "fashion-mnist", "--data-dir", "/nonexistent/fm", "--quiet"], "does not exist"),
    (["train", "--data", "npz", "--data-dir", "/etc/hostname", "--quiet"], "npz"),
    (["eval", "/nonexistent/ckpt.pt", "--quiet"], "does not exist"),
    (["train", "--percentile", "abc", "--quiet", "--limit", "8"], "--percentile"),
    (["demo", "--epochs", "9", "--quiet"], "--epochs"),
    (["train", "--mode", "online", "-T", "4", "--warmup", "4", "--limit", "20", "--teacher-epochs", "0", "--quiet",
      "--out", "{tmp}"], "warmup"),
    (["train", "--arch", "mlp", "--channels", "8,8", "--quiet", "--out", "{tmp}"], "--channels"),
    (["train", "--val-fraction", "1.5", "--quiet", "--limit", "8", "--out", "{tmp}"], "--val-fraction"),
    (["train", "--schedule", "linear", "--limit", "20", "--teacher-epochs", "0", "--quiet", "--out", "{tmp}"],
     "schedule"),
])
def test_user_errors_are_one_line(argv, needle, capsys, tmp_path):
    assert main([a.replace("{tmp}", str(tmp_path / "out")) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err, err


def test_checkpoint_on_other_data_is_one_line(run, tmp_path, capsys):
    x = np.zeros((10, 12, 12), np.uint8)
    np.savez(tmp_path / "other.npz", x_train=x, y_train=np.arange(10) % 3, x_test=x, y_test=np.arange(10) % 3)
    assert main(["eval", str(run / "best.pt"), "--data", "npz", "--data-dir", str(tmp_path / "other.npz"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "trained for" in err


def test_corrupt_checkpoint_is_one_line(tmp_path, capsys):
    bad = tmp_path / "ckpt.pt"
    bad.write_bytes(b"\x00garbage" * 100)
    assert main(["eval", str(bad), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "corrupt" in err


def test_exact_targets_needs_the_constant_memory_mode(tmp_path, capsys):
    assert main(["train", "--data", "embedded", "--mode", "online", "--exact-targets", "--out", str(tmp_path),
                 "--quiet"]) == 2
    assert "--memory constant" in capsys.readouterr().err


def test_bad_flag_is_argparse_usage(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--mode", "sideways"])
    assert e.value.code == 2


def test_overwrite_keeps_the_teacher_it_starts_from(npz, tmp_path, capsys):
    """--overwrite --teacher OUT/teacher.pt (a new student from the same teacher) used to delete that teacher
    before reading it; a teacher that cannot be read must fail before anything of the old run is deleted."""
    base = ["train", "--data", "npz", "--data-dir", str(npz), "--arch", "mlp", "--hidden", "8", "-T", "2",
            "--batch-size", "16", "--out", str(tmp_path)] + WITH_TEACHER
    assert main(base + ["--teacher-epochs", "1"]) == 0
    teacher = (tmp_path / "teacher.pt").read_bytes()
    last = (tmp_path / "last.pt").read_bytes()
    assert main(base + ["--overwrite", "--teacher", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err
    assert (tmp_path / "last.pt").read_bytes() == last                  # the old run is untouched
    (tmp_path / "tensorboard").mkdir()
    (tmp_path / "tensorboard" / "events.out.old").write_bytes(b"the old run's curves")
    assert main(base + ["--overwrite", "--teacher", str(tmp_path / "teacher.pt"), "--mode", "online"]) == 0
    assert (tmp_path / "teacher.pt").read_bytes() == teacher             # kept: the new run's teacher
    assert not (tmp_path / "tensorboard").exists()                       # no old curves mixed with the new
    assert json.loads((tmp_path / "metrics.json").read_text())["mode"] == "online"


def test_runs_without_a_validation_split(npz, tmp_path, capsys):
    """--val-fraction 0 (or a --limit that leaves one image per class): no best.pt, the last epoch is tested; the
    demo used to crash on its teacher's missing validation accuracy."""
    assert main(["train", "--data", "npz", "--data-dir", str(npz), "--arch", "mlp", "--hidden", "8", "-T", "2",
                 "--batch-size", "16", "--val-fraction", "0", "--out", str(tmp_path / "t")] + TINY) == 0
    m = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert m["selected_epoch"] == 1 and m["val_student_acc"] is None and not (tmp_path / "t" / "best.pt").exists()
    assert m["selected_on"].startswith("no validation set")     # not "validation student accuracy"
    assert main(["demo", "--out", str(tmp_path / "d"), "--limit", "10", "--time-steps", "2"] + TINY) == 0
    m = json.loads((tmp_path / "d" / "metrics.json").read_text())
    assert m["test_samples"] == 10 and m["selected_on"].startswith("no validation set")


def test_export_does_not_overwrite_a_file(tmp_path, capsys):
    """export --out naming an existing file (best.pt by mistake, say) refuses, unless --overwrite."""
    target = tmp_path / "best.pt"
    target.write_bytes(b"a checkpoint")
    assert main(["export", str(target), "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert "exists already" in err and "--overwrite" in err
    assert target.read_bytes() == b"a checkpoint"


def test_eval_never_overwrites_results_unasked(run, npz, tmp_path, capsys):
    """eval --out used to replace eval.json and acc_per_step.png without asking (in a training run's folder, the
    run's own test plot); --out naming a file crashed with a traceback after the evaluation."""
    base = ["eval", str(run / "best.pt"), "--data", "npz", "--data-dir", str(npz), "--quiet", "--out"]
    (tmp_path / "acc_per_step.png").write_bytes(b"the user's plot")
    assert main(base + [str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "acc_per_step.png already" in err and "--overwrite" in err
    assert (tmp_path / "acc_per_step.png").read_bytes() == b"the user's plot" and not (tmp_path / "eval.json").exists()
    assert main(base + [str(tmp_path), "--overwrite"]) == 0
    assert json.loads((tmp_path / "eval.json").read_text())["samples"] == 32
    assert main(base + [str(npz)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_bad_data_flags_fail_in_one_line_before_training(run, npz, tmp_path, capsys):
    """A data set without test images used to train to the end, then crash in the final evaluation; bad
    --batch-size/--workers (eval), --teacher-epochs/--teacher-lr, --image-size and an --out that is a file crashed
    with tracebacks; a checkpoint not made for robustness's data crashed in a matrix product."""
    data = dict(np.load(npz))
    np.savez(tmp_path / "no_test.npz", **dict(data, x_test=data["x_test"][:0], y_test=data["y_test"][:0]))
    out = str(tmp_path / "out")
    train = ["train", "--data", "npz", "--data-dir", str(npz), "--arch", "mlp", "-T", "2", "--quiet", "--out", out]
    evaluate = ["eval", str(run / "best.pt"), "--data", "npz", "--data-dir", str(npz), "--quiet"]
    cases = [(["train", "--data", "npz", "--data-dir", str(tmp_path / "no_test.npz"), "--quiet", "--out", out],
              "no test images"),
             (evaluate + ["--batch-size", "0"], "--batch-size must be >= 1"),
             (evaluate + ["--workers", "-1"], "--workers must be >= 0"),
             (train + ["--teacher-epochs", "-1"], "--teacher-epochs must be >= 0"),
             (train + ["--teacher-lr", "-0.1"], "--teacher-lr must be >= 0"),
             (["train", "--data", "folder", "--data-dir", str(tmp_path), "--image-size", "0", "--quiet", "--out",
               out], "image_size must be a positive"),
             (train[:-1] + [str(npz)], "is a file, not a folder"),
             (["robustness", "--checkpoint", str(run / "best.pt"), "--steps", "1", "--quiet", "--out", out],
              "was trained for 4 classes")]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, (argv, err)
    assert not (tmp_path / "out").exists()                                     # nothing ran, nothing written


def test_eval_and_teacher_refuse_data_whose_classes_are_named_otherwise(npz, tmp_path, capsys):
    """Labels are positions among the sorted class names: a checkpoint evaluated on data with the same number of
    classes but other names (one class renamed shifts every label) used to be scored against a permuted mapping,
    without a word. The names travel in the spec; old checkpoints without them still load."""
    from ltl_ext.train.checkpoint import load_checkpoint, save_checkpoint
    data = dict(np.load(npz))
    for name, classes in (("named", ["ant", "bee", "cat", "dog"]), ("renamed", ["zebra", "bee", "cat", "dog"])):
        classes = np.array(classes)
        np.savez(tmp_path / f"{name}.npz", **dict(data, y_train=classes[data["y_train"]],
                                                  y_test=classes[data["y_test"]]))
    out = tmp_path / "run"
    assert main(["train", "--data", "npz", "--data-dir", str(tmp_path / "named.npz"), "--arch", "mlp", "--hidden",
                 "8", "-T", "2", "--batch-size", "16", "--out", str(out)] + TINY) == 0
    evaluate = ["eval", str(out / "best.pt"), "--data", "npz", "--quiet", "--data-dir"]
    assert main(evaluate + [str(tmp_path / "named.npz")]) == 0
    capsys.readouterr()
    assert main(evaluate + [str(tmp_path / "renamed.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "label 0 is 'ant' there, 'bee' here" in err and "class_names" in err
    assert main(evaluate + [str(npz)]) == 0                   # integer labels: no names to compare
    assert main(["train", "--data", "npz", "--data-dir", str(tmp_path / "renamed.npz"), "--teacher",
                 str(out / "teacher.pt"), "-T", "2", "--out", str(tmp_path / "student")] + WITH_TEACHER) == 2
    assert "wrong classes" in capsys.readouterr().err and not (tmp_path / "student").exists()
    old = load_checkpoint(out / "best.pt", kind="ltl_trainer")       # as written before the names were stored
    del old["teacher_spec"]["class_names"]
    save_checkpoint(old, tmp_path / "old.pt", kind="ltl_trainer")
    assert main(["eval", str(tmp_path / "old.pt"), "--data", "npz", "--quiet", "--data-dir",
                 str(tmp_path / "renamed.npz")]) == 0


def test_architecture_flags_must_match_the_teacher_they_come_with(run, npz, tmp_path, capsys):
    """train --teacher with --arch/--channels/--hidden used to ignore them and write them to settings.json as the
    run's architecture; flags that describe the teacher still pass (test_overwrite_keeps_the_teacher...)."""
    base = ["train", "--data", "npz", "--data-dir", str(npz), "--teacher", str(run / "teacher.pt"), "-T", "2",
            "--quiet", "--out", str(tmp_path / "out")]
    for flags, needle in ((["--arch", "mlp"], "--arch mlp contradicts"),
                          (["--channels", "4,8,16"], "--channels 4,8,16 contradicts"),
                          (["--hidden", "256"], "whose hidden is 16"),
                          (["--arch", "cnn_small", "--hidden", "16", "--channels", "4,8"], "channels is [4, 8, 8]")):
        assert main(base + flags) == 2, flags
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "out").exists()


def test_a_teacher_from_another_split_is_refused(run, npz, tmp_path, capsys):
    """train --teacher with another --seed (or --val-fraction, --limit, data set) than the teacher's run used to
    train: its validation split then held images the teacher had trained on, and every validation figure (and the
    epoch they select) looked better than it was. The teacher file records its split; a mismatch is refused."""
    base = ["train", "--data", "npz", "--data-dir", str(npz), "--teacher", str(run / "teacher.pt"), "-T", "2",
            "--quiet", "--out", str(tmp_path / "out")]
    for flags, needle in ((["--seed", "1"], "seed 0; this run: seed 1"),
                          (["--val-fraction", "0.5"], "val_fraction 0.1; this run: val_fraction 0.5"),
                          (["--limit", "40"], "limit None; this run: limit 40")):
        assert main(base + flags) == 2, flags
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "another train/validation split" in err and needle in err, err
    assert not (tmp_path / "out").exists()
    assert main(base + ["--seed", "1", "--val-fraction", "0", "--epochs", "0"]) == 0   # no validation: nothing leaks


def test_teacher_training_flags_are_refused_with_a_loaded_teacher(run, npz, tmp_path, capsys):
    """train --teacher with --teacher-epochs / --teacher-lr ignored them but wrote them to settings.json as if they
    had trained the teacher. Now refused; a run that trains its teacher records the values it used."""
    base = ["train", "--data", "npz", "--data-dir", str(npz), "--teacher", str(run / "teacher.pt"), "-T", "2",
            "--quiet", "--out", str(tmp_path / "out")]
    for flags in (["--teacher-epochs", "3"], ["--teacher-lr", "0.1"]):
        assert main(base + flags) == 2, flags
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"{flags[0]} train this run's teacher" in err, err
    assert not (tmp_path / "out").exists()
    settings = json.loads((run / "settings.json").read_text())
    assert settings["teacher_epochs"] == 1 and settings["teacher_lr"] == 0.05
