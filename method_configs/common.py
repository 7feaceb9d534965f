"""The one place that builds trainer, viewer, machine and optimizer settings shared by every rsseg method."""

from __future__ import annotations

from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig

from nerfseg_plugin.compat import default_device_type

VIEWER_HOST = "127.0.0.1"
"""The viewer binds to loopback only; reach it from another machine through SSH forwarding (see README)."""


def adam(lr: float, *, lr_final: float | None = None, max_steps: int = 0, warmup_steps: int = 0) -> dict:
    """One optimizer entry: Adam (eps as splatfacto), optionally with exponential decay to ``lr_final``."""
    scheduler = None
    if lr_final is not None:
        scheduler = ExponentialDecaySchedulerConfig(
            lr_final=lr_final,
            max_steps=max_steps,
            warmup_steps=warmup_steps,
            lr_pre_warmup=0.0 if warmup_steps else 1e-8,
        )
    return {"optimizer": AdamOptimizerConfig(lr=lr, eps=1e-15), "scheduler": scheduler}


def trainer_config(
    method_name: str,
    pipeline: VanillaPipelineConfig,
    optimizers: dict[str, dict],
    max_num_iterations: int,
    *,
    steps_per_eval_image: int,
    steps_per_eval_all_images: int,
    steps_per_save: int,
    num_rays_per_chunk: int = 1 << 15,
) -> TrainerConfig:
    """A TrainerConfig with our shared defaults: CUDA if present else CPU (no flag needed), the viewer on
    loopback that closes when training ends (so scripted runs finish), and tensorboard logs."""
    return TrainerConfig(
        method_name=method_name,
        steps_per_eval_image=steps_per_eval_image,
        steps_per_eval_batch=0,
        steps_per_save=steps_per_save,
        steps_per_eval_all_images=steps_per_eval_all_images,
        max_num_iterations=max_num_iterations,
        mixed_precision=False,
        pipeline=pipeline,
        optimizers=optimizers,
        machine=MachineConfig(device_type=default_device_type()),  # type: ignore[arg-type]
        viewer=ViewerConfig(
            websocket_host=VIEWER_HOST, num_rays_per_chunk=num_rays_per_chunk, quit_on_train_completion=True
        ),
        vis="viewer+tensorboard",
    )
