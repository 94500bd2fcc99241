"""Images for display: the shared pictures of precompute.core.pictures, and data: URIs for the dashboard's
dataframe image columns and chart tooltips."""
from __future__ import annotations

import base64

from precompute.core.pictures import crop, outline, tile, upscale

__all__ = ["crop", "data_uri", "outline", "tile", "upscale"]


def data_uri(png: bytes | None, size: int = 84) -> str | None:
    """A data: URI (for dataframe image columns and chart tooltips)."""
    if png is None:
        return None
    return "data:image/png;base64," + base64.b64encode(upscale(png, size)).decode()
