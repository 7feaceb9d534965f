"""``rsseg-make-scene``: generate a synthetic aerial scene with exact labels."""

from __future__ import annotations

import json
import time

import tyro

from nerfseg_plugin.scenegen.generator import SceneGenConfig, generate_scene
from nerfseg_plugin.scenegen.geotag import GEOTAG_TRUTH_FILE
from nerfseg_plugin.scenegen.ortho_truth import ORTHO_TRUTH_DIR
from nerfseg_plugin.scenegen.writer import TRANSFORMS_FILE, class_pixel_shares


def main(config: SceneGenConfig) -> None:
    start = time.perf_counter()
    try:
        folder = generate_scene(config)
    except (ValueError, FileExistsError) as err:
        raise SystemExit(f"rsseg-make-scene: {err}") from None
    frames = json.loads((folder / TRANSFORMS_FILE).read_text(encoding="utf-8"))["frames"]
    labeled = [i for i, frame in enumerate(frames) if "semantic_path" in frame]
    print(f"Wrote {config.style} scene (seed {config.seed}) to {folder} in {time.perf_counter() - start:.1f} s")
    print(f"  views: {len(frames)} at {config.width}x{config.height}; labeled views: {labeled}")
    shares = class_pixel_shares(folder)
    print("  class pixel shares: " + ", ".join(f"{name} {share:.1%}" for name, share in shares.items()))
    if config.geotag:
        print(f"  geotagged JPEGs (GPS noise {config.gps_noise_m} m), truth: {folder / GEOTAG_TRUTH_FILE}")
    if config.ortho_truth:
        print(f"  ortho truth (labels, heights at {config.ortho_truth_gsd} m): {folder / ORTHO_TRUTH_DIR}")


def entrypoint() -> None:
    """Console-script entry point."""
    tyro.extras.set_accent_color("bright_yellow")
    main(tyro.cli(SceneGenConfig))


if __name__ == "__main__":
    entrypoint()
