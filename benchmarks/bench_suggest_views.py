"""Benchmark of ``rsseg-suggest-views``: coverage of the sparse points by K suggested views, and its speed.

Run: ``python benchmarks/bench_suggest_views.py --work-dir /tmp/bench_views [--num 3] [--random-sets 2000]``.

For a generated 64-view nadir grid scene and a 64-view orbit scene (written to ``--work-dir`` with depth maps;
reused when present) it prints the share of the sparse points (those some view sees) covered by K views chosen by:

- ``suggested``: the command's choice (greedy coverage, colour diversity on near-ties);
- ``greedy``: plain greedy maximum coverage with the same visibility (no diversity);
- ``optimum``: the exhaustive best K-set (K <= 3 only);
- ``evenly spread``: the generator's default labeled views;
- ``random``: the best and the mean of ``--random-sets`` random K-sets;

with, for each set, the normalised entropy of the label classes of its views' pixels (how balanced the labels
the user would draw are; the appearance tie-breaker aims at it).

It also prints the precision and recall of the point z-buffer visibility against the renderer's depth maps, the
coverage each set reaches under that exact visibility, and the time of a suggestion (visibility + selection, no
scene loading) on a synthetic 500-view, 100k-point survey (cameras and points only, no images).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from pathlib import Path

import numpy as np
from PIL import Image

from nerfseg_plugin.core.geometry import Intrinsics
from nerfseg_plugin.planning.scene import PlanningScene, load_planning_scene
from nerfseg_plugin.planning.selection import greedy_coverage, view_colour_histograms
from nerfseg_plugin.planning.visibility import Visibility, VisibilityConfig, compute_visibility
from nerfseg_plugin.scenegen.cameras import flight_path
from nerfseg_plugin.scenegen.generator import SceneGenConfig, generate_scene, labeled_indices
from nerfseg_plugin.scenegen.materials import SCENE_LABEL_SPACE

SUGGEST_TIE_TOLERANCE = 0.005  # rsseg-suggest-views' default


def scene_for(work_dir: Path, flight: str, seed: int) -> Path:
    folder = work_dir / f"{flight}64"
    if not (folder / "transforms.json").is_file():
        config = SceneGenConfig(
            output=folder, flight=flight, seed=seed, num_views=64, save_depth=True, show_progress=False, overwrite=True
        )
        generate_scene(config)
    return folder


def dense(visibility: Visibility) -> np.ndarray:
    matrix = np.zeros((visibility.num_views, visibility.num_points), dtype=np.float32)
    matrix[visibility.view_index, visibility.point_index] = 1.0
    return matrix


def coverage(visibility: Visibility, views) -> int:
    return int(np.count_nonzero(visibility.covered(views)))


def exhaustive_best(matrix: np.ndarray, num: int) -> tuple[int, tuple[int, ...]]:
    """Best K-set for K <= 3: for each pair, the union's count plus each third view's new points (a mat-vec)."""
    views = len(matrix)
    if num == 1:
        counts = matrix.sum(1)
        return int(counts.max()), (int(counts.argmax()),)
    best, best_set = -1, ()
    for i, j in itertools.combinations(range(views), 2):
        union = np.maximum(matrix[i], matrix[j])
        if num == 2:
            value, third = int(union.sum()), None
        else:
            gains = matrix[j + 1 :] @ (1.0 - union)
            if len(gains) == 0:
                continue
            third = int(np.argmax(gains))
            value = int(union.sum() + gains[third])
        if value > best:
            best, best_set = value, (i, j) if third is None else (i, j, j + 1 + third)
    return best, best_set


def truth_visibility(scene: PlanningScene, folder: Path) -> np.ndarray:
    """``[V, P]`` seen according to the rendered depth maps (within 2% of the surface depth at the pixel)."""
    truth = np.zeros((scene.num_views, len(scene.points)), dtype=bool)
    for v in range(scene.num_views):
        depth = np.load(folder / "depth" / f"frame_{v:05d}.npy")
        fx, fy, cx, cy, width, height = scene.intrinsics[v]
        c2w = scene.camera_to_worlds[v]
        camera = (scene.points - c2w[:, 3]) @ c2w[:, :3]
        z = -camera[:, 2]
        u, w = cx + fx * camera[:, 0] / z, cy - fy * camera[:, 1] / z
        inside = np.flatnonzero((z > 0) & (u >= 0) & (u < width) & (w >= 0) & (w < height))
        surface = depth[w[inside].astype(int), u[inside].astype(int)]
        truth[v, inside] = np.abs(surface - z[inside]) <= 0.02 * surface
    return truth


def class_balance(folder: Path, views) -> str:
    """Normalised entropy of the label classes over the views' pixels (1 = all classes equally present)."""
    frames = json.loads((folder / "transforms.json").read_text(encoding="utf-8"))["frames"]
    counts = np.zeros(256)
    for view in views:
        frame = frames[int(view)]
        path = folder / (frame.get("semantic_path") or frame["semantic_eval_path"])
        counts += np.bincount(np.asarray(Image.open(path)).reshape(-1), minlength=256)
    shares = counts[: SCENE_LABEL_SPACE.num_classes] / counts[: SCENE_LABEL_SPACE.num_classes].sum()
    entropy = -np.sum(shares[shares > 0] * np.log(shares[shares > 0])) / np.log(len(shares))
    return f"class entropy {entropy:.3f}"


def report_scene(name: str, folder: Path, num: int, random_sets: int) -> None:
    scene = load_planning_scene(folder)
    visibility = compute_visibility(scene, VisibilityConfig())
    truth = truth_visibility(scene, folder)
    predicted = dense(visibility) > 0
    hits = np.count_nonzero(predicted & truth)
    visible = int(np.count_nonzero(visibility.counts()))
    share = lambda value: f"{100.0 * value / visible:5.1f}%"  # noqa: E731

    histograms = view_colour_histograms(visibility, scene.colours)
    suggested = greedy_coverage(visibility, num, histograms, SUGGEST_TIE_TOLERANCE).views
    greedy = greedy_coverage(visibility, num).views
    even = labeled_indices(scene.num_views, num)
    rng = np.random.default_rng(0)
    randoms = [coverage(visibility, rng.choice(scene.num_views, num, replace=False)) for _ in range(random_sets)]
    print(f"\n{name}: {scene.num_views} views, {len(scene.points)} points, {visible} seen by some view")
    print(
        f"  visibility vs rendered depth: precision {hits / predicted.sum():.3f}, recall {hits / truth.sum():.3f} "
        f"({int(predicted.sum())} predicted, {int(truth.sum())} true view-point pairs)"
    )
    rows = [
        ("suggested", coverage(visibility, suggested), suggested),
        ("greedy", coverage(visibility, greedy), greedy),
    ]
    if num <= 3:
        best, best_set = exhaustive_best(dense(visibility), num)
        rows.append(("optimum", best, list(best_set)))
    rows.append(("evenly spread", coverage(visibility, even), even))
    rows.append((f"best of {random_sets} random", max(randoms), None))
    rows.append((f"mean of {random_sets} random", float(np.mean(randoms)), None))
    print(f"  coverage of the {visible} points by K = {num} views:")
    for label, value, views in rows:
        details = ""
        if views is not None:
            exact = np.count_nonzero(truth[list(views)].any(0)) / np.count_nonzero(truth.any(0))
            details = (
                f"  (depth-map visibility {100 * exact:5.1f}%)  {class_balance(folder, views)}  views {sorted(views)}"
            )
        print(f"    {label:<24} {share(value)}{details}")
    ratios = rows[0][1] / rows[1][1], rows[0][1] / coverage(visibility, even)
    print(f"  suggested / greedy: {ratios[0]:.3f}; suggested / evenly spread: {ratios[1]:.3f}")


def synthetic_survey(num_views: int, num_points: int, seed: int = 0) -> PlanningScene:
    """A 500 x 500 m block of boxes (buildings up to 40 m) with points on roofs, walls and ground, flown as a
    serpentine nadir grid of ``num_views`` 512 x 384 cameras at 70% overlap."""
    rng = np.random.default_rng(seed)
    extent = 500.0
    boxes = np.column_stack(
        [rng.uniform(-extent / 2, extent / 2, (400, 2)), rng.uniform(8, 25, (400, 2)), rng.uniform(5, 40, 400)]
    )  # x, y, half size x, half size y, height
    xy = rng.uniform(-extent / 2, extent / 2, (num_points, 2))
    z = np.zeros(num_points)
    for x, y, hx, hy, h in boxes:
        inside = (np.abs(xy[:, 0] - x) < hx) & (np.abs(xy[:, 1] - y) < hy)
        z[inside] = np.maximum(z[inside], h)
    walls = rng.random(num_points) < 0.15  # drop some points down a wall: random heights below the roof
    z[walls] *= rng.random(int(walls.sum()))
    points = np.column_stack([xy, z])
    intrinsics = Intrinsics.from_fov(512, 384, 60.0)
    poses = flight_path("grid", num_views, extent, 0.0, 0.0, 1.0, rng, intrinsics=intrinsics, tallest=40.0)
    return PlanningScene(
        transforms_path=Path("synthetic"),
        file_paths=[f"images/{i:05d}.jpg" for i in range(num_views)],
        camera_to_worlds=np.stack([c2w[:3, :4] for c2w in poses]),
        intrinsics=np.tile(
            [intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy, intrinsics.width, intrinsics.height],
            (num_views, 1),
        ),
        points=points,
        colours=rng.integers(0, 256, (num_points, 3)).astype(np.uint8),
        labeled=np.zeros(num_views, dtype=bool),
    )


def report_speed(num_views: int, num_points: int, num: int, repeats: int) -> None:
    scene = synthetic_survey(num_views, num_points)
    timings = {"visibility": [], "selection": []}
    for _ in range(repeats):
        start = time.perf_counter()
        visibility = compute_visibility(scene, VisibilityConfig())
        middle = time.perf_counter()
        histograms = view_colour_histograms(visibility, scene.colours)
        suggestion = greedy_coverage(visibility, num, histograms, SUGGEST_TIE_TOLERANCE)
        timings["visibility"].append(middle - start)
        timings["selection"].append(time.perf_counter() - middle)
    covered = sum(suggestion.new_points) / suggestion.num_visible_points
    visibility_s, selection_s = (float(np.median(t)) for t in timings.values())
    print(
        f"\nsynthetic survey: {num_views} views, {num_points} points, {len(visibility.point_index)} view-point pairs; "
        f"K = {num} covers {100 * covered:.1f}%"
    )
    print(
        f"  median of {repeats}: visibility {visibility_s:.2f} s, selection {selection_s:.3f} s, "
        f"total {visibility_s + selection_s:.2f} s"
    )
    start = time.perf_counter()
    greedy_coverage(visibility, min(num_views, 50), histograms, SUGGEST_TIE_TOLERANCE)
    print(f"  selection of K = {min(num_views, 50)}: {time.perf_counter() - start:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, required=True, help="scratch folder for the generated scenes")
    parser.add_argument("--num", type=int, default=3, help="K, views to choose")
    parser.add_argument("--random-sets", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=11, help="scene seed")
    parser.add_argument("--synthetic-views", type=int, default=500)
    parser.add_argument("--synthetic-points", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    for flight in ("grid", "orbit"):
        report_scene(
            f"{flight} scene (seed {args.seed})",
            scene_for(args.work_dir, flight, args.seed),
            args.num,
            args.random_sets,
        )
    report_speed(args.synthetic_views, args.synthetic_points, args.num, args.repeats)
    print(f"\n(1 - 1/e = {1 - 1 / math.e:.3f} is greedy's worst-case guarantee against the optimum)")


if __name__ == "__main__":
    main()
