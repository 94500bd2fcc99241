"""Activation maximization, batched: many images at once, each with its own target unit.

The render loop follows the authors' released code: normalized gradient ascent
``x += step * g / mean(|g|)``, clipping to the pixel range, total-variation denoising after
every step, jitter (random crops of a padded canvas), a staged schedule that upscales the
canvas and, late, masks the gradient to the centre. Center-biased regularization is the same
loop with another schedule (softmax target, strong smoothing, centre-weighted updates). The
diversity baseline (Lucid's) is the noise loop plus a penalty on the style similarity of the
images of one unit rendered together (see `diversity_penalty`).

Everything here works on tensors on one device and does no I/O. Randomness (jitter offsets,
noise inits) is derived from a per-image integer key, so an image's result does not depend
on which other images share its batch.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .models import LayerInfo, ModelSpec
from .params import make_image, random_affine


@dataclass(frozen=True)
class Stage:
    steps: int
    step_size: tuple[float, float]        # start, end (linear); pixels are in [0, 1]
    tv_weight: tuple[float, float]        # Chambolle TV denoising weight, start, end
    upscale: float = 1.0                  # canvas scale factor applied when the stage starts
    center_margin: bool = False           # zero the gradient within `margin` px of the border
    center_bias: float = 0.0              # > 0: weight updates by a centred Gaussian of this width
    objective: str = "activation"         # or "log_softmax" (the class probability; class units)


@dataclass(frozen=True)
class Schedule:
    stages: tuple[Stage, ...]
    jitter: int                           # random translation, px
    margin: int                           # px, for center_margin stages
    tv_iters: int = 4
    diversity: float = 0.0                # > 0: weight of the group style-similarity penalty
    param: str = "pixel"                  # image parameterization (precompute.engine.params)
    learning_rate: float = 0.05           # Adam's, for the spectral parameterizations
    scale: float = 0.0                    # transformation robustness: random scale 1 +- this
    rotate: float = 0.0                   # and random rotation +- this many degrees, every step
    seed_weight: float = 0.0              # > 0: penalty on the mean squared pixel change from the init
    until_exemplar: bool = False          # MFV: keep each image once it drives its unit as much as the
                                          # neuron's strongest exemplar (render's `targets`)
    facet_weight: float = 0.0             # > 0: the facet pull's step (the image's embedding code turned
                                          # towards its own facet's direction) as a share of the unit's step

    @property
    def steps(self) -> int:
        return sum(stage.steps for stage in self.stages)


def split_steps(total: int, weights: tuple[int, ...]) -> list[int]:
    """Split `total` steps in proportion to `weights` (largest remainder), each stage >= 1 if possible."""
    ideal = [total * w / sum(weights) for w in weights]
    steps = [int(x) for x in ideal]
    for i in sorted(range(len(ideal)), key=lambda i: steps[i] - ideal[i])[:total - sum(steps)]:
        steps[i] += 1
    for i in range(len(steps)):
        if steps[i] == 0:   # borrow from the longest stage (the later one on ties)
            donor = max(range(len(steps)), key=lambda j: (steps[j], j))
            steps[donor] -= 1
            steps[i] = 1
    return steps


def _upscale(input_size: int) -> float:
    """The released code's x1.2 canvas upscale, used only for inputs of 64 px or more: measured on
    the 28 px demo (fc8, 30 facets) it cut the final logit from 24.9 to 14.7 and doubled the
    change from the init, since the centre crop then loses the item's edges."""
    return 1.2 if input_size >= 64 else 1.0


def mfv_schedule(input_size: int, steps: int = 200) -> Schedule:
    """The released code's four stages (190/150/20/10 steps; x1.2 upscale after the first;
    centre-masked gradient in the last two), with sizes scaled from 227 px to `input_size`.
    Step sizes are for pixels in [0, 1] and small: large steps with strong TV wash every facet
    of a small image into the same grey blob (docs/algorithm.md, "Departures")."""
    n = split_steps(steps, (190, 150, 20, 10))
    stages = (
        Stage(n[0], (0.004, 0.002), (0.002, 0.002)),
        Stage(n[1], (0.002, 0.001), (0.001, 0.001), upscale=_upscale(input_size)),
        Stage(n[2], (0.001, 0.001), (0.001, 0.001), center_margin=True),
        Stage(n[3], (0.001, 0.001), (0.0, 0.0), center_margin=True),
    )
    return Schedule(stages, jitter=max(1, round(input_size * 4 / 227)), margin=round(input_size * 50 / 227))


def center_bias_schedule(input_size: int, steps: int = 200) -> Schedule:
    """Center-biased regularization: from noise, first the class probability with strong
    smoothing and large steps (a blurry central object), then (upscaled, for large inputs) the
    raw logit with weaker smoothing; updates weighted towards the centre throughout."""
    n = split_steps(steps, (1, 1))
    stages = (
        Stage(n[0], (0.03, 0.01), (0.05, 0.02), center_bias=0.45, objective="log_softmax"),
        Stage(n[1], (0.008, 0.002), (0.005, 0.001), upscale=_upscale(input_size), center_bias=0.6),
    )
    return Schedule(stages, jitter=max(1, round(input_size * 4 / 227)), margin=round(input_size * 50 / 227))


# Weight of the diversity penalty for pixels in [0, 1] and per-image normalized gradients. Each
# image's objective is act_i - w * mean_j cos(G_i, G_j) over the other images j of its group.
# Lucid divides the activation by the batch size and sums the pairs, so its 1e2-1e3 would be
# w = 1e2-1e3 x (k - 1) here; on the demo (k = 8, 200 steps) w >= 30 already pulls the fc8 logit
# from 8.9 to 2.4 or below (top-1 52% or less). w = 5 keeps 86% of the fc8 logit (top-1 90%) and
# 64% of conv3's activation while the images' fc7 codes spread 2.3x (fc8) and 2.6x (conv3) as far
# apart as without the penalty (benchmarks/diversity_weight.py; docs/algorithm.md, "Departures").
DIVERSITY_WEIGHT = 5.0


def diversity_schedule(input_size: int, steps: int = 200, weight: float = DIVERSITY_WEIGHT) -> Schedule:
    """Lucid's diversity objective as MFV's data-free peer: the from-noise loop and schedule, with
    the k images of a neuron optimized together and pushed apart in style."""
    return dataclasses.replace(mfv_schedule(input_size, steps), diversity=weight)


def hash_keys(keys: torch.Tensor, step: int, salt: int) -> torch.Tensor:
    """A cheap integer hash of (key, step, salt) in [0, 2^31): per-image randomness on device."""
    x = (keys * 1000003 + step * 7919 + salt * 104729) & 0x7FFFFFFF
    for _ in range(3):
        x = (((x >> 16) ^ x) * 0x45D9F3B) & 0x7FFFFFFF
    return x


def noise_init(keys: torch.Tensor, shape: tuple, device) -> torch.Tensor:
    """Grey-ish uniform noise in [0.4, 0.6], one deterministic draw per image key."""
    images = [torch.rand(shape, generator=torch.Generator().manual_seed(int(k))) for k in keys.tolist()]
    return (0.4 + 0.2 * torch.stack(images)).to(device)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation of each image in the batch."""
    return (x.diff(dim=-1).abs().sum((1, 2, 3)) + x.diff(dim=-2).abs().sum((1, 2, 3)))


def tv_denoise(x: torch.Tensor, weight: torch.Tensor | float, iters: int = 4) -> torch.Tensor:
    """Chambolle's projection algorithm for TV denoising (as scikit-image's
    ``denoise_tv_chambolle``), batched over images and channels, on x's device."""
    weight = torch.as_tensor(weight, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
    p_y = torch.zeros_like(x)
    p_x = torch.zeros_like(x)
    out = x
    tau = 0.25
    for i in range(iters):
        if i > 0:
            div = -(p_y + p_x)
            div[..., 1:, :] += p_y[..., :-1, :]
            div[..., :, 1:] += p_x[..., :, :-1]
            out = x + div
        g_y = F.pad(out.diff(dim=-2), (0, 0, 0, 1))
        g_x = F.pad(out.diff(dim=-1), (0, 1, 0, 0))
        norm = 1 + (tau / weight) * torch.sqrt(g_y ** 2 + g_x ** 2)
        p_y = (p_y - tau * g_y) / norm
        p_x = (p_x - tau * g_x) / norm
    return out


class UnitObjective:
    """Reads each image's own target unit from a layer's output (conv: at the centre; tokens: the
    central patch token)."""

    def __init__(self, layer: LayerInfo, units: torch.Tensor):
        self.layer, self.units = layer, units

    def activation(self, out: torch.Tensor) -> torch.Tensor:
        if self.layer.center is not None:
            cy, cx = self.layer.center
            out = out[:, :, cy, cx]
        return out.gather(1, self.units[:, None])[:, 0]

    def __call__(self, out: torch.Tensor, kind: str = "activation") -> torch.Tensor:
        if kind == "log_softmax" and self.layer.role == "logits":
            return out.log_softmax(1).gather(1, self.units[:, None])[:, 0]
        return self.activation(out)


def style_layer(spec: ModelSpec, layer: str) -> str:
    """The layer whose Gram matrices the diversity penalty compares: the middle one of the conv
    layers up to the target (demo: conv2; conv1 for a conv1 target; block outputs are not counted).
    Style is read below the target, as Lucid's examples do, so images can differ in texture while
    driving the same unit."""
    names = list(spec.layers)
    convs = [n for n in names[:names.index(layer) + 1] if (spec.layers[n].kind, spec.layers[n].role) == ("conv", "hidden")]
    return convs[len(convs) // 2] if convs else layer


# Gram matrices are taken over about this many positions a side (the post-ReLU map average-pooled by
# an integer window): style at a slightly coarser scale. On EfficientNet-Lite0 (480 x 14 x 14 style
# layer) it brought the diversity step from 1.13-1.21x MFV's to 1.08-1.11x (1 thread, bf16).
STYLE_SIDE = 8


def gram_vectors(features: torch.Tensor) -> torch.Tensor:
    """B x C x H x W activations -> B x C*C unit-length Gram matrices (post-ReLU, as Lucid's layers are)."""
    features = F.relu(features.float())
    if features.dim() == 2:
        features = features[:, :, None, None]
    side = max(features.shape[-2:]) // STYLE_SIDE   # the pooling window that brings the map near STYLE_SIDE
    if side > 1:   # a reshaped mean: CPUs' avg_pool2d backward is several times slower
        b, c, h, w = features.shape
        features = features[..., :h // side * side, :w // side * side].reshape(b, c, h // side, side, w // side, side)
        features = features.mean((3, 5))
    flat = features.flatten(2)
    grams = flat @ flat.transpose(1, 2)
    return F.normalize(grams.flatten(1), dim=1, eps=1e-10)


def diversity_penalty(features: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Per image: mean cosine similarity of its Gram matrix to those of the other images of its
    group (0 for an image alone in its group). Lucid's diversity objective, computed per group so
    that many neurons share one batch. The sum over the others is one dot product with the group's
    summed Gram vectors minus the image's own term: linear in the batch, not quadratic."""
    grams = gram_vectors(features)
    _, group = torch.unique(groups, return_inverse=True)
    sums = torch.zeros(int(group.max()) + 1, grams.shape[1], device=grams.device).index_add_(0, group, grams)
    others = torch.bincount(group)[group] - 1
    similarity = (grams * sums[group]).sum(1) - (grams * grams).sum(1)
    return similarity / others.clamp_min(1)


def facet_directions(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A neuron's k facet mean codes (k x D) -> each facet's unit direction from their mean (what tells
    it from the neuron's other facets) and that mean, repeated per facet: render's `facet_pull`."""
    centre = codes.mean(0, keepdim=True)
    return F.normalize(codes - centre, dim=1, eps=1e-10), centre.expand_as(codes)


def crop(canvas: torch.Tensor, offsets: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Per-image crops: window of `size` at offsets (B x 2, y and x) from each canvas."""
    b = torch.arange(canvas.shape[0], device=canvas.device)[:, None, None]
    iy = (offsets[:, 0:1] + torch.arange(size[0], device=canvas.device))[:, :, None]
    ix = (offsets[:, 1:2] + torch.arange(size[1], device=canvas.device))[:, None, :]
    return canvas.permute(0, 2, 3, 1)[b, iy, ix].permute(0, 3, 1, 2)


def center_crop(canvas: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    top, left = (canvas.shape[-2] - size[0]) // 2, (canvas.shape[-1] - size[1]) // 2
    return canvas[..., top:top + size[0], left:left + size[1]]


def _gradient_weights(stage: Stage, schedule: Schedule, canvas: torch.Tensor) -> torch.Tensor | None:
    h, w = canvas.shape[-2:]
    weights = None
    if stage.center_margin and schedule.margin > 0:
        weights = torch.zeros(h, w, device=canvas.device)
        weights[schedule.margin:h - schedule.margin, schedule.margin:w - schedule.margin] = 1
    if stage.center_bias > 0:
        yy = torch.linspace(-1, 1, h, device=canvas.device)[:, None]
        xx = torch.linspace(-1, 1, w, device=canvas.device)[None, :]
        bias = torch.exp(-(yy ** 2 + xx ** 2) / (2 * stage.center_bias ** 2))
        weights = bias if weights is None else weights * bias
    return weights


def _lerp(pair: tuple[float, float], i: int, n: int) -> float:
    return pair[0] + (pair[1] - pair[0]) * (i / max(1, n - 1))


PRECISIONS = ("fp32", "bf16")


def render(spec: ModelSpec, layer: str, units: torch.Tensor, init: torch.Tensor,
           schedule: Schedule, keys: torch.Tensor, progress=None, precision: str = "fp32",
           groups: torch.Tensor | None = None, targets: torch.Tensor | None = None,
           facet_pull: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Maximize unit `units[i]` of `layer` for image i, starting from `init[i]` (pixels in [0, 1]).

    schedule.param "pixel" steps the pixels (normalized gradient ascent, then TV denoising);
    "fourier" and "maco" step their spectra with Adam, on a canvas as large as the pixel loop's
    last stage from the start. Both see the same transformed views and gradient weights.
    precision="bf16" runs the network's forward and backward under bfloat16 autocast (fast on
    GPUs and on CPUs with AMX); the canvas, its updates and TV denoising stay in float32.
    With `schedule.diversity` > 0, images with the same `groups` id (default: the same target
    unit) are pushed apart by `diversity_penalty`; a group must be wholly inside the batch.
    With `schedule.seed_weight` > 0 each image is held near its init (feature accentuation's seed
    regularizer, in pixels). With `targets` and `schedule.until_exemplar`, an image is kept as it was the first time its
    activation reached its target (MFV: the strongest real exemplar's), and the loop ends when
    every image has: driving a unit far past any real image is where facets turn into one stamp.
    With `facet_pull` (per image: its facet's direction and its neuron's centre in the embedding, from
    `facet_directions`) and `schedule.facet_weight` > 0, each step also turns the image's embedding code
    towards its own facet's direction (see `_ascent`): what the facet's exemplars share and the neuron's
    other facets lack is drawn out, where the unit's gradient alone draws what every facet shares (the
    class stamp).
    Returns the final images at the network's input size, on init's device.
    """
    info = spec.layers[layer]
    style = style_layer(spec, layer) if schedule.diversity > 0 else None
    pull = facet_pull is not None and schedule.facet_weight > 0
    stop = targets is not None and schedule.until_exemplar
    groups = units if groups is None else groups
    nodes = (layer, *([style] if style else []), *([spec.embedding_node] if pull else []))
    net = spec.extractor(tuple(dict.fromkeys(nodes)))
    objective = UnitObjective(info, units)
    if pull:
        directions, centres = (t.to(init.device).float() for t in facet_pull)
    size = tuple(spec.input_shape[1:])
    pixel = schedule.param == "pixel"
    canvas = init.clone()
    if not pixel:   # a spectrum has one size: the pixel loop's final canvas
        grown = 1.0
        for stage in schedule.stages:
            grown *= stage.upscale
        if grown != 1.0:
            canvas = F.interpolate(canvas, scale_factor=grown, mode="bilinear", align_corners=False)
        image = make_image(schedule.param, canvas)
        optimizer = torch.optim.Adam(image.parameters(), lr=schedule.learning_rate)
    anchor = canvas.detach().clone()   # the init at the canvas's size, for the seed penalty
    kept = torch.zeros(len(init), dtype=torch.bool, device=init.device)   # reached its target
    frozen = torch.empty_like(canvas) if stop else None
    done, total = 0, schedule.steps
    for stage in schedule.stages:
        if pixel and stage.upscale != 1.0:
            canvas = F.interpolate(canvas, scale_factor=stage.upscale, mode="bilinear", align_corners=False)
            anchor = F.interpolate(anchor, scale_factor=stage.upscale, mode="bilinear", align_corners=False)
            if frozen is not None:
                frozen = F.interpolate(frozen, scale_factor=stage.upscale, mode="bilinear", align_corners=False)
        weights = _gradient_weights(stage, schedule, canvas)
        for i in range(stage.steps):
            canvas = canvas.detach().requires_grad_(True) if pixel else image()
            view = _view(canvas, keys, done, schedule, size)
            with torch.autocast(canvas.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                outputs = net(spec.preprocess(view))
            gain = objective(outputs[layer].float(), stage.objective)
            if stop:
                reached = (gain.detach() >= targets) & ~kept
                frozen[reached] = canvas.detach()[reached]
                kept |= reached
                if bool(kept.all()):
                    break
            if schedule.seed_weight > 0:
                gain = gain - schedule.seed_weight * ((canvas - anchor) ** 2).mean((1, 2, 3))
            if style:
                gain = gain - schedule.diversity * diversity_penalty(outputs[style], groups)
            side = None
            if pull:
                code = outputs[spec.embedding_node].float().flatten(1) - centres
                side = F.cosine_similarity(code, directions, dim=1)
            grad, scale = _ascent(canvas, gain, side, schedule.facet_weight, weights)
            if pixel:
                canvas = _pixel_step(canvas.detach(), grad / scale, stage, schedule, i)
            else:
                optimizer.zero_grad(set_to_none=True)
                canvas.backward(-grad)
                optimizer.step()
            done += 1
            if progress:
                progress(done, total)
        else:
            continue
        break   # every image reached its target
    final = (canvas if pixel else image()).detach()
    if frozen is not None:
        final = torch.where(kept[:, None, None, None], frozen, final)
    if progress and done < total:
        progress(total, total)
    return center_crop(final, size).contiguous()


def _view(canvas: torch.Tensor, keys: torch.Tensor, step: int, schedule: Schedule, size: tuple) -> torch.Tensor:
    """What the network sees this step: a jittered crop of the canvas, randomly scaled and rotated
    when the schedule asks; every draw comes from the image's key and the step."""
    padded = F.pad(canvas, (schedule.jitter,) * 4, mode="reflect") if schedule.jitter else canvas
    room = torch.tensor([canvas.shape[-2] - size[0], canvas.shape[-1] - size[1]], device=canvas.device)
    offsets = torch.stack([hash_keys(keys, step, 1), hash_keys(keys, step, 2)], 1) % (room + 2 * schedule.jitter + 1)
    view = crop(padded, offsets, size)
    if schedule.scale > 0 or schedule.rotate > 0:
        draws = torch.stack([hash_keys(keys, step, 3), hash_keys(keys, step, 4)], 1).float() / 2 ** 31
        view = random_affine(view, draws, schedule.scale, schedule.rotate)
    return view


def _ascent(canvas: torch.Tensor, gain: torch.Tensor, side: torch.Tensor | None, side_weight: float,
            weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's ascent direction on the canvas (masked by the gradient `weights`) and the size of its
    gain's part (mean |.|, per image), by which the pixel loop normalizes its step.

    A side reward (the facet pull) joins as a step `side_weight` times the gain's in size, with any part
    that would lower the gain removed: it moves an image along its facet while the unit's ascent keeps
    its pace. Added as a plain reward in units of the target instead, it left 42% of the demo's fc8
    images short of their target after 200 steps, and with only the opposing part removed still 26-37%
    at the weights that kept the facets (benchmarks/sweep_facets.py)."""
    main = torch.autograd.grad(gain.sum(), canvas, retain_graph=side is not None)[0]
    if weights is not None:
        main = main * weights
    scale = main.abs().mean((1, 2, 3), keepdim=True).clamp_min(1e-12)
    if side is None:
        return main, scale
    extra = torch.autograd.grad(side.sum(), canvas)[0]
    if weights is not None:
        extra = extra * weights
    against = (main * extra).sum((1, 2, 3), keepdim=True).clamp(max=0)
    extra = extra - against / (main * main).sum((1, 2, 3), keepdim=True).clamp_min(1e-20) * main
    extra = extra * (side_weight * scale / extra.abs().mean((1, 2, 3), keepdim=True).clamp_min(1e-12))
    return main + extra, scale


@torch.no_grad()
def _pixel_step(canvas: torch.Tensor, grad: torch.Tensor, stage: Stage, schedule: Schedule, i: int) -> torch.Tensor:
    """The authors' update (`grad` already normalized, x += step * g / mean(|g|)), clipping, then TV denoising."""
    canvas = (canvas + _lerp(stage.step_size, i, stage.steps) * grad).clamp_(0, 1)
    tv = _lerp(stage.tv_weight, i, stage.steps)
    if tv > 0:
        canvas = tv_denoise(canvas, tv, schedule.tv_iters).clamp_(0, 1)
    return canvas


@torch.no_grad()
def measure(spec: ModelSpec, layer: str, units: torch.Tensor, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Target activation of each image; for class units also the target's softmax
    probability and whether it is the network's top-1 class (NaN / -1 otherwise)."""
    info = spec.layers[layer]
    out = spec.extractor((layer,))(spec.preprocess(images))[layer].float()
    act = UnitObjective(info, units).activation(out)
    if info.role == "logits":
        prob = out.softmax(1).gather(1, units[:, None])[:, 0]
        top1 = (out.argmax(1) == units).long()
    else:
        prob = torch.full_like(act, float("nan"))
        top1 = torch.full_like(units, -1)
    return {"act": act, "target_prob": prob, "top1": top1}
