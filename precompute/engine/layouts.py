"""Which axis of a layer's output is what: batch, channels, height, width, tokens.

A CNN's conv layers output N x C x H x W, but torchvision's Swin and ConvNeXt blocks compute
channels-last (N x H x W x C) and a vision transformer's blocks output N x tokens x C. Shapes alone
cannot tell these apart (Swin's 14 x 14 x 384 map looks like 14 channels of 14 x 384), so layouts
are read from the model's structure, exactly: the traced graph runs once on a batch of two
(ShapeProp records every node's shape) and axis labels flow from the input (N C H W) through each
operation. Convolutions and pools make fresh N C H W axes, linear layers a fresh channel axis last;
permutes and transposes move labels; reshapes split and merge them (a factor remembers its stride,
so a window partition merges back only in its original order); indexing drops axes, and slicing the
leading tokens off drops them; concatenating unlabelled tokens (a class token) in front of a grid
makes them a token prefix. Anything else keeps the labels of its first input of the same rank,
or none (attention internals): such nodes are not listed, and asked for by name they are refused.
"""
from __future__ import annotations

import contextlib
import io
import operator
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from ..core.errors import AtlasError

Factor = tuple[str, int, int]       # label ("N", "C", "H", "W" or "?"), size, stride in the label's axis


@dataclass(frozen=True)
class Axis:
    factors: tuple[Factor, ...]
    prefix: int = 0                 # unlabelled tokens in front of the factors (a class token)

    @property
    def size(self) -> int:
        return self.prefix + _product(f[1] for f in self.factors)

    @property
    def label(self) -> str:
        return "".join(f[0] for f in self.factors)


@dataclass(frozen=True)
class Layout:
    """How to read a node's output as the atlas's canonical B x C x H x W (conv, tokens) or B x C (fc)."""
    kind: str                       # "conv", "tokens" or "fc"
    order: tuple[int, ...]          # permutation of the output's axes to N C (H W) or N C tokens
    shape: tuple[int, ...]          # one image's output as read: C x H x W, C x patch grid, or C
    prefix: int = 0                 # tokens: leading tokens that are not patches (the class token)

    @property
    def channels_last(self) -> bool:
        return self.order != tuple(range(len(self.order)))

    def canonical(self, out: torch.Tensor) -> torch.Tensor:
        out = out.permute(self.order) if self.channels_last else out
        if self.kind == "tokens":
            out = out[:, :, self.prefix:].unflatten(2, self.shape[1:])
        return out

    def class_token(self, out: torch.Tensor) -> torch.Tensor:
        return out.permute(self.order)[:, :, 0]


def _product(sizes) -> int:
    result = 1
    for size in sizes:
        result *= size
    return result


def _fresh(labels: str, shape) -> tuple[Axis, ...]:
    return tuple(Axis(((label, size, 1),)) for label, size in zip(labels, shape))


def _shape(node):
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    if isinstance(meta, TensorMetadata):
        return tuple(meta.shape)
    if isinstance(meta, (tuple, list)):   # a module with several outputs (MultiheadAttention)
        return [tuple(m.shape) if isinstance(m, TensorMetadata) else None for m in meta]
    return None


def _like(source: tuple[Axis, ...], shape) -> tuple[Axis, ...]:
    """Labels of a same-rank input, carried to an output of this shape (a single factor may resize)."""
    axes = []
    for axis, size in zip(source, shape):
        if axis.size == size:
            axes.append(axis)
        elif len(axis.factors) == 1 and not axis.prefix:
            axes.append(Axis(((axis.factors[0][0], size, axis.factors[0][2]),)))
        else:
            axes.append(Axis((("?", size, 1),)))
    return tuple(axes)


def _regroup(source: tuple[Axis, ...], shape) -> tuple[Axis, ...] | None:
    """A reshape: the input's factors (row-major) split and merged into the output's axes."""
    atoms = []
    for axis in source:
        if axis.prefix:
            atoms.append(axis)
            continue
        for factor in axis.factors:
            last = atoms[-1] if atoms else None
            if factor[1] == 1:
                continue
            if isinstance(last, tuple) and last[0] == factor[0] != "?" and last[2] == factor[1] * factor[2]:
                atoms[-1] = (factor[0], last[1] * factor[1], factor[2])   # an earlier split, undone
            else:
                atoms.append(factor)
    axes = []
    for size in shape:
        if size == 1:
            axes.append(Axis((("?", 1, 1),)))
            continue
        if atoms and isinstance(atoms[0], Axis):
            if atoms[0].size != size:
                return None
            axes.append(atoms.pop(0))
            continue
        factors, need = [], size
        while need > 1 and atoms and isinstance(atoms[0], tuple):
            label, n, stride = atoms.pop(0)
            if n <= need and need % n == 0:
                factors.append((label, n, stride))
                need //= n
            elif n % need == 0:                    # split: the outer part here, the inner part next
                factors.append((label, need, stride * (n // need)))
                atoms.insert(0, (label, n // need, stride))
                need = 1
            else:
                return None
        if need != 1:
            return None
        axes.append(Axis(tuple(factors)))
    return tuple(axes) if not atoms else None


def _dims(args, rank: int) -> list[int]:
    dims = args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else args
    return [d % rank for d in dims]


def _index(source: tuple[Axis, ...], index, shape) -> tuple[Axis, ...] | None:
    """x[index]: an int drops its axis, slicing the prefix off a token axis drops the prefix."""
    index = index if isinstance(index, tuple) else (index,)
    if any(not isinstance(i, (int, slice, type(None), type(Ellipsis))) for i in index):
        return None
    if Ellipsis in index:
        at = index.index(Ellipsis)
        index = index[:at] + (slice(None),) * (len(source) - len(index) + 1 + index.count(None)) + index[at + 1:]
    axes, rest = [], list(source)
    for i in index:
        if i is None:
            axes.append(Axis((("?", 1, 1),)))
        elif isinstance(i, int):
            rest.pop(0)
        else:
            axis = rest.pop(0)
            if axis.prefix and i == slice(axis.prefix, None, None):
                axis = Axis(axis.factors)
            axes.append(axis)
    axes += rest
    return _like(axes, shape) if len(axes) == len(shape) else None


def _reduce(source: tuple[Axis, ...], node: fx.Node, shape) -> tuple[Axis, ...] | None:
    """x.mean(dims) and the like (MnasNet's and ShuffleNet's global pooling): the reduced axes go,
    or stay with size 1 under keepdim."""
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    if dims is None:
        return None
    dims = set(_dims(dims if isinstance(dims, (list, tuple)) else [dims], len(source)))
    kept = [axis for i, axis in enumerate(source) if i not in dims or len(shape) == len(source)]
    return _like(kept, shape) if len(kept) == len(shape) else None


def _cat(layouts: list, shapes: list, dim: int, shape) -> tuple[Axis, ...] | None:
    known = [layout for layout in layouts if layout is not None]
    if not known:
        return None
    rank = len(shape)
    dim %= rank
    axes = list(_like(known[0], shape))
    parts = [layout[dim] if layout is not None else None for layout in layouts]
    labels = {p.label for p in parts if p is not None and not p.prefix and len(p.factors) == 1}
    if all(p is not None for p in parts) and len(labels) == 1:     # channels joined: still channels
        axes[dim] = Axis(((labels.pop(), shape[dim], 1),))
    elif parts[-1] is not None and all(p is None for p in parts[:-1]):   # tokens put in front of a grid
        prefix = sum(s[dim] for s in shapes[:-1])
        axes[dim] = Axis(parts[-1].factors, prefix + parts[-1].prefix)
    else:
        axes[dim] = Axis((("?", shape[dim], 1),))
    return tuple(axes)


class _Propagation:
    """Axis labels for every node, in graph order (a node's inputs are labelled before it)."""

    def __init__(self, module: nn.Module, graph: fx.Graph):
        self.module, self.graph, self.layouts = module, graph, {}

    def of(self, arg):
        return self.layouts.get(arg) if isinstance(arg, fx.Node) else None

    def first_like(self, node: fx.Node, shape):
        for arg in node.all_input_nodes:
            layout = self.of(arg)
            if isinstance(layout, tuple) and len(layout) == len(shape):
                return _like(layout, shape)
            if isinstance(layout, list) and layout and layout[0] and len(layout[0]) == len(shape):
                return _like(layout[0], shape)
        return None

    def run(self):
        for node in self.graph.nodes:
            shape = _shape(node)
            if isinstance(shape, list):
                self.layouts[node] = [self.first_like(node, s) if s else None for s in shape]
            elif shape is not None:
                self.layouts[node] = self.label(node, shape)
        return self.layouts

    def label(self, node: fx.Node, shape: tuple):
        op, target, args = node.op, node.target, node.args
        if op == "placeholder":
            return _fresh("NCHW", shape)
        if op == "get_attr":
            return None
        kind = _operation(self.module, node)
        source = self.of(args[0]) if args else None
        if kind == "spatial" and len(shape) == 4:
            return _fresh("NCHW", shape)
        if kind == "linear" and isinstance(source, tuple):
            return _like(source[:-1], shape[:-1]) + _fresh("C", shape[-1:])
        if kind == "getitem":
            if isinstance(source, list):
                return source[args[1]] if isinstance(args[1], int) else None
            return _index(source, args[1], shape) if isinstance(source, tuple) else None
        if kind == "opaque" or (kind in ("permute", "transpose", "reshape") and not isinstance(source, tuple)):
            return None
        if kind == "permute":
            dims = self.module.get_submodule(target).dims if op == "call_module" else _dims(args[1:], len(source))
            return tuple(source[d] for d in dims)
        if kind == "transpose":
            a, b = _dims(args[1:3], len(source))
            axes = list(source)
            axes[a], axes[b] = axes[b], axes[a]
            return tuple(axes)
        if kind == "reshape":
            return _regroup(source, shape)
        if kind == "reduce":
            return _reduce(source, node, shape)
        if kind == "cat":
            tensors = args[0]
            dim = args[1] if len(args) > 1 else node.kwargs.get("dim", 0)
            return _cat([self.of(t) for t in tensors], [_shape(t) for t in tensors], dim, shape)
        return self.first_like(node, shape)


SPATIAL_MODULES = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
SPATIAL_FUNCTIONS = {torch.conv2d, torch.nn.functional.conv2d, torch.nn.functional.max_pool2d,
                     torch.nn.functional.avg_pool2d, torch.nn.functional.adaptive_avg_pool2d,
                     torch.nn.functional.adaptive_max_pool2d}
RESHAPES = {"reshape", "view", "flatten", "unflatten", "squeeze", "unsqueeze"}
REDUCTIONS = {"mean", "sum", "amax", "amin"}
OPAQUE = {"matmul", "bmm", "einsum", "baddbmm", "expand", "repeat", "roll"}


def _operation(module: nn.Module, node: fx.Node) -> str:
    """What kind of operation a node is, as far as axis labels are concerned."""
    if node.op == "call_module":
        sub = module.get_submodule(node.target)
        first = next(iter(sub.children()), None)
        if isinstance(sub, SPATIAL_MODULES) or isinstance(first, nn.Conv2d):   # Conv2dNormActivation too
            return "spatial"
        if isinstance(sub, nn.Linear):
            return "linear"
        if isinstance(sub, nn.Flatten):
            return "reshape"
        return "permute" if type(sub).__name__ == "Permute" and hasattr(sub, "dims") else "other"
    name = getattr(node.target, "__name__", str(node.target))
    if node.target in SPATIAL_FUNCTIONS:
        return "spatial"
    if node.target is torch.nn.functional.linear:
        return "linear"
    if node.target is operator.getitem:
        return "getitem"
    if name in ("permute", "transpose", "swapaxes", "cat"):
        return name.replace("swapaxes", "transpose")
    if name in RESHAPES:
        return "reshape"
    if name in REDUCTIONS:
        return "reduce"
    return "opaque" if name in OPAQUE else "other"


def layouts(module: nn.Module, graph: fx.Graph, input_shape: tuple) -> dict[fx.Node, Layout | None]:
    """Every tensor node's Layout (None: not readable as conv, tokens or fc)."""
    traced = fx.GraphModule(module, graph)
    try:   # ShapeProp prints the traceback of a failing node itself: the user gets one line instead
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            ShapeProp(traced).propagate(torch.zeros(2, *input_shape))
    except RuntimeError as exc:
        cause = exc.__cause__ or exc
        raise AtlasError(f"the model does not run on a {'x'.join(map(str, input_shape))} input: "
                         f"{type(cause).__name__}: {str(cause).splitlines()[0]}"[:300]) from None
    return {node: _classify(axes) for node, axes in _Propagation(module, graph).run().items()}


def _classify(axes) -> Layout | None:
    if not isinstance(axes, tuple) or not axes or axes[0].label != "N":
        return None
    where = {axis.label: i for i, axis in enumerate(axes) if len(axis.factors) == 1 and not axis.prefix}
    if len(axes) == 2 and "C" in where:
        return Layout("fc", (0, 1), (axes[1].size,))
    if len(axes) == 4 and {"C", "H", "W"} <= set(where):
        order = (0, where["C"], where["H"], where["W"])
        return Layout("conv", order, tuple(axes[i].size for i in order[1:]))
    tokens = [i for i, axis in enumerate(axes) if axis.label == "HW" and all(f[2] == 1 for f in axis.factors)]
    if len(axes) == 3 and "C" in where and tokens:
        (_, h, _), (_, w, _) = axes[tokens[0]].factors
        return Layout("tokens", (0, where["C"], tokens[0]), (axes[where["C"]].size, h, w), axes[tokens[0]].prefix)
    return None
