"""Camelyon16's official ``Evaluation_FROC.py``, re-done in Python 3 to run against our outputs.

Reference: computationalpathologygroup/Camelyon16, ``Evaluation_FROC.py`` (Babak Ehteshami
Bejnordi, 2016; commit f8587b4df82648ffd482a013b950f9e8c257f839), Python 2.7 as published. Only
the input plumbing differs: the script opens ``<slide>_Mask.tif`` with OpenSlide and reads its
level 5, a pyramid level written by ASAP with nearest-neighbour sampling (the level-0 pixel at each
block's top-left corner); here the level-0 mask comes in as an array (from
``asap_mask_recipe.annotation_to_mask``) and level ``level`` is ``mask[::2**level, ::2**level]``.
Python 2's ``/`` on ints is ``//`` here; everything else follows the script line by line, including
its fixed ``L0_RESOLUTION = 0.243`` and its ``case[0:5] == 'Tumor'`` test.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as nd
from skimage import measure

EVALUATION_MASK_LEVEL = 5
L0_RESOLUTION = 0.243


def level_points(shape: tuple[int, int], level: int) -> np.ndarray:
    """(rows*cols, 2) level-0 (x, y) of the top-left pixel of each level-``level`` pixel, row-major:
    the pixels ``mask0[::2**level, ::2**level]`` keeps."""
    rows, cols = shape
    yy, xx = np.mgrid[0:rows, 0:cols] * 2**level
    return np.column_stack([xx.ravel(), yy.ravel()]).astype(np.float64)


def compute_evaluation_mask(level_mask: np.ndarray, resolution: float, level: int) -> np.ndarray:
    """``computeEvaluationMask`` on the mask's level ``level`` (non-zero = tumour): dilate by
    75 µm (distance < 75 / (res * 2**level * 2)), fill holes, label 8-connected."""
    level_mask = np.asarray(level_mask) > 0
    pixels = np.where(level_mask, 255, 0)
    distance = nd.distance_transform_edt(255 - pixels)
    threshold = 75 / (resolution * pow(2, level) * 2)
    filled = nd.binary_fill_holes(distance < threshold)
    return measure.label(filled, connectivity=2)


def compute_itc_list(evaluation_mask: np.ndarray, resolution: float, level: int) -> list[int]:
    """``computeITCList``: labels whose major axis is under 275 µm, in level-``level`` pixels."""
    max_label = int(np.amax(evaluation_mask))
    properties = measure.regionprops(evaluation_mask)
    threshold = 275 / (resolution * pow(2, level))
    return [i + 1 for i in range(max_label) if properties[i].axis_major_length < threshold]


def read_csv_content(text: str) -> tuple[list[float], list[int], list[int]]:
    """``readCSVContent``: every line is ``float,int,int`` (no header allowed)."""
    probs, xs, ys = [], [], []
    for line in text.splitlines(keepends=True):
        elems = line.rstrip().split(",")
        probs.append(float(elems[0]))
        xs.append(int(elems[1]))
        ys.append(int(elems[2]))
    return probs, xs, ys


def compute_fp_tp_probs(ys, xs, probs, is_tumor, evaluation_mask, itc_labels, level):
    """``compute_FP_TP_Probs``: (FP probabilities, best probability per label, number of tumours).

    ``evaluation_mask[Y / 2**level, X / 2**level]`` raises IndexError for a point off the mask, as
    the script does.
    """
    max_label = int(np.amax(evaluation_mask)) if is_tumor else 0
    fp_probs: list[float] = []
    tp_probs = np.zeros((max_label,), dtype=np.float32)
    if is_tumor:
        for i in range(len(xs)):
            hit = evaluation_mask[ys[i] // pow(2, level), xs[i] // pow(2, level)]
            if hit == 0:
                fp_probs.append(probs[i])
            elif hit not in itc_labels and probs[i] > tp_probs[hit - 1]:
                tp_probs[hit - 1] = probs[i]
    else:
        fp_probs = list(probs)
    return fp_probs, tp_probs, max_label - len(itc_labels)


def compute_froc(fps, tps, n_tumours, n_images):
    """``computeFROC``: thresholds are the sorted distinct probabilities minus the lowest."""
    unlisted_fps = [p for sub in fps for p in sub]
    unlisted_tps = [p for sub in tps for p in sub]
    total_fps, total_tps = [], []
    all_probs = sorted(set(unlisted_fps + unlisted_tps))
    for thresh in all_probs[1:]:
        total_fps.append((np.asarray(unlisted_fps) >= thresh).sum())
        total_tps.append((np.asarray(unlisted_tps) >= thresh).sum())
    total_fps.append(0)
    total_tps.append(0)
    return np.asarray(total_fps) / float(n_images), np.asarray(total_tps) / float(sum(n_tumours))


def froc_score(total_fps: np.ndarray, total_sensitivity: np.ndarray) -> float:
    """The challenge's score: mean sensitivity at 1/4 ... 8 FPs per slide (the website's recipe)."""
    rates = (0.25, 0.5, 1, 2, 4, 8)
    return float(np.mean(np.interp(rates, total_fps[::-1], total_sensitivity[::-1])))
