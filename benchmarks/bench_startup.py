"""Start-up benchmark: how the datamanager's file checks grow from 100 to 1000 views.

For each size it builds a scene (small random images, 3 labeled views), then times: the pseudo-label cache check
with no set (must hash nothing), with a valid set (size + mtime only), the bare per-file ``stat`` cost, and the
whole full-image datamanager set-up; and reports the label cache's bytes per labeled pixel (target <= 2 B).
Target: the file-checking time per file at 1000 views stays < 2x the per-file stat cost... measured as the ratio
(check time per file) / (stat time per file), which must not grow by more than 2x from 100 to 1000 views.

    python benchmarks/bench_startup.py --work /tmp/bench_startup
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image


def build_scene(root: Path, num_views: int, size: int) -> Path:
    shutil.rmtree(root, ignore_errors=True)
    (root / "images").mkdir(parents=True)
    (root / "semantics").mkdir()
    rng = np.random.default_rng(0)
    labeled = {0, num_views // 2, num_views - 1}
    frames = []
    for index in range(num_views):
        name = f"frame_{index:05d}"
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / "images" / f"{name}.png")
        angle = 2 * np.pi * index / num_views
        pose = np.eye(4)
        pose[:3, 3] = [10 * np.cos(angle), 10 * np.sin(angle), 10.0]
        frame = {"file_path": f"images/{name}.png", "transform_matrix": pose.tolist()}
        if index in labeled:
            Image.fromarray(rng.integers(0, 3, (size, size), dtype=np.uint8)).save(root / "semantics" / f"{name}.png")
            frame["semantic_path"] = f"semantics/{name}.png"
        frames.append(frame)
    meta = {"camera_model": "PINHOLE", "fl_x": size, "fl_y": size, "cx": size / 2, "cy": size / 2, "w": size,
            "h": size, "frames": frames}  # fmt: skip
    (root / "transforms.json").write_text(json.dumps(meta))
    classes = {"ignore_index": 255, "classes": [{"name": f"c{i}", "color": [i * 80, 0, 0]} for i in range(3)]}
    (root / "classes.json").write_text(json.dumps(classes))
    return root


def timed(function, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def measure(scene: Path) -> dict:
    from nerfseg_plugin.core.keys import PSEUDO_LABELS, PSEUDO_WEIGHTS, SEMANTIC_LABELS
    from nerfseg_plugin.data import pseudo_label_cache as cache
    from nerfseg_plugin.data.datamanager import RssegFullImageDatamanagerConfig
    from nerfseg_plugin.data.dataparser import RssegDataParserConfig

    hashed = []
    real_hash = cache.file_sha256
    cache.file_sha256 = lambda path: hashed.append(path) or real_hash(path)
    try:
        paths = list(cache.scene_input_paths(scene).values())
        stat_s = timed(lambda: [os.stat(p) for p in paths])
        no_set_s = timed(lambda: cache.resolve_pseudo_label_dir(scene, "auto"))
        no_set_hashes = len(hashed)
        directory = cache.cache_dir(scene, "vote")
        directory.mkdir(parents=True)
        cache.write_manifest(directory, {"method": "vote", "inputs": cache.scene_input_hashes(scene), "outputs": []})
        hashed.clear()
        with_set_s = timed(lambda: cache.resolve_pseudo_label_dir(scene, "vote"))
        with_set_hashes = len(hashed)
        shutil.rmtree(directory.parent)
        start = time.perf_counter()
        manager = RssegFullImageDatamanagerConfig(
            dataparser=RssegDataParserConfig(data=scene, load_3D_points=False)
        ).setup(device="cpu")
        setup_s = time.perf_counter() - start
    finally:
        cache.file_sha256 = real_hash
    tensors = [data[k] for data in manager.cached_train for k in (SEMANTIC_LABELS, PSEUDO_LABELS, PSEUDO_WEIGHTS)]
    constant = [t.stride() == (0, 0) for t in tensors]
    label_bytes = sum(t.untyped_storage().nbytes() for t, c in zip(tensors, constant, strict=True) if not c)
    constant_bytes = sum(t.untyped_storage().nbytes() for t, c in zip(tensors, constant, strict=True) if c)
    labeled_pixels = sum(manager.cached_train[i][SEMANTIC_LABELS].numel() for i in manager.labeled_train_indices)
    return {
        "files": len(paths),
        "stat_per_file_us": 1e6 * stat_s / len(paths),
        "check_no_set_per_file_us": 1e6 * no_set_s / len(paths),
        "check_with_set_per_file_us": 1e6 * with_set_s / len(paths),
        "hashed_files": no_set_hashes + with_set_hashes,
        "datamanager_setup_s": setup_s,
        "label_bytes_per_labeled_pixel": label_bytes / labeled_pixels,
        "constant_bytes_per_frame": constant_bytes / len(manager.cached_train),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_startup"))
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--views", type=int, nargs="+", default=[100, 1000])
    args = parser.parse_args()
    results = {}
    for views in args.views:
        results[views] = measure(build_scene(args.work / f"scene_{views}", views, args.size))
        r = results[views]
        print(
            f"{views} views ({r['files']} input files): stat {r['stat_per_file_us']:.1f} us/file; cache check "
            f"without a set {r['check_no_set_per_file_us']:.1f} us/file, with a valid set "
            f"{r['check_with_set_per_file_us']:.1f} us/file; files hashed {r['hashed_files']}; datamanager set-up "
            f"{r['datamanager_setup_s']:.2f} s; label cache {r['label_bytes_per_labeled_pixel']:.2f} B/labeled px "
            f"+ {r['constant_bytes_per_frame']:.0f} B/frame for unlabeled keys (constant views)"
        )
    small, large = results[min(results)], results[max(results)]
    growth = (large["check_with_set_per_file_us"] / large["stat_per_file_us"]) / (
        small["check_with_set_per_file_us"] / small["stat_per_file_us"]
    )
    print(f"growth of (check / stat) per file from {min(results)} to {max(results)} views: {growth:.2f}x (target < 2x)")


if __name__ == "__main__":
    main()
