"""Decoding images from untrusted bytes (a dashboard upload, a file given to `lookup`), safely.

Limits come before any pixel is decoded: the byte count, then the pixel count from the header
(a small file can declare a huge image: a decompression bomb), then a full decode, so a truncated
or corrupt file is refused here, with one message, and never half-read later.
"""
from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from .errors import AtlasError

MAX_BYTES = 1 << 20            # as .streamlit/config.toml's server.maxUploadSize (1 MB)
MAX_PIXELS = 4096 * 4096
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "PPM")
EXTENSIONS = ("png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff", "ppm")   # the formats' file names


class ImageRejected(AtlasError):
    """The bytes are not an image this tool will decode; the message says why."""


def decode_image(data: bytes, name: str = "the upload", max_bytes: int = MAX_BYTES,
                 max_pixels: int = MAX_PIXELS) -> Image.Image:
    """A fully decoded RGB image from `data`, or ImageRejected naming `name` and the reason."""
    if len(data) > max_bytes:
        raise ImageRejected(f"{name} is {len(data) / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB")
    if not data:
        raise ImageRejected(f"{name} is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
            if image.width * image.height > max_pixels:
                raise ImageRejected(f"{name} is {image.width} x {image.height} pixels; the limit is "
                                    f"{max_pixels:,} pixels")
            image.load()
            return image.convert("RGB")
    except ImageRejected:
        raise
    except UnidentifiedImageError:
        raise ImageRejected(f"{name} is not an image (readable formats: {', '.join(FORMATS)})") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageRejected(f"{name} could not be decoded (truncated or corrupt: {exc})") from None
