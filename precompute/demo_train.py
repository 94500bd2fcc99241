"""Train and save the demo model's weights when they are missing."""
from __future__ import annotations

import os
import uuid

import torch

from .data import load_fashion_mnist
from .demo_model import train_demo_model
from .models import DEMO_WEIGHTS

DEMO_EPOCHS = 6
DEMO_SEED = 0


def ensure_demo_weights(retrain: bool = False, data: str | None = None, progress=None) -> dict | None:
    """Train the demo CNN (seeded) unless its weights exist; returns training facts or None."""
    if DEMO_WEIGHTS.exists() and not retrain:
        return None
    torch.manual_seed(DEMO_SEED)
    train, test = load_fashion_mnist(True, data), load_fashion_mnist(False, data)
    report = (lambda d, t: progress("train demo model", d, t)) if progress else None
    model, accuracy, seconds = train_demo_model(train, test, epochs=DEMO_EPOCHS, seed=DEMO_SEED, progress=report)
    DEMO_WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = DEMO_WEIGHTS.with_name(f".{DEMO_WEIGHTS.name}.{uuid.uuid4().hex}.tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, DEMO_WEIGHTS)
    print(f"demo model: test accuracy {accuracy:.2%} after {DEMO_EPOCHS} epochs ({seconds:.0f} s) -> {DEMO_WEIGHTS}")
    return {"accuracy": accuracy, "seconds": seconds}
