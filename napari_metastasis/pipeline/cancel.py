"""Stopping a run from another thread: a token the GUI sets and every stage of a run checks."""

from __future__ import annotations

import threading


class CancelToken:
    """Set from any thread to stop a run at the next batch; compatible with ``threading.Event``."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    set = cancel  # so code written for threading.Event works

    def is_set(self) -> bool:
        return self._event.is_set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


Cancel = CancelToken | threading.Event | None


def is_cancelled(cancel: Cancel) -> bool:
    return cancel is not None and cancel.is_set()
