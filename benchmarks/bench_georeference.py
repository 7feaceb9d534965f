"""Georeferencing benchmark: a generated geotagged survey (truth known) and the real Seneca survey.

Prints, for the generated scene (64 views, 3 m GPS noise by default): the horizontal error of the camera centres in
the CRS against the truth (target: mean < 0.5 m) and the scale error (target < 1 %). For Seneca (167 photos with
GPS, 512x384; and the 12 full-size originals written at --max-image-size): the share of photos registered, the
residual RMS to GPS, the time and the peak RSS (target for the originals: < 4 GB).

    python benchmarks/bench_georeference.py --work /tmp/bench_geo [--skip-seneca] [--num-views 64]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def seneca_folder() -> Path | None:
    for root in (REPO.parent / "shared", Path("/work/shared")):
        if (root / "data" / "seneca" / "images_512").is_dir():
            return root / "data" / "seneca"
    return None


def generated(work: Path, num_views: int, size: int, noise: float) -> None:
    from nerfseg_plugin.process.cli import main
    from nerfseg_plugin.process.config import ProcessDataConfig
    from nerfseg_plugin.scenegen.generator import SceneGenConfig, generate_scene

    truth = generate_scene(
        SceneGenConfig(
            output=work / "truth",
            num_views=num_views,
            width=size,
            height=size,
            image_format="jpg",
            jpeg_quality=95,
            geotag=True,
            gps_noise_m=noise,
            overwrite=True,
            show_progress=False,
        )
    )
    raw = work / "raw"
    shutil.rmtree(raw, ignore_errors=True)
    for sub in ("images", "labels"):
        (raw / sub).mkdir(parents=True)
    frames = json.loads((truth / "transforms.json").read_text())["frames"]
    for frame in frames:
        shutil.copy(truth / frame["file_path"], raw / "images")
        if "semantic_path" in frame:
            shutil.copy(truth / frame["semantic_path"], raw / "labels")
    shutil.copy(truth / "classes.json", raw / "classes.json")
    start = time.perf_counter()
    main(
        ProcessDataConfig(
            images=raw / "images",
            labels=raw / "labels",
            classes=raw / "classes.json",
            output=work / "scene",
            overwrite=True,
        )
    )
    elapsed = time.perf_counter() - start
    record = json.loads((truth / "geotag_truth.json").read_text())
    true_centres = {
        Path(f["file_path"]).name: np.array(c) for f, c in zip(frames, record["camera_centres_crs"], strict=True)
    }
    meta = json.loads((work / "scene" / "transforms.json").read_text())
    to_crs = np.array(meta["georeference"]["scene_to_crs"])
    names = [Path(f["file_path"]).name for f in meta["frames"]]
    estimated = np.array(
        [to_crs[:3, :3] @ np.array(f["transform_matrix"])[:3, 3] + to_crs[:3, 3] for f in meta["frames"]]
    )
    expected = np.array([true_centres[n] for n in names])
    horizontal = np.linalg.norm((estimated - expected)[:, :2], axis=1)
    vertical = np.abs((estimated - expected)[:, 2])
    spread = lambda p: np.linalg.norm(p - p.mean(0), axis=1).sum()  # noqa: E731
    scale_error = spread(estimated) / spread(expected) - 1.0
    print(
        f"generated {num_views} views {size}px, GPS noise {noise} m: {len(names)}/{num_views} registered, "
        f"horizontal error mean {horizontal.mean():.2f} m / max {horizontal.max():.2f} m (target mean < 0.5 m), "
        f"vertical mean {vertical.mean():.2f} m, scale error {scale_error:+.2%} (target < 1 %), "
        f"residual RMS {meta['georeference']['residual_rms_m']:.2f} m, {meta['georeference']['num_inliers']} inliers, "
        f"{elapsed:.1f} s"
    )


def seneca(work: Path, images: Path, label: str, extra: list[str]) -> None:
    """One rsseg-process-data run in a child process (so its peak RSS is its own)."""
    raw = work / f"seneca_{label}"
    shutil.rmtree(raw, ignore_errors=True)
    (raw / "labels").mkdir(parents=True)
    from PIL import Image

    for photo_path in sorted(images.glob("*.jpg")):  # every photo labeled "field": any registered one has labels
        with Image.open(photo_path) as photo:
            Image.new("L", photo.size, 0).save(raw / "labels" / f"{photo_path.stem}.png")
    (raw / "classes.json").write_text(
        json.dumps({"ignore_index": 255, "classes": [{"name": "field", "color": [0, 200, 0]}]})
    )
    command = [
        sys.executable, "-m", "nerfseg_plugin.process.cli", "--images", str(images), "--labels", str(raw / "labels"),
        "--classes", str(raw / "classes.json"), "--output", str(raw / "scene"), "--min-registered-share", "0.1",
        "--overwrite", *extra,
    ]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    if result.returncode != 0:
        print(f"seneca {label}: FAILED in {elapsed:.0f} s\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        return
    meta = json.loads((raw / "scene" / "transforms.json").read_text())
    total = len(list(images.glob("*.jpg")))
    geo = meta.get("georeference", {})
    print(
        f"seneca {label}: {len(meta['frames'])}/{total} photos registered ({len(meta['frames']) / total:.0%}), "
        f"{geo.get('crs')} residual RMS to GPS {geo.get('residual_rms_m')} m ({geo.get('num_inliers')} inliers), "
        f"written {meta.get('w')}x{meta.get('h')}, {elapsed:.0f} s, peak RSS so far {peak_gb:.2f} GB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_georeference"))
    parser.add_argument("--num-views", type=int, default=64)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--gps-noise", type=float, default=3.0)
    parser.add_argument("--skip-generated", action="store_true")
    parser.add_argument("--skip-seneca", action="store_true")
    parser.add_argument("--skip-originals", action="store_true", help="skip Seneca's 12 full-size photos")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if not args.skip_generated:
        generated(args.work, args.num_views, args.size, args.gps_noise)
    folder = seneca_folder()
    if args.skip_seneca or folder is None:
        print("seneca: skipped" + ("" if folder else " (shared/data/seneca not found)"))
        return
    seneca(args.work, folder / "images_512", "512x384 (167 photos)", [])
    if not args.skip_originals:
        # as a user runs it: written at full size, SIFT at its default bound (the memory peak is SIFT's)
        seneca(args.work, folder / "raw_sample", "full-size originals (12 x 3600x2700)", [])


if __name__ == "__main__":
    main()
