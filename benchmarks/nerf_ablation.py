"""Paper 000's ablation (Table III) with rsseg-nerf-lite on a generated scene: baseline / + ray convolution /
+ colour radiance.

Stage 1 (the RGB reconstruction) does not depend on the ablated components, so it is trained once and every variant
trains its stage 2 on that same frozen geometry: the differences in the table come from the semantic branch alone.
mIoU is dataset-level (one confusion matrix) over the scene's ``semantic_eval_path`` views.

    python benchmarks/nerf_ablation.py --scene /tmp/s64               # an existing scene
    python benchmarks/nerf_ablation.py --scene /tmp/s64 --make-scene  # generate it first (64 views, 256 px, 3 labeled)
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from nerfstudio.data.utils.dataloaders import FixedIndicesEvalDataloader
from nerfstudio.engine.trainer import TrainerConfig

from nerfseg_plugin.method_configs.nerf_methods import rsseg_nerf_lite

VARIANTS: dict[str, dict[str, bool]] = {
    "baseline": {"use_ray_convolution": False, "use_colour_radiance": False},
    "+ ray conv": {"use_ray_convolution": True, "use_colour_radiance": False},
    "+ colour radiance": {"use_ray_convolution": True, "use_colour_radiance": True},
}
PAPER_MIOU = {"baseline": 42.74, "+ ray conv": 45.84, "+ colour radiance": 48.59}
"""Table III, mean over the five Carla-MVS subsets."""


def lite_config(scene: Path, output: Path, name: str, model_overrides: dict) -> TrainerConfig:
    config = copy.deepcopy(rsseg_nerf_lite.config)
    config.pipeline.datamanager.data = scene
    config.pipeline.model = replace(config.pipeline.model, **model_overrides)
    config.output_dir = output
    config.experiment_name = name
    config.vis = "tensorboard"
    config.pipeline.final_report = False  # evaluated below, on every --eval-stride-th view
    config.steps_per_eval_image = 0
    config.steps_per_eval_all_images = 0
    config.set_timestamp()
    return config


def train(config: TrainerConfig, start_step: int = 0, initial_state: dict | None = None):
    """Runs nerfstudio's Trainer; ``initial_state`` seeds the nerfacto part (semantic branch stays fresh)."""
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    if initial_state is not None:
        reconstruction = {k: v for k, v in initial_state.items() if not k.startswith("semantic_branch.")}
        missing, unexpected = trainer.pipeline.model.load_state_dict(reconstruction, strict=False)
        assert not unexpected and all(k.startswith("semantic_branch.") for k in missing), (missing, unexpected)
        trainer._start_step = start_step
    started = time.perf_counter()
    trainer.train()
    return trainer.pipeline, time.perf_counter() - started


@torch.no_grad()
def evaluate(pipeline, stride: int) -> tuple[dict[str, float], float]:
    dataset = pipeline.datamanager.eval_dataset
    indices = list(range(0, len(dataset), stride))
    loader = FixedIndicesEvalDataloader(dataset, image_indices=indices, device=pipeline.device)
    started = time.perf_counter()
    metrics = pipeline.get_average_image_metrics(loader, image_prefix="eval")
    return metrics, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", type=Path, required=True)
    parser.add_argument("--make-scene", action="store_true", help="generate the scene first (seed --seed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("outputs/nerf_ablation"))
    parser.add_argument("--eval-stride", type=int, default=1, help="evaluate every n-th semantic_eval_path view")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--stage-two-steps", type=int, help="stage-2 steps per variant (default: rsseg-nerf-lite's)")
    parser.add_argument("--stage-one-cache", type=Path, help="load stage 1 from this file, or train and save it there")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="model config overrides")
    parser.add_argument("--pseudo-labels", default="auto", help="auto | off | a method: the scene's pseudo-label set")
    args = parser.parse_args()
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}

    if args.make_scene:
        from nerfseg_plugin.scenegen.generator import SceneGenConfig, generate_scene

        generate_scene(SceneGenConfig(output=args.scene, seed=args.seed, num_views=64, width=256, height=256))
    base = lite_config(args.scene, args.output, "stage1", overrides)
    stage_start = base.pipeline.model.semantic_stage_start
    stage_two_steps = args.stage_two_steps or base.max_num_iterations - stage_start
    base.max_num_iterations = stage_start  # stage 1 only
    if args.stage_one_cache is not None and args.stage_one_cache.is_file():
        state = torch.load(args.stage_one_cache, map_location="cpu")
    else:
        stage_one, stage_one_seconds = train(base)
        state = {k: v.detach().clone() for k, v in stage_one.model.state_dict().items()}
        print(f"stage 1: {stage_start} steps in {stage_one_seconds:.0f} s")
        if args.stage_one_cache is not None:
            torch.save(state, args.stage_one_cache)

    rows = []
    for name in args.variants:
        config = lite_config(
            args.scene, args.output, name.strip("+ ").replace(" ", "_"), {**overrides, **VARIANTS[name]}
        )
        config.max_num_iterations = stage_two_steps
        config.pipeline.datamanager.pseudo_labels = args.pseudo_labels
        pipeline, seconds = train(config, start_step=stage_start, initial_state=state)
        metrics, eval_seconds = evaluate(pipeline, args.eval_stride)
        rows.append((name, metrics, seconds, eval_seconds))
        print(f"{name}: mIoU {metrics['miou']:.4f} (stage 2 {seconds:.0f} s, eval {eval_seconds:.0f} s)")

    print("\n| variant | mIoU | delta | paper mIoU (Table III avg) | paper delta | total acc | avg acc | stage-2 s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    previous = paper_previous = None
    for name, metrics, seconds, _ in rows:
        miou = 100 * metrics["miou"]
        delta = "" if previous is None else f"{miou - previous:+.1f}"
        paper_delta = "" if paper_previous is None else f"{PAPER_MIOU[name] - paper_previous:+.1f}"
        print(
            f"| {name} | {miou:.1f} | {delta} | {PAPER_MIOU[name]:.2f} | {paper_delta} | "
            f"{100 * metrics['total_accuracy']:.1f} | {100 * metrics['average_accuracy']:.1f} | {seconds:.0f} |"
        )
        previous, paper_previous = miou, PAPER_MIOU[name]


if __name__ == "__main__":
    main()
