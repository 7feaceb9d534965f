"""The semantic viewer panel both models share: legend, class highlight, fixed-PCA view, click-to-correct.

nerfstudio's viewer installs every ``ViewerElement`` and sets up every ``ViewerControl`` it finds on the model, so
the mixin only creates them (in ``populate_modules``); nothing of the viewer itself is copied. The click callback
runs on viser's thread and takes the trainer's lock itself; button callbacks are already run under it.
"""

from __future__ import annotations

import contextlib
import tempfile
import weakref
from pathlib import Path

from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.scene_box import OrientedBox
from nerfstudio.viewer.viewer_elements import (
    ViewerButton,
    ViewerClick,
    ViewerControl,
    ViewerDropdown,
    ViewerElement,
    ViewerSlider,
)
from torch import Tensor

from nerfseg_plugin.core.label_space import LabelSpace
from nerfseg_plugin.viewer.display import ALL_CLASSES, highlight_colormap, legend_markdown


class ViewerMarkdown(ViewerElement[str]):
    """Markdown text in the viewer's control panel (nerfstudio 1.1.5 has buttons and inputs, but no text)."""

    def __init__(self, name: str, content: str) -> None:
        super().__init__(name)
        self.content = content

    def _create_gui_handle(self, viser_server) -> None:
        # Any image_root: swatches are data URLs already, it only keeps viser from warning about relative paths.
        self.gui_handle = viser_server.gui.add_markdown(self.content, image_root=Path(tempfile.gettempdir()))

    def install(self, viser_server) -> None:
        self._create_gui_handle(viser_server)

    def set_content(self, content: str) -> None:
        self.content = content
        if self.gui_handle is not None:
            self.gui_handle.content = content


class CorrectionControl(ViewerControl):
    """Turns one viewer click into a correction through a CorrectionSession on the viewer's pipeline."""

    def __init__(self, panel: SemanticViewerMixin) -> None:
        self._panel = weakref.ref(panel)  # the model owns this control; no strong back-reference
        self._session = None

    def session(self):
        if self._session is None:
            from nerfseg_plugin.interactive.session import CorrectionSession

            pipeline = self.viewer.pipeline
            self._session = CorrectionSession(pipeline, getattr(pipeline.datamanager.config, "correction_region", None))
        return self._session

    def _lock(self):
        lock = getattr(self.viewer, "train_lock", None)
        return lock if lock is not None else contextlib.nullcontext()

    def arm(self) -> None:
        """Wait for one click on the rendered view."""
        if not hasattr(self, "viewer"):
            return
        self.register_pointer_cb("click", self._on_click)
        self._status("Click a point of the render to label it **" + self._class_name() + "**.")

    def _class_name(self) -> str:
        panel = self._panel()
        return panel.semantic_viewer_4_class.value if panel is not None else "?"

    def _on_click(self, click: ViewerClick) -> None:
        self.unregister_pointer_cb()
        panel = self._panel()
        if panel is None:
            return
        session = self.session()
        class_index = panel.label_space.names.index(self._class_name())
        height = int(session.dataset.cameras.height[0])  # training resolution
        clients = self.viser_server.get_clients()
        aspect = next(iter(clients.values())).camera.aspect if clients else 1.0
        camera = self.get_camera(height, max(1, round(height * aspect)))
        if camera is None:
            return
        try:
            with self._lock():
                correction = session.correct_viewer_click(camera, click.screen_pos, class_index)
        except ValueError as err:
            self._status(f"No correction: {err}.")
            return
        self._status(
            f"Labeled {correction.class_name} in view {correction.frame} ({len(session.store.corrections)} "
            f"corrections, saved in {session.store.directory})."
        )
        self.viewer._trigger_rerender()

    def undo(self) -> None:
        """Runs as a button callback, which nerfstudio already runs under the trainer's lock."""
        if not hasattr(self, "viewer"):
            return
        session = self.session()
        undone = session.undo_last()
        left = len(session.store.corrections)
        self._status(f"Undid {undone.id} ({left} left)." if undone else "Nothing to undo.")

    def _status(self, text: str) -> None:
        panel = self._panel()
        if panel is not None:
            panel.semantic_viewer_7_status.set_content(text)


class SemanticViewerMixin:
    """Viewer elements and output decoration for a semantic model (listed first in the model's bases)."""

    label_space: LabelSpace

    def setup_semantic_viewer(self) -> None:
        """Create the panel (call in populate_modules, after the label space is known). Attribute names fix the
        order: nerfstudio installs the elements it finds sorted by name."""
        names = self.label_space.names
        control = self.semantic_viewer_control = CorrectionControl(self)
        self.semantic_viewer_1_legend = ViewerMarkdown("Classes", legend_markdown(self.label_space))
        self.semantic_viewer_2_highlight = ViewerDropdown("Highlight class", ALL_CLASSES, [ALL_CLASSES, *names])
        self.semantic_viewer_3_dim = ViewerSlider("Dim other classes", 0.2, 0.0, 1.0, 0.05)
        self.semantic_viewer_4_class = ViewerDropdown("Correction class", names[0], list(names))
        self.semantic_viewer_5_click = ViewerButton("Click to correct", lambda _: control.arm())
        self.semantic_viewer_6_undo = ViewerButton("Undo last correction", lambda _: control.undo())
        self.semantic_viewer_7_status = ViewerMarkdown("Status", "Pick a class, then *Click to correct*.")

    def highlighted_class(self) -> int | None:
        choice = self.semantic_viewer_2_highlight.value
        return None if choice == ALL_CLASSES else self.label_space.names.index(choice)

    def get_outputs_for_camera(self, camera: Cameras, obb_box: OrientedBox | None = None) -> dict[str, Tensor]:
        outputs = super().get_outputs_for_camera(camera, obb_box=obb_box)  # type: ignore[misc]
        return self.decorate_semantic_outputs(outputs)

    def decorate_semantic_outputs(self, outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """Apply the class highlight (both models render their fixed-PCA feature view themselves)."""
        return highlight_colormap(outputs, self.highlighted_class(), float(self.semantic_viewer_3_dim.value))
