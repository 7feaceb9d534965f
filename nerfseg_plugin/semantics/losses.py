"""Semantic losses shared by the NeRF and the splatting method.

* :func:`semantic_cross_entropy`: per-pixel cross-entropy against ground-truth or SAM2 pseudo-labels, with the
  ignore label and optional per-pixel weights (the pseudo-label boundary mask ``B`` of eq. 10 in the splatting
  paper is a 0/1 weight).
* :func:`aggregation_loss_2d` / :func:`aggregation_loss_3d`: the splatting paper's aggregation losses (eq. 11):
  the KL divergence between the channel-softmax of a random anchor's semantic feature and those of its k nearest
  neighbours, in rendered-image pixel coordinates (2D) or in Gaussian centre positions (3D). They pull the features
  of nearby points together so that the few labeled views propagate into regions no label covers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

# Budget of one chunk of the anchor-to-point distance matrix (float32 elements, i.e. 64 MiB): the 3D search runs
# m anchors against every Gaussian (hundreds of thousands), which must not materialise as one m x N matrix.
_KNN_CHUNK_ELEMENTS = 1 << 24


def _zero_with_graph(reference: Tensor) -> Float[Tensor, ""]:
    """A scalar zero connected to ``reference``: ``backward()`` works and yields zero gradients, never NaN."""
    return reference.sum() * 0.0


def _randperm(n: int, device: torch.device, generator: torch.Generator | None) -> Int[Tensor, " n"]:
    """``torch.randperm`` on the generator's own device (torch requires the two to match), moved to ``device``."""
    sample_device = generator.device if generator is not None else device
    return torch.randperm(n, generator=generator, device=sample_device).to(device)


def semantic_cross_entropy(
    logits: Float[Tensor, "*batch K"],
    labels: Int[Tensor, "*batch"],
    ignore_index: int,
    pixel_weights: Float[Tensor, "*batch"] | None = None,
) -> Float[Tensor, ""]:
    """Cross-entropy averaged over the valid pixels, weighted by ``pixel_weights``.

    A pixel is valid when its label is not ``ignore_index`` and its weight (if given) is positive; the result is
    ``sum(w * ce) / sum(w)`` over valid pixels, so unweighted it equals ``F.cross_entropy(..., ignore_index=...)``.
    A batch without a single valid pixel (a ray batch that hit only void, a pseudo-label view whose boundary mask
    is empty) returns a zero that still carries the graph, rather than the NaN of an empty mean, so one such step
    neither poisons the parameters nor breaks ``backward()``.
    """
    num_classes = logits.shape[-1]
    flat_logits = logits.reshape(-1, num_classes)
    flat_labels = labels.reshape(-1).long()
    if flat_labels.shape[0] != flat_logits.shape[0]:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree on the batch shape")
    valid = flat_labels != ignore_index
    weights = valid.to(flat_logits.dtype)
    if pixel_weights is not None:
        flat_weights = pixel_weights.reshape(-1).to(flat_logits.dtype)
        if flat_weights.shape[0] != flat_labels.shape[0]:
            raise ValueError(f"pixel_weights {tuple(pixel_weights.shape)} do not match labels {tuple(labels.shape)}")
        weights = torch.where(valid & (flat_weights > 0), flat_weights, torch.zeros_like(flat_weights))
    # ignore_index makes torch skip the label lookup for void pixels, whose label lies outside [0, K).
    per_pixel = F.cross_entropy(flat_logits, flat_labels, ignore_index=ignore_index, reduction="none")
    # where() rather than a product keeps a non-finite loss at a zero-weight pixel out of the sum; the clamp turns
    # the empty case into 0 / tiny = 0 without a host sync to test for it.
    weighted = torch.where(weights > 0, per_pixel * weights, torch.zeros_like(per_pixel))
    return weighted.sum() / weights.sum().clamp_min(torch.finfo(weights.dtype).tiny)


def neighbour_kl_divergence(
    anchor: Float[Tensor, "m C"],
    neighbours: Float[Tensor, "m k C"],
) -> Float[Tensor, ""]:
    """Eq. 11 of the splatting paper: ``1/(m k) sum_i sum_j sum_c s_i log(s_i / s_j)``, ``s = softmax over C``.

    That is ``KL(s_anchor || s_neighbour)`` averaged over all anchor/neighbour pairs. Computed from log-softmax,
    so saturated features give large but finite values instead of ``log(0)``. Gradients reach both the anchor and
    its neighbours: the paper aggregates features symmetrically rather than pulling towards a fixed target.
    """
    if anchor.shape[0] == 0 or neighbours.shape[1] == 0:
        return _zero_with_graph(anchor) + _zero_with_graph(neighbours)
    log_anchor = F.log_softmax(anchor, dim=-1).unsqueeze(1)  # [m, 1, C]
    log_neighbours = F.log_softmax(neighbours, dim=-1)  # [m, k, C]
    kl = (log_anchor.exp() * (log_anchor - log_neighbours)).sum(dim=-1)  # [m, k]
    return kl.mean()


@torch.no_grad()
def k_nearest_neighbours(
    queries: Float[Tensor, "m D"],
    points: Float[Tensor, "N D"],
    k: int,
    exclude: Int[Tensor, " m"] | None = None,
) -> Int[Tensor, "m k"]:
    """Indices into ``points`` of each query's ``k`` nearest points (Euclidean), nearest first.

    ``exclude[i]`` is an index of ``points`` that query ``i`` must not pick (the query itself when the queries
    are drawn from ``points``; pass -1 for none). Distances use cdist's direct difference form: the default
    matrix-multiply form ``|a|^2 + |b|^2 - 2ab`` loses the small distances between neighbours to cancellation
    (pixel coordinates in the hundreds, or Gaussians far from the origin), which would scramble the neighbour
    order. The search is chunked over queries to bound memory and runs without gradient.
    """
    num_points = points.shape[0]
    if k > num_points - (0 if exclude is None else 1):
        raise ValueError(f"asked for {k} neighbours among {num_points} points")
    queries = queries.float()
    points = points.float()
    chunk = max(1, _KNN_CHUNK_ELEMENTS // max(num_points, 1))
    result = []
    for start in range(0, queries.shape[0], chunk):
        dist = torch.cdist(queries[start : start + chunk], points, compute_mode="donot_use_mm_for_euclid_dist")
        if exclude is not None:
            excluded = exclude[start : start + chunk].to(dist.device).long()
            rows = torch.nonzero(excluded >= 0).squeeze(-1)
            dist[rows, excluded[rows]] = float("inf")
        result.append(torch.topk(dist, k, dim=-1, largest=False, sorted=True).indices)
    if not result:
        return torch.empty((0, k), dtype=torch.long, device=points.device)
    return torch.cat(result, dim=0)


def aggregation_loss_2d(
    feature_map: Float[Tensor, "H W C"],
    num_anchors: int,
    num_candidates: int,
    k: int = 5,
    valid_mask: Bool[Tensor, "H W"] | None = None,
    generator: torch.Generator | None = None,
) -> Float[Tensor, ""]:
    """2D aggregation loss (splatting paper, eq. 11) on a rendered semantic feature map.

    Samples ``num_anchors`` anchor pixels and, independently, a pool of ``num_candidates`` candidate pixels
    (both from ``valid_mask`` when given), finds each anchor's ``k`` nearest candidates by pixel coordinates
    (never the anchor itself), and returns the mean KL between anchor and neighbour feature softmaxes.

    Why a candidate pool instead of the full pixel grid: among all H*W pixels the k nearest are just the 4/8
    adjacent pixels, which are nearly identical already after alpha blending (the loss would vanish), and the
    search would cost m*H*W distances per step. A random pool of c pixels spaces the neighbours about
    ``sqrt(k * H * W / (pi * c))`` pixels from the anchor (~8 px for a 960x540 render with c = 4096, k = 5), a
    neighbourhood a few pixels wide as in the paper's "m random points and their k nearest neighbours", at a cost
    of m*c distances.
    """
    height, width, _ = feature_map.shape
    device = feature_map.device
    if valid_mask is None:
        pixel_index = torch.arange(height * width, device=device)
    else:
        if valid_mask.shape != (height, width):
            raise ValueError(f"valid_mask {tuple(valid_mask.shape)} does not match the feature map {(height, width)}")
        pixel_index = torch.nonzero(valid_mask.reshape(-1).to(device)).squeeze(-1)
    num_valid = pixel_index.shape[0]
    num_pool = min(num_candidates, num_valid)
    # An anchor may itself be in the pool and is then excluded, so at most num_pool - 1 neighbours are guaranteed.
    k = min(k, num_pool - 1)
    num_anchors = min(num_anchors, num_valid)
    if k < 1 or num_anchors < 1:
        return _zero_with_graph(feature_map)
    anchors = pixel_index[_randperm(num_valid, device, generator)[:num_anchors]]
    candidates = pixel_index[_randperm(num_valid, device, generator)[:num_pool]]

    def coords(flat: Tensor) -> Tensor:
        return torch.stack([flat // width, flat % width], dim=-1).float()

    # Exclude the candidate slot that holds the anchor's own pixel, if the pool drew it.
    slot_of_pixel = torch.full((height * width,), -1, dtype=torch.long, device=device)
    slot_of_pixel[candidates] = torch.arange(num_pool, device=device)
    neighbour_slots = k_nearest_neighbours(coords(anchors), coords(candidates), k, exclude=slot_of_pixel[anchors])
    flat_features = feature_map.reshape(height * width, -1)
    return neighbour_kl_divergence(flat_features[anchors], flat_features[candidates[neighbour_slots]])


def aggregation_loss_3d(
    features: Float[Tensor, "N C"],
    positions: Float[Tensor, "N 3"],
    num_anchors: int,
    k: int = 5,
    generator: torch.Generator | None = None,
) -> Float[Tensor, ""]:
    """3D aggregation loss (splatting paper): KL between ``num_anchors`` random Gaussians and their ``k`` nearest
    Gaussians by centre position, among all N.

    Positions only select neighbours and are detached: the loss must shape the semantic features, not drag
    Gaussians together (geometry is the photometric loss's job).
    """
    num_points = features.shape[0]
    if positions.shape[0] != num_points:
        raise ValueError(f"{num_points} features but {positions.shape[0]} positions")
    k = min(k, num_points - 1)
    num_anchors = min(num_anchors, num_points)
    if k < 1 or num_anchors < 1:
        return _zero_with_graph(features)
    anchors = _randperm(num_points, features.device, generator)[:num_anchors]
    points = positions.detach()
    neighbours = k_nearest_neighbours(points[anchors], points, k, exclude=anchors)
    return neighbour_kl_divergence(features[anchors], features[neighbours])
