"""Models as the atlas sees them: a module, its preprocessing, and its addressable layers.

A layer is addressed by name (a torchvision graph node name; the demo's are conv1..fc8) and
read through ``torchvision.models.feature_extraction.create_feature_extractor``, which
prunes everything after the requested node, so synthesis for a low layer runs a short net.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from .errors import AtlasError, choose

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_WEIGHTS = REPO_ROOT / "data" / "models" / "demo-fashion-cnn.pt"
KNOWN_MODELS = ("demo",)


@dataclass(frozen=True)
class LayerInfo:
    name: str
    kind: str             # "conv" (C x H x W output) or "fc" (C output)
    shape: tuple          # output shape of one image
    role: str             # "logits", "embedding" or "hidden"

    @property
    def n_units(self) -> int:
        return self.shape[0]

    @property
    def center(self) -> tuple[int, int] | None:
        """The central spatial position, where conv units are optimized (as the authors' code does)."""
        return (self.shape[1] // 2, self.shape[2] // 2) if self.kind == "conv" else None


@dataclass
class ModelSpec:
    name: str
    module: nn.Module
    preprocess: Callable[[torch.Tensor], torch.Tensor]   # pixels in [0, 1] -> network input
    input_shape: tuple                                   # C, H, W
    layers: dict[str, LayerInfo]                         # input to output order
    embedding_node: str                                  # node whose output clusters exemplars ("fc7")
    class_names: list[str]
    weights_sha256: str
    _extractors: dict = field(default_factory=dict, repr=False)

    @property
    def logits_layer(self) -> str:
        return next(n for n, info in self.layers.items() if info.role == "logits")

    def layer(self, name: str) -> LayerInfo:
        choose("layer", name, self.layers)
        return self.layers[name]

    def unit_label(self, layer: str, unit: int) -> str:
        if self.layers[layer].role == "logits" and unit < len(self.class_names):
            return self.class_names[unit]
        return f"{layer}/{unit}"

    def extractor(self, nodes: tuple[str, ...]) -> nn.Module:
        """A pruned copy of the network that returns the outputs of `nodes` (cached)."""
        if nodes not in self._extractors:
            net = create_feature_extractor(self.module, return_nodes=list(nodes)).eval()
            self._extractors[nodes] = net
        return self._extractors[nodes]

    def to(self, device: torch.device) -> "ModelSpec":
        self.module.to(device)
        self._extractors.clear()
        return self


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_state_dict(path: Path) -> dict:
    if not path.exists():
        raise AtlasError(f"weights file {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise AtlasError(f"cannot read weights file {str(path)!r}: {type(exc).__name__}: {exc}"[:300]) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise AtlasError(f"weights file {str(path)!r} holds a {type(state).__name__}, not a state_dict")
    return state


def _apply_weights(module: nn.Module, state: dict, path: Path) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise AtlasError(f"weights file {str(path)!r} does not match the model: {detail}"[:400]) from None


def demo_spec(weights: Path) -> ModelSpec:
    from .data import FASHION_CLASSES
    from .demo_model import DemoNet, demo_preprocess

    module = DemoNet(len(FASHION_CLASSES))
    _apply_weights(module, load_state_dict(weights), weights)
    module.eval().requires_grad_(False)
    layers = _describe_layers(module, ("conv1", "conv2", "conv3", "fc6", "fc7", "fc8"), (1, 28, 28),
                              logits="fc8", embedding="fc7")
    return ModelSpec(name="demo", module=module, preprocess=demo_preprocess, input_shape=(1, 28, 28),
                     layers=layers, embedding_node="relu7", class_names=list(FASHION_CLASSES),
                     weights_sha256=file_sha256(weights))


def _describe_layers(module: nn.Module, nodes, input_shape, logits: str, embedding: str) -> dict[str, LayerInfo]:
    net = create_feature_extractor(module, return_nodes=list(nodes)).eval()
    with torch.no_grad():
        outputs = net(torch.zeros(1, *input_shape))
    layers = {}
    for name in nodes:
        shape = tuple(outputs[name].shape[1:])
        role = "logits" if name == logits else "embedding" if name == embedding else "hidden"
        layers[name] = LayerInfo(name, "conv" if len(shape) == 3 else "fc", shape, role)
    return layers


def load_model(name: str, weights: str | Path | None = None) -> ModelSpec:
    """Resolve a model name (and optional weights file) to a ModelSpec on the CPU."""
    choose("model", name, KNOWN_MODELS)
    path = Path(weights) if weights else DEMO_WEIGHTS
    if weights is None and not path.exists():
        raise AtlasError(f"no demo weights at {path}; run 'python -m precompute demo' to train them")
    return demo_spec(path)


