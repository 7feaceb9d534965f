"""gsplat's DefaultStrategy with a hard cap on the number of Gaussians."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from gsplat.strategy import DefaultStrategy

from nerfseg_plugin.splat.gsplat_private import check_gsplat_version


@dataclass
class CappedStrategy(DefaultStrategy):
    """DefaultStrategy whose growth step never takes the cloud above ``max_gaussians``.

    A refinement can nearly double the count (every candidate is cloned or split), so checking the count before it
    is not enough: when the candidates exceed the room left, only the ones with the highest mean image-plane
    gradient grow now; the others keep their place in later refinements. Growth is unchanged below the cap.
    """

    max_gaussians: int | None = None
    """Most Gaussians after any refinement (None: no cap, plain DefaultStrategy)."""

    @classmethod
    def like(cls, strategy: DefaultStrategy, max_gaussians: int | None) -> CappedStrategy:
        """The same strategy settings (e.g. splatfacto's), capped."""
        settings = {f.name: getattr(strategy, f.name) for f in fields(DefaultStrategy) if f.init}
        return cls(**settings, max_gaussians=max_gaussians)

    def growth_candidates(self, params, state: dict[str, Any], step: int) -> torch.Tensor:
        """The Gaussians gsplat's ``_grow_gs`` would clone or split (its criteria, gsplat 1.4.0); each adds one."""
        grads = state["grad2d"] / state["count"].clamp_min(1)
        is_grad_high = grads > self.grow_grad2d
        candidates = is_grad_high.clone()  # clones (small) and splits (large) alike
        if step < self.refine_scale2d_stop_iter:
            candidates |= state["radii"] > self.grow_scale2d  # split for screen size
        return candidates

    @torch.no_grad()
    def _grow_gs(self, params, optimizers, state: dict[str, Any], step: int) -> tuple[int, int]:
        check_gsplat_version()  # a private override point: its signature and criteria are gsplat 1.4.0's
        if self.max_gaussians is None:
            return super()._grow_gs(params, optimizers, state, step)
        room = max(self.max_gaussians - len(params["means"]), 0)
        candidates = self.growth_candidates(params, state, step)
        excess = int(candidates.sum()) - room
        if excess > 0:
            # Hold back the lowest-gradient candidates for this refinement; step_post_backward resets the running
            # statistics right after growth and pruning, so nothing else sees the change.
            grads = state["grad2d"] / state["count"].clamp_min(1)
            ranked = torch.where(candidates, grads, torch.full_like(grads, float("inf")))
            held = torch.topk(ranked, excess, largest=False).indices
            state["grad2d"][held] = -float("inf")
            if state.get("radii") is not None:
                state["radii"][held] = 0.0
        return super()._grow_gs(params, optimizers, state, step)
