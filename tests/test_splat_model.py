"""rsseg-splat: semantic features as Gaussian parameters, densification, outputs contract, loss switches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from training_utils import setup_pipeline, train

from nerfseg_plugin.core.keys import SEMANTIC_LABELS
from nerfseg_plugin.method_configs.splat_methods import rsseg_splat_lite
from nerfseg_plugin.semantics.model_mixin import SEMANTIC_LOSS
from nerfseg_plugin.splat.depth_bound import depth_bound_loss
from nerfseg_plugin.splat.model import SEMANTIC_FEATURES, flatness

SMALL = {"num_random": 400, "warmup_length": 2, "refine_every": 3, "stop_split_at": 50, "num_downscales": 0}


@pytest.fixture
def splat(minimal_scene: Path):
    return setup_pipeline(rsseg_splat_lite.config, minimal_scene, **SMALL)


def test_semantic_features_are_gaussian_parameters(splat) -> None:
    pipeline, optimizers, _ = splat
    model = pipeline.model
    features = model.gauss_params[SEMANTIC_FEATURES]
    assert features.shape == (model.num_points, model.config.semantic_feature_dim)
    assert optimizers.optimizers[SEMANTIC_FEATURES].param_groups[0]["params"][0] is features
    assert "semantic_decoder" in optimizers.optimizers


def test_densification_carries_semantic_features(minimal_scene: Path) -> None:
    pipeline, optimizers, callbacks = setup_pipeline(
        rsseg_splat_lite.config, minimal_scene, **SMALL, densify_grad_thresh=1e-9, cull_alpha_thresh=0.0
    )
    model = pipeline.model
    before = model.num_points
    # splatfacto pauses refinement for num_train_data + refine_every steps after each opacity reset (step 0)
    train(pipeline, optimizers, callbacks, steps=13)
    assert model.num_points > before, "gsplat's strategy grew the cloud"
    features = model.gauss_params[SEMANTIC_FEATURES]
    assert features.shape[0] == model.num_points
    state = optimizers.optimizers[SEMANTIC_FEATURES].state[features]
    assert state["exp_avg"].shape == features.shape, "optimizer state follows splits/clones"


def test_growth_stops_at_max_gaussians(minimal_scene: Path) -> None:
    """From below the cap, refinements that would nearly double the cloud end exactly at the cap, never above."""
    pipeline, optimizers, callbacks = setup_pipeline(
        rsseg_splat_lite.config,
        minimal_scene,
        **SMALL,
        densify_grad_thresh=1e-9,  # every Gaussian seen is a candidate
        cull_alpha_thresh=0.0,  # no pruning either
        max_gaussians=450,
    )
    model = pipeline.model
    before = model.num_points
    assert before < model.config.max_gaussians < 2 * before
    counts = []
    for start, steps in ((0, 13), (13, 3), (16, 3)):  # refinements at steps 12, 15 and 18
        train(pipeline, optimizers, callbacks, steps=steps, start=start)
        counts.append(model.num_points)
    assert max(counts) <= model.config.max_gaussians and counts[-1] == model.config.max_gaussians, counts


def test_capped_strategy_grows_the_highest_gradients_up_to_the_cap() -> None:
    from gsplat.strategy import DefaultStrategy

    from nerfseg_plugin.splat.strategy import CappedStrategy

    n = 20
    params = torch.nn.ParameterDict(
        {
            "means": torch.nn.Parameter(torch.randn(n, 3)),
            "scales": torch.nn.Parameter(torch.full((n, 3), -5.0)),  # small: candidates are cloned
            "quats": torch.nn.Parameter(torch.nn.functional.normalize(torch.randn(n, 4), dim=-1)),
            "opacities": torch.nn.Parameter(torch.zeros(n)),
            "marker": torch.nn.Parameter(torch.arange(n, dtype=torch.float32)[:, None]),
        }
    )
    optimizers = {k: torch.optim.Adam([p], lr=1e-3) for k, p in params.items()}
    strategy = CappedStrategy.like(DefaultStrategy(grow_grad2d=0.1, refine_scale2d_stop_iter=0), max_gaussians=25)
    state = strategy.initialize_state()
    state["grad2d"] = torch.linspace(1.0, 2.0, n)  # all high; the last ones highest
    state["count"] = torch.ones(n)
    n_dupli, n_split = strategy._grow_gs(params, optimizers, state, step=100)
    assert (n_dupli, n_split) == (5, 0) and len(params["means"]) == 25
    assert sorted(params["marker"][n:, 0].tolist()) == [15.0, 16.0, 17.0, 18.0, 19.0]  # the top-5 gradients
    state["grad2d"], state["count"] = torch.full((25,), 5.0), torch.ones(25)
    assert strategy._grow_gs(params, optimizers, state, step=200) == (0, 0) and len(params["means"]) == 25
    state["grad2d"], state["count"] = torch.full((25,), 5.0), torch.ones(25)
    free = CappedStrategy.like(DefaultStrategy(grow_grad2d=0.1, refine_scale2d_stop_iter=0), max_gaussians=None)
    assert free._grow_gs(params, optimizers, state, step=300) == (25, 0)  # no cap: gsplat's growth


def test_eval_outputs_follow_the_contract(splat) -> None:
    pipeline, _, _ = splat
    pipeline.eval()
    model = pipeline.model
    camera = pipeline.datamanager.eval_dataset.cameras[0:1]
    outputs = model.get_outputs_for_camera(camera)
    height, width = int(camera.height), int(camera.width)
    num_classes = model.label_space.num_classes
    expected = {
        "rgb": 3,
        "depth": 1,
        "accumulation": 1,
        "semantics": num_classes,
        "semantics_colormap": 3,
        "semantics_confidence": 1,
        "semantics_entropy": 1,
        "semantic_features_pca": 3,
    }
    for key, channels in expected.items():
        assert outputs[key].shape == (height, width, channels), key
        assert torch.is_floating_point(outputs[key]), key
    for key in ("semantics_colormap", "semantics_confidence", "semantics_entropy", "semantic_features_pca"):
        assert 0.0 <= float(outputs[key].min()) and float(outputs[key].max()) <= 1.0, key


def test_pca_projection_is_fixed_across_views(splat) -> None:
    pipeline, _, _ = splat
    pipeline.eval()
    model = pipeline.model
    cameras = pipeline.datamanager.eval_dataset.cameras
    model.get_outputs_for_camera(cameras[0:1])
    components = model.feature_pca.components.clone()
    model.get_outputs_for_camera(cameras[1:2])
    assert torch.equal(components, model.feature_pca.components)


@pytest.mark.parametrize("joint", [False, True])
def test_semantic_gradients_reach_geometry_only_when_asked(minimal_scene: Path, joint: bool) -> None:
    pipeline, optimizers, _ = setup_pipeline(
        rsseg_splat_lite.config, minimal_scene, **SMALL, semantic_geometry_gradients=joint
    )
    model = pipeline.model
    model.step_cb(optimizers, 0)
    labeled = pipeline.datamanager.train_dataset.semantics.labeled_indices[0]
    camera = pipeline.datamanager.train_dataset.cameras[labeled : labeled + 1]
    batch = pipeline.datamanager.cached_train[labeled]
    model.train()
    outputs = model(camera)
    loss = model.semantic_supervision_losses(outputs["semantics"], {SEMANTIC_LABELS: batch[SEMANTIC_LABELS]}, 1.0, 0.0)
    loss[SEMANTIC_LOSS].backward()
    means_grad = model.gauss_params["means"].grad
    assert model.gauss_params[SEMANTIC_FEATURES].grad.abs().sum() > 0
    geometry_touched = means_grad is not None and float(means_grad.abs().sum()) > 0
    assert geometry_touched == joint


def test_loss_components_switch_off(minimal_scene: Path) -> None:
    pipeline, optimizers, callbacks = setup_pipeline(
        rsseg_splat_lite.config,
        minimal_scene,
        **SMALL,
        aggregation_2d_weight=0.0,
        aggregation_3d_weight=0.0,
        pseudo_label_loss_weight=0.0,
    )
    keys = set(train(pipeline, optimizers, callbacks, steps=2)[-1])
    assert "aggregation_2d_loss" not in keys and "aggregation_3d_loss" not in keys and "pseudo_label_loss" not in keys
    pipeline, optimizers, callbacks = setup_pipeline(rsseg_splat_lite.config, minimal_scene, **SMALL)
    keys = set(train(pipeline, optimizers, callbacks, steps=2)[-1])
    assert {"aggregation_2d_loss", "aggregation_3d_loss", SEMANTIC_LOSS, "main_loss"} <= keys
    assert "flatten_loss" not in keys  # off by default
    pipeline, optimizers, callbacks = setup_pipeline(
        rsseg_splat_lite.config, minimal_scene, **SMALL, flatten_weight=0.1
    )
    assert "flatten_loss" in train(pipeline, optimizers, callbacks, steps=2)[-1]


def test_flatten_loss_thins_only_the_shortest_axis() -> None:
    log_scales = torch.log(torch.tensor([[2.0, 2.0, 2.0], [1.0, 0.5, 0.01]])).requires_grad_()
    value = flatness(log_scales)
    torch.testing.assert_close(value, torch.tensor((1.0 + 0.01) / 2))
    value.backward()
    grad = log_scales.grad
    # Descent shrinks the shortest axis (positive gradient on its log scale) and leaves the others alone: the
    # largest is detached, so the loss never grows a Gaussian to lower the ratio.
    assert grad[1, 2] > 0 and grad[1, 0] == 0 and grad[1, 1] == 0
    assert grad[0].gt(0).sum() == 1 and grad[0].lt(0).sum() == 0


def test_training_fits_the_labeled_views(tiny_scene: Path) -> None:
    pipeline, optimizers, callbacks = setup_pipeline(rsseg_splat_lite.config, tiny_scene, num_downscales=0)
    dataset = pipeline.datamanager.train_dataset
    labeled = dataset.semantics.labeled_indices[0]
    camera = dataset.cameras[labeled : labeled + 1]
    labels = pipeline.datamanager.cached_train[labeled][SEMANTIC_LABELS]

    def accuracy() -> float:
        pipeline.eval()
        prediction = pipeline.model.get_outputs_for_camera(camera)["semantics"].argmax(-1)
        pipeline.train()
        valid = labels != 255
        return float((prediction[valid] == labels[valid]).float().mean())

    before = accuracy()
    train(pipeline, optimizers, callbacks, steps=60)
    assert accuracy() > max(before + 0.2, 0.6)


def test_training_renders_depth_only_when_asked(splat) -> None:
    """splatfacto's output_depth_during_training: training renders skip the depth channel unless it is set."""
    pipeline, optimizers, callbacks = splat
    train(pipeline, optimizers, callbacks, steps=1)  # hands the strategy its optimizers
    model = pipeline.model
    model.train()
    camera = pipeline.datamanager.train_dataset.cameras[0:1].to(model.device)
    plain = model.get_outputs(camera)
    assert plain["depth"] is None and plain[SEMANTIC_FEATURES].shape[-1] == model.config.semantic_feature_dim
    model.config.output_depth_during_training = True
    try:
        with_depth = model.get_outputs(camera)
    finally:
        model.config.output_depth_during_training = False
    assert with_depth["depth"].shape == (*with_depth["rgb"].shape[:2], 1)
    torch.testing.assert_close(with_depth[SEMANTIC_FEATURES], plain[SEMANTIC_FEATURES])
    torch.testing.assert_close(with_depth["accumulation"], plain["accumulation"])  # rgb: random background
    # the depth channel is the expected depth of an "ED" pass over the same Gaussians, not a feature channel
    viewmat, K, width, height = model._projection(camera, camera.camera_to_worlds)
    ones = torch.ones_like(model.gauss_params[SEMANTIC_FEATURES][:, :1])
    expected, alpha, _ = model._rasterize(
        ones, viewmat, K, width, height, geometry_grad=False, render_mode="RGB+ED", crop_ids=None
    )
    covered = alpha[0, ..., 0] > 0
    assert covered.any()
    torch.testing.assert_close(with_depth["depth"][covered], expected[0, ..., -1:][covered])


def test_depth_bound_pulls_only_a_surface_behind_a_point() -> None:
    K = torch.tensor([[[10.0, 0.0, 5.0], [0.0, 10.0, 5.0], [0.0, 0.0, 1.0]]])
    viewmat = torch.eye(4)[None]
    # framed at pixel (5, 5) at depth 2; framed at (7, 5) at depth 4; behind the camera; outside the frame
    points = torch.tensor([[0.0, 0.0, 2.0], [0.8, 0.0, 4.0], [0.0, 0.0, -1.0], [5.0, 0.0, 1.0]])
    depth = torch.full((10, 10, 1), 3.0, requires_grad=True)
    value = depth_bound_loss(points, viewmat, K, depth, margin=0.0, max_points=100)
    # the surface at 3 lies behind the first point (3 / 2 - 1 = 0.5) and in front of the second (an occluder: 0)
    torch.testing.assert_close(value, torch.tensor(0.25))
    value.backward()
    touched = depth.grad[..., 0].nonzero().tolist()
    assert len(touched) == 1 and max(abs(touched[0][0] - 5), abs(touched[0][1] - 5)) <= 1
    assert float(depth.grad.sum()) > 0  # descent pulls the surface forward
    # a point at a depth edge: a neighbouring pixel's surface reaches it, so sub-pixel error does not bind it
    edge = torch.full((10, 10, 1), 3.0)
    edge[5, 6, 0] = 2.0
    assert float(depth_bound_loss(points[:1], viewmat, K, edge, 0.0, 100)) == 0.0
    within_noise = depth_bound_loss(points, viewmat, K, depth.detach(), margin=0.6, max_points=100)
    assert float(within_noise) == 0.0
    assert float(depth_bound_loss(points[2:], viewmat, K, depth.detach(), 0.0, 100)) == 0.0  # nothing framed


@pytest.mark.parametrize("mode", ["composited", "expected"])
def test_depth_bound_trains_the_geometry_when_on(tiny_scene: Path, mode: str) -> None:
    pipeline, optimizers, callbacks = setup_pipeline(rsseg_splat_lite.config, tiny_scene, **SMALL)
    assert "depth_bound_loss" not in train(pipeline, optimizers, callbacks, steps=1)[-1]  # off by default
    pipeline, optimizers, callbacks = setup_pipeline(
        rsseg_splat_lite.config, tiny_scene, **SMALL, depth_bound_weight=1.0, depth_bound_margin=-0.5,
        depth_bound_mode=mode,
    )  # fmt: skip
    model = pipeline.model
    assert model.depth_bound_points.shape[0] > 0 and "depth_bound_points" not in model.state_dict()
    train(pipeline, optimizers, callbacks, steps=1)
    model.train()
    camera = pipeline.datamanager.train_dataset.cameras[0:1].to(model.device)
    index = 0
    outputs = model(camera)
    assert (outputs["depth"] is not None) == (mode == "expected")  # only the expected form reads the depth map
    losses = model.get_loss_dict(outputs, pipeline.datamanager.cached_train[index])
    # a negative margin makes every framed point bind, so the loss is positive and moves the Gaussians
    assert float(losses["depth_bound_loss"]) > 0
    model.gauss_params["means"].grad = None
    losses["depth_bound_loss"].backward()
    assert float(model.gauss_params["means"].grad.abs().sum()) > 0
