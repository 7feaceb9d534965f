"""The 2D appearance model: it trains, its predictions reach the 3D loss with their confidences, it switches off."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from training_utils import setup_pipeline, train

from nerfseg_plugin.appearance.config import AppearanceConfig
from nerfseg_plugin.appearance.driver import AppearanceDriver
from nerfseg_plugin.appearance.model import AppearanceModel, AppearanceView
from nerfseg_plugin.appearance.rounds import AppearanceRounds, _surface_uprightness, round_steps
from nerfseg_plugin.appearance.targets import AppearanceTargets
from nerfseg_plugin.core.keys import SEMANTIC_LABELS
from nerfseg_plugin.method_configs.nerf_methods import rsseg_nerf_lite
from nerfseg_plugin.method_configs.splat_methods import rsseg_splat_lite
from nerfseg_plugin.semantics.model_mixin import APPEARANCE_LOSS

IGNORE = 255
FAST = AppearanceConfig(steps_first_round=40, steps_later_rounds=20, crop_size=32, batch_size=4, base_channels=8)


def _colour_view(seed: int, labeled: bool, size: int = 48) -> AppearanceView:
    """Class = which of two colours a pixel has (plus noise): learnable from appearance alone."""
    generator = torch.Generator().manual_seed(seed)
    classes = (torch.rand(size // 8, size // 8, generator=generator) > 0.5).long()
    classes = classes.repeat_interleave(8, 0).repeat_interleave(8, 1)
    palette = torch.tensor([[0.8, 0.2, 0.2], [0.2, 0.3, 0.9]])
    image = palette[classes] + 0.05 * torch.randn(size, size, 3, generator=generator)
    return AppearanceView(image.permute(2, 0, 1).half(), classes, torch.ones(size, size), labeled)


def test_the_2d_model_learns_appearance_and_generalises_to_an_unseen_view() -> None:
    model = AppearanceModel(dataclasses.replace(FAST, steps_first_round=80), 3, 2, IGNORE)
    model.fit([_colour_view(0, True), _colour_view(1, False)])
    unseen = _colour_view(7, False)
    probabilities = model.predict(unseen.inputs.float())
    assert probabilities.shape == (48, 48, 2)
    assert torch.allclose(probabilities.sum(-1), torch.ones(48, 48), atol=1e-5)
    assert float((probabilities.argmax(-1) == unseen.targets).float().mean()) > 0.95
    assert model.losses[-1] < model.losses[0]


def test_dihedral_prediction_does_not_depend_on_the_photo_heading() -> None:
    image = torch.rand(3, 48, 40, generator=torch.Generator().manual_seed(3))  # non-square, no UNet padding
    turned = torch.rot90(image, 1, (1, 2)).flip(2)

    def gap(config: AppearanceConfig) -> float:
        model = AppearanceModel(config, 3, 4, IGNORE)  # untrained: its single pass depends on the heading
        expected = torch.rot90(model.predict(image), 1, (0, 1)).flip(1)
        return float((model.predict(turned) - expected).abs().max())

    assert gap(dataclasses.replace(FAST, test_time_dihedral=True)) < 1e-5
    assert gap(FAST) > 1e-3


def test_rare_classes_weigh_more_and_absent_classes_do_not_break_the_weights() -> None:
    targets = torch.zeros(10, 10, dtype=torch.long)
    targets[0, :2] = 1  # class 1: 2 % of the pixels; class 2 absent
    view = AppearanceView(torch.zeros(3, 10, 10).half(), targets, torch.ones(10, 10), True)
    weights = AppearanceModel(FAST, 3, 3, IGNORE)._class_weights([view])
    assert weights[1] > weights[0] and torch.isfinite(weights).all() and weights[2] == weights.max()
    flat = AppearanceModel(dataclasses.replace(FAST, class_balance=0.0), 3, 3, IGNORE)._class_weights([view])
    assert torch.equal(flat, torch.ones(3))


def test_rounds_are_scheduled_inside_the_semantic_span() -> None:
    assert round_steps(AppearanceConfig(rounds=(0.33, 0.6)), 0, 1500) == [495, 900]
    assert round_steps(AppearanceConfig(rounds=(0.5,)), 1200, 1800) == [1500]
    assert round_steps(AppearanceConfig(rounds=(0.0, 1.0)), 0, 100) == []


def test_image_and_ray_lookups_agree() -> None:
    labels = torch.arange(16).reshape(4, 4) % 3
    weights = torch.linspace(0, 1, 16).reshape(4, 4)
    targets = AppearanceTargets([labels], [weights], [(8, 8)], IGNORE)  # 2D size is half the training size
    image_labels, image_weights = targets.for_image(0, 8, 8)
    rays = torch.tensor([[0, 0, 0], [0, 7, 7], [0, 3, 5]])
    ray_labels, ray_weights = targets.for_rays(rays)
    assert torch.equal(ray_labels, image_labels[rays[:, 1], rays[:, 2]])
    assert torch.allclose(ray_weights, image_weights[rays[:, 1], rays[:, 2]], atol=1e-3)


def test_uprightness_is_one_on_level_ground_zero_on_walls_and_the_cosine_between() -> None:
    rows, cols = torch.meshgrid(torch.arange(6.0), torch.arange(8.0), indexing="ij")
    ground = torch.stack([cols, -rows, torch.full_like(rows, 2.0)], -1)  # a level surface seen from above
    wall = torch.stack([torch.full_like(rows, 3.0), cols, -rows], -1)  # x = const: vertical
    slope = torch.stack([cols, -rows, cols], -1)  # rises 1 per 1 sideways: 45 degrees
    assert torch.allclose(_surface_uprightness(ground), torch.ones(6, 8))
    assert torch.allclose(_surface_uprightness(wall), torch.zeros(6, 8), atol=1e-6)
    assert torch.allclose(_surface_uprightness(slope), torch.full((6, 8), 0.5**0.5), atol=1e-6)
    flat = torch.zeros(6, 8, 3)  # no surface change at all: undefined normal, counted as level
    assert torch.equal(_surface_uprightness(flat), torch.ones(6, 8))


@pytest.fixture(scope="module")
def splat_round(tiny_scene: Path):
    pipeline, optimizers, callbacks = setup_pipeline(rsseg_splat_lite.config, tiny_scene, num_downscales=0)
    train(pipeline, optimizers, callbacks, steps=40)
    config = dataclasses.replace(FAST, rounds=(0.5,), normal_input=True)
    driver = AppearanceDriver(config, pipeline.datamanager, pipeline.model, 80)
    assert driver.steps == [40]
    driver.after_step(39)
    assert pipeline.model.appearance_targets is None  # not a round step: nothing happens
    driver.after_step(40)
    return pipeline, optimizers, callbacks, driver


def test_a_round_gives_every_training_view_a_confidence_weighted_target(splat_round) -> None:
    pipeline, _, _, driver = splat_round
    targets = pipeline.model.appearance_targets
    dataset = pipeline.datamanager.train_dataset
    assert targets is not None and len(targets) == len(dataset)
    for index in range(len(dataset)):
        height, width = int(dataset.cameras.height[index]), int(dataset.cameras.width[index])
        labels, weights = targets.for_image(index, height, width)
        assert labels.max() < pipeline.model.label_space.num_classes
        assert float(weights.min()) >= 0.0 and float(weights.max()) <= 1.0
        user = pipeline.datamanager.cached_train[index][SEMANTIC_LABELS].long()
        assert float(weights[user != IGNORE].abs().sum()) == 0.0  # real labels win where they exist
    assert bool(torch.cat([w.flatten() for w in targets.weights]).float().gt(0).any())
    for reached, weights in zip(driver.rounds._reached, targets.weights, strict=True):
        assert float(weights.float()[reached].abs().sum()) == 0.0  # where the labels reached, 3D stays the answer
    first_layer = driver.rounds.model.network.encoders[0][0]
    assert first_layer.in_channels == 5  # RGB, height, uprightness
    summary = driver.rounds.summaries[-1]
    assert 0.0 <= summary.target_coverage <= 1.0 and summary.seconds > 0
    assert summary.reached_share is not None and 0.0 < summary.reached_share < 1.0


@pytest.mark.parametrize("first_round_targets", ["confident", "geometric"])
def test_geometric_first_round_targets_keep_confident_guesses_out_of_the_2d_training_set(
    splat_round, monkeypatch: pytest.MonkeyPatch, first_round_targets: str
) -> None:
    pipeline, _, _, driver = splat_round

    def confident_everywhere(camera, image):  # a field sure of class 0 on every pixel, with the real geometry
        logits, depth, accumulation = driver._render(camera, image)
        return torch.zeros_like(logits).index_fill_(-1, torch.tensor([0]), 10.0), depth, torch.ones_like(accumulation)

    fitted: list[list[AppearanceView]] = []
    monkeypatch.setattr(AppearanceModel, "fit", lambda model, views: fitted.append(views))
    config = dataclasses.replace(FAST, rounds=(0.5,), reach="geometry", first_round_targets=first_round_targets)
    label_space = pipeline.model.label_space
    rounds = AppearanceRounds(config, label_space.num_classes, label_space.ignore_index)
    pipeline.model.eval()  # as the driver renders a round
    try:
        rounds.run(driver._training_views(), confident_everywhere, pipeline.model.device)
    finally:
        pipeline.model.train()
    targeted = [(view.targets != IGNORE) for view in fitted[0]]
    outside_reach = sum(int((t & ~r).sum()) for t, r in zip(targeted, rounds._reached, strict=True))
    user_labeled = sum(int((view.targets != IGNORE)[view.weights == 1.0].sum()) for view in fitted[0])
    if first_round_targets == "geometric":  # only the user's labels lie outside the geometric reach
        assert outside_reach <= user_labeled and sum(int(t.sum()) for t in targeted) < sum(t.numel() for t in targeted)
    else:  # every pixel is a target, reached or not
        assert all(bool(t.all()) for t in targeted) and outside_reach > 0


def test_the_3d_loss_is_the_confidence_weighted_cross_entropy_to_the_2d_predictions(splat_round) -> None:
    pipeline, _, _, _ = splat_round
    model = pipeline.model
    dataset = pipeline.datamanager.train_dataset
    index = next(i for i in range(len(dataset)) if i not in dataset.supervised_indices)
    data = pipeline.datamanager.cached_train[index]
    batch = {key: value for key, value in data.items()}
    outputs = model.get_outputs(dataset.cameras[index : index + 1])
    loss = model.get_loss_dict(outputs, batch)[APPEARANCE_LOSS]
    logits = outputs["semantics"]
    targets, weights = model.appearance_targets.for_image(index, *logits.shape[:2])
    per_pixel = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.flatten(), reduction="none")
    expected = (per_pixel * weights.flatten()).sum() / weights.numel()  # averaged over all pixels of the view
    assert torch.allclose(loss, model.appearance_loss_weight * expected, rtol=1e-4)


def test_training_goes_on_with_the_2d_targets_and_switches_off_cleanly(splat_round, tiny_scene: Path) -> None:
    pipeline, optimizers, callbacks, _ = splat_round
    history = train(pipeline, optimizers, callbacks, steps=9, start=41)
    assert any(APPEARANCE_LOSS in step for step in history)
    assert all(torch.isfinite(torch.tensor(list(step.values()))).all() for step in history)
    off = AppearanceDriver(dataclasses.replace(FAST, enabled=False), pipeline.datamanager, pipeline.model, 80)
    assert off.steps == []
    pipeline.model.set_appearance_targets(None, 0.0)
    assert not any(APPEARANCE_LOSS in step for step in train(pipeline, optimizers, callbacks, steps=9, start=50))


def test_nerf_stage_two_draws_rays_for_the_2d_targets(tiny_scene: Path) -> None:
    pipeline, optimizers, callbacks = setup_pipeline(
        rsseg_nerf_lite.config, tiny_scene, semantic_stage_start=10, eval_num_rays_per_chunk=1 << 12
    )
    config = dataclasses.replace(FAST, rounds=(0.5,), render_max_side=24)
    driver = AppearanceDriver(config, pipeline.datamanager, pipeline.model, 30)
    assert driver.steps == [20]
    train(pipeline, optimizers, callbacks, steps=21)
    driver.after_step(20)
    assert pipeline.model.appearance_targets is not None
    ray_bundle, batch = pipeline.datamanager.next_train(21)
    supervised = set(pipeline.datamanager.train_dataset.supervised_indices)
    frames = set(batch["indices"][:, 0].tolist())
    assert frames - supervised, "no ray from an unlabeled frame"
    # The 2D pull is averaged over the rays without a user label: the batch's labeled half does not dilute it.
    model = pipeline.model
    outputs = model(ray_bundle)
    loss = model.get_loss_dict(outputs, batch)[APPEARANCE_LOSS]
    targets, weights = model.appearance_targets.for_rays(batch["indices"])
    unlabeled = batch[SEMANTIC_LABELS] == IGNORE
    assert 0 < int(unlabeled.sum()) < len(unlabeled)
    per_ray = F.cross_entropy(outputs["semantics"], targets.long(), reduction="none")
    expected = (per_ray * weights * unlabeled).sum() / unlabeled.sum()
    assert torch.allclose(loss, model.appearance_loss_weight * expected, rtol=1e-4)
    history = train(pipeline, optimizers, callbacks, steps=2, start=21)
    assert APPEARANCE_LOSS in history[-1] and f"colour_{APPEARANCE_LOSS}" in history[-1]


def test_a_pretrained_checkpoint_loads_and_a_foreign_one_is_refused_naming_the_file(tmp_path: Path) -> None:
    source = AppearanceModel(dataclasses.replace(FAST, seed=5), 3, 2, IGNORE)
    good = tmp_path / "unet.pt"
    torch.save(source.network.state_dict(), good)
    loaded = AppearanceModel(dataclasses.replace(FAST, pretrained_encoder=good), 3, 2, IGNORE)
    for name, value in source.network.state_dict().items():
        assert torch.equal(loaded.network.state_dict()[name], value)
    foreign = tmp_path / "other.pt"
    torch.save({"backbone.weight": torch.zeros(3)}, foreign)
    with pytest.raises(ValueError, match="other.pt"):
        AppearanceModel(dataclasses.replace(FAST, pretrained_encoder=foreign), 3, 2, IGNORE)
