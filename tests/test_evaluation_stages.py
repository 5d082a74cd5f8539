"""Camelyon17's metric: quadratic-weighted kappa of pN stages and the slide confusion matrix."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_metastasis.cli import main
from napari_metastasis.evaluation.metrics import cohen_kappa

REFERENCE = """patient,stage
patient_000.zip,pN0
patient_000_node_0.tif,negative
patient_000_node_1.tif,negative
patient_001.zip,pN0(i+)
patient_001_node_0.tif,itc
patient_002.zip,pN1mi
patient_002_node_0.tif,micro
patient_003.zip,pN1
patient_003_node_0.tif,macro
patient_004.zip,pN2
patient_004_node_0.tif,macro
"""

# Wrong on patient_001 (pN0 for pN0(i+)) and patient_003 (pN2 for pN1), and on two slides.
WRONG = """patient,stage
patient_000.zip,pN0
patient_000_node_0.tif,negative
patient_000_node_1.tif,negative
patient_001.zip,pN0
patient_001_node_0.tif,negative
patient_002.zip,pN1mi
patient_002_node_0.tif,micro
patient_003.zip,pN2
patient_003_node_0.tif,micro
patient_004.zip,pN2
patient_004_node_0.tif,macro
"""


def test_kappa_by_hand():
    # Reference 0 1 2 3 4, predicted 0 0 2 4 4. Weights (i - j)² / 16.
    # Observed disagreement: two patients one stage off: 2/16.
    # Expected: row marginals all 1, column marginals (2, 0, 1, 0, 2), N = 5:
    #   sum_ij w_ij r_i c_j / N = (2·30 + 1·10 + 2·30) / 16 / 5 = 130/80.
    # kappa = 1 - (2/16) / (130/80) = 1 - 1/13 = 12/13.
    ref = np.array([0, 1, 2, 3, 4])
    pred = np.array([0, 0, 2, 4, 4])
    assert cohen_kappa(ref, pred, 5) == pytest.approx(12 / 13)
    assert cohen_kappa(ref, ref, 5) == 1.0
    # Unweighted: p_o = 3/5, p_e = (1·2 + 1·0 + 1·1 + 1·0 + 1·2)/25 = 1/5: (3/5 - 1/5)/(4/5) = 1/2.
    assert cohen_kappa(ref, pred, 5, weights=None) == pytest.approx(0.5)
    # Everyone pN0 on both sides: perfect agreement, not 0/0.
    assert cohen_kappa(np.zeros(4), np.zeros(4), 5) == 1.0
    # Completely reversed ratings of two classes: -1.
    assert cohen_kappa(np.array([0, 1]), np.array([1, 0]), 2) == pytest.approx(-1.0)


def test_evaluate_stages_against_itself_and_a_wrong_file(tmp_path, capsys):
    ref = tmp_path / "reference.csv"
    ref.write_text(REFERENCE)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text(WRONG)
    assert main(["evaluate", "--stages", str(ref), str(ref)]) == 0
    out = capsys.readouterr().out
    assert "quadratic-weighted kappa 1.0000" in out and "category accuracy 1.000" in out

    assert main(["evaluate", "--stages", str(ref), str(wrong), "--out", str(tmp_path / "e")]) == 0
    assert f"kappa {12 / 13:.4f}" in capsys.readouterr().out
    stages = json.loads((tmp_path / "e" / "metrics.json").read_text())["stages"]
    assert stages["kappa"] == pytest.approx(12 / 13)
    assert stages["stage_accuracy"] == pytest.approx(3 / 5)
    assert stages["slides"] == 6 and stages["slide_accuracy"] == pytest.approx(4 / 6)
    # Rows reference, columns predicted: negative, itc, micro, macro.
    assert stages["slide_confusion"] == [[2, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]
    assert stages["stage_confusion"][1] == [1, 0, 0, 0, 0]


def test_evaluate_stages_errors_are_one_line(tmp_path, capsys):
    ref = tmp_path / "reference.csv"
    ref.write_text(REFERENCE)
    partial = tmp_path / "partial.csv"
    partial.write_text("patient,stage\npatient_000.zip,pN0\n")
    assert main(["evaluate", "--stages", str(ref), str(partial)]) == 1
    err = capsys.readouterr().err
    assert "no stage for 4 reference patient(s): patient_001" in err and "Traceback" not in err
    bad = tmp_path / "bad.csv"
    bad.write_text("patient,stage\npatient_000.zip,stage 2\n")
    assert main(["evaluate", "--stages", str(ref), str(bad)]) == 1
    assert "bad.csv, line 2: unknown pN stage 'stage 2'" in capsys.readouterr().err
    assert main(["evaluate", "--stages", str(ref), str(tmp_path / "nope.csv")]) == 1
    assert "nope.csv: cannot read the stages file" in capsys.readouterr().err
