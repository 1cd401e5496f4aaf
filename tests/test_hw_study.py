"""The drift study (chips from a preset, calibrated once, aged) and the robustness command that runs it."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ltl_ext.hw import drift_study


def test_drift_study_ages_calibrated_and_uncalibrated_chips(tiny_trainer, tmp_path):
    trainer, train, test = tiny_trainer
    month = 30 * 86400.0
    res = drift_study.run_drift_study(trainer, train, test, preset="pcm", calib_time=86400.0,
                                      drift_times=[month, 1.0, 86400.0], chips=2, steps=60, in_the_loop="spikes",
                                      progress=False)
    assert res["config"]["drift_times"] == [1.0, 86400.0, month]
    comp, raw = res["settings"]
    assert comp["drift_compensation"] and not raw["drift_compensation"]
    for e in res["settings"]:
        assert set(e["before_mean"]) == {"1.0", "86400.0", str(month)}
        assert set(e["after_mean"]) == set(e["kept"]) == {"86400.0", str(month)}   # only after calibration
        assert len(e["chips"]) == 2 and {"white_box", "in_the_loop"} <= set(e)
        assert e["white_box"]["status"] == "fails" and "protocol" in e["white_box"]["reason"]   # 2 chips < 3
        assert e["in_the_loop"]["runs_per_chip"] == 60
    # uncompensated drift costs accuracy over time, and calibration at one day wins it back there
    assert raw["before_mean"]["1.0"] > raw["before_mean"][str(month)] + 5
    cost = res["ideal_acc"] - raw["before_mean"]["86400.0"]
    assert cost > 3 and raw["after_mean"]["86400.0"] - raw["before_mean"]["86400.0"] > 0.5 * cost
    assert raw["kept"][str(month)] > 0                                        # and ahead a month later
    json.dumps(res)
    text = drift_study.drift_table(res)
    assert "white-box, without drift compensation" in text and "in the loop (spikes)" in text and "30 d" in text
    assert drift_study.drift_plot(res, tmp_path / "d.png").stat().st_size > 1000
    with pytest.raises(ValueError):
        drift_study.run_drift_study(trainer, train, test, preset="flash", progress=False)
    with pytest.raises(ValueError):
        drift_study.run_drift_study(trainer, train, test, drift_times=[0.0], progress=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from ltl_ext.cli import main
    rng = np.random.default_rng(0)
    protos = rng.random((4, 8, 8))

    def draw(n):
        y = np.arange(n) % 4
        return (255 * (0.7 * protos[y] + 0.3 * rng.random((n, 8, 8)))).astype(np.uint8), y
    (xtr, ytr), (xte, yte) = draw(96), draw(40)
    d = tmp_path_factory.mktemp("data")
    np.savez(d / "tiny.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--data", "npz", "--data-dir", str(d / "tiny.npz"), "--arch", "cnn_small", "--channels",
                 "4,8,8", "--hidden", "16", "-T", "2", "--batch-size", "16", "--out", str(out), "--epochs", "1",
                 "--teacher-epochs", "1", "--quiet"]) == 0
    ckpt = next(p for p in (out / "best.pt", out / "ckpt.pt", out / "last.pt") if p.exists())
    return ckpt, d / "tiny.npz"


def test_robustness_command_reports_the_verdict_and_the_drift_study(run, tmp_path, capsys):
    from ltl_ext.cli import main
    ckpt, npz = run
    common = ["--checkpoint", str(ckpt), "--data", "npz", "--data-dir", str(npz), "--batch-size", "16", "--quiet"]
    assert main(["robustness", "--sigmas", "0.2", "--chips", "3", "--steps", "2", "--no-devices",
                 "--out", str(tmp_path / "s")] + common) == 0
    res = json.loads((tmp_path / "s" / "robustness.json").read_text())
    claim = res["claim"]
    assert claim["status"] in ("holds", "fails", "not measurable") and claim["chips"] == 3
    assert claim["test_samples"] == res["test_samples"] == 40
    assert claim["resolution"] > 0 and (claim["strict"] is None) == (claim["status"] == "not measurable")
    assert len(res["sweep"][0]["chips"]) == 3 and "strict" in capsys.readouterr().out
    assert main(["robustness", "--preset", "pcm", "--drift-times", "1,86400", "--calib-time", "86400",
                 "--chips", "1", "--steps", "2", "--in-the-loop", "membrane", "--out", str(tmp_path / "d")]
                + common) == 0
    d = json.loads((tmp_path / "d" / "drift.json").read_text())
    assert [e["drift_compensation"] for e in d["settings"]] == [True, False]
    assert d["config"]["in_the_loop"] == "membrane" and "in_the_loop" in d["settings"][0]
    assert (tmp_path / "d" / "drift.png").stat().st_size > 1000
    assert "white-box, with drift compensation" in capsys.readouterr().out
    # an earlier study's results are not replaced without --overwrite (refused before any work)
    before = (tmp_path / "s" / "robustness.json").read_bytes()
    assert main(["robustness", "--sigmas", "0.2", "--chips", "1", "--steps", "1", "--no-devices",
                 "--out", str(tmp_path / "s")] + common) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "s" / "robustness.json").read_bytes() == before
    assert main(["robustness", "--in-the-loop", "spikes", "--out", str(tmp_path / "e")] + common) == 2
    assert main(["robustness", "--preset", "pcm", "--drift-times", "0,1", "--out", str(tmp_path / "e")]
                + common) == 2


def test_drift_study_of_a_preset_that_does_not_drift_has_one_setting(tiny_trainer):
    """RRAM does not drift: 'with compensation' was the same chips measured twice under a false label."""
    trainer, train, test = tiny_trainer
    res = drift_study.run_drift_study(trainer, train, test, preset="rram", calib_time=1.0, drift_times=[1.0],
                                      chips=1, steps=0, progress=False)
    assert [e["drift_compensation"] for e in res["settings"]] == [False]
    assert not res["settings"][0]["device"]["drift_compensation"]


def test_robustness_study_refuses_bad_settings_before_any_work(tiny_trainer):
    """A negative step count skipped calibration silently (after = before, and the <= 300 steps protocol passed);
    a bad mode or device setting failed only after the control had been calibrated."""
    from ltl_ext.hw import robustness
    trainer, train, test = tiny_trainer

    class Untouched:
        def __iter__(self):
            raise AssertionError("the study started working before checking its settings")
    for kwargs in (dict(steps=-5), dict(steps=2.5), dict(mode="gaussian"), dict(sigmas=[-0.1]),
                   dict(devices=(("bad", dict(levels=1)),))):
        with pytest.raises(ValueError):
            robustness.run_study(trainer, train, Untouched(), progress=False, **kwargs)
