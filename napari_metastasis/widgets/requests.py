"""What to analyse: the dock's controls and the viewer turned into a :class:`.jobs.JobRequest`.

:class:`RequestMaker` reads the mode (the visible region, a clicked field, drawn shapes, the whole
slide), the selected slide and model and the run settings, and refuses in the viewer's words what
cannot run: no slide, a view off the slide, no shapes, a slide without µm/px (the CLI's advice
names ``--mpp``; the dock's names its own field, issue 21, D11), an untrusted model. It decides
nothing about how a run is shown. Regions are level-0 pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from napari_metastasis._napari.helpers import (
    is_calibrated,
    layer_for_slide,
    slide_path_of,
    user_mpp,
    warn,
)
from napari_metastasis.errors import MetastasisError
from napari_metastasis.models.trust import TrustCheck, check_trust
from napari_metastasis.widgets import selection
from napari_metastasis.widgets.controls import CLICK, SHAPES, VISIBLE, RunControls, SourceControls
from napari_metastasis.widgets.jobs import JobRequest
from napari_metastasis.widgets.selected import SelectedSlide

#: Confirms (True) or refuses (False) to trust a model from outside the package.
ConfirmTrust = Callable[[TrustCheck], bool]
#: A press and release closer than this (screen px) is a click, farther is a pan.
CLICK_TOLERANCE_PX = 5


class RequestMaker:
    """Builds the request for the selected mode, a click, or a slide of the case list."""

    def __init__(
        self,
        viewer: Any,
        selected: SelectedSlide,
        source: SourceControls,
        run_controls: RunControls,
        say: Callable[[str], None],
        set_slide_mpp: Callable[[Any, float], bool],
        confirm_trust: ConfirmTrust,
    ) -> None:
        self.viewer = viewer
        self.selected = selected
        self.source = source
        self.run_controls = run_controls
        self.say = say  # a message on the selected slide's status line
        self.set_slide_mpp = set_slide_mpp
        self.confirm_trust = confirm_trust

    def for_mode(self, mode: str) -> JobRequest | None:
        """The request of the Run button in ``mode`` (not the click mode)."""
        frame = self.selected.frame()
        if frame is None:
            warn("Open a slide first (File > Open, or File > Open Sample).")
            return None
        if mode == VISIBLE:
            rect = selection.visible_region(self.viewer, frame)
            if rect is None:
                warn("The view shows none of the slide: pan or zoom to it first.")
                return None
            return self.make(rect, "visible region")
        if mode == SHAPES:
            return self._for_shapes(frame)
        return self.make(None, "whole slide")

    def _for_shapes(self, frame: Any) -> JobRequest | None:
        layer = self.run_controls.shapes_layer.value
        if layer is None or layer not in self.viewer.layers or not len(layer.data):
            warn("Draw rectangles or polygons in a Shapes layer first (the New button adds one).")
            return None
        selected_only = bool(self.run_controls.selected_only.value)
        geometry = selection.shapes_geometry(layer, frame, selected_only=selected_only)
        if geometry.is_empty:
            warn(f"{layer.name}: no rectangle or polygon lies on the slide.")
            return None
        n = len(layer.selected_data) if selected_only else 0
        n = n or len(layer.data)
        return self.make(geometry, f"{n} drawn shape{'s' * (n != 1)}")

    def field_at(self, position_yx: tuple[float, ...]) -> JobRequest | None:
        """The field (size from the dock) around a world point, as a click asks for."""
        frame = self.selected.frame()
        if frame is None:
            warn("Open a slide first.")
            return None
        size = float(self.run_controls.field_size.value)
        rect = selection.field_around(position_yx, size, frame)
        if rect is None:
            self.say("That click was outside the slide.")
            return None
        return self.make(rect, f"{size:g} µm field")

    def make(
        self, region: Any, description: str, slide_path: str | None = None
    ) -> JobRequest | None:
        """A request for ``region`` (level-0 px; None: the whole slide) of the selected slide,
        or of ``slide_path`` (a slide of the case list, open or not)."""
        model_ref = self.selected.model_ref
        if not model_ref:
            warn("No model: choose a model folder (config.json + torchscript_model.pt).")
            return None
        trust = self.ensure_trusted(model_ref)
        if trust is False:
            return None
        # a case-list slide is checked against its own layer (if open), never the selected one;
        # a closed slide's file must state its µm/px (the run says so if it does not)
        layer = (
            self.selected.slide_layer
            if slide_path is None
            else layer_for_slide(self.viewer, slide_path)
        )
        if layer is not None and not is_calibrated(layer):
            mpp = self.source.mpp_value if slide_path is None else None
            if mpp is None:
                message = (
                    f"{layer.name} states no usable µm/px: enter it in the µm/px field "
                    "(e.g. 0.25 at 40x, 0.5 at 20x), then run again."
                )
                warn(message)
                path = slide_path_of(layer) or ""
                self.selected.state_of(path).set_status(message)  # its own status
                return None
            self.set_slide_mpp(layer, mpp)
        target = slide_path or self.selected.slide_path
        return JobRequest(
            slide_path=target,  # type: ignore[arg-type]
            model_ref=model_ref,
            model_name=self.selected.model_name,
            description=description,
            region=region,
            device=self.source.device.value,
            batch_size=int(self.source.batch_size.value),
            tissue_min_fraction=float(self.source.tissue_min.value),
            overlap=self.source.overlap_fraction,
            exhaustive=bool(self.source.exhaustive.value),
            threshold=self.selected.state_of(target).threshold if target else None,
            mpp=user_mpp(layer),
            trust=trust if isinstance(trust, TrustCheck) else None,
        )

    def ensure_trusted(self, ref: str) -> TrustCheck | bool:
        """A model from outside the package runs only once the user trusts it (asked once per file).

        The same rule as the CLI's ``--trust-model``: a TorchScript model is a program. Returns the
        trust state for the run (its loader checks the file still has the digest the user said yes
        to, and remembers a new answer only once the model has loaded), True where there is
        nothing to check, False when the user said no.
        """
        try:
            state = check_trust(ref)
        except MetastasisError:
            return True  # a missing or broken folder: the loader says what is wrong
        if state.trusted or self.confirm_trust(state):
            return state
        message = f"Not run: model {state.folder.name} is not trusted."
        self.say(message)
        warn(message)
        return False


def ask_trust(parent: Any, state: TrustCheck) -> bool:
    """Ask the user whether to trust a model from outside the package (a modal dialog)."""
    from qtpy.QtWidgets import QMessageBox

    answer = QMessageBox.question(
        parent,
        "Trust this model?",
        f"The model {state.folder.name} ({state.folder}) does not come with napari-metastasis."
        "\n\nA TorchScript model is a program. Its operators were not inspected yet; they will"
        " be before it runs, and a model that reads or writes files is refused, but that check "
        "is not a sandbox.\n\nRun it only if you know where it comes from. Your answer is "
        f"remembered for this exact file (sha256 {str(state.sha256)[:12]}…).\n\nTrust it?",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return bool(answer == QMessageBox.StandardButton.Yes)


class ClickAnalyser:
    """The viewer's mouse-drag callback of the Click mode: a press and release in (almost) the
    same place analyses the field there; a drag pans as usual."""

    def __init__(
        self, mode: Callable[[], str], analyse: Callable[[tuple[float, ...]], Any]
    ) -> None:
        self.mode = mode
        self.analyse = analyse

    def __call__(self, viewer: Any, event: Any) -> Iterator[None]:
        if self.mode() != CLICK or event.button != 1 or event.modifiers:
            return
        active = viewer.layers.selection.active
        if active is not None and getattr(active, "mode", "pan_zoom") not in ("pan_zoom", "pan"):
            return  # the user is drawing or selecting in a layer
        start = tuple(event.pos)
        position = tuple(event.position)
        yield
        while event.type == "mouse_move":
            yield
        dx, dy = (a - b for a, b in zip(event.pos, start, strict=False))
        if (dx * dx + dy * dy) ** 0.5 <= CLICK_TOLERANCE_PX:
            self.analyse(position)
