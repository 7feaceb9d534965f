"""Procedural texture primitives: value noise, fractal noise, integer hashes and box-filtered stripes.

Everything is evaluated in world units at the hit points, with the pixel footprint (metres per pixel at the hit)
used to fade out detail finer than a pixel, so textures stay consistent between views instead of aliasing.
"""

from __future__ import annotations

import numpy as np


class ValueNoise:
    """Smooth 2D value noise on a periodic random lattice (period ``size`` lattice units)."""

    def __init__(self, rng: np.random.Generator, size: int = 256) -> None:
        self.size = size
        self.table = rng.random(size * size, dtype=np.float32)

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Noise in [0, 1] at lattice coordinates ``(x, y)``."""
        x0, y0 = np.floor(x), np.floor(y)
        fx, fy = (x - x0).astype(np.float32), (y - y0).astype(np.float32)
        fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
        mask = self.size - 1
        ix, iy = x0.astype(np.int64) & mask, y0.astype(np.int64) & mask
        ix1, iy1 = (ix + 1) & mask, (iy + 1) & mask
        t = self.table
        row0 = t[ix * self.size + iy] * (1 - fy) + t[ix * self.size + iy1] * fy
        row1 = t[ix1 * self.size + iy] * (1 - fy) + t[ix1 * self.size + iy1] * fy
        return row0 * (1 - fx) + row1 * fx

    def fbm(
        self,
        x: np.ndarray,
        y: np.ndarray,
        scale: float,
        footprint: np.ndarray | float = 0.0,
        octaves: int = 3,
        gain: float = 0.5,
        seed: int = 0,
    ) -> np.ndarray:
        """Fractal noise centred on 0 (roughly in [-0.5, 0.5]) with features of ``scale`` metres and finer.

        Octaves whose lattice spacing is under about two footprints fade to their mean.
        """
        total = np.zeros(np.shape(x), dtype=np.float32)
        amplitude, norm, frequency = 1.0, 0.0, 1.0 / scale
        for octave in range(octaves):
            offset = 37.1 * (octave + 1) + 101.3 * seed  # decorrelates octaves and uses of the same table
            fade = np.clip(2.0 - 2.0 * frequency * np.asarray(footprint, dtype=np.float32), 0.0, 1.0)
            value = self(x * frequency + offset, y * frequency - offset) - 0.5
            total += (amplitude * fade) * value
            norm += amplitude
            amplitude *= gain
            frequency *= 2.0
        return total / norm * 1.6


def hash01(ix: np.ndarray, iy: np.ndarray | int = 0, salt: int = 0) -> np.ndarray:
    """A deterministic pseudo-random number in [0, 1) per integer pair."""
    with np.errstate(over="ignore"):  # wrap-around multiplication is the point of the hash
        h = np.atleast_1d(np.asarray(ix, dtype=np.int64)).astype(np.uint32) * np.uint32(374761393)
        h = h + np.asarray(iy, dtype=np.int64).astype(np.uint32) * np.uint32(668265263)
        h = h + np.uint32((salt * 2246822519) & 0xFFFFFFFF)
        h = (h ^ (h >> np.uint32(13))) * np.uint32(1274126177)
        h = h ^ (h >> np.uint32(16))
    return (h >> np.uint32(8)).astype(np.float32) / np.float32(1 << 24)


def stripes(coord: np.ndarray, duty: float, width: np.ndarray | float) -> np.ndarray:
    """A 0/1 square wave (1 on the first ``duty`` of each unit period) box-filtered over ``width`` periods."""
    width = np.maximum(np.asarray(width, dtype=np.float32), 1e-3)

    def integral(v):
        whole = np.floor(v)
        return whole * duty + np.minimum(v - whole, duty)

    return np.clip((integral(coord + 0.5 * width) - integral(coord - 0.5 * width)) / width, 0.0, 1.0)


def lines(coord: np.ndarray, thickness: float, width: np.ndarray | float) -> np.ndarray:
    """Thin lines (grout, seams, mullions) of ``thickness`` periods centred on integer ``coord``, box-filtered."""
    return stripes(coord + 0.5 * thickness, thickness, width)


def mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Linear blend of colour arrays ``[M, 3]`` (or broadcastable) by weights ``[M]``."""
    t = np.asarray(t, dtype=np.float32)[..., None] if np.ndim(t) else np.float32(t)
    return a + (b - a) * t
