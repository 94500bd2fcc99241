"""Train and save the demo model's weights (and the second, differently seeded demo model) when missing."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import torch

from ..engine.models import DEMO_WEIGHTS
from .data import load_fashion_mnist
from .model import train_demo_model

DEMO_EPOCHS = 6
DEMO_SEED = 0
# Model B of the evidence's transfer test (precompute.evidence.evaluate): the same network, data and recipe
# with another seed, so "does a second network see the target in the facet images" has an answer.
TRANSFER_SEED = 1
TRANSFER_WEIGHTS = DEMO_WEIGHTS.with_name(f"demo-fashion-cnn-seed{TRANSFER_SEED}.pt")


def ensure_demo_weights(retrain: bool = False, data: str | None = None, progress=None) -> dict | None:
    """Train the demo CNN (seeded) unless its weights exist; returns training facts or None."""
    return _ensure(DEMO_WEIGHTS, DEMO_SEED, retrain, data, progress, "demo model")


def ensure_transfer_weights(retrain: bool = False, data: str | None = None, progress=None) -> dict | None:
    """Train the second demo CNN (seed 1) unless its weights exist; returns training facts or None."""
    return _ensure(TRANSFER_WEIGHTS, TRANSFER_SEED, retrain, data, progress, "second demo model")


def _ensure(path: Path, seed: int, retrain: bool, data: str | None, progress, name: str) -> dict | None:
    if path.exists() and not retrain:
        return None
    torch.manual_seed(seed)
    train, test = load_fashion_mnist(True, data), load_fashion_mnist(False, data)
    report = (lambda d, t: progress(f"train {name}", d, t)) if progress else None
    model, accuracy, seconds = train_demo_model(train, test, epochs=DEMO_EPOCHS, seed=seed, progress=report)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    print(f"{name}: test accuracy {accuracy:.2%} after {DEMO_EPOCHS} epochs ({seconds:.0f} s) -> {path}")
    return {"accuracy": accuracy, "seconds": seconds}
