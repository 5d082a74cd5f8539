"""From patch sets to a model: balancing, augmentation, networks, the training loop, and the
export to the model contract with its card.

Patch sets themselves (ingest, labels, extraction) live in :mod:`napari_metastasis.datasets`. The
CLI ``train`` command and the bundled-model recipe (``scripts/train_bundled_model.py``) compose
these modules and share the final steps (:func:`.publish.publish_model`).
"""
