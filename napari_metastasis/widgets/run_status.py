"""The run status: a progress bar and one line of text saying what is happening, in words.

:class:`RunStatus` is told what the runner reports (started, planned, a batch done, failed,
finished) and what the user did (another slide, another mode) and phrases it. It owns the wording,
so every message about a run is written in one place, and it never shows a stale one: switching
slides clears an earlier slide's message.
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QLabel, QProgressBar, QVBoxLayout, QWidget

from .jobs import Planned, format_duration
from .runner import Progress, RunSummary

READY = "Ready."
NO_SLIDE = "Open a slide (File > Open) to start."
CLICK_HINT = (
    "Click mode: click the slide to analyse the field around the point (pan by dragging as usual)."
)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'es' if word.endswith('ch') else 's'}" if n != 1 else f"{n} {word}"


class RunStatus(QWidget):
    """Progress bar + status line of the dock widget."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.progress = QProgressBar()
        self.label = QLabel(READY)
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.progress)
        layout.addWidget(self.label)
        self._slide_path: str | None = None
        self.idle()

    # --- reading ---------------------------------------------------------------------------
    def text(self) -> str:
        return self.label.text()

    def set_text(self, text: str) -> None:
        self.label.setText(text)

    # --- states ----------------------------------------------------------------------------
    def idle(self) -> None:
        """No run yet on this slide: an empty bar that says so (not "0 / 1")."""
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("no run yet")

    def slide_selected(self, slide_path: str | None, running: bool) -> None:
        """Another slide: an earlier slide's message (an error, "Done") no longer applies."""
        if slide_path == self._slide_path:
            if not slide_path and not running:
                self.set_text(NO_SLIDE)
            return
        self._slide_path = slide_path
        if running:
            return
        self.idle()
        self.set_text(READY if slide_path else NO_SLIDE)

    def mode_changed(self, click_mode: bool, running: bool) -> None:
        if running:
            return
        if click_mode:
            self.set_text(CLICK_HINT)
        elif self.text() == CLICK_HINT:
            self.set_text(READY)

    def starting(self, description: str) -> None:
        self.progress.setRange(0, 0)  # busy until the plan is known
        self.progress.setFormat("%v / %m patches")
        self.set_text(f"Starting: {description}…")

    def queued(self, n_queued: int) -> None:
        self.set_text(self.text().split(" (+")[0] + f" (+{n_queued} queued)")

    def stage(self, message: str) -> None:
        self.set_text(message)

    def planned(self, event: Planned) -> None:
        if event.total:
            self.progress.setRange(0, event.total)
            self.progress.setValue(0)
            self.progress.setFormat("%v / %m patches")
        else:
            self.progress.setRange(0, 1)
            self.progress.setValue(1)
            self.progress.setFormat("nothing new to classify")
        parts = [f"{event.request.description}: {_plural(event.total, 'patch')} to classify"]
        if event.reused:
            parts.append(f"{event.reused} reused from earlier analyses")
        if event.background:
            parts.append(f"{event.background} background skipped")
        self.set_text(", ".join(parts) + ".")

    def progressed(self, p: Progress) -> None:
        self.progress.setValue(p.done)
        queued = f" (+{p.queued} queued)" if p.queued else ""
        self.set_text(
            f"{p.request.description}: {p.done} / {p.total} patches, {p.rate:.1f} patches/s, "
            f"{format_duration(p.remaining_s)} left{queued}"
        )

    def cancelling(self) -> None:
        self.set_text("Cancelling after the current batch…")

    def failed(self, message: str) -> None:
        self.set_text(message)

    def finished(self, summary: RunSummary, still_running: bool) -> None:
        if self.progress.maximum() == 0:  # stopped before the plan was known
            self.progress.setRange(0, 1)
        if summary.error is not None:
            pass  # the error message stays in the status line
        elif summary.cancelled:
            self.set_text(
                f"Cancelled: {summary.done} of {summary.total} patches classified "
                "(kept in the overlay)."
                if summary.prob_map is not None
                else "Cancelled."
            )
        elif summary.total == 0 and summary.reused:
            self.set_text(
                f"Done: {summary.request.description}, nothing new to classify: "
                f"{_plural(summary.reused, 'patch')} already analysed, shown as they were."
            )
        elif summary.total == 0 and summary.background:
            self.progress.setFormat("no tissue")
            self.set_text(
                f"No tissue under the {summary.request.description}: "
                f"{_plural(summary.background, 'patch')} of glass or background, none classified."
            )
        elif summary.total == 0:
            self.progress.setFormat("nothing to classify")
            self.set_text(f"{summary.request.description}: no patch of the slide lies there.")
        else:
            self.progress.setValue(self.progress.maximum())
            reused = f", {summary.reused} reused" if summary.reused else ""
            background = f", {summary.background} background skipped" if summary.background else ""
            self.set_text(
                f"Done: {summary.request.description}, "
                f"{_plural(summary.total, 'patch')} classified{reused}{background} "
                f"in {format_duration(summary.seconds)}."
            )
        if still_running:  # the next queued request started
            self.progress.setRange(0, 0)
