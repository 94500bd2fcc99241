"""ImageNet-layout class folders made from photos that ship offline, with a held-out split.

No ImageNet images ship here. scikit-image and scikit-learn carry a few photos that
EfficientNet-Lite0 labels confidently; random crops and flips of each make a small class
folder, named after the ImageNet class Lite0 calls it, so MFV, the explanation score and the
sweeps can run on a real 224 px network. Training and held-out crops are drawn with different
seeds from the same photo, so they overlap in content: the numbers measured on these folders say
how the methods behave, not how they do on real ImageNet classes (those need a user's own images).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

# ImageNet class (folder name) -> the photo whose crops fill it. A photo is here when EfficientNet-Lite0
# gives most of its random crops one class and EfficientNet-Lite2 (the transfer judge and the score's
# backbone) agrees on at least half of them: a judge that does not recognise the real photos cannot
# say whether a synthesized image transfers. Measured on 20 crops each (Lite0 / Lite2 agreeing):
# chelsea 20/20, coffee 20/20, rocket 14/16, stereo_motorcycle 20/17, camera 20/20, china 10/12,
# clock 14/14, moon 17/19. Left out by that rule: immunohistochemistry (Lite2 0/20), retina (6/20),
# hubble_deep_field (2/20), flower.jpg (a daisy to Lite0, a honeycomb to Lite2: 0/20), astronaut.
PHOTOS = {
    "Egyptian cat": ("skimage", "chelsea"),
    "espresso": ("skimage", "coffee"),
    "missile": ("skimage", "rocket"),
    "moped": ("skimage", "stereo_motorcycle"),
    "tripod": ("skimage", "camera"),
    "palace": ("sklearn", "china.jpg"),
    "bubble": ("skimage", "clock"),
    "nematode": ("skimage", "moon"),
}
SIDE = 256   # crops are saved at this size; readers resize to their network's input


def load_photo(source: str, name: str) -> np.ndarray:
    """H x W x 3 uint8 (grey photos repeated over the channels; a stereo pair's left image)."""
    try:
        if source == "skimage":
            from skimage import data
            photo = getattr(data, name)()
        else:
            from sklearn.datasets import load_sample_image
            photo = load_sample_image(name)
    except ImportError as exc:
        raise RuntimeError(f"the photo folders need scikit-image and scikit-learn ({exc})") from None
    photo = photo[0] if isinstance(photo, tuple) else photo
    return np.repeat(photo[..., None], 3, -1) if photo.ndim == 2 else photo[..., :3]


def random_crops(photo: np.ndarray, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """n square crops of 50-100% of the short side, half of them mirrored, resized to SIDE."""
    from PIL import Image
    h, w = photo.shape[:2]
    out = []
    for _ in range(n):
        side = int(rng.uniform(0.5, 1.0) * min(h, w))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = Image.fromarray(photo[top:top + side, left:left + side]).resize((SIDE, SIDE), Image.BICUBIC)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        out.append(np.asarray(crop))
    return out


def make_photo_folders(root: str | Path, train: int = 40, heldout: int = 20, classes: tuple[str, ...] | None = None,
                       seed: int = 0) -> tuple[Path, Path]:
    """Write <root>/train/<class>/*.png and <root>/heldout/<class>/*.png (crops of each class's
    photo, `train` and `heldout` per class); returns the two folders. Existing files are kept, so
    calling it again is cheap; class folders of other classes (an earlier call, an older class list)
    are removed, since an image folder's reader takes every class folder it finds."""
    import shutil
    from PIL import Image
    root = Path(root).expanduser()
    chosen = classes or tuple(PHOTOS)
    unknown = [c for c in chosen if c not in PHOTOS]
    if unknown:
        raise ValueError(f"no shipped photo for class {unknown[0]!r}; valid: {', '.join(PHOTOS)}")
    for split, count, salt in (("train", train, 0), ("heldout", heldout, 1)):
        for stale in (root / split).glob("*"):
            if stale.is_dir() and stale.name not in chosen:
                shutil.rmtree(stale)
        for name in chosen:
            folder = root / split / name
            if folder.is_dir() and len(list(folder.glob("*.png"))) == count:
                continue
            folder.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng([seed, salt, list(PHOTOS).index(name)])
            for i, crop in enumerate(random_crops(load_photo(*PHOTOS[name]), count, rng)):
                Image.fromarray(crop).save(folder / f"{i:03d}.png")
    return root / "train", root / "heldout"
