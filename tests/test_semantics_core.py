"""Hand-computed checks of the shared semantic core: losses, kNN, metrics, colour maps, PCA, heads, outputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nerfseg_plugin.semantics.colormaps import FixedPCAProjection, label_colormap, probabilities_confidence_entropy
from nerfseg_plugin.semantics.heads import ColourRadianceHead, SemanticDecoder
from nerfseg_plugin.semantics.losses import (
    aggregation_loss_2d,
    aggregation_loss_3d,
    k_nearest_neighbours,
    neighbour_kl_divergence,
    semantic_cross_entropy,
)
from nerfseg_plugin.semantics.metrics import ConfusionMatrix
from nerfseg_plugin.semantics.outputs import (
    SEMANTIC_COLORMAP,
    SEMANTIC_CONFIDENCE,
    SEMANTIC_ENTROPY,
    predicted_labels,
    semantic_render_outputs,
)

IGNORE = 255


# --------------------------------------------------------------------------------------------------- metrics


def test_confusion_matrix_hand_computed_three_classes() -> None:
    gt = torch.tensor([0, 0, 1, 1, 2, IGNORE])
    pred = torch.tensor([0, 1, 1, 1, 0, 2])  # the ignored pixel's prediction must not count
    cm = ConfusionMatrix(3, IGNORE).update(pred, gt)
    assert cm.matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    m = cm.compute()
    # IoU = TP / (GT + Pred - TP): class 0: 1/(2+2-1), class 1: 2/(2+3-2), class 2: 0/(1+0-0).
    np.testing.assert_allclose(m.per_class_iou, [1 / 3, 2 / 3, 0.0])
    assert m.miou == pytest.approx(1 / 3)
    assert m.total_accuracy == pytest.approx(3 / 5)
    # Recall per class: 1/2, 2/2, 0/1.
    assert m.average_accuracy == pytest.approx(0.5)
    assert m.num_pixels == 5


def test_miou_averages_only_classes_present_in_ground_truth() -> None:
    gt = np.array([[0, 0], [1, 1]], dtype=np.uint8)
    pred = np.array([[0, 3], [1, 1]], dtype=np.uint8)  # class 3 predicted but absent; class 2 absent entirely
    m = ConfusionMatrix(4, IGNORE).update(pred, gt).compute()
    assert m.class_present.tolist() == [True, True, False, False]
    assert m.per_class_iou[0] == pytest.approx(0.5)  # the false class-3 pixel still costs class 0
    assert m.per_class_iou[1] == pytest.approx(1.0)
    assert math.isnan(m.per_class_iou[2]) and math.isnan(m.per_class_iou[3])
    assert m.miou == pytest.approx(0.75)  # (0.5 + 1) / 2, not / 4
    assert m.average_accuracy == pytest.approx(0.75)
    assert m.total_accuracy == pytest.approx(0.75)


def test_total_and_average_accuracy_differ_under_class_imbalance() -> None:
    gt = torch.tensor([0] * 9 + [1])
    pred = torch.zeros(10, dtype=torch.long)  # everything predicted as the majority class
    m = ConfusionMatrix(2, IGNORE).update(pred, gt).compute()
    assert m.total_accuracy == pytest.approx(0.9)
    assert m.average_accuracy == pytest.approx(0.5)
    assert m.miou == pytest.approx((0.9 + 0.0) / 2)


def test_confusion_matrix_accumulates_merges_and_resets() -> None:
    gt_a, pred_a = torch.tensor([[0, 1], [1, IGNORE]]), torch.tensor([[0, 1], [0, 1]])
    gt_b, pred_b = torch.tensor([1, 1, 0]), torch.tensor([1, 0, 0])
    both = ConfusionMatrix(2, IGNORE).update(pred_a, gt_a).update(pred_b, gt_b)
    split = ConfusionMatrix(2, IGNORE).update(pred_a, gt_a).merge(ConfusionMatrix(2, IGNORE).update(pred_b, gt_b))
    assert both.matrix.tolist() == split.matrix.tolist() == [[2, 0], [2, 2]]
    assert both.compute().num_pixels == 6
    with pytest.raises(ValueError):
        both.merge(ConfusionMatrix(3, IGNORE))
    both.reset()
    empty = both.compute()
    assert empty.num_pixels == 0 and math.isnan(empty.miou) and math.isnan(empty.total_accuracy)


def test_confusion_matrix_rejects_invalid_labels() -> None:
    cm = ConfusionMatrix(3, IGNORE)
    with pytest.raises(ValueError, match="outside"):
        cm.update(torch.tensor([0, 1]), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="outside"):
        cm.update(torch.tensor([0, 1]), torch.tensor([-1, 1]))
    with pytest.raises(ValueError, match="outside"):
        cm.update(torch.tensor([0, 5]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.tensor([0, 1, 2]), torch.tensor([0, 1]))
    with pytest.raises(TypeError):
        cm.update(torch.tensor([0.0, 1.0]), torch.tensor([0, 1]))
    assert int(cm.matrix.sum()) == 0  # a rejected update adds nothing


def test_metrics_dict_is_json_safe_and_table_marks_absent_classes() -> None:
    m = ConfusionMatrix(3, IGNORE).update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0])).compute()
    names = ["road", "tree", "water"]
    d = m.to_dict(names)
    json.dumps(d, allow_nan=False)
    assert d["per_class"]["water"]["iou"] is None and d["per_class"]["water"]["present"] is False
    assert d["per_class"]["tree"]["iou"] == pytest.approx(0.5)
    assert d["miou"] == pytest.approx(0.5)
    table = m.per_class_table(names)
    assert "| water | n/a | n/a | 0 |" in table
    assert "| tree | 50.00 | 100.00 | 1 |" in table
    with pytest.raises(ValueError):
        m.to_dict(names[:2])


# --------------------------------------------------------------------------------------------------- cross-entropy


def test_cross_entropy_matches_torch_unweighted() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 5, 3, generator=gen)
    labels = torch.randint(0, 3, (4, 5), generator=gen)
    labels[0, :3] = IGNORE
    expected = F.cross_entropy(logits.reshape(-1, 3), labels.reshape(-1), ignore_index=IGNORE)
    assert semantic_cross_entropy(logits, labels, IGNORE).item() == pytest.approx(expected.item(), rel=1e-6)


def test_cross_entropy_weighted_hand_computed() -> None:
    # Pixel 0: uniform over 2 classes -> CE log 2. Pixel 1: p(class 1) = 1/4 -> CE log 4.
    # Pixel 2 is ignored, pixel 3 has weight 0: neither counts despite their large weight / large loss.
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [5.0, -5.0], [9.0, -9.0]])
    labels = torch.tensor([0, 1, IGNORE, 1])
    weights = torch.tensor([1.0, 3.0, 5.0, 0.0])
    loss = semantic_cross_entropy(logits, labels, IGNORE, pixel_weights=weights)
    assert loss.item() == pytest.approx((1 * math.log(2) + 3 * math.log(4)) / 4, rel=1e-6)


@pytest.mark.parametrize("case", ["all_ignored", "zero_weights"])
def test_cross_entropy_without_valid_pixels_is_zero_with_graph(case: str) -> None:
    logits = torch.randn(6, 4, requires_grad=True)
    if case == "all_ignored":
        loss = semantic_cross_entropy(logits, torch.full((6,), IGNORE), IGNORE)
    else:
        loss = semantic_cross_entropy(logits, torch.zeros(6, dtype=torch.long), IGNORE, torch.zeros(6))
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None and torch.equal(logits.grad, torch.zeros_like(logits))


# --------------------------------------------------------------------------------------------------- aggregation


def test_kl_term_zero_for_identical_and_hand_computed_for_two_channels() -> None:
    feats = torch.randn(7, 4)
    assert neighbour_kl_divergence(feats, feats[:, None, :].expand(7, 3, 4)).item() == pytest.approx(0.0, abs=1e-7)
    # s_anchor = (1/2, 1/2); neighbour 0 = (3/4, 1/4), neighbour 1 = anchor.
    # KL_0 = 1/2 log(2/3) + 1/2 log(2) = 1/2 log(4/3); KL_1 = 0; mean over k = 2.
    anchor = torch.tensor([[0.0, 0.0]])
    neighbours = torch.tensor([[[math.log(3.0), 0.0], [0.0, 0.0]]])
    assert neighbour_kl_divergence(anchor, neighbours).item() == pytest.approx(0.25 * math.log(4 / 3), rel=1e-6)
    # Direction matters: KL(s_i || s_j), not KL(s_j || s_i).
    reverse = neighbour_kl_divergence(neighbours[:, 0], anchor[:, None])
    assert reverse.item() == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), rel=1e-6)


def test_knn_picks_true_nearest_and_excludes_self() -> None:
    points = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [10.0, 10.0]])
    assert k_nearest_neighbours(torch.tensor([[0.9, 0.1]]), points, 2).tolist() == [[1, 0]]
    # Point 0 queried against the set it belongs to: itself (distance 0) is excluded.
    got = k_nearest_neighbours(points[[0, 4]], points, 2, exclude=torch.tensor([0, 4]))
    assert got.tolist() == [[1, 3], [2, 3]]
    with pytest.raises(ValueError):
        k_nearest_neighbours(points[:1], points, 5, exclude=torch.tensor([0]))


def test_knn_is_exact_far_from_the_origin() -> None:
    # Neighbours 1e-3 apart at coordinates ~1e4: the |a|^2 + |b|^2 - 2ab form of cdist cannot resolve them.
    gen = torch.Generator().manual_seed(1)
    offsets = torch.rand(200, 3, generator=gen, dtype=torch.float64) * 1e-2
    points64 = 1e4 + offsets
    queries64 = points64[:20]
    reference = torch.cdist(queries64 - 1e4, points64 - 1e4)
    reference[torch.arange(20), torch.arange(20)] = float("inf")
    expected = torch.topk(reference, 3, largest=False).indices
    got = k_nearest_neighbours(queries64.float(), points64.float(), 3, exclude=torch.arange(20))
    # float32 rounding of the coordinates themselves (~1e-3 at 1e4) may swap near-ties, so compare distances.
    dist_got = reference.gather(1, got)
    dist_expected = reference.gather(1, expected)
    torch.testing.assert_close(dist_got, dist_expected, atol=2e-3, rtol=0)


def test_aggregation_2d_runs_nonnegative_and_zero_for_constant_features() -> None:
    gen = torch.Generator().manual_seed(0)
    fmap = torch.randn(16, 16, 4, generator=gen, requires_grad=True)
    loss = aggregation_loss_2d(fmap, num_anchors=32, num_candidates=64, generator=gen)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert fmap.grad is not None and fmap.grad.abs().sum() > 0
    const = torch.ones(16, 16, 4) * torch.tensor([1.0, -2.0, 0.5, 3.0])
    assert aggregation_loss_2d(const, 32, 64, generator=gen).item() == pytest.approx(0.0, abs=1e-7)


def test_aggregation_2d_neighbours_are_spatially_local() -> None:
    # Two half-planes of constant features: with local neighbours only anchors near the seam see a different
    # feature, so the loss is far below that of the same pixels shuffled across the image.
    h, w = 32, 32
    fmap = torch.zeros(h, w, 2)
    fmap[:, : w // 2, 0] = 4.0
    fmap[:, w // 2 :, 1] = 4.0
    shuffled = fmap.reshape(-1, 2)[torch.randperm(h * w, generator=torch.Generator().manual_seed(0))].reshape(h, w, 2)
    local = aggregation_loss_2d(fmap, 256, 512, generator=torch.Generator().manual_seed(3))
    scrambled = aggregation_loss_2d(shuffled, 256, 512, generator=torch.Generator().manual_seed(3))
    assert local.item() < 0.25 * scrambled.item()


def test_aggregation_2d_respects_valid_mask_and_generator() -> None:
    fmap = torch.randn(12, 12, 3, requires_grad=True)
    mask = torch.zeros(12, 12, dtype=torch.bool)
    mask[2:6, 3:9] = True
    a = aggregation_loss_2d(fmap, 16, 20, valid_mask=mask, generator=torch.Generator().manual_seed(5))
    b = aggregation_loss_2d(fmap, 16, 20, valid_mask=mask, generator=torch.Generator().manual_seed(5))
    assert a.item() == b.item()
    a.backward()
    touched = fmap.grad.abs().sum(-1) > 0
    assert touched.any() and not (touched & ~mask).any()
    # Fewer than two valid pixels leaves no neighbour: zero, still differentiable.
    tiny = torch.zeros(12, 12, dtype=torch.bool)
    tiny[0, 0] = True
    zero = aggregation_loss_2d(fmap, 16, 20, valid_mask=tiny)
    assert zero.item() == 0.0 and zero.requires_grad


def test_aggregation_3d_local_clusters_and_no_position_gradient() -> None:
    gen = torch.Generator().manual_seed(0)
    # Two clusters 100 apart, 10 Gaussians each, each cluster with its own constant feature: every 5-NN of an
    # anchor lies in its own cluster, so the loss is exactly 0. A wrong neighbour search would mix clusters.
    positions = torch.cat([torch.rand(10, 3, generator=gen), 100.0 + torch.rand(10, 3, generator=gen)])
    features = torch.cat([torch.tensor([[5.0, 0.0]]).expand(10, 2), torch.tensor([[0.0, 5.0]]).expand(10, 2)])
    assert aggregation_loss_3d(features, positions, num_anchors=20, k=5, generator=gen).item() == pytest.approx(
        0.0, abs=1e-7
    )
    # With k = 10 every anchor must reach into the other cluster: the loss becomes positive.
    assert aggregation_loss_3d(features, positions, num_anchors=20, k=10, generator=gen).item() > 0.1

    positions = torch.randn(50, 3, generator=gen, requires_grad=True)
    features = torch.randn(50, 6, generator=gen, requires_grad=True)
    loss = aggregation_loss_3d(features, positions, num_anchors=8, generator=gen)
    assert torch.isfinite(loss) and loss.item() >= 0
    loss.backward()
    assert positions.grad is None
    assert features.grad is not None and features.grad.abs().sum() > 0
    assert aggregation_loss_3d(torch.ones(50, 6), positions, 8, generator=gen).item() == pytest.approx(0.0, abs=1e-7)


# --------------------------------------------------------------------------------------------------- colour maps


def test_label_colormap_maps_labels_and_ignore() -> None:
    colors = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)
    labels = torch.tensor([[0, 1], [2, IGNORE]])
    image = label_colormap(labels, torch.as_tensor(colors), IGNORE, ignore_color=(0.5, 0.5, 0.5))
    assert image.shape == (2, 2, 3) and image.dtype == torch.float32
    expected = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]], [[0, 0, 1.0], [0.5, 0.5, 0.5]]])
    torch.testing.assert_close(image, expected)
    float_colors = torch.tensor(colors, dtype=torch.float32) / 255
    torch.testing.assert_close(label_colormap(labels, float_colors, IGNORE, (0.5, 0.5, 0.5)), expected)
    assert label_colormap(torch.tensor([7]), float_colors, IGNORE).tolist() == [[0.0, 0.0, 0.0]]


def test_entropy_zero_for_one_hot_and_one_for_uniform() -> None:
    logits = torch.tensor([[0.0, -float("inf"), -float("inf")], [1.5, 1.5, 1.5], [60.0, -60.0, -60.0]])
    probs, confidence, entropy = probabilities_confidence_entropy(logits)
    assert probs.shape == (3, 3) and confidence.shape == (3, 1) and entropy.shape == (3, 1)
    torch.testing.assert_close(entropy[:, 0], torch.tensor([0.0, 1.0, 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(confidence[:, 0], torch.tensor([1.0, 1 / 3, 1.0]))
    mixed = probabilities_confidence_entropy(torch.tensor([[0.0, 0.0, -float("inf"), -float("inf")]]))[2]
    assert mixed.item() == pytest.approx(math.log(2) / math.log(4))


def test_pca_projection_is_fixed_and_survives_state_dict() -> None:
    gen = torch.Generator().manual_seed(0)
    frame_a = torch.randn(20, 30, 16, generator=gen) * torch.linspace(3, 0.1, 16)
    frame_b = torch.randn(20, 30, 16, generator=gen) * 5 + 2
    pca = FixedPCAProjection(16)
    out_a = pca(frame_a)  # lazily fitted on frame A
    assert out_a.shape == (20, 30, 3) and out_a.min() >= 0 and out_a.max() <= 1
    assert out_a.std() > 0.05  # not a flat image
    out_b = pca(frame_b)
    torch.testing.assert_close(pca(frame_a), out_a, rtol=0, atol=0)  # frame B did not refit the basis

    restored = FixedPCAProjection(16)
    restored.load_state_dict(pca.state_dict())
    torch.testing.assert_close(restored(frame_b), out_b, rtol=0, atol=0)
    torch.testing.assert_close(restored(frame_a), out_a, rtol=0, atol=0)

    refitted = FixedPCAProjection(16).fit(frame_a)
    torch.testing.assert_close(refitted(frame_a), out_a)  # deterministic fit, including component signs
    pca.refit(frame_b)
    assert not torch.allclose(pca(frame_a), out_a)
    with pytest.raises(ValueError):
        pca(torch.randn(4, 8))


# --------------------------------------------------------------------------------------------------- heads, outputs


def test_semantic_decoder_and_colour_radiance_head_shapes() -> None:
    transfer = SemanticDecoder(16, 7)
    assert [type(m) for m in transfer.mlp.layers] == [torch.nn.Linear]
    assert transfer(torch.randn(4, 5, 16)).shape == (4, 5, 7)
    mlp = SemanticDecoder(16, 7, hidden_dim=32, num_layers=3)
    assert sum(isinstance(m, torch.nn.Linear) for m in mlp.mlp.layers) == 3
    assert mlp(torch.randn(9, 16)).shape == (9, 7)
    with pytest.raises(ValueError):
        SemanticDecoder(16, 7, hidden_dim=32, num_layers=1)
    with pytest.raises(ValueError):
        SemanticDecoder(16, 7, hidden_dim=0, num_layers=2)
    head = ColourRadianceHead(hidden_dim=128, num_layers=2)
    features = head(torch.rand(10, 3))
    assert features.shape == (10, 128) and head.out_dim == 128 and features.min() >= 0


def test_heads_are_nerfstudio_mlps_and_load_the_old_sequential_checkpoints() -> None:
    """Same layers and initial weights as the former nn.Sequential heads, and their checkpoints still load."""
    from nerfstudio.field_components.mlp import MLP

    for make, old_layers in [
        (lambda: SemanticDecoder(16, 7), lambda: [torch.nn.Linear(16, 7)]),
        (
            lambda: SemanticDecoder(16, 7, hidden_dim=32, num_layers=3),
            lambda: [
                torch.nn.Linear(16, 32),
                torch.nn.ReLU(),
                torch.nn.Linear(32, 32),
                torch.nn.ReLU(),
                torch.nn.Linear(32, 7),
            ],
        ),
        (
            lambda: ColourRadianceHead(hidden_dim=8, num_layers=2),
            lambda: [torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.ReLU()],
        ),
    ]:
        torch.manual_seed(0)
        head = make()
        torch.manual_seed(0)
        old = torch.nn.Sequential(*old_layers())
        assert isinstance(head.mlp, MLP)
        x = torch.randn(5, old_layers()[0].in_features)
        torch.testing.assert_close(head(x), old(x))  # same initialisation order, same function
        fresh = make()
        fresh.load_state_dict({f"mlp.{k}": v for k, v in old.state_dict().items()})  # a pre-MLP checkpoint
        torch.testing.assert_close(fresh(x), old(x))
        again = make()
        again.load_state_dict(head.state_dict())  # and the new layout round-trips
        torch.testing.assert_close(again(x), head(x))


def test_semantic_render_outputs_are_float_images() -> None:
    logits = torch.tensor([[[5.0, 0.0, 0.0], [0.0, 0.0, 0.0]], [[0.0, 0.0, 9.0], [0.0, 4.0, 0.0]]], requires_grad=True)
    colors = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)
    out = semantic_render_outputs(logits, colors, IGNORE)
    assert set(out) == {SEMANTIC_COLORMAP, SEMANTIC_CONFIDENCE, SEMANTIC_ENTROPY}
    assert all(v.is_floating_point() and not v.requires_grad for v in out.values())
    assert out[SEMANTIC_COLORMAP].shape == (2, 2, 3) and out[SEMANTIC_ENTROPY].shape == (2, 2, 1)
    assert out[SEMANTIC_COLORMAP][1, 0].tolist() == [0.0, 0.0, 1.0]
    assert out[SEMANTIC_ENTROPY][0, 1].item() == pytest.approx(1.0)
    labels = predicted_labels(logits)
    assert labels.dtype == torch.int64 and labels.tolist() == [[0, 0], [2, 1]]
