"""CLI subcommands, one module each (see :mod:`napari_metastasis.cli`)."""
