"""Qt widgets for napari: the metastasis detection dock widget and its parts."""
