"""The command line used with settings nobody tuned to: flags that were accepted and ignored, checkpoints scored on
another data set without a word, bad values refused only after minutes of training, and tracebacks."""
from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from ltl_ext.cli import main
from test_cli import TINY, npz, run  # noqa: F401 - fixtures: 4 classes of 8x8 images, a trained run on them


def _one_line(capsys, needle):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err, err


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    """MNIST's layout (4 IDX files, 10 classes of 28x28 grey images, digit labels) with made-up images."""
    rng = np.random.default_rng(1)
    protos = rng.random((10, 28, 28))

    def idx(a):
        return bytes([0, 0, 0x08, a.ndim]) + b"".join(struct.pack(">I", s) for s in a.shape) + a.tobytes()
    folder = tmp_path_factory.mktemp("mnist")
    for split, n in (("train", 40), ("t10k", 20)):
        y = (np.arange(n) % 10).astype(np.uint8)
        x = (255 * (0.7 * protos[y] + 0.3 * rng.random((n, 28, 28)))).astype(np.uint8)
        (folder / f"{split}-images-idx3-ubyte").write_bytes(idx(x))
        (folder / f"{split}-labels-idx1-ubyte").write_bytes(idx(y))
    return folder


def test_eval_refuses_the_flags_it_would_ignore(run, npz):  # noqa: F811
    """eval reads the test set only: --val-fraction (even 7) and --augment were accepted and ignored."""
    base = ["eval", str(run / "best.pt"), "--data", "npz", "--data-dir", str(npz), "--quiet"]
    for flags in (["--val-fraction", "0.5"], ["--augment"]):
        with pytest.raises(SystemExit) as e:
            main(base + flags)
        assert e.value.code == 2, flags


def test_a_mnist_checkpoint_is_refused_on_fashion_mnist(mnist, tmp_path, capsys):
    """MNIST's class names are its digits, compared with nothing: a MNIST run evaluated with eval's default data
    (the embedded Fashion-MNIST, same shape and class count) was scored against the wrong classes, rc 0."""
    out = tmp_path / "run"
    assert main(["train", "--data", "mnist", "--data-dir", str(mnist), "--arch", "mlp", "--hidden", "8", "-T", "1",
                 "--teacher-epochs", "0", "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    assert main(["eval", str(out / "last.pt"), "--data", "mnist", "--data-dir", str(mnist), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["eval", str(out / "last.pt"), "--limit", "20", "--quiet"]) == 2
    _one_line(capsys, "trained on mnist, but this is embedded")


def test_robustness_without_checkpoint_refuses_other_data(mnist, tmp_path, capsys, monkeypatch):
    """Without --checkpoint, robustness trains the demo's student on the embedded Fashion-MNIST, then studied it on
    --data: on MNIST without a word. Refused before anything trains."""
    from ltl_ext.cli import demo
    monkeypatch.setitem(demo.DEMO, "teacher_epochs", 0)       # small, should the refusal fail
    monkeypatch.setitem(demo.DEMO, "time_steps", 1)
    out = tmp_path / "rob"
    assert main(["robustness", "--data", "mnist", "--data-dir", str(mnist), "--sigmas", "0.1", "--chips", "1",
                 "--steps", "1", "--no-devices", "--no-control", "--quiet", "--out", str(out)]) == 2
    _one_line(capsys, "without --checkpoint")
    assert not (out / "student").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_robustness_checks_the_device(run, npz, tmp_path, capsys):  # noqa: F811
    """robustness --device cuda on a machine without one crashed with a traceback (eval, train said so in one line)."""
    assert main(["robustness", "--checkpoint", str(run / "best.pt"), "--data", "npz", "--data-dir", str(npz),
                 "--device", "cuda", "--quiet", "--out", str(tmp_path)]) == 2
    _one_line(capsys, "no CUDA device")


def test_robustness_checks_the_calibration_lr(run, npz, tmp_path, capsys):  # noqa: F811
    """--calib-lr 0 or below crashed with a traceback, once the checkpoint and the data were loaded."""
    for lr in ("-1", "0", "nan"):
        assert main(["robustness", "--checkpoint", str(run / "best.pt"), "--data", "npz", "--data-dir", str(npz),
                     "--sigmas", "0.1", "--chips", "1", "--steps", "1", "--no-devices", "--no-control", "--calib-lr",
                     lr, "--quiet", "--out", str(tmp_path)]) == 2, lr
        _one_line(capsys, "--calib-lr must be a number > 0")


def test_warmup_is_refused_offline(npz, tmp_path, capsys):  # noqa: F811
    """Offline LTL learns from all T steps: --warmup was ignored, yet written to metrics.json's config."""
    assert main(["train", "--data", "npz", "--data-dir", str(npz), "--arch", "mlp", "--hidden", "8", "-T", "2",
                 "--warmup", "1", "--batch-size", "16", "--out", str(tmp_path / "out")] + TINY) == 2
    _one_line(capsys, "--warmup applies to --mode online")
    assert not (tmp_path / "out").exists()


def test_ltl_flags_are_checked_before_the_teacher_trains(npz, tmp_path, capsys):  # noqa: F811
    """--lr 0, --grad-clip 0, --weight-decay -1, --time-block offline were refused by the trainer only after the
    teacher had trained (minutes), leaving settings.json and teacher.pt: the next try needed --overwrite."""
    base = ["train", "--data", "npz", "--data-dir", str(npz), "--arch", "mlp", "--hidden", "8", "-T", "2",
            "--batch-size", "16", "--out", str(tmp_path / "out")] + TINY
    for flags, needle in ((["--lr", "0"], "lr must be a positive number"), (["--grad-clip", "0"], "grad_clip"),
                          (["--weight-decay", "-1"], "weight_decay"), (["--time-block", "2"], "time_block")):
        assert main(base + flags) == 2, flags
        _one_line(capsys, needle)
        assert not (tmp_path / "out").exists(), flags


def test_a_training_batch_of_one_image_is_refused(npz, tmp_path, capsys):  # noqa: F811
    """The teacher's BatchNorm cannot train on one image: --batch-size 1, or a training split that leaves one over
    (64 images in batches of 63; demo --limit 1), crashed with a traceback in the teacher's first epoch."""
    base = ["train", "--data", "npz", "--data-dir", str(npz), "--arch", "mlp", "--hidden", "8", "-T", "2",
            "--val-fraction", "0", "--out", str(tmp_path / "out")] + TINY
    for size in ("1", "63"):
        assert main(base + ["--batch-size", size]) == 2, size
        _one_line(capsys, "single image")
    assert main(base + ["--batch-size", "1", "--teacher-epochs", "0"]) == 0     # no teacher training: LTL runs
    capsys.readouterr()
    assert main(["demo", "--limit", "1", "--time-steps", "1", "--out", str(tmp_path / "demo")] + TINY) == 2
    _one_line(capsys, "choose another --limit")


def test_export_out_must_name_a_file(run, tmp_path, capsys):  # noqa: F811
    """export --out naming a folder failed deep in the NIR writer, even with --overwrite; under a file, mkdir
    crashed with a traceback."""
    (tmp_path / "notes.txt").write_text("a file")
    for out, needle in ((tmp_path, "is a folder"), (tmp_path / "notes.txt" / "s.nir", "a file stands")):
        assert main(["export", str(run / "best.pt"), "--out", str(out), "--overwrite"]) == 2
        _one_line(capsys, needle)


def test_export_input_shape_must_be_whole(run, tmp_path, capsys):  # noqa: F811
    """--input-shape 1,8.5,8 was exported as 1,8,8 without a word."""
    assert main(["export", str(run / "best.pt"), "--out", str(tmp_path / "s.nir"), "--input-shape", "1,8.5,8"]) == 2
    _one_line(capsys, "--input-shape must be whole sizes")
    assert not (tmp_path / "s.nir").exists()
