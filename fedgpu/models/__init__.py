"""Model registry: a job names a model; the node builds it from code it already has.

Model code never crosses the network. Built-ins are registered here; a node operator may install
more through the ``fedgpu.models`` entry-point group (``name = "pkg.module:builder"``).

A trained model leaves the driver as ``model.safetensors`` with what it takes to rebuild it in
its metadata (registry name, input shape, classes, dataset, job, fedgpu version), so that
``load_trained(path)`` gives back a ready ``nn.Module``: weights only, never pickle.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from fedgpu import __version__
from fedgpu.errors import CapabilityError, ConfigError


@dataclass(frozen=True)
class ModelSpec:
    """What a builder needs to know about the data: input shape (without batch) and classes."""

    input_shape: tuple[int, ...]
    num_classes: int


Builder = Callable[[ModelSpec], nn.Module]
_REGISTRY: dict[str, Builder] = {}


def register_model(name: str, builder: Builder, *, force: bool = False) -> None:
    if name in _REGISTRY and not force:
        raise ConfigError(f"model {name!r} is already registered; pass force=True to replace it")
    _REGISTRY[name] = builder


class CNN1D(nn.Module):
    """1D CNN for MNIST-1D (~28 k parameters at width 64); no BatchNorm, so Opacus accepts it.

    With ``standardize`` each sample is first scaled by its own mean and std: a per-record transform
    that costs no privacy and lets DP-SGD's clipped, noised steps make progress (docs/privacy.md);
    without DP it costs accuracy (docs/protocol.md, "Measured"), so only ``cnn1d_dp`` does it.
    """

    def __init__(self, spec: ModelSpec, width: int = 64, standardize: bool = False) -> None:
        super().__init__()
        self.standardize = standardize
        length = spec.input_shape[-1]
        self.features = nn.Sequential(
            nn.Conv1d(1, width, 5, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(width, width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(width, width, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, 1, length)).numel()
        self.head = nn.Linear(flat, spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(1)
        if self.standardize:
            x = (x - x.mean(dim=-1, keepdim=True)) / (x.std(dim=-1, keepdim=True) + 1e-6)
        logits: torch.Tensor = self.head(self.features(x).flatten(1))
        return logits


class MLP(nn.Module):
    """Plain MLP over the flattened input; ``hidden`` sets the size (1024 gives ~1 M parameters)."""

    def __init__(self, spec: ModelSpec, hidden: int = 100, depth: int = 2) -> None:
        super().__init__()
        d_in = 1
        for s in spec.input_shape:
            d_in *= s
        layers: list[nn.Module] = [nn.Flatten()]
        for _ in range(depth):
            layers += [nn.Linear(d_in, hidden), nn.ReLU()]
            d_in = hidden
        layers.append(nn.Linear(d_in, spec.num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.net(x)
        return logits


class TabularMLP(nn.Module):
    """The generic model of a tabular job: inputs = the schema's features, outputs = its classes.

    It standardises its input with the buffers ``feature_mean`` / ``feature_std`` (0 and 1 until a job
    with ``[data] standardize = true`` sets them from its federated statistics round), so the scaler
    travels with the weights to the nodes and into model.safetensors. They are the first values of
    the flat vector; the driver keeps them fixed after the statistics round.
    """

    fixed_buffers = ("feature_mean", "feature_std")  # set by the statistics round; no update moves them

    def __init__(self, spec: ModelSpec, hidden: int = 64, depth: int = 1) -> None:
        super().__init__()
        d_in = 1
        for s in spec.input_shape:
            d_in *= s
        self.register_buffer("feature_mean", torch.zeros(d_in))
        self.register_buffer("feature_std", torch.ones(d_in))
        layers: list[nn.Module] = []
        width = d_in
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, spec.num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self.get_buffer("feature_mean"), self.get_buffer("feature_std")
        z = (x.flatten(1) - mean) / std
        logits: torch.Tensor = self.net(z)
        return logits


class DigitsCNN(nn.Module):
    """Small 2D CNN for scikit-learn's 8x8 digits."""

    def __init__(self, spec: ModelSpec, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.GroupNorm(4, width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.GroupNorm(4, 2 * width),
            nn.ReLU(),
        )
        side = spec.input_shape[-1]
        self.head = nn.Linear(2 * width * ((side + 1) // 2) ** 2, spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        logits: torch.Tensor = self.head(self.features(x).flatten(1))
        return logits


register_model("cnn1d", lambda s: CNN1D(s, width=64))
register_model("cnn1d_wide", lambda s: CNN1D(s, width=128))
register_model("cnn1d_dp", lambda s: CNN1D(s, width=64, standardize=True))
register_model("mlp", lambda s: MLP(s))
register_model("mlp_1m", lambda s: MLP(s, hidden=1000, depth=2))
register_model("digits_cnn", lambda s: DigitsCNN(s))
register_model("tab_mlp", lambda s: TabularMLP(s))


def _load_entry_points() -> None:
    for ep in entry_points(group="fedgpu.models"):
        if ep.name not in _REGISTRY:
            _REGISTRY[ep.name] = ep.load()


def available_models() -> list[str]:
    _load_entry_points()
    return sorted(_REGISTRY)


def build_model(name: str, spec: ModelSpec, seed: int | None = None) -> nn.Module:
    """Build a fresh model; with ``seed`` the initial weights are deterministic."""
    if name not in _REGISTRY:
        _load_entry_points()  # scanning installed packages costs ~10 ms: only for a name not built in
    if name not in _REGISTRY:
        raise CapabilityError(
            f"model {name!r} is not installed on this machine; available: {', '.join(sorted(_REGISTRY))}"
        )
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return _REGISTRY[name](spec)
    return _REGISTRY[name](spec)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---- trained models on disk ----------------------------------------------------------------------
TRAINED_FORMAT = "fedgpu.trained/1"  # metadata["format"] of a model.safetensors written by save_trained


@dataclass(frozen=True)
class TrainedInfo:
    """What a model.safetensors says about itself (its safetensors metadata)."""

    model: str              # registry name: what load_trained builds
    spec: ModelSpec
    dataset: str            # the schema it was trained on
    job: str                # the job id at the aggregator
    fedgpu_version: str     # the fedgpu that wrote it
    rounds: int             # rounds applied to it
    metadata: Mapping[str, str]


def save_trained(
    path: Path, state: Mapping[str, torch.Tensor], model: str, dataset: str, spec: ModelSpec, *, job: str = "", rounds: int = 0
) -> None:
    """Write ``state`` as safetensors with the metadata :func:`load_trained` rebuilds the model from."""
    metadata = {
        "format": TRAINED_FORMAT, "model": model, "dataset": dataset, "job": job, "fedgpu_version": __version__,
        "input_shape": json.dumps(list(spec.input_shape)), "num_classes": str(spec.num_classes), "rounds": str(rounds),
    }
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(path), metadata=metadata)


def trained_info(path: str | Path) -> TrainedInfo:
    """Read a model.safetensors' metadata (not its weights)."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = dict(f.metadata() or {})
    except (OSError, SafetensorError) as exc:
        raise ConfigError(f"{path}: not a readable safetensors file ({exc})") from exc
    if meta.get("format") != TRAINED_FORMAT:
        raise ConfigError(f"{path}: no fedgpu metadata (format {meta.get('format')!r}); it was not written by a fedgpu driver")
    try:
        spec = ModelSpec(tuple(int(d) for d in json.loads(meta["input_shape"])), int(meta["num_classes"]))
        return TrainedInfo(meta["model"], spec, meta["dataset"], meta["job"], meta["fedgpu_version"], int(meta["rounds"]), meta)
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: damaged fedgpu metadata ({exc})") from exc


def load_trained(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The trained model in ``path`` (a driver's OUT/model.safetensors), built from the local registry, in eval mode.

    >>> model = load_trained("runs/mnist1d/model.safetensors")
    >>> logits = model(torch.from_numpy(x))
    """
    info = trained_info(path)
    model = build_model(info.model, info.spec)
    try:
        model.load_state_dict(load_file(str(path), device="cpu"), strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"{path}: its weights do not fit model {info.model!r} as installed here (fedgpu {__version__}, file from {info.fedgpu_version}): {exc}") from exc
    return model.to(device).eval()


__all__ = [
    "Builder",
    "CNN1D",
    "DigitsCNN",
    "MLP",
    "ModelSpec",
    "TRAINED_FORMAT",
    "TabularMLP",
    "TrainedInfo",
    "available_models",
    "build_model",
    "count_params",
    "load_trained",
    "register_model",
    "save_trained",
    "trained_info",
]
