"""Getting models and images in and out: the loading layer, below inference and measurement.

``checkpoints`` reads released containers and safetensors strictly; ``detect`` says which architecture and
configuration a bare checkpoint is; ``variants`` is the catalogue of released variants; ``loading`` is
``nystra_hub.load``, the one path for files, hub folders, variants and repo ids; ``plan`` applies per-layer
Nyström plans; ``hub`` reads and writes hub folders, with their model cards (``cards``, figures from ``plots``);
``images`` decodes and atomically writes image files and converts a user's image (PIL, NumPy, tensor) to the float
[0, 1] batch the models take (``to_float_batch``, the one converter ``restore``, the image processor, ``eval`` and
the measurements share).
"""
