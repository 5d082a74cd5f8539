"""napari-metastasis: find breast-cancer metastases in lymph-node whole-slide images in napari."""

__version__ = "0.1.0"
