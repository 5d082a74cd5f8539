"""Callbacks of background work that outlive the widget that started them.

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
