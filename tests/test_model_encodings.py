"""The bundled model gives the same answer for the sample slide as Aperio SVS and as DICOM (the same
scan re-encoded: pixels a few grey levels apart), patch by patch."""

from __future__ import annotations

from conftest import DICOM_VOLUME, SVS

from napari_metastasis.evaluation.stability import compare_encodings
from napari_metastasis.models import load_model


def test_bundled_model_is_stable_across_svs_and_dicom():
    model = load_model("default", device="cpu")
    agreement = compare_encodings(model, SVS, DICOM_VOLUME)
    assert agreement.patches > 200  # the tissue of the sample slide, analysed in both
    assert agreement.mean_abs_difference <= 0.03, agreement
    assert agreement.p99_abs_difference <= 0.15, agreement
    assert agreement.regions_a == agreement.regions_b, agreement
