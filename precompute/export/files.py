"""The files of an exported site: images named by their content, JSON documents, and what was written.

Images are files, not data: URLs, so a page fetches only the pictures it shows, the browser caches each
once, and one picture used in many places (an exemplar thumbnail shared by many neurons) is one file.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

IMAGE_FOLDER = "img"


class SiteFiles:
    """Writes under one site folder; remembers the images it wrote."""

    def __init__(self, root: Path):
        self.root = root
        self._images: set[str] = set()   # names written by this export (the folder starts empty)
        self._folders: set[Path] = set()

    def image(self, png: bytes | None) -> str | None:
        """The site path of a PNG (img/ab/cdef….png, named by its content hash), written on first sight."""
        if png is None:
            return None
        png = bytes(png)
        digest = hashlib.blake2b(png, digest_size=10).hexdigest()
        name = f"{IMAGE_FOLDER}/{digest[:2]}/{digest[2:]}.png"
        if name not in self._images:
            self._images.add(name)
            self.write_bytes(name, png)
        return name

    def json(self, name: str, document) -> str:
        """Write `document` as compact JSON at site path `name` (missing values must be None: see records)."""
        text = json.dumps(document, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_plain)
        self.write_bytes(name, text.encode())
        return name

    def write_bytes(self, name: str, data: bytes) -> None:
        path = self.root / name
        if path.parent not in self._folders:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._folders.add(path.parent)
        path.write_bytes(data)

    @property
    def images(self) -> int:
        return len(self._images)


def records(frame: pd.DataFrame) -> list[dict]:
    """A frame's rows as plain, JSON-ready dicts: Python numbers, and None for every missing value (NaN)."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def _plain(value):
    """What json cannot write on its own: numpy numbers (a missing float must already be None: json refuses NaN)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
