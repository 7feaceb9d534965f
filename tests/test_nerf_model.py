"""rsseg-nerf: ray convolution, semantic heads, both training stages on a tiny scene, freezing, outputs."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from nerfstudio.data.utils.dataloaders import FixedIndicesEvalDataloader
from nerfstudio.field_components.encodings import HashEncoding
from nerfstudio.field_components.mlp import MLPWithHashEncoding
from PIL import Image

from nerfseg_plugin.core.keys import PSEUDO_LABELS, PSEUDO_WEIGHTS, SEMANTIC_GT, SEMANTIC_LABELS
from nerfseg_plugin.core.pseudo_label_files import save_pseudo_label
from nerfseg_plugin.evaluation.render import render_pipeline_views
from nerfseg_plugin.export.label_maps import LabelView, write_label_maps
from nerfseg_plugin.method_configs.nerf_methods import rsseg_nerf, rsseg_nerf_lite
from nerfseg_plugin.nerf.datamanager import PIXEL_RGB, RssegNerfDatamanagerConfig
from nerfseg_plugin.nerf.hash_encoding import TorchHashEncoding, use_torch_hash_encoding
from nerfseg_plugin.nerf.model import expose_hash_encoding
from nerfseg_plugin.nerf.ray_convolution import RayConvolution, ray_neighbours
from nerfseg_plugin.nerf.semantic_branch import SemanticBranch
from nerfseg_plugin.semantics.metrics import ConfusionMatrix
from nerfseg_plugin.semantics.outputs import (
    SEMANTIC_COLORMAP,
    SEMANTIC_CONFIDENCE,
    SEMANTIC_ENTROPY,
    SEMANTIC_FEATURES_PCA,
    SEMANTIC_LOGITS,
    predicted_labels,
)

STAGE_ONE_STEPS = 3
STAGE_TWO_STEPS = 3


# --- ray convolution ---------------------------------------------------------------------------------------------
def test_ray_convolution_keeps_any_batch_shape() -> None:
    conv = RayConvolution(8, distance_scale=0.1)
    for shape in [(5, 7), (2, 3, 7), (4, 1)]:
        midpoints = torch.sort(torch.rand(*shape, 1), dim=-2).values
        assert conv(torch.randn(*shape, 8), midpoints).shape == (*shape, 8)
    with pytest.raises(ValueError):
        conv(torch.randn(5, 7, 4), torch.rand(5, 7, 1))


def test_dense_samples_make_it_a_zero_padded_conv1d() -> None:
    conv = RayConvolution(4, distance_scale=1.0)
    features, midpoints = torch.randn(3, 6, 4), torch.zeros(3, 6, 1)  # no gaps: every gate is 1
    kernel = conv.kernel.weight.view(4, 3, 4).permute(0, 2, 1)  # [out, in, tap: previous / centre / next]
    expected = F.relu(F.conv1d(features.transpose(1, 2), kernel, conv.kernel.bias, padding=1)).transpose(1, 2)
    assert torch.allclose(conv(features, midpoints), expected, atol=1e-6)


def test_ray_ends_are_zero_padded_and_the_kernel_is_three_samples_wide() -> None:
    features, midpoints = torch.randn(1, 6, 4, requires_grad=True), torch.zeros(1, 6, 1)
    RayConvolution(4, distance_scale=1.0)(features, midpoints)[0, 0].sum().backward()
    assert (features.grad[0].abs().sum(-1) > 0).tolist() == [True, True, False, False, False, False]
    previous, following = ray_neighbours(features.detach(), midpoints, torch.tensor(1.0))
    assert torch.all(previous[:, 0] == 0) and torch.all(following[:, -1] == 0)
    assert torch.allclose(previous[:, 1:], features.detach()[:, :-1])


def test_neighbour_gates_follow_the_non_uniform_spacing() -> None:
    midpoints = torch.tensor([0.0, 0.01, 1.01]).view(1, 3, 1)
    previous, following = ray_neighbours(torch.ones(1, 3, 1), midpoints, torch.tensor(0.1))
    assert following[0, :, 0].tolist() == pytest.approx([math.exp(-0.1), math.exp(-10.0), 0.0], rel=1e-5)
    assert previous[0, :, 0].tolist() == pytest.approx([0.0, math.exp(-0.1), math.exp(-10.0)], rel=1e-5)


def test_far_apart_samples_fall_back_to_the_centre_tap() -> None:
    conv = RayConvolution(4, distance_scale=1e-3)
    features = torch.randn(2, 5, 4)
    midpoints = torch.arange(5.0).view(1, 5, 1).expand(2, 5, 1)
    centre = conv.kernel.weight[:, 4:8]
    assert torch.allclose(conv(features, midpoints), F.relu(features @ centre.T + conv.kernel.bias), atol=1e-6)


def test_distance_scale_is_trained() -> None:
    conv = RayConvolution(4, distance_scale=0.05)
    conv(torch.randn(3, 6, 4), torch.sort(torch.rand(3, 6, 1) * 0.2, dim=1).values).sum().backward()
    assert conv.log_tau.grad is not None and float(conv.log_tau.grad) != 0.0
    assert RayConvolution(4, 0.05, learn_distance_scale=False).log_tau.requires_grad is False


# --- semantic branch and the colour-radiance heads ----------------------------------------------------------------
def test_colour_radiance_feeds_f2s_and_has_its_own_c2s_head() -> None:
    branch = SemanticBranch(density_feature_dim=15, num_classes=5, feature_dim=16, f2s_hidden_dim=16)
    assert branch.f2s.in_dim == 32 and branch.c2s is not None and branch.c2s.in_dim == 16
    rendered, colour = torch.randn(10, 16), torch.rand(10, 3)
    fused, colour_logits = branch.classify(rendered, colour)
    assert fused.shape == (10, 5) and colour_logits is not None and colour_logits.shape == (10, 5)
    fused_other, colour_other = branch.classify(rendered + 1.0, colour)
    assert torch.equal(colour_logits, colour_other)  # C2S sees the colour only
    assert not torch.allclose(fused, fused_other)
    assert not torch.allclose(fused, branch.classify(rendered, 1.0 - colour)[0])  # F2S sees both
    with pytest.raises(ValueError):
        branch.classify(rendered, None)


def test_ablation_switches_remove_their_modules() -> None:
    branch = SemanticBranch(15, 5, feature_dim=16, use_ray_convolution=False, use_colour_radiance=False)
    assert branch.ray_convolution is None and branch.colour_radiance is None and branch.c2s is None
    assert branch.f2s.in_dim == 16
    fused, colour_logits = branch.classify(torch.randn(4, 16), None)
    assert fused.shape == (4, 5) and colour_logits is None


def test_rendering_uses_the_frozen_weights_as_constants() -> None:
    branch = SemanticBranch(15, 5, feature_dim=16)
    features = torch.randn(6, 9, 15, requires_grad=True)
    midpoints = torch.sort(torch.rand(6, 9, 1), dim=1).values
    weights = torch.softmax(torch.randn(6, 9, 1), dim=1).requires_grad_()
    rendered = branch.render_features(features, midpoints, weights)
    assert rendered.shape == (6, 16)
    rendered.sum().backward()
    assert weights.grad is None and features.grad is not None
    assert torch.all(branch.render_features(features, midpoints, torch.zeros(6, 9, 1)) == 0)


def test_a_fused_density_network_is_split_to_expose_its_encoding() -> None:
    network = MLPWithHashEncoding(num_levels=4, max_res=64, log2_hashmap_size=10, out_dim=16, implementation="torch")
    assert expose_hash_encoding(network) is network.model[0]  # torch build: already (encoding, MLP)
    network.model = torch.nn.Linear(3, 16)  # stands in for tinycudann's fused NetworkWithInputEncoding
    encoding = expose_hash_encoding(network)
    assert isinstance(encoding, HashEncoding) and network.model[0] is encoding
    assert encoding.get_out_dim() == 8 and network(torch.rand(5, 3)).shape == (5, 16)


@pytest.mark.parametrize("num_levels, log2_hashmap_size", [(5, 10), (8, 16)])
def test_the_faster_torch_hash_encoding_matches_nerfstudio(num_levels: int, log2_hashmap_size: int) -> None:
    def encoding() -> HashEncoding:
        torch.manual_seed(0)
        return HashEncoding(
            num_levels=num_levels, log2_hashmap_size=log2_hashmap_size, max_res=256, implementation="torch"
        )

    reference, fast = encoding(), encoding()
    assert use_torch_hash_encoding(torch.nn.Sequential(fast)) == 1 and type(fast) is TorchHashEncoding
    # on cell corners (integer scaled positions: ceil == floor), inside cells, and at the [0, 1] bounds
    positions = torch.cat([torch.rand(4000, 3), torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.5, 0.25, 0.0]])])
    expected, got = reference(positions), fast(positions)
    assert torch.equal(expected, got)  # same hash, corner order and interpolation: bitwise equal
    weights = torch.randn_like(expected)
    (expected * weights).sum().backward()
    (got * weights).sum().backward()
    torch.testing.assert_close(fast.hash_table.grad, reference.hash_table.grad, rtol=1e-5, atol=1e-6)
    assert use_torch_hash_encoding(torch.nn.Sequential(fast)) == 0  # already swapped


# --- configs -----------------------------------------------------------------------------------------------------
def test_paper_and_lite_configs() -> None:
    paper = rsseg_nerf.config.pipeline.model
    assert paper.semantic_feature_dim == 128 and paper.semantic_stage_start >= 100_000
    assert rsseg_nerf.config.max_num_iterations > paper.semantic_stage_start
    assert rsseg_nerf.config.optimizers["semantics"]["optimizer"].lr == pytest.approx(1e-3)
    lite = rsseg_nerf_lite.config
    assert 0 < lite.pipeline.model.semantic_stage_start < lite.max_num_iterations
    assert lite.pipeline.model.use_ray_convolution and lite.pipeline.model.use_colour_radiance
    for method in (rsseg_nerf, rsseg_nerf_lite):  # the colour-radiance head guesses by colour: see AppearanceConfig
        assert method.config.pipeline.appearance.first_round_targets == "geometric"


# --- both stages on a tiny scene -----------------------------------------------------------------------------------
def tiny_config(scene: Path, output: Path):
    config = copy.deepcopy(rsseg_nerf_lite.config)
    config.pipeline.datamanager.data = scene
    config.pipeline.datamanager.train_num_rays_per_batch = 256
    config.pipeline.datamanager.num_semantic_rays_per_batch = 128
    model = config.pipeline.model
    model.semantic_stage_start = STAGE_ONE_STEPS
    model.semantic_feature_dim = model.f2s_hidden_dim = 16
    model.eval_num_rays_per_chunk = 1 << 12
    config.output_dir = output
    config.vis = "tensorboard"
    config.pipeline.final_report = False  # rendering every eval view is test_dataset_level_evaluation's job
    # The paper's stage 2 (labeled rays only); rays for the 2D appearance targets are test_appearance's job.
    config.pipeline.appearance.enabled = False
    config.max_num_iterations = STAGE_ONE_STEPS
    config.steps_per_eval_image = config.steps_per_eval_all_images = 0
    config.set_timestamp()
    return config


def parameters(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.named_parameters()}


@pytest.fixture(scope="module")
def two_stage_run(tiny_scene: Path, tmp_path_factory: pytest.TempPathFactory):
    """Stage 1, snapshots, then stage 2 with nerfstudio's Trainer (callbacks, optimizers and schedulers included)."""
    trainer = tiny_config(tiny_scene, tmp_path_factory.mktemp("nerf")).setup(local_rank=0, world_size=1)
    trainer.setup()
    model = trainer.pipeline.model
    initial = parameters(model)
    trainer.train()
    after_stage_one = parameters(model)
    trainer._start_step, trainer.config.max_num_iterations = STAGE_ONE_STEPS, STAGE_TWO_STEPS
    trainer.train()
    return trainer.pipeline, initial, after_stage_one, parameters(model)


def changed(before: dict, after: dict, prefix: str) -> set[str]:
    return {name for name in before if name.startswith(prefix) and not torch.equal(before[name], after[name])}


def test_stage_one_trains_the_reconstruction_only(two_stage_run) -> None:
    pipeline, initial, after_stage_one, _ = two_stage_run
    # (the proposal networks may not move yet: their interlevel loss is zero while they over-cover the field)
    assert {"field.mlp_base.model.0.hash_table", "field.mlp_head.layers.0.weight"} <= changed(
        initial, after_stage_one, "field."
    )
    assert not changed(initial, after_stage_one, "semantic_branch.")
    encodings = [m for m in pipeline.model.modules() if isinstance(m, HashEncoding)]
    assert len(encodings) >= 2 and all(type(m) is TorchHashEncoding for m in encodings)  # field and proposal net


def test_stage_two_freezes_geometry_and_trains_the_semantic_branch(two_stage_run) -> None:
    pipeline, _, after_stage_one, final = two_stage_run
    model = pipeline.model
    assert model.geometry_frozen and pipeline.datamanager.semantic_stage
    assert not changed(after_stage_one, final, "field.")  # density/location network and colour head
    assert not changed(after_stage_one, final, "proposal_networks.")
    assert not any(p.requires_grad for p in model.field.parameters())
    trained = changed(after_stage_one, final, "semantic_branch.")
    for module in ("seg_mlp", "ray_convolution", "colour_radiance", "f2s", "c2s"):
        assert any(name.startswith(f"semantic_branch.{module}.") for name in trained), module


def test_stage_two_batches_are_labeled_rays_with_their_pixel_colour(two_stage_run) -> None:
    pipeline, *_ = two_stage_run
    datamanager = pipeline.datamanager
    ray_bundle, batch = datamanager.next_train(STAGE_ONE_STEPS + STAGE_TWO_STEPS)
    labeled = set(datamanager.train_dataset.semantics.labeled_indices)
    assert set(batch["indices"][:, 0].tolist()) <= labeled
    assert torch.all(batch[SEMANTIC_LABELS] != datamanager.train_dataset.ignore_index)
    assert len(ray_bundle) == datamanager.get_train_rays_per_batch() == 128
    assert torch.equal(ray_bundle.metadata[PIXEL_RGB], batch["image"])
    model = pipeline.model
    model.train()
    losses = model.get_loss_dict(model(ray_bundle), batch, {})
    assert {"semantic_loss", "colour_semantic_loss"} <= losses.keys() and "rgb_loss" not in losses
    assert all(loss.requires_grad for loss in losses.values())


def test_outputs_contract_and_pixel_colour_fusion(two_stage_run) -> None:
    pipeline, *_ = two_stage_run
    model = pipeline.model
    model.eval()
    dataset = pipeline.datamanager.eval_dataset
    camera, batch = dataset.cameras[0:1], dataset[0]
    outputs = model.get_outputs_for_camera(camera)
    height, width = int(camera.height), int(camera.width)
    num_classes = model.label_space.num_classes
    for name, channels in [("rgb", 3), ("depth", 1), (SEMANTIC_COLORMAP, 3), (SEMANTIC_CONFIDENCE, 1),
                           (SEMANTIC_ENTROPY, 1), (SEMANTIC_LOGITS, num_classes)]:  # fmt: skip
        assert outputs[name].shape == (height, width, channels), name
        assert outputs[name].is_floating_point(), name
    pca = outputs[SEMANTIC_FEATURES_PCA]  # the viewer's feature view, projected per chunk
    assert pca.shape == (height, width, 3) and pca.is_floating_point()
    with model.pixel_colours(batch["image"]):
        fused = model.get_outputs_for_camera(camera)
    # Fusion with the captured pixels happens per ray chunk: a full image holds class maps, no C-channel features.
    for result in (outputs, fused):
        wide = {k: tuple(v.shape) for k, v in result.items() if v.shape[-1] > max(3, num_classes)}
        assert not wide, f"per-pixel feature tensors in a full-image render: {wide}"
    assert fused[SEMANTIC_LOGITS].shape == outputs[SEMANTIC_LOGITS].shape
    assert not torch.allclose(fused[SEMANTIC_LOGITS], outputs[SEMANTIC_LOGITS])  # pixel colour != rendered RGB
    assert torch.equal(model.render_view(camera, batch["image"])[SEMANTIC_LOGITS], fused[SEMANTIC_LOGITS])
    chunk = model.config.eval_num_rays_per_chunk
    model.config.eval_num_rays_per_chunk = 97  # chunks that cut rows: each must still get its own pixels
    try:
        with model.pixel_colours(batch["image"]):
            rechunked = model.get_outputs_for_camera(camera)
    finally:
        model.config.eval_num_rays_per_chunk = chunk
    torch.testing.assert_close(rechunked[SEMANTIC_LOGITS], fused[SEMANTIC_LOGITS], rtol=1e-4, atol=1e-4)
    metrics, images = model.get_image_metrics_and_images(fused, batch)
    labels = ConfusionMatrix(num_classes, model.label_space.ignore_index)
    expected = labels.update(predicted_labels(fused[SEMANTIC_LOGITS]), batch[SEMANTIC_GT]).compute()
    assert metrics["miou"] == pytest.approx(expected.miou) and "psnr" in metrics and "semantics" in images


def test_dataset_level_evaluation(two_stage_run, tmp_path: Path) -> None:
    pipeline, *_ = two_stage_run
    loader = FixedIndicesEvalDataloader(pipeline.datamanager.eval_dataset, image_indices=(0, 1), device="cpu")
    metrics = pipeline.get_average_image_metrics(loader, image_prefix="eval")
    height, width = pipeline.datamanager.eval_dataset[0]["image"].shape[:2]
    dataset = pipeline.datamanager.eval_dataset
    confusion = ConfusionMatrix(pipeline.model.label_space.num_classes, pipeline.model.label_space.ignore_index)
    pipeline.eval()
    for index in (0, 1):  # scored independently: argmax of each view's render with its own pixels
        outputs = pipeline.model.render_view(dataset.cameras[index : index + 1], dataset[index]["image"])
        confusion.update(predicted_labels(outputs[SEMANTIC_LOGITS]), dataset[index][SEMANTIC_GT])
    assert metrics["miou"] == pytest.approx(confusion.compute().miou)
    assert metrics["num_semantic_pixels"] == confusion.compute().num_pixels <= 2 * height * width
    # rsseg-eval and the label maps of captured views read the pixel colour too, as ns-eval's metrics do
    pipeline.eval()
    rendered = render_pipeline_views(pipeline, "none")
    all_views = pipeline.get_average_eval_image_metrics()
    assert rendered.confusion.compute().miou == pytest.approx(all_views["miou"])
    dataset = pipeline.datamanager.eval_dataset
    image = dataset.get_image_float32(0)
    view = LabelView("view", dataset.cameras[0:1], image)
    write_label_maps(pipeline.model, [view], pipeline.model.label_space, tmp_path, min_coverage=0.0)
    written = np.asarray(Image.open(tmp_path / "labels" / "view.png"))
    fused = pipeline.model.render_view(dataset.cameras[0:1], image)
    assert (written == fused[SEMANTIC_LOGITS].argmax(-1).numpy()).all()


def test_semantic_rays_mix_pseudo_labeled_frames(tiny_scene: Path, tmp_path: Path) -> None:
    config = RssegNerfDatamanagerConfig(
        data=tiny_scene, pseudo_label_dir=tmp_path, num_semantic_rays_per_batch=200, pseudo_ray_fraction=0.25
    )
    probe = config.setup(device="cpu")
    dataset = probe.train_dataset
    unlabeled = next(i for i in range(len(dataset)) if i not in dataset.semantics.labeled_indices)
    height, width = dataset[unlabeled]["image"].shape[:2]
    labels = np.ones((height, width), np.uint8)
    save_pseudo_label(tmp_path, dataset.image_filenames[unlabeled].stem, labels, np.full((height, width), 0.8),
                      np.ones((height, width), bool))  # fmt: skip
    datamanager = config.setup(device="cpu")
    datamanager.semantic_stage = True
    _, batch = datamanager.next_train(0)
    from_pseudo = batch["indices"][:, 0] == unlabeled
    assert int(from_pseudo.sum()) == 50
    assert torch.all(batch[PSEUDO_LABELS][from_pseudo] == 1)
    assert torch.allclose(batch[PSEUDO_WEIGHTS][from_pseudo], torch.tensor(0.8), atol=1 / 255)
    assert torch.all(batch[SEMANTIC_LABELS][~from_pseudo] != dataset.ignore_index)


def test_semantic_grid_reads_the_field_positions_and_trains_in_stage_two_only(tiny_scene: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_scene, tmp_path)
    config.pipeline.model.semantic_grid = True
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    model = trainer.pipeline.model
    initial = parameters(model)
    trainer.train()
    after_stage_one = parameters(model)
    assert not changed(initial, after_stage_one, "semantic_grid.")
    trainer._start_step, trainer.config.max_num_iterations = STAGE_ONE_STEPS, STAGE_TWO_STEPS
    trainer.train()
    final = parameters(model)
    assert changed(after_stage_one, final, "semantic_grid.")
    assert not changed(after_stage_one, final, "field.")
    # The grid is indexed at the field's own normalised sample positions (nerfacto keeps the last ones it used).
    model.eval()
    ray_bundle = trainer.pipeline.datamanager.eval_dataset.cameras[0:1].generate_rays(0)[:5, :5].flatten()
    with torch.no_grad(), model._recorder.recording():
        super(type(model), model).get_outputs(model.collider(ray_bundle))
    _, weights, _, positions = model._recorder.take()
    assert positions.shape == (*weights.shape[:-1], 3)
    torch.testing.assert_close(positions, model.field._sample_locations)
