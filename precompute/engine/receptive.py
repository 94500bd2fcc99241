"""Receptive fields: which input pixels a conv unit at one output position can see.

A conv (or token-grid) layer's unit at output position (i, j) sees the input box
    rows [offset_y + i * stride_y, offset_y + i * stride_y + size_y), columns likewise,
which may reach past the image (padding). Two ways to find (size, stride, offset), each exact
where it applies:
- geometry: the traced graph is walked from the input, each convolution, pool and pad growing
  the box (size += (kernel - 1) * dilation * jump, offset -= padding * jump, jump *= stride),
  pointwise operations passing it on and elementwise ones (a residual add) taking the union;
- gradient: where the walk meets an operation it does not know, the input gradient of the units
  at two neighbouring positions, on a canvas large enough that the box is not clipped, says
  where they look (the support of the gradient is the receptive field).
A unit that sees every pixel (after a global pool, as in a squeeze-and-excitation block; or
self-attention, as in a vision transformer) has no box: `None`, the whole image.
"""
from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..core.fields import ReceptiveField
from .models import ModelSpec, _trace


# ---- geometry ------------------------------------------------------------------------------
_Box = tuple[int, int, int, int, int, int]   # size_y, size_x, jump_y, jump_x, start_y, start_x
WHOLE, UNKNOWN = "whole", "unknown"          # sees every pixel / an operation the walk cannot follow

POINTWISE_MODULES = (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Sigmoid, nn.Hardswish,
                     nn.Hardsigmoid, nn.Hardtanh, nn.LeakyReLU, nn.ELU, nn.Tanh, nn.Dropout, nn.Dropout2d,
                     nn.Identity)
POINTWISE_FUNCTIONS = {"add", "iadd", "mul", "imul", "sub", "truediv", "neg", "relu", "relu_", "relu6",
                       "hardtanh", "silu", "sigmoid", "hardswish", "hardsigmoid", "gelu", "tanh", "leaky_relu",
                       "elu", "dropout", "contiguous", "clamp", "clip", "batch_norm"}
GLOBAL_MODULES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
GLOBAL_FUNCTIONS = {"adaptive_avg_pool2d", "adaptive_max_pool2d", "mean", "amax", "sum"}


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _window(box: _Box, kernel, stride, padding, dilation=1) -> _Box:
    """The box after a convolution or pool with these settings (per axis)."""
    (ky, kx), (sy, sx), (py, px), (dy, dx) = map(_pair, (kernel, stride, padding, dilation))
    size_y, size_x, jump_y, jump_x, start_y, start_x = box
    return (size_y + (ky - 1) * dy * jump_y, size_x + (kx - 1) * dx * jump_x, jump_y * sy, jump_x * sx,
            start_y - py * jump_y, start_x - px * jump_x)


def _padded(box: _Box, pad) -> _Box:
    left, top = pad[0], pad[2] if len(pad) > 2 else 0
    size_y, size_x, jump_y, jump_x, start_y, start_x = box
    return size_y, size_x, jump_y, jump_x, start_y - top * jump_y, start_x - left * jump_x


def _union(boxes: list) -> _Box | str:
    if WHOLE in boxes:
        return WHOLE
    if UNKNOWN in boxes or len({b[2:4] for b in boxes}) > 1:
        return UNKNOWN
    top = min(b[4] for b in boxes)
    left = min(b[5] for b in boxes)
    bottom = max(b[4] + b[0] for b in boxes)
    right = max(b[5] + b[1] for b in boxes)
    return bottom - top, right - left, boxes[0][2], boxes[0][3], top, left


def _conv_padding(padding, kernel, dilation) -> tuple[int, int]:
    if padding == "valid":
        return 0, 0
    if padding == "same":   # stride 1: torch pads (total // 2) before
        return tuple(d * (k - 1) // 2 for k, d in zip(_pair(kernel), _pair(dilation)))
    return _pair(padding)


def _step(module: nn.Module, node: fx.Node, inputs: list) -> _Box | str:
    """One node's box from its inputs' boxes."""
    if not inputs:
        return UNKNOWN
    if node.op == "call_module":
        sub = module.get_submodule(node.target)
        if isinstance(sub, POINTWISE_MODULES):
            return _union(inputs)
        if len(inputs) != 1 or isinstance(inputs[0], str):
            return WHOLE if WHOLE in inputs else UNKNOWN
        return _module_box(sub, inputs[0])
    name = getattr(node.target, "__name__", str(node.target))
    if name in GLOBAL_FUNCTIONS:
        return WHOLE
    if name in POINTWISE_FUNCTIONS or node.target in (operator.add, operator.mul):
        return _union(inputs)
    if len(inputs) != 1 or isinstance(inputs[0], str):
        return inputs[0] if inputs[0] == WHOLE else UNKNOWN
    args = dict(zip(("input", "weight", "bias", "stride", "padding", "dilation"), node.args)) | node.kwargs
    if name == "conv2d":
        kernel = args["weight"].meta["tensor_meta"].shape[-2:]
        dilation = args.get("dilation", 1)
        return _window(inputs[0], tuple(kernel), args.get("stride", 1),
                       _conv_padding(args.get("padding", 0), tuple(kernel), dilation), dilation)
    if name in ("max_pool2d", "avg_pool2d"):
        pool = dict(zip(("input", "kernel_size", "stride", "padding", "dilation"), node.args)) | node.kwargs
        return _window(inputs[0], pool["kernel_size"], pool.get("stride") or pool["kernel_size"],
                       pool.get("padding", 0), pool.get("dilation", 1))
    if name == "pad":   # any mode: the padded pixels are copies or constants, the box just moves
        return _padded(inputs[0], node.args[1] if len(node.args) > 1 else node.kwargs["pad"])
    return UNKNOWN


def _module_box(sub: nn.Module, box: _Box | str) -> _Box | str:
    """The box after a leaf module (a Sequential of them, like torchvision's Conv2dNormActivation, in turn)."""
    if box in (WHOLE, UNKNOWN) or isinstance(sub, GLOBAL_MODULES):
        return WHOLE if box == WHOLE or isinstance(sub, GLOBAL_MODULES) else UNKNOWN
    if isinstance(sub, POINTWISE_MODULES):
        return box
    if isinstance(sub, nn.Sequential):
        for child in sub:
            box = _module_box(child, box)
        return box
    if isinstance(sub, nn.Conv2d):
        return _window(box, sub.kernel_size, sub.stride, _conv_padding(sub.padding, sub.kernel_size, sub.dilation),
                       sub.dilation)
    if isinstance(sub, (nn.MaxPool2d, nn.AvgPool2d)):
        return _window(box, sub.kernel_size, sub.stride or sub.kernel_size, sub.padding, getattr(sub, "dilation", 1))
    if isinstance(sub, (nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d)):
        return _padded(box, sub.padding)
    return UNKNOWN


def geometry(spec: ModelSpec) -> dict[str, _Box | str]:
    """Every graph node's box (or WHOLE, UNKNOWN) by walking the traced graph from the input."""
    graph, name_of = _trace(spec.module)
    traced = fx.GraphModule(spec.module, graph)
    with torch.no_grad():   # shapes of weights read by functional convolutions
        ShapeProp(traced).propagate(torch.zeros(1, *spec.input_shape))
    boxes: dict[fx.Node, _Box | str] = {}
    for node in graph.nodes:
        if node.op == "placeholder":
            boxes[node] = (1, 1, 1, 1, 0, 0)
        elif node.op in ("call_module", "call_function", "call_method"):
            boxes[node] = _step(spec.module, node, [boxes[n] for n in node.all_input_nodes if n in boxes])
    return {name: boxes.get(node, UNKNOWN) for node, name in name_of.items()}


# ---- gradient ------------------------------------------------------------------------------
def _support(grad: torch.Tensor) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the non-zero pixels of a C x H x W gradient."""
    rows = torch.nonzero(grad.abs().sum((0, 2)) > 0)[:, 0]
    cols = torch.nonzero(grad.abs().sum((0, 1)) > 0)[:, 0]
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def gradient_field(spec: ModelSpec, layer: str, canvas: int | None = None, images: int = 3) -> ReceptiveField | None:
    """The receptive field of `layer` from the input gradient of the summed units at the central output
    position and its diagonal neighbour, on random `canvas`-sized inputs (default: twice the model's
    input, so boxes up to about that size are not clipped). None when it reaches the canvas edge
    (the unit sees the whole image) or the layer has a single position."""
    info = spec.layer(layer)
    if info.kind == "fc":
        return None
    channels, height, width = spec.input_shape
    size = canvas or 2 * max(height, width)
    net = spec.extractor((layer,))
    generator = torch.Generator().manual_seed(0)
    device = next(spec.module.parameters()).device
    pixels = torch.rand(2 * images, channels, size, size, generator=generator).to(device).requires_grad_(True)
    try:
        with torch.enable_grad():
            out = net(spec.preprocess(pixels))[layer].float()
    except (RuntimeError, AssertionError, ValueError):   # a model that takes one input size only (a ViT)
        return None if canvas else gradient_field(spec, layer, max(height, width), images)
    h, w = out.shape[-2:]
    y, x = h // 2, w // 2
    if y + 1 >= h or x + 1 >= w:
        return None
    (out[:images, :, y, x].sum() + out[images:, :, y + 1, x + 1].sum()).backward()
    grad = pixels.grad.cpu()
    first, second = _support(grad[:images].sum(0)), _support(grad[images:].sum(0))
    if first[0] == 0 or first[1] == 0 or second[2] == size or second[3] == size:
        return None   # clipped by the canvas: as wide as the whole image, or wider
    stride = (second[0] - first[0], second[1] - first[1])
    if min(stride) <= 0 or (second[2] - second[0], second[3] - second[1]) != (first[2] - first[0], first[3] - first[1]):
        return None   # not one box that moves with the position (windowed attention): shown whole
    return ReceptiveField(size=(first[2] - first[0], first[3] - first[1]), stride=stride,
                          offset=(first[0] - y * stride[0], first[1] - x * stride[1]), method="gradient")


# ---- both --------------------------------------------------------------------------------
def receptive_fields(spec: ModelSpec, layers) -> dict[str, ReceptiveField | None]:
    """Each conv or token layer's receptive field (None: fc, or the whole image): by geometry where
    the walk knows every operation on the way, else by gradient."""
    found = {}
    boxes = None
    for layer in layers:
        info = spec.layer(layer)
        if info.kind == "fc":
            found[layer] = None
            continue
        boxes = boxes or geometry(spec)
        box = boxes.get(info.node, UNKNOWN)
        if box == WHOLE:
            found[layer] = None
        elif box == UNKNOWN:
            found[layer] = gradient_field(spec, layer)
        else:
            size_y, size_x, jump_y, jump_x, start_y, start_x = box
            found[layer] = ReceptiveField((size_y, size_x), (jump_y, jump_x), (start_y, start_x), "geometry")
    return found


def crop(pixels: torch.Tensor, field: ReceptiveField, y: int, x: int, fill: float = 0.5) -> torch.Tensor:
    """The C x H x W `pixels` output position (y, x) sees (ReceptiveField.window), filled with `fill`
    where its box reaches past the image."""
    (top, left, bottom, right), (above, below, before, after) = field.window(y, x, *pixels.shape[-2:])
    return F.pad(pixels[..., top:bottom, left:right], (before, after, above, below), value=fill)
