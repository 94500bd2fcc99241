"""What a build needs from the machine and the data: device and precision, batch sizes, the images,
the code's version, and per-image seeds. Shared by the builder, the executors, evaluation and the
benchmarks."""
from __future__ import annotations

import json
import subprocess
import time
import zlib
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .. import __version__
from ..core.errors import AtlasError
from ..demo.data import load_fashion_mnist
from ..engine.models import REPO_ROOT, ModelSpec, load_model

if TYPE_CHECKING:
    from .plan import BuildConfig


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise AtlasError(f"unknown device {name!r}; valid devices: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AtlasError(f"device {name!r} asked for, but no CUDA GPU is available; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise AtlasError(f"unknown device {name!r}; valid devices: auto, cpu, cuda, cuda:N")
    return device


def resolve_precision(name: str, device: torch.device) -> str:
    """auto -> bf16 on GPUs with bfloat16 and on CPUs with AMX, else fp32: the faster of the two where
    it keeps the result (benchmarks/precision.py; BENCHMARKS.md, "Precision"). Measured per image-step:
    with AMX bf16 is 2.8x faster on the demo and lands within 5% of fp32's activations; on a CPU with
    no native bf16 (AVX2 or scalar kernels) it is 10x slower. AVX512-BF16 without AMX (AMD Zen 4) was
    not reachable to measure, and a full demo build there ran 2x longer than with AMX: fp32. AMX is
    used only by torch's AVX512 kernels: under others (ATEN_CPU_CAPABILITY=avx2) bf16 takes the slow
    paths, and a ViT's attention fails outright ("pack_vnni2 is only supported when avx512 is
    supported"): fp32 there too."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    amx_kernels = torch.cpu._is_amx_tile_supported() and torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    return "bf16" if amx_kernels else "fp32"


def run_precision(store, run_id: str) -> str | None:
    """The precision a stored run ran in (None: no such run yet). Runs from before the request and
    the result were told apart recorded the result as `precision`."""
    previous = store.read("runs", run_id)
    if not previous:
        return None
    config = json.loads(previous[0]["config_json"])
    return config.get("precision_ran", config.get("precision"))


def check_precision_runs(precision: str, device: torch.device, run_id: str) -> None:
    """A resumed run keeps its precision; say in one line where this device cannot run it."""
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise AtlasError(f"run {run_id} was started in bf16, which this GPU does not support; resume it on a "
                         "GPU with bfloat16 or a CPU, or start a new run with --precision fp32")


def default_batch_size(input_size: int, device: torch.device) -> int:
    """Images per synthesis batch. A GPU wants large batches; a CPU wants the batch's activations
    to stay in cache: on the demo (28 px, 2 cores, bf16) 128 images run 1.3x faster per
    image-step than 320."""
    per_28px = 320 if device.type == "cuda" else 128
    return max(4, round(per_28px * (28 / input_size) ** 2))


def code_version() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


def image_key(seed: int, method: str, layer: str, unit: int, facet: int) -> int:
    """Per-image seed: an image's randomness depends on what it is, not on its batch."""
    return zlib.crc32(f"{seed}/{method}/{layer}/{unit}/{facet}".encode()) & 0x7FFFFFFF


def scan_batch_size(spec: ModelSpec) -> int:
    return max(16, round(1000 * (28 / spec.input_shape[1]) ** 2))   # 1000 at 28 px, 16 at 224


def dataset_name(config: BuildConfig) -> str:
    """What a run's images are, known before they are read (it is part of the run's identity)."""
    if config.model != "demo" and not config.data:
        return "none"   # a data-free build (noise, center-bias, diversity only)
    base = "fashion-mnist-train" if config.model == "demo" else f"folder:{Path(config.data).resolve()}"
    return base + (f"[:{config.max_images}]" if config.max_images else "")


def load_images(spec: ModelSpec, model: str, data: str | None = None, max_images: int | None = None):
    """The images of a build: the demo's Fashion-MNIST training set, or an image folder sized for `spec`."""
    if model == "demo":
        return load_fashion_mnist(train=True, data_dir=data).head(max_images)
    from ..engine.imagefolder import FolderSet
    return FolderSet(data, size=spec.input_shape[1], channels=spec.input_shape[0], max_images=max_images)


def spec_of_run(run: dict) -> ModelSpec:
    """The model a stored run (a `runs` row) was built with; AtlasError if its weights changed since."""
    config = json.loads(run["config_json"])
    spec = load_model(config["model"], config.get("weights"), config.get("input_size"),
                      _tuple(config.get("mean")), _tuple(config.get("std")), config.get("seed", 0))
    if spec.weights_sha256 != run["model_sha256"]:
        raise AtlasError(f"the weights of model {config['model']!r} differ from those the store was built with "
                         f"({spec.weights_sha256[:12]} vs {run['model_sha256'][:12]}); this needs the same weights")
    return spec


def images_of_run(run: dict, spec: ModelSpec):
    """The dataset a stored MFV run's image ids index."""
    config = json.loads(run["config_json"])
    return load_images(spec, config["model"], config.get("data"), config.get("max_images"))


def _tuple(value):
    return tuple(value) if value is not None else None


def class_of_label(classes: list[str], model_classes: list[str]) -> torch.Tensor:
    """For each dataset class, the model class of the same name (case, '_' and ' ' ignored), or -1."""
    def key(name: str) -> str:
        return name.replace("_", " ").strip().lower()
    index = {key(name): i for i, name in enumerate(model_classes)}
    return torch.tensor([index.get(key(name), -1) for name in classes], dtype=torch.long)


class Timings(Counter):
    """Seconds spent, by stage of the build."""

    @contextmanager
    def timed(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self[name] += time.perf_counter() - start
