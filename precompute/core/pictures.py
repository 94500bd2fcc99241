"""Pictures from the store's PNG bytes: upscaled without blur, tiled, cropped to a receptive field, outlined.

Torch-free and streamlit-free: the dashboard shows them (dashboard.images) and the static-site export
(precompute.export) writes them as files, so both show the same pixels."""
from __future__ import annotations

import io

from PIL import Image, ImageDraw

from .fields import ReceptiveField


def upscale(png: bytes | None, size: int = 112) -> bytes | None:
    """Nearest-neighbour upscale to about `size` px, so 28 px demo images stay crisp."""
    if png is None:
        return None
    image = Image.open(io.BytesIO(png))
    factor = max(1, round(size / max(image.size)))
    if factor == 1:
        return png
    out = io.BytesIO()
    image.resize((image.width * factor, image.height * factor), Image.NEAREST).save(out, format="PNG")
    return out.getvalue()


def tile(pngs: list[bytes], per_row: int = 5, cell: int = 56, gap: int = 2) -> bytes:
    """Several small images as one grid image (nearest-neighbour scaled to `cell` px each)."""
    images = [Image.open(io.BytesIO(p)).convert("RGB") for p in pngs]
    rows = (len(images) + per_row - 1) // per_row
    cols = min(per_row, len(images))
    sheet = Image.new("RGB", (cols * (cell + gap) - gap, rows * (cell + gap) - gap), "white")
    for i, image in enumerate(images):
        resample = Image.NEAREST if cell >= max(image.size) else Image.LANCZOS   # crisp up, smooth down
        sheet.paste(image.resize((cell, cell), resample), ((i % per_row) * (cell + gap), (i // per_row) * (cell + gap)))
    out = io.BytesIO()
    sheet.save(out, format="PNG")
    return out.getvalue()


def crop(png: bytes, field: ReceptiveField, y: int, x: int) -> bytes:
    """The part of a full-size image (a facet, its init) that output position (y, x) sees, as the build
    crops exemplars (ReceptiveField.window: grey where the box reaches past the image)."""
    image = Image.open(io.BytesIO(png))
    (top, left, bottom, right), (above, below, before, after) = field.window(y, x, image.height, image.width)
    inside = image.crop((left, top, right, bottom))
    out = Image.new(image.mode, (inside.width + before + after, inside.height + above + below),
                    128 if image.mode in ("L", "P") else (128,) * len(image.getbands()))
    out.paste(inside, (before, above))
    buffer = io.BytesIO()
    out.save(buffer, format="PNG")
    return buffer.getvalue()


def outline(png: bytes, field: ReceptiveField, y: int, x: int, input_size: int, size: int = 112) -> bytes:
    """An image (a thumbnail of the full input) upscaled to about `size` px, with the box position
    (y, x) sees drawn on it."""
    image = Image.open(io.BytesIO(upscale(png, size))).convert("RGB")
    scale = image.width / input_size
    top, left, bottom, right = field.box(y, x)
    ImageDraw.Draw(image).rectangle([left * scale, top * scale, right * scale - 1, bottom * scale - 1],
                                    outline=(255, 64, 32), width=2)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
