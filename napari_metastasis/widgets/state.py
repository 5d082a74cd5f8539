"""One analysis state per opened slide, kept for the session: what every view of the dock shows.

A pathologist opens two slides, starts a whole-slide run on one and looks at the other while it
runs. Before this module the analysis lived in the dock widget and followed "the selected layer at
the time of the event": a run finishing on slide A wrote its regions, verdict and status into
whatever slide was selected then (issue 21, D1–D4). Here each slide has its own
:class:`SlideAnalysis`, an evented dataclass (psygnal: every field change is a signal), created
when the slide is first opened and kept while the session lasts, keyed by the slide's absolute
path, so closing and reopening the file gets the same state back (its µm/px, its place on the
canvas, its threshold and its analysis).

Rules the widgets follow:

* a run carries its slide's path; whatever it reports (stage, progress, failure, the end) is
  written into :meth:`SlideStates.get` of *that* path, never into the selected slide's state;
* views (status line, verdict, region list) render the selected slide's state and nothing else.

Units: ``mpp`` in µm per level-0 pixel; ``placement`` is the slide layer's (y, x) translate in
world units (µm for a calibrated slide). No Qt and no napari here: this is plain data.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from psygnal import evented

if TYPE_CHECKING:
    from psygnal import SignalGroup

from napari_metastasis._napari.helpers import slide_key

#: Run states of a slide.
IDLE, QUEUED, RUNNING, DONE, FAILED, CANCELLED = (
    "idle",
    "queued",
    "running",
    "done",
    "failed",
    "cancelled",
)
READY = "Ready."
#: Progress bar format of a slide that has not been analysed in this session.
NO_RUN_YET = "no run yet"


@evented
@dataclass(eq=False)
class SlideAnalysis:
    """Everything the dock shows about one slide. ``eq=False``: states compare by identity (two
    slides with equal settings are still two slides)."""

    if TYPE_CHECKING:
        events: ClassVar[
            SignalGroup
        ]  # made by psygnal's @evented: one signal per field, and ``all``

    slide_path: str
    #: µm per level-0 px, and where it comes from: "metadata" (the file), "given" (the user, or
    #: an analysis made with it), "objective power" (an estimate) or "none"
    mpp: float | None = None
    mpp_source: str = "none"
    #: the slide layer's (y, x) translate, so a reopened slide goes back where it lay
    placement: tuple[float, float] | None = None
    #: the model whose analysis the dock shows for this slide, and the threshold chosen for it
    model_name: str = ""
    threshold: float | None = None
    #: the probability map of that model (shared with the run that fills it)
    prob_map: Any = None
    #: regions at the threshold: every one found (candidates) and the ones that count as
    #: deposits (confirmed); until a deposit decision exists every candidate counts
    candidates: list = field(default_factory=list)
    confirmed: list = field(default_factory=list)
    #: the slide verdict (:class:`napari_metastasis.clinical.staging.SlideVerdict`) or None
    verdict: Any = None
    #: what the region list shows of the candidates: each one's label (after the pathologist's
    #: relabels) and measured deposit (:class:`napari_metastasis.clinical.staging.Deposit`), whether
    #: regions were deleted or relabelled, the grid stride (µm) the sizes are measured to, the
    #: deposit rule in words, and whether the regions are on screen at all (False: the dock
    #: shows no analysis of this slide, e.g. none was run with the selected model)
    labels: list = field(default_factory=list)
    deposits: list = field(default_factory=list)
    edited: bool = False
    stride_um: float | None = None
    rule_text: str = ""
    #: what the rule cannot see (DecisionRule.itc_note), shown under a negative verdict
    limitation: str = ""
    shown: bool = False
    #: a sentence under the region list, e.g. that regions below the threshold the first-pass
    #: shortcut ran at may miss settled patches ("" for none)
    caution: str = ""
    #: counts the changes of the regions fields above, each made in one go: the region list and
    #: the verdict redraw once per change (not once per field)
    revision: int = 0
    #: the run status: state, one line of words, and the progress bar (value, maximum, format)
    run_state: str = IDLE
    status_text: str = READY
    progress: tuple[int, int] = (0, 1)
    progress_format: str = NO_RUN_YET

    @property
    def key(self) -> str:
        return slide_key(self.slide_path)

    @property
    def name(self) -> str:
        return Path(self.slide_path).name

    @property
    def is_running(self) -> bool:
        return self.run_state in (QUEUED, RUNNING)

    def set_status(
        self,
        text: str,
        *,
        run_state: str | None = None,
        progress: tuple[int, int] | None = None,
        progress_format: str | None = None,
    ) -> None:
        """Change the status line (and optionally the run state and the bar) in one go."""
        if run_state is not None:
            self.run_state = run_state
        if progress is not None:
            self.progress = (int(progress[0]), int(progress[1]))
        if progress_format is not None:
            self.progress_format = progress_format
        self.status_text = text

    def set_regions(
        self,
        candidates: list,
        confirmed: list | None,
        verdict: Any,
        *,
        labels: list[str] | None = None,
        deposits: list | None = None,
        edited: bool = False,
        stride_um: float | None = None,
        rule_text: str = "",
        shown: bool = True,
        caution: str = "",
        limitation: str = "",
    ) -> None:
        """The regions at the current threshold and the verdict measured from them, and what
        the region list shows of them; one :attr:`revision` for the whole change."""
        self.candidates = list(candidates)
        self.confirmed = list(candidates if confirmed is None else confirmed)
        self.verdict = verdict
        self.labels = list(labels) if labels is not None else [""] * len(self.candidates)
        self.deposits = list(deposits or [])
        self.edited = bool(edited)
        self.stride_um = stride_um
        self.rule_text = rule_text
        self.limitation = limitation
        self.shown = bool(shown)
        self.caution = caution
        self.revision += 1

    def clear_regions(self) -> None:
        """No regions shown for this slide (nothing analysed with the selected model)."""
        self.set_regions([], [], None, shown=False)


class SlideStates:
    """Every slide opened this session, by absolute path: created on first sight, never dropped
    while the session lasts (a reopened slide gets its state back)."""

    def __init__(self) -> None:
        self._states: dict[str, SlideAnalysis] = {}
        self._lock = threading.Lock()

    def get(self, slide_path: str | Path | None) -> SlideAnalysis | None:
        if not slide_path:
            return None
        with self._lock:
            return self._states.get(slide_key(slide_path))

    def get_or_create(self, slide_path: str | Path) -> SlideAnalysis:
        key = slide_key(slide_path)
        with self._lock:
            state = self._states.get(key)
            if state is None:
                state = SlideAnalysis(slide_path=str(slide_path))
                self._states[key] = state
            return state

    def __iter__(self) -> Iterator[SlideAnalysis]:
        with self._lock:
            return iter(list(self._states.values()))

    def __len__(self) -> int:
        return len(self._states)


def confirmed_regions(regions: list) -> list:
    """The regions the deposit decision confirmed (undecided regions count, as in older files)."""
    return [r for r in regions if getattr(getattr(r, "decision", None), "confirmed", True)]
