"""rsseg-export-geo's straight-down renders through gsplat's CUDA ortho camera vs the CPU rasterizer's port.

    python benchmarks/ortho_backends.py --load-config RUN/config.yml [--gsd 0.25] [--tile-size 512]

Renders every tile of the run's default export grid (sparse points' extent) with both backends from the same
checkpoint and prints label agreement, height and confidence differences and the time per backend. Needs a CUDA
device (the CPU backend then runs on the same model moved to the CPU); writes nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro


@dataclass
class OrthoBackends:
    load_config: Path
    """A splatting run's config.yml."""
    gsd: float = 0.25
    """Ground sampling distance of the compared tiles, in map units."""
    tile_size: int = 512
    """Tile size in pixels."""
    backend: str = "gsplat"
    """Backend compared with the CPU rasterizer (``cpu`` too checks this script itself without a GPU)."""


def _render_all(pipeline, frame, grid, backend: str) -> tuple[list, float]:
    from nerfseg_plugin.geo.ortho_render import SplatOrthoRenderer

    pipeline.model.config.rasterizer_backend = backend
    renderer = SplatOrthoRenderer(pipeline.model, frame, grid.gsd)
    if pipeline.model.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    tiles = [renderer.render(tile) for tile in grid.tiles()]
    if pipeline.model.device.type == "cuda":
        torch.cuda.synchronize()
    return tiles, time.perf_counter() - start


def main(options: OrthoBackends) -> None:
    from nerfstudio.utils.eval_utils import eval_setup

    from nerfseg_plugin.geo.cli import _sparse_points_map
    from nerfseg_plugin.geo.frames import pipeline_map_frame
    from nerfseg_plugin.geo.grid import OrthoGrid, robust_extent

    if options.backend == "gsplat" and not torch.cuda.is_available():
        raise SystemExit("ortho_backends: needs a CUDA device for gsplat's rasterizer")
    _, pipeline, _, _ = eval_setup(options.load_config, test_mode="inference")
    frame, _ = pipeline_map_frame(pipeline)
    points = _sparse_points_map(pipeline, frame)
    grid = OrthoGrid.from_bounds(robust_extent(points[:, :2]), options.gsd, options.tile_size)
    gpu, gpu_s = _render_all(pipeline, frame, grid, options.backend)
    gpu_s = min(gpu_s, _render_all(pipeline, frame, grid, options.backend)[1])  # without the first call's set-up
    pipeline.to("cpu")
    cpu, cpu_s = _render_all(pipeline, frame, grid, "cpu")
    valid = np.concatenate([(a.valid & b.valid).ravel() for a, b in zip(gpu, cpu, strict=True)])
    either = np.concatenate([(a.valid | b.valid).ravel() for a, b in zip(gpu, cpu, strict=True)])
    same = np.concatenate([(a.labels == b.labels).ravel() for a, b in zip(gpu, cpu, strict=True)])
    dz = np.concatenate([np.abs(a.height - b.height).ravel() for a, b in zip(gpu, cpu, strict=True)])
    dc = np.concatenate([np.abs(a.confidence - b.confidence).ravel() for a, b in zip(gpu, cpu, strict=True)])
    print(f"{grid.width} x {grid.height} px at {grid.gsd} in {grid.num_tiles} tiles of {options.load_config}")
    print(f"valid in both: {valid.mean():.4f} of pixels; valid in one only: {(either & ~valid).mean():.4f}")
    print(f"label agreement: {same[valid].mean():.5f}")
    dz = dz[valid]
    print(f"height |{options.backend} - cpu|: median {np.median(dz):.2e}, p99 {np.quantile(dz, 0.99):.2e} m")
    print(f"confidence |{options.backend} - cpu|: p99 {np.quantile(dc[valid], 0.99):.2e}")
    print(f"time for all tiles: {options.backend} {gpu_s:.2f} s, CPU rasterizer {cpu_s:.2f} s")


if __name__ == "__main__":
    main(tyro.cli(OrthoBackends))
