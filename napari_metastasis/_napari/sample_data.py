"""npe2 sample data: the CC0 OpenSlide test slide CMU-1-Small-Region, shipped in the package."""

from __future__ import annotations

from pathlib import Path

from napari_metastasis.slides.slide import Slide

SAMPLE_SLIDE = Path(__file__).parents[1] / "data" / "CMU-1-Small-Region.svs"


def cmu1_small_region() -> list[tuple]:
    """File > Open Sample > napari-metastasis > CMU-1-Small-Region."""
    from napari_metastasis._napari.slide_reader import slide_layer_data

    return [slide_layer_data(Slide(SAMPLE_SLIDE))]
