"""The run status: a progress bar and one line of text saying what is happening, in words.

Each slide has its own status (:class:`.state.SlideAnalysis`: ``status_text``, ``progress``,
``progress_format``, ``run_state``). The functions here phrase what the runner reports (started,
planned, a batch done, failed, finished) into the state of the slide the run belongs to, so every
message about a run is written in one place and lands on its own slide. :class:`RunStatus` is the
view: it shows the selected slide's state and follows its changes, so selecting another slide
shows that slide's own status, never another's (issue 21, D4).
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QLabel, QProgressBar, QVBoxLayout, QWidget

from napari_metastasis.widgets.jobs import Planned, format_duration
from napari_metastasis.widgets.runner import Progress, RunSummary
from napari_metastasis.widgets.state import (
    CANCELLED,
    DONE,
    FAILED,
    IDLE,
    NO_RUN_YET,
    QUEUED,
    READY,
    RUNNING,
)
from napari_metastasis.widgets.state import SlideAnalysis as State

NO_SLIDE = "Open a slide (File > Open) to start."
CLICK_HINT = (
    "Click mode: click the slide to analyse the field around the point (pan by dragging as usual)."
)
#: The progress bar's format while the plan is not known yet (drawn as a busy bar).
BUSY = "busy"
PATCHES = "%v / %m patches"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'es' if word.endswith('ch') else 's'}" if n != 1 else f"{n} {word}"


# --- phrasing: what a run reports, written into its slide's state ----------------------------------
def mode_changed(state: State, click_mode: bool) -> None:
    if state.is_running:
        return
    if click_mode:
        state.set_status(CLICK_HINT)
    elif state.status_text == CLICK_HINT:
        state.set_status(READY)


def starting(state: State, description: str) -> None:
    state.set_status(
        f"Starting: {description}…", run_state=RUNNING, progress=(0, 0), progress_format=BUSY
    )


def queued(state: State, description: str, n_queued: int) -> None:
    """A request waits behind another run (of this slide or another)."""
    if state.run_state == RUNNING:
        state.set_status(state.status_text.split(" (+")[0] + f" (+{n_queued} queued)")
    else:
        state.set_status(
            f"Queued: {description} starts when the current run ends.",
            run_state=QUEUED,
            progress=(0, 0),
            progress_format=BUSY,
        )


def stage(state: State, message: str) -> None:
    state.set_status(message, run_state=RUNNING)


def planned(state: State, event: Planned) -> None:
    if event.total:
        bar, fmt = (0, event.total), PATCHES
    else:
        bar, fmt = (1, 1), "nothing new to classify"
    parts = [f"{event.request.description}: {_plural(event.total, 'patch')} to classify"]
    if event.reused:
        parts.append(f"{event.reused} reused from earlier analyses")
    if event.background:
        parts.append(f"{event.background} background skipped")
    state.set_status(", ".join(parts) + ".", run_state=RUNNING, progress=bar, progress_format=fmt)


def progressed(state: State, p: Progress) -> None:
    queued_text = f" (+{p.queued} queued)" if p.queued else ""
    state.set_status(
        f"{p.request.description}: {'full model on ' if p.checking else ''}"
        f"{p.done} / {p.total} patches, {p.rate:.1f} patches/s, "
        f"{format_duration(p.remaining_s)} left{queued_text}",
        progress=(p.done, p.total),
        progress_format=PATCHES,
    )


def cancelling(state: State) -> None:
    state.set_status("Cancelling after the current batch…")


def failed(state: State, message: str) -> None:
    bar = state.progress if state.progress[1] else (0, 1)
    state.set_status(message, run_state=FAILED, progress=bar, progress_format="failed")


def finished(state: State, summary: RunSummary) -> None:
    """The end of a run, whatever the reason, in its slide's status."""
    value, maximum = state.progress
    bar = (value, maximum) if maximum else (0, 1)  # stopped before the plan was known
    fmt = state.progress_format if state.progress_format != BUSY else "stopped"
    if summary.error is not None:
        state.set_status(state.status_text, run_state=FAILED, progress=bar, progress_format=fmt)
        return  # the error message stays in the status line
    if summary.cancelled:
        text = (
            f"Cancelled: {summary.done} of {summary.total} patches classified "
            "(kept in the overlay)."
            if summary.prob_map is not None
            else "Cancelled."
        )
        state.set_status(text, run_state=CANCELLED, progress=bar, progress_format=fmt)
        return
    description = summary.request.description
    if summary.total == 0 and summary.reused:
        bar, fmt = (1, 1), "nothing new to classify"
        text = (
            f"Done: {description}, nothing new to classify: "
            f"{_plural(summary.reused, 'patch')} already analysed, shown as they were."
        )
    elif summary.total == 0 and summary.background:
        bar, fmt = (0, 1), "no tissue"
        text = (
            f"No tissue under the {description}: "
            f"{_plural(summary.background, 'patch')} of glass or background, none classified."
        )
    elif summary.total == 0:
        bar, fmt = (0, 1), "nothing to classify"
        text = f"{description}: no patch of the slide lies there."
    else:
        bar, fmt = (summary.total, summary.total), PATCHES
        reused = f", {summary.reused} reused" if summary.reused else ""
        background = f", {summary.background} background skipped" if summary.background else ""
        text = (
            f"Done: {description}, {_plural(summary.total, 'patch')} classified{reused}"
            f"{background} in {format_duration(summary.seconds)}."
        )
    state.set_status(text, run_state=DONE, progress=bar, progress_format=fmt)


# --- the view ---------------------------------------------------------------------------------------
class RunStatus(QWidget):
    """Progress bar + status line of the dock widget: the selected slide's status."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.progress = QProgressBar()
        self.label = QLabel(READY)
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextSelectableByMouse)  # type: ignore[attr-defined]
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.progress)
        layout.addWidget(self.label)
        self.state: State | None = None
        self._render()

    # --- reading ---------------------------------------------------------------------------
    def text(self) -> str:
        return self.label.text()

    def set_text(self, text: str) -> None:
        """A message about the selected slide (e.g. why a run was refused)."""
        if self.state is not None:
            self.state.set_status(text)
        else:
            self.label.setText(text)

    # --- following a slide's state -----------------------------------------------------------
    def show_state(self, state: State | None) -> None:
        """Show ``state`` (the selected slide's; None: no slide) and follow its changes."""
        if state is self.state:
            self._render()
            return
        if self.state is not None:
            self.state.events.all.disconnect(self._on_state_changed)
        self.state = state
        if state is not None:
            state.events.all.connect(self._on_state_changed)
        self._render()

    def _on_state_changed(self, *_: Any) -> None:
        self._render()

    def _render(self) -> None:
        state = self.state
        if state is None:
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
            self.progress.setFormat(NO_RUN_YET)
            self.label.setText(NO_SLIDE)
            return
        value, maximum = state.progress
        self.progress.setRange(0, maximum)
        self.progress.setValue(value)
        self.progress.setFormat(state.progress_format)
        self.label.setText(state.status_text)

    @property
    def run_state(self) -> str:
        return self.state.run_state if self.state is not None else IDLE


__all__ = [
    "BUSY",
    "CLICK_HINT",
    "NO_SLIDE",
    "RunStatus",
    "cancelling",
    "failed",
    "finished",
    "mode_changed",
    "planned",
    "progressed",
    "queued",
    "stage",
    "starting",
]
