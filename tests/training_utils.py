"""Run a few real training iterations of a method config on a scene, the way nerfstudio's Trainer does."""

from __future__ import annotations

import copy
from pathlib import Path

from nerfstudio.engine.callbacks import TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.engine.trainer import TrainerConfig


def setup_pipeline(config: TrainerConfig, scene: Path, **model_overrides):
    """A pipeline (on CPU) and its optimizers for ``scene``, with model config fields overridden."""
    config = copy.deepcopy(config)
    config.pipeline.datamanager.data = scene
    config.pipeline.datamanager.dataparser.data = scene
    for name, value in model_overrides.items():
        setattr(config.pipeline.model, name, value)
    pipeline = config.pipeline.setup(device="cpu", test_mode="val")
    optimizers = Optimizers(copy.deepcopy(config.optimizers), pipeline.get_param_groups())
    callbacks = pipeline.get_training_callbacks(
        TrainingCallbackAttributes(optimizers=optimizers, grad_scaler=None, pipeline=pipeline, trainer=None)
    )
    return pipeline, optimizers, callbacks


def train(pipeline, optimizers, callbacks, steps: int, start: int = 0) -> list[dict]:
    """``steps`` iterations: callbacks, loss, backward, optimizer and scheduler steps; returns the loss dicts."""
    history = []
    for step in range(start, start + steps):
        for callback in callbacks:
            callback.run_callback_at_location(step, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
        _, loss_dict, _ = pipeline.get_train_loss_dict(step)
        optimizers.zero_grad_all()
        sum(loss_dict.values()).backward()
        optimizers.optimizer_step_all()
        optimizers.scheduler_step_all(step)
        for callback in callbacks:
            callback.run_callback_at_location(step, location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)
        history.append({k: float(v) for k, v in loss_dict.items()})
    return history
