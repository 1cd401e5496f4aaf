"""Where the time of one training step goes: our BPTT against offline LTL, per kind of op (``torch.profiler``).

The same network and batch as ``train_memory.py`` (the zoo's VGG-11, CIFAR-shaped synthetic batch, one thread); one
warm-up step per method, then ``--rounds`` rounds that profile one step of each method in turn, the median per kind
of op over the rounds (one profiled step alone moved by a quarter between runs on a shared VM). Self CPU time is
summed by kind: convolution forward, convolution backward (input and weight gradients for BPTT, weight gradients
only for LTL: its layers' inputs are detached spikes), the fused LIF / tandem ops, and the rest. From the
convolutions alone it derives the floor of offline LTL's step time relative to BPTT's, ``(conv fwd + conv bwd of
LTL) / (conv fwd + conv bwd of BPTT)``, with the teacher's own forward convolutions excluded from LTL's figure
(counted apart). On the CPU it also times each convolution alone (``conv_layers``): forward, weight gradient and
input gradient (oneDNN, as autograd runs them), the weight gradient as GEMMs on unfolded input, and the three oneDNN
passes again with every tensor in channels_last, to show which of them sets the floor and what the layout would
change.

The online forms (blocks of 2 steps, and constant memory) are profiled too, at the trainer's default warm-up (3T/4)
and at warm-up 0: ``learning_steps`` (T - warm-up) is how many time steps carry a local loss and so a weight
gradient, which is what makes online LTL's step cheaper than offline's, not its block size (the two forms' conv
backward shrinks with the learning steps; at warm-up 0 their steps cost about what offline's does).

    python scripts/step_profile.py --write                  # -> docs/results/step_profile.json
    python scripts/step_profile.py --device cuda --write    # GPU: self device time by kind, and the step's wall
                                                            # time -> docs/results/step_profile_cuda.json

On a GPU the kinds sum kernel time (``self_device_time_total``); ``wall_s`` is the median of 5 unprofiled steps
(CUDA-synchronised), so ``wall_s`` well above ``total`` means the step waits on the host (launches, Python), not
on the GPU.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
import train_memory  # noqa: E402
from evidence import interleaved_medians, upper_median  # noqa: E402

KINDS = {"aten::mkldnn_convolution": "conv_forward", "aten::convolution_backward": "conv_backward",
         "aten::_convolution": "conv_forward", "aten::cudnn_convolution": "conv_forward",
         "aten::cudnn_convolution_backward": "conv_backward",
         "ltl_ext::lif_fwd": "lif_ops", "ltl_ext::lif_bwd": "lif_ops",
         "ltl_ext::tandem_offline_fwd": "lif_ops", "ltl_ext::tandem_offline_bwd": "lif_ops",
         "ltl_ext::tandem_online": "lif_ops", "ltl_ext::tandem_online_": "lif_ops"}


def profile_once(step, cuda: bool) -> dict:
    """Seconds by kind of op for one call of ``step``: self CPU time on the CPU, self kernel time on a GPU."""
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        step()
        sync()
    seconds = defaultdict(float)
    attr = "self_device_time_total" if cuda else "self_cpu_time_total"
    for e in prof.key_averages():
        if cuda and e.device_type != DeviceType.CPU:   # a kernel's own row: its time is already its op's
            continue
        seconds[KINDS.get(e.key, "other")] += getattr(e, attr) / 1e6
    seconds["total"] = sum(seconds.values())
    return seconds


def profile_steps(cases: dict, T: int, batch: int, device: str, rounds: int) -> dict:
    """``{name: seconds by kind}`` for ``cases`` (name -> (method, warmup)): every step built and warmed up once,
    then profiled in ``rounds`` rounds that profile each in turn (a slow spell of a shared machine then hits every
    method alike), the median per kind over the rounds; on a GPU also ``wall_s``, the median of 5 unprofiled
    steps (CUDA-synchronised)."""
    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    steps = {name: train_memory.build_step(method, T, batch, device, warmup=warmup)
             for name, (method, warmup) in cases.items()}
    for step in steps.values():
        step()
        sync()
    runs = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            runs[name].append(profile_once(step, cuda))
    out = {}
    for name, seen in runs.items():
        out[name] = {k: upper_median([r.get(k, 0.0) for r in seen]) for k in seen[0]}
        if cuda:
            walls = []
            for _ in range(5):
                t0 = time.perf_counter()
                steps[name]()
                sync()
                walls.append(time.perf_counter() - t0)
            out[name]["wall_s"] = statistics.median(walls)
    return out


def teacher_conv_seconds(T: int, batch: int) -> float:
    """The teacher's forward convolutions in one LTL step (its forward on the batch, without time)."""
    from ltl_ext import models
    teacher = models.vgg11().eval()
    x = torch.rand(batch, 3, 32, 32)
    with torch.no_grad():
        teacher(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            teacher(x)
    return sum(e.self_cpu_time_total for e in prof.key_averages() if KINDS.get(e.key) == "conv_forward") / 1e6


def weight_grad_by_unfold(x, grad_out, weight, stride, padding, chunk: int = 8):
    """dL/dW of a convolution (no groups, no dilation) as GEMMs on unfolded input, ``chunk`` samples at a time:
    the alternative to oneDNN's weight gradient that the conv-layer rows time."""
    cout, cin, kh, kw = weight.shape
    gw = torch.zeros(cout, cin * kh * kw, dtype=x.dtype)
    for b0 in range(0, x.shape[0], chunk):
        cols = F.unfold(x[b0:b0 + chunk], (kh, kw), padding=padding, stride=stride)   # [b, Cin k k, L]
        g = grad_out[b0:b0 + chunk].flatten(2)                                          # [b, Cout, L]
        gw.addmm_(g.transpose(0, 1).flatten(1), cols.transpose(0, 1).flatten(1).t())
    return gw.view_as(weight)


def conv_layer_seconds(T: int, batch: int, rounds: int = 5) -> list:
    """Per convolution of the student (the zoo's VGG-11 at batch T * batch, inputs as LTL gives them: the image
    for the first layer, 0/1 spikes at a 20 % rate after it): seconds of the forward, the weight gradient and the
    input gradient as ``aten.convolution_backward`` computes them (oneDNN), and the weight gradient as GEMMs on
    unfolded input (``weight_grad_by_unfold``). Interleaved medians, 1 thread."""
    from ltl_ext import models
    net = models.vgg11().eval()   # eval: batch norm takes the probe's single image
    seen = []   # (conv, its input's [C, H, W]) in forward order
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((m, tuple(i[0].shape[1:]))))
             for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        net(torch.rand(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    rows, g = [], torch.Generator().manual_seed(0)
    for k, (conv, shape) in enumerate(seen):
        x = torch.rand(T * batch, *shape, generator=g)
        if k > 0:
            x = (x < 0.2).float()
        w, stride, padding = conv.weight.detach(), list(conv.stride), list(conv.padding)
        go = torch.randn(F.conv2d(x, w, None, stride, padding).shape, generator=g)

        def backward(mask, x, go, w):
            return lambda: torch.ops.aten.convolution_backward(go, x, w, None, stride, padding, [1, 1], False,
                                                               [0, 0], 1, mask)
        # the same passes with every tensor in channels_last (NHWC), the layout oneDNN computes in natively
        xc, goc, wc = (t.to(memory_format=torch.channels_last) for t in (x, go, w))
        s = interleaved_medians({"forward": lambda: F.conv2d(x, w, None, stride, padding),
                                 "weight_grad": backward([False, True, False], x, go, w),
                                 "input_grad": backward([True, False, False], x, go, w),
                                 "weight_grad_gemm": lambda: weight_grad_by_unfold(x, go, w, stride, padding),
                                 "forward_cl": lambda: F.conv2d(xc, wc, None, stride, padding),
                                 "weight_grad_cl": backward([False, True, False], xc, goc, wc),
                                 "input_grad_cl": backward([True, False, False], xc, goc, wc)},
                                rounds)
        rows.append({"layer": k, "in": list(shape), "out_channels": w.shape[0], "stride": stride[0],
                     **{f"{name}_s": round(v, 5) for name, v in s.items()}})
        print(rows[-1], flush=True)
    return rows


def ltl_vs_bptt(layers: list, layout: str = "") -> float:
    """What the student's convolutions cost offline LTL (forward and weight gradient) against BPTT (the same, and
    the input gradient of every layer but the first, whose input is the image), from ``conv_layers`` rows; ``layout``
    "" for the default layout, "_cl" for channels_last. The teacher's forward is left out."""
    ltl = sum(r[f"forward{layout}_s"] + r[f"weight_grad{layout}_s"] for r in layers)
    return round(ltl / (ltl + sum(r[f"input_grad{layout}_s"] for r in layers[1:])), 3)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--T", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--rounds", type=int, default=3, help="profiled steps per method, one per round, in turn")
    ap.add_argument("--write", action="store_true", help="write docs/results/step_profile[_cuda].json")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no GPU here")
    if args.device == "cpu":
        torch.set_num_threads(1)
    from ltl_ext.train.config import default_warmup
    cases = {"bptt": ("bptt", None), "ltl_offline": ("ltl_offline", None)}
    for method in ("ltl_online", "ltl_constant"):
        for warmup in (default_warmup(args.T), 0):
            cases[f"{method} warmup {warmup}"] = (method, warmup)
    seconds = profile_steps(cases, args.T, args.batch, args.device, args.rounds)
    rows = []
    for name, (method, warmup) in cases.items():
        rows.append({"method": method, "T": args.T, "batch": args.batch,
                     **({} if warmup is None else {"warmup": warmup}), "learning_steps": args.T - (warmup or 0),
                     "rounds": args.rounds, **{k: round(v, 4) for k, v in seconds[name].items()}})
        print(rows[-1], flush=True)
    bptt, ltl = rows[:2]
    for r in rows:
        r["total_vs_bptt"] = round(r["total"] / bptt["total"], 3)
    if args.device == "cpu":    # the convolutions' floor for offline LTL (the teacher's counted apart)
        teacher = teacher_conv_seconds(args.T, args.batch)
        student_fwd = ltl["conv_forward"] - teacher
        floor = (student_fwd + ltl["conv_backward"]) / (bptt["conv_forward"] + bptt["conv_backward"])
        ltl["teacher_conv_forward"] = round(teacher, 4)
        ltl["conv_floor_vs_bptt"] = round(floor, 3)
    print(rows)
    extra = {}
    if args.device == "cpu":    # the convolutions layer by layer: what each gradient costs against the forward
        layers = conv_layer_seconds(args.T, args.batch)
        total = {k: sum(r[k] for r in layers) for k in ("forward_s", "weight_grad_s", "input_grad_s",
                                                         "weight_grad_gemm_s", "forward_cl_s", "weight_grad_cl_s",
                                                         "input_grad_cl_s")}
        best = sum(min(r["weight_grad_s"], r["weight_grad_gemm_s"]) for r in layers)
        layers.append({"layer": "all", **{k: round(v, 5) for k, v in total.items()},
                       "weight_grad_vs_forward": round(total["weight_grad_s"] / total["forward_s"], 3),
                       "input_grad_vs_forward": round(total["input_grad_s"] / total["forward_s"], 3),
                       "weight_grad_best_s": round(best, 5),
                       "ltl_vs_bptt": ltl_vs_bptt(layers), "ltl_vs_bptt_cl": ltl_vs_bptt(layers, "_cl")})
        extra["conv_layers"] = layers
    if args.write:
        from evidence import write_artefact
        name = "step_profile" if args.device == "cpu" else "step_profile_cuda"
        what = "1 thread" if args.device == "cpu" else "one GPU, kernel time"
        path = write_artefact(name, {"network": f"vgg11 (zoo), CIFAR-shaped synthetic batch, {what}", "rows": rows,
                                     **extra},
                              command="python scripts/step_profile.py " + " ".join(argv or sys.argv[1:]))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
