"""Draw scenes of :mod:`mumo.data.shapes` with numpy: one signed distance function per shape.

Notation: ``u, v`` are pixel-centre offsets from the object centre divided by its radius (``u`` to the
right, ``v`` downwards, as in the image), ``u: (1, w)`` and ``v: (h, 1)`` over the object's bounding box
only, so a distance ``d: (h, w)`` costs one small broadcast per operation. Each shape fits inside the unit
disc, so objects whose discs do not overlap never overlap on screen. Coverage is ``clip(0.5 - d·r, 0, 1)``
with ``r`` the radius in pixels: one pixel of anti-aliasing for the price of a clip.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from mumo.data.shapes.scene import BACKGROUND, COLOURS, SIZES, Scene

Array = np.ndarray

_S3 = math.sqrt(3.0) / 2.0
_DIAMOND_W = 0.8  # half-width of the diamond; its half-height is 1
_STAR_K1 = (0.809016994375, -0.587785252292)  # (cos 36°, -sin 36°): mirror axes of a five-fold star
_STAR_INNER = 0.5  # inner-vertex ratio of the star: fat enough to stay a star at 12 px across


def _circle(u: Array, v: Array) -> Array:
    return np.sqrt(u * u + v * v) - 0.9


def _square(u: Array, v: Array) -> Array:
    return np.maximum(np.abs(u), np.abs(v)) - 0.7  # corners at 0.99 of the radius


def _diamond(u: Array, v: Array) -> Array:
    # Distance to the edge |u|/w + |v| = 1, scaled to true length.
    return (np.abs(u) * (1.0 / _DIAMOND_W) + np.abs(v) - 1.0) * (_DIAMOND_W / math.hypot(_DIAMOND_W, 1.0))


def _cross(u: Array, v: Array) -> Array:
    au, av = np.abs(u), np.abs(v)
    return np.minimum(np.maximum(au - 0.95, av - 0.3), np.maximum(au - 0.3, av - 0.95))


def _triangle(u: Array, v: Array) -> Array:
    # Equilateral, apex up, circumradius 1, centroid at the centre: three half-planes at distance 1/2.
    return np.maximum(v, _S3 * np.abs(u) - 0.5 * v) - 0.5


def _star(u: Array, v: Array) -> Array:
    # Five-pointed star, tip up: fold the plane into one tip's wedge, then measure to that tip's edge
    # (Inigo Quilez, "2D distance functions", sdStar5).
    k1x, k1y = _STAR_K1
    px = np.broadcast_to(np.abs(u), np.broadcast_shapes(u.shape, v.shape))
    py = -v  # y up
    t = np.maximum(k1x * px + k1y * py, 0.0) * 2.0
    px, py = px - t * k1x, py - t * k1y
    t = np.maximum(-k1x * px + k1y * py, 0.0) * 2.0
    px, py = px + t * k1x, py - t * k1y
    px = np.abs(px)
    py = py - 1.0
    bax, bay = -_STAR_INNER * k1y, _STAR_INNER * k1x - 1.0
    h = np.clip((px * bax + py * bay) * (1.0 / (bax * bax + bay * bay)), 0.0, 1.0)
    return np.hypot(px - bax * h, py - bay * h) * np.sign(py * bax - px * bay)


SDFS: dict[str, Callable[[Array, Array], Array]] = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "star": _star,
    "cross": _cross,
    "diamond": _diamond,
}


def paint(canvas: Array, shape: str, rgb: Array, cx: float, cy: float, radius: float) -> None:
    """Blend one shape into ``canvas`` in place.

    Args:
        canvas: (H, W, 3) float32 image, values in [0, 255].
        shape: a key of :data:`SDFS`.
        rgb: (3,) float32 colour.
        cx, cy: centre in pixels (pixel ``i`` covers ``[i, i + 1)``).
        radius: radius of the shape's bounding disc in pixels.
    """
    h, w = canvas.shape[:2]
    x0, x1 = max(int(cx - radius) - 1, 0), min(int(cx + radius) + 2, w)
    y0, y1 = max(int(cy - radius) - 1, 0), min(int(cy + radius) + 2, h)
    inv = np.float32(1.0 / radius)
    u = (np.arange(x0, x1, dtype=np.float32) + np.float32(0.5 - cx)) * inv  # (w',)
    v = (np.arange(y0, y1, dtype=np.float32) + np.float32(0.5 - cy)) * inv  # (h',)
    d = SDFS[shape](u[None, :], v[:, None])  # (h', w')
    alpha = np.clip(np.float32(0.5) - d * np.float32(radius), 0.0, 1.0)[..., None]  # (h', w', 1)
    region = canvas[y0:y1, x0:x1]
    region += alpha * (rgb - region)


def render(scene: Scene, image_size: int = 64) -> np.ndarray:
    """Draw a scene; returns (H, W, 3) uint8 with H = W = ``image_size``."""
    canvas = np.empty((image_size, image_size, 3), dtype=np.float32)
    canvas[:] = BACKGROUND
    for o in scene.objects:
        rgb = np.asarray(COLOURS[o.colour], dtype=np.float32)
        paint(canvas, o.shape, rgb, o.x * image_size, o.y * image_size, SIZES[o.size] * image_size)
    return (canvas + 0.5).astype(np.uint8)
