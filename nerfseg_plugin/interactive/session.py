"""Applies click corrections to a running pipeline: derive the region, store it, retrain on it, undo.

A click in the viewer lands in a free viewpoint, but supervision needs a training camera (its image, its camera
optimizer slot). The clicked 3D point (viewer ray + rendered depth) is therefore snapped to the nearest training
camera that sees it, unoccluded; the region is derived in that camera's render at training resolution and added as
a partial label map of that view. The manifest records both cameras.
"""

from __future__ import annotations

from pathlib import Path

import torch
from nerfstudio.cameras.cameras import Cameras
from torch import Tensor

from nerfseg_plugin.core.geometry import depth_convention, inside_image, pixel_ray, project, views_from_cameras
from nerfseg_plugin.data.corrections import Correction, CorrectionStore
from nerfseg_plugin.interactive.regions import RegionConfig, Sam2PointPrompter, derive_region, load_prompter
from nerfseg_plugin.semantics.outputs import SEMANTIC_LOGITS

OCCLUSION_TOLERANCE = 0.05
"""A training camera sees the clicked point when its rendered depth there is within 5% of the point's depth."""


def camera_record(camera: Cameras) -> dict:
    """JSON-ready pose and intrinsics of a single camera (nerfstudio world, OpenGL axes)."""
    return {
        "camera_to_world": camera.camera_to_worlds[0].tolist(),
        "fx": float(camera.fx[0]),
        "fy": float(camera.fy[0]),
        "cx": float(camera.cx[0]),
        "cy": float(camera.cy[0]),
    }


class CorrectionSession:
    """Click corrections for one pipeline. Callers hold the trainer's lock (the viewer's train_lock) around
    every call: rendering switches the model to eval mode and corrections change the training batches."""

    def __init__(
        self, pipeline, region: RegionConfig | None = None, store: CorrectionStore | None = None, source: str = "viewer"
    ) -> None:
        self.pipeline = pipeline
        self.region = region or RegionConfig()
        dataset = pipeline.datamanager.train_dataset
        self.label_space = dataset.semantics.label_space
        self.store = store or CorrectionStore.for_scene(dataset.semantics.scene_dir, self.label_space.num_classes)
        self.source = source
        self._prompter: Sam2PointPrompter | None = None

    @property
    def dataset(self):
        return self.pipeline.datamanager.train_dataset

    @property
    def prompter(self) -> Sam2PointPrompter | None:
        if self._prompter is None and self.region.sam2_checkpoint is not None:
            # Built on first use (it takes a while), on the device the pipeline renders on.
            self._prompter = load_prompter(self.region, self.pipeline.device)
        return self._prompter

    @torch.no_grad()
    def render(self, camera: Cameras) -> dict[str, Tensor]:
        """The model's outputs for ``camera`` in eval mode (restoring the training mode afterwards)."""
        model = self.pipeline.model
        was_training = model.training
        model.eval()
        try:
            return model.get_outputs_for_camera(camera.to(model.device))
        finally:
            if was_training:
                model.train()

    def render_frame(self, index: int) -> dict[str, Tensor]:
        return self.render(self.dataset.cameras[index : index + 1])

    def correct_frame(
        self,
        index: int,
        click_xy: tuple[int, int],
        class_index: int,
        outputs: dict[str, Tensor] | None = None,
        extra_camera: dict | None = None,
    ) -> Correction:
        """Label the region around pixel ``click_xy`` of training view ``index`` as ``class_index``, save it and
        train with it from the next step on."""
        outputs = outputs if outputs is not None else self.render_frame(index)
        rgb = outputs["rgb"][..., :3].float().cpu().numpy()
        probabilities = torch.softmax(outputs[SEMANTIC_LOGITS].float(), dim=-1).cpu().numpy()
        x, y = click_xy
        prompter = self.prompter
        region = derive_region(rgb, probabilities, (y, x), self.region, prompter)
        camera = camera_record(self.dataset.cameras[index : index + 1])
        correction = self.store.add(
            frame=Path(self.dataset.image_filenames[index]).stem,
            region=region,
            class_index=class_index,
            class_name=self.label_space.names[class_index],
            click_xy=(x, y),
            camera={**camera, **(extra_camera or {})},
            region_method="sam2" if prompter is not None else "flood",
            source=self.source,
        )
        self.apply_store()
        return correction

    def snap_click(self, viewer_camera: Cameras, screen_xy: tuple[float, float]) -> tuple[int, tuple[int, int]]:
        """The training view and pixel for a click at normalised ``screen_xy`` of ``viewer_camera``: the clicked
        surface point (rendered depth) seen from the nearest training camera that sees it unoccluded."""
        outputs = self.render(viewer_camera)
        depth_map = outputs["depth"][..., 0].cpu()
        height, width = depth_map.shape
        px = min(int(screen_xy[0] * width), width - 1)
        py = min(int(screen_xy[1] * height), height - 1)
        origin, direction, forward = pixel_ray(viewer_camera, px + 0.5, py + 0.5)
        depth = float(depth_map[py, px])
        z_depth = depth_convention(self.pipeline.model) == "z"  # splatting: along the optical axis; NeRF: the ray
        distance = depth / float(direction @ forward) if z_depth else depth
        point = origin + distance * direction
        cameras = self.dataset.cameras
        views = views_from_cameras(cameras.to("cpu"))  # the pinhole model the pseudo-label vote projects with
        projected = [project(view, point[None]) for view in views]
        xs, ys = (torch.stack([uv[0, axis] for uv, _ in projected]) for axis in (0, 1))
        depths = torch.stack([z[0] for _, z in projected])
        inside = torch.stack([inside_image(view, uv, z)[0] for view, (uv, z) in zip(views, projected, strict=True)])
        if not inside.any():
            raise ValueError("no training camera sees the clicked point")
        centres = cameras.camera_to_worlds[:, :, 3].float().cpu()
        order = torch.argsort((centres - origin).norm(dim=-1) + torch.where(inside, 0.0, float("inf")))
        candidates = [int(i) for i in order[: int(inside.sum())]]
        for index in candidates[:3]:  # the nearest unoccluded one of the three nearest
            x, y = int(xs[index]), int(ys[index])
            rendered = float(self.render_frame(index)["depth"][y, x, 0])
            if z_depth:
                seen = abs(rendered - float(depths[index])) <= OCCLUSION_TOLERANCE * float(depths[index])
            else:
                seen = abs(rendered - float((point - centres[index]).norm())) <= OCCLUSION_TOLERANCE * rendered
            if seen:
                return index, (x, y)
        index = candidates[0]
        return index, (int(xs[index]), int(ys[index]))

    def correct_viewer_click(
        self, viewer_camera: Cameras, screen_xy: tuple[float, float], class_index: int
    ) -> Correction:
        index, click_xy = self.snap_click(viewer_camera, screen_xy)
        viewer = {"viewer_camera_to_world": viewer_camera.camera_to_worlds[0].tolist(), "viewer_screen_xy": screen_xy}
        return self.correct_frame(index, click_xy, class_index, extra_camera=viewer)

    def undo_last(self) -> Correction | None:
        """Remove the newest correction from disk and from training."""
        undone = self.store.undo_last()
        if undone is not None:
            self.apply_store()
        return undone

    def apply_store(self) -> None:
        """Make the training batches follow the store (after an add or an undo)."""
        changed = self.dataset.set_corrections(self.store.merged())
        refresh = getattr(self.pipeline.datamanager, "refresh_semantic_supervision", None)
        if refresh is not None and changed:
            refresh(changed)
