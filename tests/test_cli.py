"""Every CLI command on tiny data, in-process: demo, train (+ resume), eval, info, robustness, and user errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ltl_ext.cli import main

TINY = ["--epochs", "1", "--teacher-epochs", "1", "--quiet"]


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
    for key in ("teacher_acc", "student_acc", "epochs", "mode", "time_steps", "seconds", "history"):
        assert key in m
    assert m["epochs"] == 1 and m["mode"] == "offline" and m["time_steps"] == 2
    for f in ("ckpt.pt", "teacher.pt", "accuracy.png", "local_loss.png", "acc_per_step.png", "history.json"):
        assert (run / f).is_file(), f


def test_train_resume_and_reuse_teacher(run, npz, tmp_path, capsys):
    rc = main(["train", "--data", "npz", "--data-dir", str(npz), "-T", "2", "--batch-size", "16", "--out", str(run),
               "--resume", "--epochs", "2", "--quiet"])
    assert rc == 0
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2
    rc = main(["train", "--data", "npz", "--data-dir", str(npz), "--teacher", str(run / "teacher.pt"), "-T", "4",
               "--mode", "online", "--memory", "constant", "--batch-size", "16", "--out", str(tmp_path)] + TINY)
    assert rc == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["mode"] == "online" and m["memory"] == "constant" and m["config"]["warmup"] == 3
    assert "student accuracy" in capsys.readouterr().out


def test_eval(run, npz, tmp_path, capsys):
    rc = main(["eval", str(run / "ckpt.pt"), "--data", "npz", "--data-dir", str(npz), "--out", str(tmp_path),
               "--quiet"])
    assert rc == 0
    assert "student accuracy" in capsys.readouterr().out
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["samples"] == 32 and len(report["acc_per_step"]) == 2


def test_demo_smoke(tmp_path, capsys):
    rc = main(["demo", "--out", str(tmp_path), "--limit", "40", "--time-steps", "2"] + TINY)
    assert rc == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert {"teacher_acc", "student_acc", "epochs", "mode", "time_steps", "seconds"} <= set(m)
    assert m["data"] == "embedded" and m["epochs"] == 1
    out = capsys.readouterr().out
    assert "teacher accuracy" in out and "spikes per sample" in out


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "ltl_ext" in out


def test_robustness_delegated(run, npz, tmp_path):
    pytest.importorskip("ltl_ext.hw.robustness")
    rc = main(["robustness", "--checkpoint", str(run / "ckpt.pt"), "--data", "npz", "--data-dir", str(npz),
               "--sigmas", "0.2", "--chips", "1", "--steps", "2", "--no-devices", "--no-control",
               "--batch-size", "16", "--out", str(tmp_path), "--quiet"])
    assert rc == 0
    assert (tmp_path / "robustness.json").is_file()


@pytest.mark.parametrize("argv,needle", [
    (["train", "--data", "fashion-mnist", "--data-dir", "/nonexistent/fm", "--quiet"], "does not exist"),
    (["train", "--data", "npz", "--data-dir", "/etc/hostname", "--quiet"], "npz"),
    (["eval", "/nonexistent/ckpt.pt", "--quiet"], "does not exist"),
    (["train", "--percentile", "abc", "--quiet", "--limit", "8"], "--percentile"),
    (["demo", "--epochs", "9", "--quiet"], "--epochs"),
    (["train", "--mode", "online", "-T", "4", "--warmup", "4", "--limit", "20", "--teacher-epochs", "0", "--quiet"],
     "warmup"),
    (["train", "--arch", "mlp", "--channels", "8,8", "--quiet"], "--channels"),
])
def test_user_errors_are_one_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err, err


def test_checkpoint_on_other_data_is_one_line(run, tmp_path, capsys):
    x = np.zeros((10, 12, 12), np.uint8)
    np.savez(tmp_path / "other.npz", x_train=x, y_train=np.arange(10) % 3, x_test=x, y_test=np.arange(10) % 3)
    assert main(["eval", str(run / "ckpt.pt"), "--data", "npz", "--data-dir", str(tmp_path / "other.npz"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "trained for" in err


def test_corrupt_checkpoint_is_one_line(tmp_path, capsys):
    bad = tmp_path / "ckpt.pt"
    bad.write_bytes(b"\x00garbage" * 100)
    assert main(["eval", str(bad), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "corrupt" in err


def test_bad_flag_is_argparse_usage(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--mode", "sideways"])
    assert e.value.code == 2
