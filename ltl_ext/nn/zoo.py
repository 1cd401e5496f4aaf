"""Model zoo: the teacher ANNs of the paper and small ones for 28x28 input.

Every model is a plain ANN (the *teacher*): conv/linear -> BatchNorm -> ``activation`` (default
``ClampReLU(2)``, the LTL code's clipped ReLU), dropout before the hidden fully-connected layers, and a final
``nn.Linear`` readout. Down-sampling is by stride-2 convolutions (no pooling), as in the LTL code, so that
:func:`ltl_ext.convert` turns a teacher into the paper's student (BN folded, dropout removed, each activation a
:class:`~ltl_ext.nn.LIF` at the same module name). Pass ``activation=LIF(...)`` to build a spiking model
directly, or ``batch_norm=False, dropout=0`` for the student layout itself.

Each activation position gets its own deep copy of ``activation`` (no module instance is reused), so
teacher/student pairing by module name is one-to-one.

Input normalisation: every builder takes ``mean`` and ``std`` (``C`` floats, e.g. ``splits.mean``/``splits.std``)
and then normalises its own input (:class:`Normalize`, the first module); the statistics are part of the model's
state and spec, so checkpoints carry them. Without them the model sees its input as given.

Shapes: ``vgg11/vgg16``: [B, in_channels, input_size, input_size] -> [B, num_classes] (any input size
divisible by 16); ``cnn_small``, ``resnet``: [B, in_channels, H, W] -> [B, num_classes]; ``mlp``:
[B, *] -> [B, num_classes] (flattened, ``in_features`` = prod of the input dims).
"""
from __future__ import annotations

import copy
import functools
import inspect
import numbers
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .layers import ClampReLU

__all__ = ["vgg11", "vgg16", "cnn_small", "mlp", "resnet", "VGG", "ResNet", "BasicBlock", "Normalize", "MODELS"]

#: (out_channels, stride) of the 3x3 convs, from the released LTL code (ltl-method.md §5).
VGG11_CONVS = ((64, 1), (128, 2), (256, 1), (256, 2), (512, 1), (512, 2), (512, 1), (512, 2))
VGG16_CONVS = ((64, 1), (64, 1), (128, 1), (128, 2), (256, 1), (256, 1), (256, 2), (512, 1), (512, 1), (512, 2),
               (512, 1), (512, 1), (512, 2))


class Normalize(nn.Module):
    """The model's input normalisation, ``(x - mean) / std`` per channel, part of the model's state.

    Data loaders yield raw intensities; a model built with ``mean``/``std`` (every zoo builder takes them, e.g.
    ``cnn_small(..., mean=splits.mean, std=splits.std)``) normalises its own input, so the statistics it was
    trained with travel in its state dict and its spec, and any data it is evaluated or exported on get the
    same transform. Shapes: ``mean``, ``std`` ``C`` floats; ``x`` ``[B, C, ...]`` -> same shape.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        mean_t, std_t = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        # (a NaN mean made every output NaN, an infinite std every output 0, without a word)
        if (mean_t.dim() != 1 or mean_t.numel() == 0 or mean_t.shape != std_t.shape or not bool((std_t > 0).all())
                or not bool(mean_t.isfinite().all()) or not bool(std_t.isfinite().all())):
            raise ValueError(f"Normalize needs mean and std of C finite floats each (C >= 1), std > 0; got "
                             f"{mean!r}, {std!r}")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)          # broadcast over the channel dim 1
        return (x - self.mean.view(shape)) / self.std.view(shape)

    def extra_repr(self) -> str:
        return f"mean={[round(v, 4) for v in self.mean.tolist()]}, std={[round(v, 4) for v in self.std.tolist()]}"


def _input_norm(mean: Optional[Sequence[float]], std: Optional[Sequence[float]]) -> nn.Module:
    """``Normalize(mean, std)``, or ``nn.Identity`` when neither is given (the model sees its input as is)."""
    if (mean is None) != (std is None):
        raise ValueError("pass both mean and std (the input normalisation), or neither")
    return nn.Identity() if mean is None else Normalize(mean, std)


def _check_sizes(num_classes: int, in_channels: int, input_norm: Optional[nn.Module], what: str = "in_channels"):
    """Refuse sizes that build a model which is silently wrong, or fails deep in torch at its first forward: no
    classes (logits ``[B, 0]``), and a :class:`Normalize` whose C is not the model's input channels (one mean for 3
    channels broadcast over all of them; 3 for 1 channel made a 3-channel input the first conv refused)."""
    for name, v in (("num_classes", num_classes), (what, in_channels)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if not isinstance(input_norm, Normalize):
        return
    c = input_norm.mean.numel()
    # (an MLP's in_features are C * H * W of an image [B, C, H, W], or of the same flattened, where one value fits)
    if (c != in_channels) if what == "in_channels" else (in_channels % c != 0):
        raise ValueError(f"mean and std have {c} values but the model takes {in_channels} input {what[3:]}: "
                         f"give one per input channel (e.g. splits.mean, splits.std of the same data)")


def _act(activation: Optional[nn.Module]) -> nn.Module:
    """A fresh copy of the activation template (default ClampReLU(2))."""
    return ClampReLU(2.0) if activation is None else copy.deepcopy(activation)


def _conv_block(cin: int, cout: int, stride: int, activation, batch_norm: bool, bn_eps: float) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(cout, eps=bn_eps))
    layers.append(_act(activation))
    return nn.Sequential(*layers)


def _fc_block(fin: int, fout: int, activation, batch_norm: bool, dropout: float, bn_eps: float) -> nn.Sequential:
    layers = [nn.Dropout(dropout)] if dropout > 0 else []
    layers.append(nn.Linear(fin, fout, bias=not batch_norm))
    if batch_norm:
        layers.append(nn.BatchNorm1d(fout, eps=bn_eps))
    layers.append(_act(activation))
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """VGG with stride-2 convs instead of pooling: ``features`` (conv blocks), ``classifier`` (fc blocks), ``fc``
    (readout). Shapes: [B, C, S, S] -> [B, num_classes]; the flattened features are 512 * (S / 2^n)^2 where n is
    the number of stride-2 convs."""

    def __init__(self, convs: Sequence[Tuple[int, int]], num_classes: int = 10, in_channels: int = 3,
                 input_size: int = 32, activation: Optional[nn.Module] = None, hidden: Sequence[int] = (512, 512),
                 batch_norm: bool = True, dropout: float = 0.2, bn_eps: float = 1e-4,
                 input_norm: Optional[nn.Module] = None):
        super().__init__()
        _check_sizes(num_classes, in_channels, input_norm)
        self.input_norm = input_norm if input_norm is not None else nn.Identity()
        if min((c for c, _ in convs), default=1) < 1 or min(hidden, default=1) < 1:
            raise ValueError(f"every layer needs >= 1 channel / unit, got convs {[c for c, _ in convs]}, "
                             f"hidden {list(hidden)}")
        blocks, cin, size = [], in_channels, input_size
        for cout, stride in convs:
            blocks.append(_conv_block(cin, cout, stride, activation, batch_norm, bn_eps))
            cin, size = cout, (size + 2 - 3) // stride + 1
        if size < 1:       # (a Linear of 0 inputs, refused by the first forward deep in torch)
            raise ValueError(f"input_size {input_size!r} leaves no features after the convs; give the input's size")
        self.features = nn.Sequential(*blocks)
        fin, fcs = cin * size * size, []
        for h in hidden:
            fcs.append(_fc_block(fin, h, activation, batch_norm, dropout, bn_eps))
            fin = h
        self.classifier = nn.Sequential(*fcs)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(fin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.flatten(self.features(self.input_norm(x)), 1)
        return self.fc(self.drop(self.classifier(x)))


def _records_spec(build):
    """Zoo builders leave ``model.spec = {"arch", "kwargs"}`` on what they build, so a checkpoint can rebuild the
    model (``LocalTandemTrainer.load`` without ``teacher=``). A custom ``activation`` module is not plain data:
    then there is no spec and loading needs the model."""
    @functools.wraps(build)
    def wrapper(*args, **kwargs):
        model = build(*args, **kwargs)
        given = inspect.signature(build).bind(*args, **kwargs).arguments
        plain = (int, float, str, bool, list, tuple)
        if all(v is None or isinstance(v, plain) for v in given.values()):
            model.spec = {"arch": build.__name__,
                          "kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in given.items()
                                     if v is not None}}
        return model
    return wrapper


@_records_spec
def vgg11(num_classes: int = 10, in_channels: int = 3, activation: Optional[nn.Module] = None, *,
          input_size: int = 32, batch_norm: bool = True, dropout: float = 0.2,
          mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None) -> VGG:
    """The LTL code's VGG-11: convs 64, 128s2, 256, 256s2, 512, 512s2, 512, 512s2 (3x3, pad 1), fc 512, fc 512,
    readout. [B, in_channels, 32, 32] -> [B, num_classes]."""
    return VGG(VGG11_CONVS, num_classes, in_channels, input_size, activation, batch_norm=batch_norm,
               dropout=dropout, input_norm=_input_norm(mean, std))


@_records_spec
def vgg16(num_classes: int = 10, in_channels: int = 3, activation: Optional[nn.Module] = None, *,
          input_size: int = 32, batch_norm: bool = True, dropout: float = 0.2,
          mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None) -> VGG:
    """The LTL code's VGG-16: convs 64, 64, 128, 128s2, 256, 256, 256s2, 512, 512, 512s2, 512, 512, 512s2,
    fc 512, fc 512, readout. [B, in_channels, 32, 32] -> [B, num_classes]."""
    return VGG(VGG16_CONVS, num_classes, in_channels, input_size, activation, batch_norm=batch_norm,
               dropout=dropout, input_norm=_input_norm(mean, std))


@_records_spec
def cnn_small(num_classes: int = 10, in_channels: int = 1, activation: Optional[nn.Module] = None, *,
              channels: Sequence[int] = (32, 64, 64), hidden: int = 256, input_size: int = 28,
              batch_norm: bool = True, dropout: float = 0.2, mean: Optional[Sequence[float]] = None,
              std: Optional[Sequence[float]] = None) -> VGG:
    """A small CNN for 28x28 input: conv 32, conv 64 s2, conv 64 s2 (3x3), fc ``hidden``, readout.
    [B, in_channels, 28, 28] -> [B, num_classes]."""
    convs = [(c, 1 if i == 0 else 2) for i, c in enumerate(channels)]
    return VGG(convs, num_classes, in_channels, input_size, activation, hidden=(hidden,), batch_norm=batch_norm,
               dropout=dropout, input_norm=_input_norm(mean, std))


class MLP(nn.Module):
    """Flatten -> [Dropout] Linear -> [BN1d] -> activation (per hidden layer) -> Dropout -> Linear readout."""

    def __init__(self, num_classes: int = 10, in_features: int = 784, hidden: Sequence[int] = (512, 256),
                 activation: Optional[nn.Module] = None, batch_norm: bool = True, dropout: float = 0.2,
                 bn_eps: float = 1e-4, input_norm: Optional[nn.Module] = None):
        super().__init__()
        _check_sizes(num_classes, in_features, input_norm, what="in_features")
        self.input_norm = input_norm if input_norm is not None else nn.Identity()
        layers, fin = [], in_features
        for i, h in enumerate(hidden):
            layers.append(_fc_block(fin, h, activation, batch_norm, dropout if i > 0 else 0.0, bn_eps))
            fin = h
        self.flatten = nn.Flatten()
        self.hidden = nn.Sequential(*layers)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(fin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.drop(self.hidden(self.flatten(self.input_norm(x)))))


@_records_spec
def mlp(num_classes: int = 10, in_features: int = 784, activation: Optional[nn.Module] = None, *,
        hidden: Sequence[int] = (512, 256), batch_norm: bool = True, dropout: float = 0.2,
        mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None) -> MLP:
    """A multi-layer perceptron for 28x28 input: [B, 1, 28, 28] (or [B, 784]) -> [B, num_classes]."""
    return MLP(num_classes, in_features, hidden, activation, batch_norm, dropout,
               input_norm=_input_norm(mean, std))


class BasicBlock(nn.Module):
    """Residual block (torchvision layout): ``act2(bn2(conv2(act1(bn1(conv1(x))))) + shortcut(x))``.

    The shortcut is the identity, or a 1x1 stride-s conv + BN when the shape changes. [B, Cin, H, W] ->
    [B, Cout, H/s, W/s]."""

    def __init__(self, cin: int, cout: int, stride: int = 1, activation: Optional[nn.Module] = None,
                 batch_norm: bool = True):
        super().__init__()
        norm = (lambda c: nn.BatchNorm2d(c)) if batch_norm else (lambda c: nn.Identity())
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=not batch_norm)
        self.bn1 = norm(cout)
        self.act1 = _act(activation)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=not batch_norm)
        self.bn2 = norm(cout)
        self.act2 = _act(activation)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=not batch_norm), norm(cout))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class ResNet(nn.Module):
    """Stem conv 3x3 -> BN -> act, then stages of :class:`BasicBlock` (the first block of each stage after the
    first has stride 2), global average pooling, functional flatten and a Linear readout.
    [B, in_channels, H, W] -> [B, num_classes]."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, widths: Sequence[int] = (32, 64, 128),
                 blocks: Sequence[int] = (2, 2, 2), activation: Optional[nn.Module] = None,
                 batch_norm: bool = True, input_norm: Optional[nn.Module] = None):
        super().__init__()
        _check_sizes(num_classes, in_channels, input_norm)
        if len(widths) == 0 or len(widths) != len(blocks) or any(int(n) < 1 for n in blocks):
            # (zip dropped the stages one of them lacked, and a 0 still built one block, without a word)
            raise ValueError(f"widths and blocks need one entry per stage, each stage >= 1 block; got widths "
                             f"{list(widths)}, blocks {list(blocks)}")
        self.input_norm = input_norm if input_norm is not None else nn.Identity()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=not batch_norm)
        self.bn1 = nn.BatchNorm2d(widths[0]) if batch_norm else nn.Identity()
        self.act1 = _act(activation)
        stages, cin = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            stage = [BasicBlock(cin, w, 2 if i > 0 else 1, activation, batch_norm)]
            stage += [BasicBlock(w, w, 1, activation, batch_norm) for _ in range(n - 1)]
            stages.append(nn.Sequential(*stage))
            cin = w
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layers(self.act1(self.bn1(self.conv1(self.input_norm(x)))))
        return self.fc(torch.flatten(self.pool(x), 1))


@_records_spec
def resnet(num_classes: int = 10, in_channels: int = 3, activation: Optional[nn.Module] = None, *,
           widths: Sequence[int] = (32, 64, 128), blocks: Sequence[int] = (2, 2, 2),
           batch_norm: bool = True, mean: Optional[Sequence[float]] = None,
           std: Optional[Sequence[float]] = None) -> ResNet:
    """A small ResNet (3 stages of 2 basic blocks by default): [B, in_channels, H, W] -> [B, num_classes]."""
    return ResNet(num_classes, in_channels, widths, blocks, activation, batch_norm,
                  input_norm=_input_norm(mean, std))


#: name -> builder, for the CLI / trainer.
MODELS = {"vgg11": vgg11, "vgg16": vgg16, "cnn_small": cnn_small, "mlp": mlp, "resnet": resnet}
