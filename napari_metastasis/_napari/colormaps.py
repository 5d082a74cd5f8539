"""The probability map's colours in napari: colormaps that fade in over the H&E, and outline colours
that stand out against both (the overlay, the legend, the dock's controls and the map reader share
them)."""

from __future__ import annotations

import numpy as np
from napari.utils.colormaps import Colormap

#: Blue (analysed, unlikely) through cyan and yellow to red (likely tumour).
METASTASIS_COLORS = Colormap(
    colors=np.array(
        [
            [0.15, 0.35, 1.00, 1.0],
            [0.10, 0.80, 0.90, 1.0],
            [1.00, 0.90, 0.10, 1.0],
            [1.00, 0.05, 0.05, 1.0],
        ]
    ),
    controls=np.array([0.0, 0.35, 0.6, 1.0]),
    name="metastasis-colors",
)

#: Colormaps offered in the widget (napari names, plus ours first).
COLORMAPS = ("metastasis", "inferno", "viridis", "turbo", "magma")

DEFAULT_OPACITY = 0.5
#: Probabilities below this are not drawn (0: every analysed patch is tinted, faintly).
DEFAULT_FLOOR = 0.0
#: Every colormap fades in: opacity FADE[0] at probability 0, rising linearly to 1 at FADE[1].
#: A negative area is a faint tint over readable H&E; a likely tumour is opaque colour.
FADE = (0.15, 0.6)
#: Samples of a faded colormap (napari interpolates linearly between them).
SAMPLES = 256

#: Contour colours to choose from, and colours of H&E they must also stand out against.
CONTOUR_CANDIDATES = ("#00ff66", "#00ffff", "#ff00ff", "#ffffff", "#ffff00", "#ff0000", "#0044ff")
HE_COLORS = np.array([[0.92, 0.60, 0.75], [0.45, 0.25, 0.60], [0.95, 0.93, 0.95]])


def base_colors(name: str, values: np.ndarray) -> np.ndarray:
    """(N, 4) RGBA of a colormap (ours or napari's) at ``values`` in [0, 1], opaque."""
    from napari.utils.colormaps import ensure_colormap

    cmap = METASTASIS_COLORS if name == "metastasis" else ensure_colormap(name)
    rgba = np.asarray(cmap.map(np.asarray(values, dtype=np.float64)), dtype=np.float64)
    rgba[:, 3] = 1.0
    return rgba


def fade_alpha(values: np.ndarray, floor: float = DEFAULT_FLOOR) -> np.ndarray:
    """Opacity of each probability: FADE[0] at 0 rising to 1 at FADE[1]; 0 below ``floor``."""
    low, full = FADE
    alpha = low + (1.0 - low) * np.clip(np.asarray(values, dtype=np.float64) / full, 0.0, 1.0)
    alpha[np.asarray(values) < floor] = 0.0
    return alpha


def colormap_for(name: str, floor: float = DEFAULT_FLOOR) -> Colormap:
    """The colormap ``name`` with its opacity fading in (and cut below ``floor``)."""
    values = np.linspace(0.0, 1.0, SAMPLES)
    if floor > 0:  # a sharp step at the floor, not a ramp between two samples
        values = np.unique(np.concatenate([values, [max(0.0, floor - 1e-6), floor]]))
    rgba = base_colors(name, values)
    rgba[:, 3] = fade_alpha(values, floor)
    return Colormap(
        colors=rgba,
        controls=values,
        name=f"{name} (fades in, floor {floor:.2f})",
        display_name=name,
    )


def contour_color(name: str, threshold: float = 0.5, exclude: tuple[str, ...] = ()) -> str:
    """The outline colour that stands out most against the colormap around and above the
    threshold (what lies on both sides of a contour) and against H&E (``exclude``: colours
    already used, e.g. the contours' own when choosing the highlight's)."""
    values = np.linspace(max(0.0, threshold - 0.2), 1.0, 32)
    backdrop = np.vstack([base_colors(name, values)[:, :3], HE_COLORS])
    best, best_distance = CONTOUR_CANDIDATES[0], -1.0
    for candidate in (c for c in CONTOUR_CANDIDATES if c not in exclude):
        rgb = np.array([int(candidate[i : i + 2], 16) / 255 for i in (1, 3, 5)])
        distance = float(np.min(np.linalg.norm(backdrop - rgb, axis=1)))
        if distance > best_distance + 1e-9:
            best, best_distance = candidate, distance
    return best


#: The comparison with a reference colours outlines cyan (hit), magenta (false positive) and white
#: (isolated tumour cells):
#: no other outline may take these colours, or magenta would mean two things on screen.
COMPARISON_COLORS = ("#00ffff", "#ff00ff", "#ffffff")


def outline_colors(name: str, threshold: float = 0.5) -> tuple[str, str]:
    """(contour colour, highlight colour) for a colormap: both stand out, and from each other,
    and neither is one of the comparison's colours (:data:`COMPARISON_COLORS`)."""
    contour = contour_color(name, threshold, exclude=COMPARISON_COLORS)
    highlight = contour_color(name, threshold, exclude=(contour, *COMPARISON_COLORS))
    return contour, highlight
