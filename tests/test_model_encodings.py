"""The bundled model gives the same answer for the sample slide as Aperio SVS and as DICOM: the same
scan re-encoded, pixels ~3.6 grey levels apart on average with a slight colour shift. The model
before issue #10 was up to 0.57 apart (99th percentile 0.40, mean 0.038)."""

from __future__ import annotations

import pytest

from napari_metastasis.evaluation.stability import compare_encodings
from napari_metastasis.models import load_model


@pytest.mark.slow
def test_bundled_model_is_stable_across_svs_and_dicom(dicom_volume, svs_file):
    agreement = compare_encodings(load_model("default", device="cpu"), svs_file, dicom_volume)
    assert agreement.patches > 100  # the tissue of the sample slide (80 µm cells), in both
    # the goals of issue #10
    assert agreement.mean_abs_difference <= 0.03, agreement
    assert agreement.p99_abs_difference <= 0.15, agreement
