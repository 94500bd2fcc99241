"""Receptive fields as the store records them (layers.rf_*), and the window they cut from an image.

Torch-free, so the dashboard crops stored images with the very arithmetic the build crops with
(precompute.engine.receptive computes the fields).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReceptiveField:
    """Output position (y, x) sees input rows [offset_y + y * stride_y, ... + size_y), columns likewise."""
    size: tuple[int, int]      # rows, columns of input pixels
    stride: tuple[int, int]    # input pixels between neighbouring output positions
    offset: tuple[int, int]    # top-left input pixel of output position (0, 0); negative: padding
    method: str                # "geometry" or "gradient"

    @classmethod
    def from_row(cls, size, stride, offset, method) -> "ReceptiveField | None":
        """From a layers row's rf_* values (None for fc layers and those that see the whole image)."""
        if size is None or stride is None or offset is None:
            return None
        return cls(tuple(size), tuple(stride), tuple(offset), method)

    def box(self, y: int, x: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) input pixels seen from output position (y, x), end exclusive;
        may reach past the image."""
        top, left = self.offset[0] + y * self.stride[0], self.offset[1] + x * self.stride[1]
        return top, left, top + self.size[0], left + self.size[1]

    def window(self, y: int, x: int, height: int, width: int) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
        """What a crop of position (y, x) takes from a height x width image: the box clipped to the image
        (top, left, bottom, right), and the fill to add around it (top, bottom, left, right). A box that
        reaches past one edge is filled up there, so the crop keeps the box's size with the image off-centre;
        a box larger than the image is the whole image along that axis."""
        top, left, bottom, right = self.box(y, x)
        inside = (max(0, top), max(0, left), min(bottom, height), min(right, width))
        short_y = min(self.size[0], height) - (inside[2] - inside[0])
        short_x = min(self.size[1], width) - (inside[3] - inside[1])
        fill_y = (short_y, 0) if top < 0 else (0, short_y)
        fill_x = (short_x, 0) if left < 0 else (0, short_x)
        return inside, (*fill_y, *fill_x)


def center(shape: tuple[int, ...]) -> tuple[int, int]:
    """The central output position of a C x H x W layer: where conv units are optimized."""
    return shape[1] // 2, shape[2] // 2


def layer_field(rf_size, rf_stride, rf_offset, rf_method, shape: str) -> tuple[ReceptiveField | None, tuple[int, int] | None]:
    """A layers row's receptive field (None: fc, the whole image, or a store without fields) and its central
    output position, where conv facets are optimized (`shape`: the row's 'CxHxW')."""
    field = ReceptiveField.from_row(_ints(rf_size), _ints(rf_stride), _ints(rf_offset), rf_method)
    return field, center(tuple(int(n) for n in str(shape).split("x"))) if field else None


def _ints(value) -> list[int] | None:
    """A stored [rows, columns] pair as ints; None for NULL (pandas reads it as None or NaN)."""
    return None if value is None or (isinstance(value, float) and value != value) else [int(v) for v in value]
