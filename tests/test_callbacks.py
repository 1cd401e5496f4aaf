"""Callbacks, loggers and schedules (ltl_ext.train.callbacks / .schedules), on their own."""
import csv

import pytest
import torch

from ltl_ext.train.callbacks import Callback, CallbackList, CSVLogger, TensorBoardLogger, flatten
from ltl_ext.train.schedules import schedule


def test_flatten_nested_rows():
    row = {"epoch": 2, "loss": 0.5, "local_loss": {"a.0": 0.1, "b": 0.2}, "acc_per_step": [10.0, 20.0],
           "note": "text is dropped", "best": True}
    assert flatten(row) == {"epoch": 2, "loss": 0.5, "local_loss/a.0": 0.1, "local_loss/b": 0.2,
                            "acc_per_step/0": 10.0, "acc_per_step/1": 20.0, "best": 1.0}


def test_csv_logger_unions_columns_and_appends(tmp_path):
    path = tmp_path / "log" / "history.csv"
    log = CSVLogger(path)
    log.on_epoch_end(None, {"epoch": 1, "loss": 1.0})
    log.on_epoch_end(None, {"epoch": 2, "loss": 0.5, "val_acc": 80.0})
    rows = list(csv.DictReader(open(path)))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert rows[0]["val_acc"] == "" and float(rows[1]["val_acc"]) == 80.0
    resumed = CSVLogger(path, append=True)        # a resumed run keeps the rows it had
    resumed.on_epoch_end(None, {"epoch": 3, "loss": 0.25})
    assert [float(r["loss"]) for r in csv.DictReader(open(path))] == [1.0, 0.5, 0.25]


def test_callback_list_calls_in_order_and_refuses_non_callbacks():
    seen = []

    class Probe(Callback):
        def __init__(self, tag):
            self.tag = tag

        def on_step_end(self, trainer, step, stats):
            seen.append((self.tag, step, stats["loss"]))

    cbs = CallbackList([Probe("a"), Probe("b")])
    cbs.on_step_end(None, 3, {"loss": 1.5})
    cbs.on_epoch_end(None, {})             # the base class's hooks do nothing
    assert seen == [("a", 3, 1.5), ("b", 3, 1.5)]
    with pytest.raises(TypeError, match="Callback"):
        CallbackList([lambda entry: None])


def test_tensorboard_logger_needs_tensorboard_or_writes_events(tmp_path):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install tensorboard"):
            TensorBoardLogger(tmp_path)
        return
    log = TensorBoardLogger(tmp_path, every=1)
    log.on_step_end(None, 1, {"loss": 1.0})
    log.on_epoch_end(None, {"epoch": 1, "loss": 1.0, "local_loss": {"fc": 0.1}})
    log.close()
    assert any(p.name.startswith("events.out.tfevents") for p in tmp_path.iterdir())


def _lrs(factory, epochs, lr=1.0):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = factory(opt)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_schedules_by_name():
    assert schedule("none", 5) is None and schedule(None, 5) is None
    assert _lrs(schedule("step:2,4:0.1", 6), 6) == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    cos = _lrs(schedule("cosine", 4), 4)
    assert cos[0] == 1.0 and cos[2] == pytest.approx(0.5) and all(a > b for a, b in zip(cos, cos[1:]))


@pytest.mark.parametrize("bad", ["step:", "step:a:0.1", "step:3,3:0.1", "step:0:0.5", "step:2:2.0", "linear"])
def test_bad_schedules_say_what_to_write(bad):
    with pytest.raises(ValueError, match="step|schedule"):
        schedule(bad, 10)
