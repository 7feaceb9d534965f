"""``rsseg-export-labels``: label maps of a trained rsseg model for dataset views or a camera path."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import tyro
from nerfstudio.cameras.camera_paths import get_path_from_json
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor

from nerfseg_plugin.core.errors import SceneFormatError
from nerfseg_plugin.export.gaussians_ply import write_labeled_gaussians
from nerfseg_plugin.export.label_maps import LabelView, write_label_maps


@dataclass
class ExportLabels:
    """Render class-index and colourised label maps of a trained rsseg-* model."""

    load_config: Path
    """config.yml of the training run (outputs/<scene>/<method>/<timestamp>/config.yml)."""
    output_dir: Path
    """Folder for labels/<stem>.png (8-bit class indices), labels_colour/<stem>.png and classes.json."""
    split: Literal["eval", "train", "all"] = "eval"
    """Dataset views to render: eval (semantic_eval_path frames), train, or all frames of the scene."""
    camera_path: Path | None = None
    """A nerfstudio camera path (viewer export); renders frame_00000 … instead of dataset views."""
    min_coverage: float = 0.05
    """Pixels whose accumulated opacity is below this get 255 (no content to label)."""
    gaussians_ply: bool = True
    """For splatting models, also write gaussians.ply (position, colour, class, confidence)."""

    def main(self) -> None:
        from nerfstudio.utils.eval_utils import eval_setup

        from nerfseg_plugin.data.trained_frame import changed_scene_warning, trained_frame_differs

        if not self.load_config.is_file():
            raise SceneFormatError(self.load_config, "config.yml of a training run not found")
        if self.camera_path is not None and not self.camera_path.is_file():
            raise SceneFormatError(self.camera_path, "camera path file not found")
        _, pipeline, _, _ = eval_setup(self.load_config, test_mode="test")
        if trained_frame_differs(pipeline, self.load_config.parent):
            CONSOLE.print(changed_scene_warning(self.load_config.parent))
        model = pipeline.model
        views = self._views(pipeline)
        written = write_label_maps(
            model, _on_device(views, pipeline.device), model.label_space, self.output_dir, self.min_coverage
        )
        CONSOLE.print(f"[bold green]Wrote {len(written)} label maps to {self.output_dir / 'labels'}")
        if self.gaussians_ply and hasattr(model, "gauss_params"):
            count = write_labeled_gaussians(model, self.output_dir / "gaussians.ply")
            CONSOLE.print(f"[bold green]Wrote {count} labeled Gaussians to {self.output_dir / 'gaussians.ply'}")

    def _views(self, pipeline) -> list[tuple[str, Cameras, Callable[[], Tensor] | None]]:
        """(stem, camera, reader of the view's captured image or None) per view to label."""
        if self.camera_path is not None:
            try:
                cameras = get_path_from_json(json.loads(self.camera_path.read_text()))
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise SceneFormatError(self.camera_path, f"not a nerfstudio camera path: {err}") from None
            return [(f"frame_{i:05d}", cameras[i : i + 1], None) for i in range(len(cameras))]
        datasets = {
            "eval": [pipeline.datamanager.eval_dataset],
            "train": [pipeline.datamanager.train_dataset],
            "all": [pipeline.datamanager.train_dataset, pipeline.datamanager.eval_dataset],
        }[self.split]
        views: dict[str, tuple[Cameras, Callable[[], Tensor]]] = {}
        for dataset in datasets:
            for index, filename in enumerate(dataset.image_filenames):
                reader = partial(dataset.get_image_float32, index)
                views.setdefault(Path(filename).stem, (dataset.cameras[index : index + 1], reader))
        return [(stem, camera, reader) for stem, (camera, reader) in sorted(views.items())]


def _on_device(views: list[tuple[str, Cameras, Callable[[], Tensor] | None]], device) -> Iterator[LabelView]:
    """Views moved to the device one at a time, images read as they are rendered."""
    for stem, camera, read_image in views:
        yield LabelView(stem, camera.to(device), None if read_image is None else read_image().to(device))


def entrypoint() -> None:
    tyro.extras.set_accent_color("bright_yellow")
    tyro.cli(ExportLabels).main()
