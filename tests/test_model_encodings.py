"""The bundled model gives (nearly) the same answer for the sample slide as Aperio SVS and as DICOM:
the same scan re-encoded, pixels ~3.6 grey levels apart on average (and ~0.4 levels of colour
shift). The model before issue #10 was up to 0.57 apart (99th percentile 0.40)."""

from __future__ import annotations

import pytest
from conftest import DICOM_VOLUME, SVS

from napari_metastasis.evaluation.stability import EncodingAgreement, compare_encodings
from napari_metastasis.models import load_model


@pytest.fixture(scope="module")
def agreement() -> EncodingAgreement:
    return compare_encodings(load_model("default", device="cpu"), SVS, DICOM_VOLUME)


def test_bundled_model_is_stable_across_svs_and_dicom(agreement):
    assert agreement.patches > 200  # the tissue of the sample slide, analysed in both
    assert agreement.p99_abs_difference <= 0.15, agreement  # the goal of issue #10
    assert agreement.max_abs_difference <= 0.2, agreement
    assert agreement.mean_abs_difference <= 0.05, agreement


@pytest.mark.xfail(
    strict=True,
    reason="issue #10 goal not reached yet: the DICOM copy's slight colour shift moves every "
    "probability up by ~0.035 (a uniform logit shift of ~0.15)",
)
def test_mean_difference_meets_the_goal(agreement):
    assert agreement.mean_abs_difference <= 0.03, agreement
