"""Callbacks of background work that outlive the widget that started them, and timers.

A napari thread worker's signals belong to the worker, not to the widget that connected a closure
to them: when the viewer closes mid-run (or a test tears it down), the worker still returns and its
closure would touch Qt controls already deleted. :func:`while_alive` wraps such a closure so that
it does nothing once its owner is gone.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from qtpy import PYQT5, PYQT6


def is_deleted(obj: Any) -> bool:
    """Whether the C++ side of a Qt object is gone (its Python wrapper may live on)."""
    if PYQT5 or PYQT6:
        from qtpy import sip

        return bool(sip.isdeleted(obj))
    from qtpy import shiboken  # PySide2/6

    return not shiboken.isValid(obj)  # type: ignore[attr-defined]


def while_alive(owner: Any, callback: Callable[..., Any]) -> Callable[..., Any]:
    """``callback`` that is skipped once ``owner`` (a QObject) has been deleted."""

    @wraps(callback)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if is_deleted(owner):
            return None
        return callback(*args, **kwargs)

    return guarded


def one_per_turn(owner: Any, steps: list[Callable[[], Any]]) -> None:
    """Run ``steps`` in order, one per turn of the Qt event loop, so the viewer repaints and
    answers the mouse between them (napari's layer work is GUI-thread work, tens of milliseconds
    a step). The timers are ``owner``'s children (a QObject): once it is deleted (the viewer
    closed) nothing more runs."""
    if not steps or is_deleted(owner):
        return
    from qtpy.QtCore import QTimer

    timer = QTimer(owner)
    timer.setSingleShot(True)

    def run() -> None:
        timer.deleteLater()
        steps[0]()
        one_per_turn(owner, steps[1:])

    timer.timeout.connect(run)
    timer.start(0)


def single_shot_timer(owner: Any, ms: int, slot: Callable[[], Any]) -> Any:
    """A single-shot QTimer of ``ms`` milliseconds calling ``slot``, dying with ``owner``."""
    from qtpy.QtCore import QTimer

    timer = QTimer(owner)
    timer.setSingleShot(True)
    timer.setInterval(ms)
    timer.timeout.connect(slot)
    return timer
