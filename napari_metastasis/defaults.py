"""Defaults and choices the command line shows in ``--help``, in a module that imports nothing.

Building the CLI parser must stay fast (no torch, scikit-image or pandas), so the values its help
texts show live here, and the modules that use them import them from here: one source for both.
"""

#: Patches per forward pass.
DEFAULT_BATCH_SIZE = 64
#: Patches with less tissue than this (fraction of their area) are not classified.
DEFAULT_TISSUE_MIN_FRACTION = 0.25
#: The model ``--model`` names when not given: the bundled one.
DEFAULT_MODEL = "default"
#: ``--device`` choices: ``auto`` is CUDA when present, else Apple's MPS, else the CPU.
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
#: Class-imbalance strategies of ``extract --balance`` and ``train --balance``.
BALANCE_STRATEGIES = ("none", "undersample", "oversample", "weights")
#: Annotation formats ``convert --to`` writes (keys of ``annotations.io.FORMAT_NAMES``).
ANNOTATION_FORMATS = ("asap", "csv", "geojson", "ncrf")
