"""Benchmark of the CPU rasterizer: forward + backward of one 256x256 view, 30k Gaussians, D = 3 + 16 channels.

Run: ``python benchmarks/bench_cpu_rasterizer.py [--n 30000] [--size 256] [--repeats 9] [--skip-cold]``. Prints the
median wall time per stage (projection, tile intersection, compositing forward and backward, projection backward),
the median end-to-end ``rasterization_cpu`` forward + ``backward()`` (the figure held to the 150 ms target), scene
statistics, the numba cold compile time (a subprocess with an empty cache) and the speed-up over the dense
all-pixels x all-Gaussians autograd reference, timed on a 64x64 view with 2k Gaussians and extrapolated linearly in
pixels x Gaussians (the full-size dense graph would need ~100 GB).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numba
import numpy as np
import torch
from numba import njit

from nerfseg_plugin.splat.cpu_rasterizer import (
    isect_tiles_cpu,
    project_gaussians,
    rasterization_cpu,
    rasterize_to_pixels_cpu,
)
from nerfseg_plugin.splat.dense_reference import rasterization_dense


def look_at(eye: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """World-to-camera matrix (OpenCV: x right, y down, z forward)."""
    fwd = torch.nn.functional.normalize(target - eye, dim=0)
    right = torch.nn.functional.normalize(torch.linalg.cross(fwd, torch.tensor([0.0, 0.0, 1.0])), dim=0)
    down = torch.linalg.cross(fwd, right)
    R = torch.stack([right, down, fwd])
    viewmat = torch.eye(4)
    viewmat[:3, :3], viewmat[:3, 3] = R, -R @ eye
    return viewmat


def aerial_scene(n: int, size: int, seed: int = 0, n_channels: int = 19):
    """An oblique aerial view (60 m up, 35 degrees off nadir) of terrain with 10 m of relief: 85% of the Gaussians
    on the surface inside the camera footprint, 15% floating between it and the camera (trees, roofs, floaters)."""
    g = torch.Generator().manual_seed(seed)
    f = 0.9 * size
    K = torch.tensor([[f, 0.0, size / 2], [0.0, f, size / 2], [0.0, 0.0, 1.0]])
    viewmat = look_at(torch.tensor([0.0, -42.0, 60.0]), torch.tensor([0.0, 0.0, 0.0]))
    # sample pixels and depths, lift to the world: the Gaussians fill the frustum
    uv = torch.rand(n, 2, generator=g) * size
    rays = torch.cat([(uv - size / 2) / f, torch.ones(n, 1)], dim=1)
    cam2world = torch.linalg.inv(viewmat)
    dirs = rays @ cam2world[:3, :3].T
    origin = cam2world[:3, 3]
    # depth to the terrain z = 4 sin(x / 7) cos(y / 9) + 2 sin(x / 3 + y / 5), by fixed-point iteration
    t = -origin[2] / dirs[:, 2]
    for _ in range(20):
        p = origin + t[:, None] * dirs
        h = 4 * torch.sin(p[:, 0] / 7) * torch.cos(p[:, 1] / 9) + 2 * torch.sin(p[:, 0] / 3 + p[:, 1] / 5)
        t = (h - origin[2]) / dirs[:, 2]
    floating = torch.rand(n, generator=g) < 0.15
    t = torch.where(floating, t * (0.6 + 0.38 * torch.rand(n, generator=g)), t)
    means = origin + t[:, None] * dirs
    # log-normal scales, ~1-20 px screen radii at these depths
    scales = torch.exp(torch.randn(n, 3, generator=g) * 0.7 + math.log(0.45))
    quats = torch.randn(n, 4, generator=g)
    opacities = torch.sigmoid(torch.randn(n, generator=g))
    colors = torch.rand(n, n_channels, generator=g)
    return means, quats, scales, opacities, colors, viewmat[None], K[None]


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def stage_times(scene, size: int, ts: int = 16):
    """One forward + backward, stage by stage (the pieces ``rasterization_cpu`` chains)."""
    means, quats, scales, opacities, colors = (p.detach().clone().requires_grad_() for p in scene[:5])
    viewmats, Ks = scene[5:]
    tw = th = math.ceil(size / ts)
    times = {}
    (radii, means2d, depths, conics, _), times["projection"] = timed(
        lambda: project_gaussians(means, quats, scales, viewmats, Ks, size, size)
    )
    (_, _, flatten_ids, offsets), times["tile intersection"] = timed(
        lambda: isect_tiles_cpu(means2d, radii, depths, ts, tw, th)
    )
    (img, alpha), times["compositing fwd"] = timed(
        lambda: rasterize_to_pixels_cpu(
            means2d, conics, colors.expand(1, -1, -1), opacities[None], size, size, ts, offsets, flatten_ids
        )
    )
    loss = (img * torch.linspace(-1, 1, img.shape[-1])).sum() + alpha.sum()
    grads, times["compositing bwd"] = timed(
        lambda: torch.autograd.grad(loss, [means2d, conics, colors, opacities], retain_graph=True)
    )
    _, times["projection bwd"] = timed(lambda: torch.autograd.backward([means2d, conics], [grads[0], grads[1]]))
    return times, (radii, means2d, conics, opacities, offsets, flatten_ids, alpha)


def end_to_end(scene, size: int) -> float:
    """Wall time of ``rasterization_cpu`` + ``backward()`` on a loss over all 19 channels and the alpha."""
    params = [p.detach().clone().requires_grad_() for p in scene[:5]]
    t0 = time.perf_counter()
    img, alpha, _ = rasterization_cpu(*params, scene[5], scene[6], size, size)
    ((img * torch.linspace(-1, 1, img.shape[-1])).sum() + alpha.sum()).backward()
    return time.perf_counter() - t0


@njit(cache=True)
def contributions_per_pixel(means2d, conics, opacities, offsets, flatten_ids, size, ts):
    """Mean number of splats composited per pixel (alpha >= 1/255, before the transmittance early stop)."""
    count = 0
    n_tiles = offsets.size
    for tile in range(n_tiles):
        x0, y0 = (tile % offsets.shape[2]) * ts, (tile // offsets.shape[2]) * ts
        end = offsets.flat[tile + 1] if tile + 1 < n_tiles else flatten_ids.shape[0]
        T = np.ones((ts, ts))
        for idx in range(offsets.flat[tile], end):
            g = flatten_ids[idx]
            for j in range(ts):
                for i in range(ts):
                    dx, dy = means2d[g, 0] - (x0 + i + 0.5), means2d[g, 1] - (y0 + j + 0.5)
                    sigma = 0.5 * (conics[g, 0] * dx * dx + conics[g, 2] * dy * dy) + conics[g, 1] * dx * dy
                    alpha = min(0.999, opacities[g] * math.exp(-sigma))
                    if alpha >= 1.0 / 255.0 and T[j, i] * (1.0 - alpha) > 1e-4:
                        T[j, i] *= 1.0 - alpha
                        count += 1
    return count / (size * size)


def scene_stats(aux, size: int, ts: int = 16) -> str:
    radii, means2d, conics, opacities, offsets, flatten_ids, alpha = (t.detach() for t in aux)
    r = radii[radii > 0].float()
    lo, med, hi = torch.quantile(r, torch.tensor([0.05, 0.5, 0.95])).tolist()
    per_pixel = contributions_per_pixel(
        means2d[0].numpy(), conics[0].numpy(), opacities.numpy(), offsets.numpy(), flatten_ids.numpy(), size, ts
    )
    return (
        f"{len(r)} visible Gaussians, 3-sigma radius median {med:.0f} px (5-95%: {lo:.0f}-{hi:.0f}); "
        f"{flatten_ids.numel()} tile intersections = {flatten_ids.numel() / offsets.numel():.0f} Gaussians per "
        f"16x16 tile; per pixel: {float((math.pi * r**2).sum()) / size**2:.0f} overlapping (3-sigma discs), "
        f"{per_pixel:.1f} composited (alpha >= 1/255, before the 1e-4 stop); mean alpha {alpha.mean():.3f}"
    )


COLD = """
import time, torch
t0 = time.perf_counter()
from nerfseg_plugin.splat.cpu_rasterizer import rasterization_cpu
N = 64
args = [torch.rand(N, 3) + torch.tensor([0, 0, 3.0]), torch.randn(N, 4), torch.rand(N, 3) * 0.2, torch.rand(N),
        torch.rand(N, 19), torch.eye(4)[None], torch.tensor([[[30.0, 0, 16], [0, 30.0, 16], [0, 0, 1]]])]
params = [a.requires_grad_() for a in args[:5]]
img, alpha, _ = rasterization_cpu(*params, *args[5:], 32, 32)
(img.sum() + alpha.sum()).backward()
print(time.perf_counter() - t0)
"""


def cold_compile_seconds() -> float:
    """First float32 forward + backward in a fresh process with an empty numba cache (what CI pays once)."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        out = subprocess.run([sys.executable, "-c", COLD], env=env, check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30_000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--skip-cold", action="store_true", help="skip the cold numba compile measurement")
    args = parser.parse_args()
    print(
        f"torch threads {torch.get_num_threads()}, numba threads {numba.get_num_threads()}, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    if not args.skip_cold:
        print(f"cold start (import + numba compile, float32 fwd + bwd, empty cache): {cold_compile_seconds():.1f} s")
    scene = aerial_scene(args.n, args.size)
    _, warm = timed(lambda: stage_times(aerial_scene(500, 64), 64))  # loads the compiled kernels from the cache
    print(f"first call in this process (cache load): {warm:.2f} s")

    runs = [stage_times(scene, args.size) for _ in range(args.repeats + 1)][1:]
    stats = scene_stats(runs[0][1], args.size)
    print(f"scene: N={args.n}, {args.size}x{args.size}, D=19 (3 colour + 16 semantic); {stats}")
    print(f"median of {args.repeats} runs:")
    for key in runs[0][0]:
        print(f"  {key:18s} {1e3 * statistics.median(r[0][key] for r in runs):7.1f} ms")
    print(f"  {'sum of stages':18s} {1e3 * statistics.median(sum(r[0].values()) for r in runs):7.1f} ms")
    cpu0 = time.process_time()
    totals = [end_to_end(scene, args.size) for _ in range(args.repeats + 1)][1:]
    cpu_per_run = (time.process_time() - cpu0) / (args.repeats + 1)
    total = statistics.median(totals)
    print(
        f"  {'end-to-end':18s} {1e3 * total:7.1f} ms  (min {1e3 * min(totals):.1f}; "
        f"CPU time {1e3 * cpu_per_run:.0f} ms over all threads)"
    )

    n_small, size_small = 2_000, 64
    small = aerial_scene(n_small, size_small)
    params = [p.detach().clone().requires_grad_() for p in small[:5]]

    def dense():
        img, alpha, _ = rasterization_dense(*params, small[5], small[6], size_small, size_small)
        (img.sum() + alpha.sum()).backward()

    dense_t = statistics.median(timed(dense)[1] for _ in range(3))
    scale = (args.n * args.size**2) / (n_small * size_small**2)
    print(
        f"dense reference fwd+bwd: {1e3 * dense_t:.0f} ms for N={n_small} at {size_small}x{size_small}; "
        f"extrapolated x{scale:.0f} (pixels x Gaussians): {dense_t * scale:.0f} s, "
        f"{dense_t * scale / total:.0f}x the CPU rasterizer"
    )
    print(f"TOTAL fwd+bwd {1e3 * total:.1f} ms (target <= 150 ms): {'PASS' if total <= 0.15 else 'FAIL'}")


if __name__ == "__main__":
    main()
