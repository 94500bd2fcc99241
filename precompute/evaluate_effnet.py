"""The EfficientNet-Lite0 subset of the evidence: data-free methods on a few ImageNet class neurons.

No ImageNet images ship here, so MFV (which needs each class's exemplars) cannot run on the real
network; what can be measured is how the data-free methods (noise, center-bias, diversity) do on
a real 224 px ImageNet model: activation, top-1, centredness and fragments, and the diversity
method's spread. The subset is built (resumably) in its own store and its evaluation rows are
copied into the evaluated store as an external part, model = 'efficientnet-lite0'.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from .errors import AtlasError
from .store import Store

# goldfish, ostrich, flamingo, lion, balloon, basketball, orange, banana: objects with one clear shape
EFFNET_UNITS = (1, 9, 130, 291, 417, 430, 950, 954)
EFFNET_STEPS = 60    # of the 200 default: about 40 ms per image-step at 224 px on 2 CPU cores
EFFNET_K = 3         # diversity images per neuron
MODEL = "efficientnet-lite0"


def default_work_dir() -> Path:
    from .store import _cache_root
    return _cache_root() / "effnet-evidence"


def evaluate_effnet(target: str | Path, n_units: int, work_dir: str | Path | None = None, progress=None,
                    device: str = "auto") -> Path:
    """Build (or resume) the subset for the first `n_units` classes of EFFNET_UNITS, evaluate it and
    record its rows in `target`'s evaluations; returns the subset's store folder."""
    from .build import DATA_FREE, BuildConfig, build_atlas
    from .evaluate import EXTERNAL_PARTS, evaluate_store
    if not 1 <= n_units <= len(EFFNET_UNITS):
        raise AtlasError(f"--effnet takes 1..{len(EFFNET_UNITS)} class neurons, got {n_units}")
    if not (Path(target) / "parts" / "runs").is_dir():
        raise AtlasError(f"no atlas store at {str(Path(target).resolve())!r} to record the EfficientNet-Lite0 subset in")
    work = Path(work_dir).expanduser() if work_dir else default_work_dir()
    config = BuildConfig(out=str(work), model=MODEL, layers=("fc8",), units=EFFNET_UNITS[:n_units],
                         methods=DATA_FREE, k=EFFNET_K, steps=EFFNET_STEPS, workers=1, device=device)
    build_atlas(config, progress)
    evaluate_store(work, progress, device)
    rows = pq.read_table(Store(work).part_path("evaluations", "store__all")).to_pylist()
    Store(target).write("evaluations", f"{EXTERNAL_PARTS}{MODEL}", rows)
    return work
