"""Errors a pathologist can read.

Library errors (OpenSlide, torch, XML parsers) are translated into these at the module boundary, so the
CLI and the viewer can show one clear sentence naming the file and the reason instead of a traceback.
"""

from __future__ import annotations


class MetastasisError(Exception):
    """Base class: its message is shown to the user as it is."""


class SlideError(MetastasisError):
    """A slide that cannot be opened or read."""


class UnsupportedSlideError(SlideError):
    """A file that is not a whole-slide image OpenSlide knows (another reader may try it)."""


class ResolutionError(SlideError):
    """A slide whose µm per pixel is missing or implausible where one is required."""


class ModelError(MetastasisError):
    """A model folder that is missing, malformed or does not match its config."""


class AnnotationError(MetastasisError):
    """An annotation file that cannot be parsed or holds invalid geometry."""


class DatasetError(MetastasisError):
    """A patch dataset (or slide/annotation pairing) that is missing, corrupt or inconsistent."""


class CancelledError(MetastasisError):
    """A long run stopped on the user's request; what finished is kept."""


class UnsafeModelError(ModelError):
    """A model whose code could do more than compute on tensors (read files, print, ...)."""


class UntrustedModelError(ModelError):
    """A model from outside the package that the user has not yet said they trust."""


class OutputError(MetastasisError, OSError):
    """Results that cannot be written: the message names the real target and the OS's reason.

    Also an OSError, so code that handled the file system's errors still does.
    """


class IncompleteSetError(MetastasisError):
    """Outputs that are not a whole set (no manifest, a file missing or changed, made from slides
    that changed since): nothing may be reported from them."""
