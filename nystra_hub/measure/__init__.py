"""Measurement tools: speed (``nystra-hub bench``), quality (``fidelity``), per-layer calibration (``calibrate``),
reference-model training (``train-reference``) and model cards rendered from their JSON (``cards``).

Imports run one way, down this list (and into the core package: models, attention, plan, variants, checkpoints,
imageio; calibration and training also use hub):

- the commands ``bench``, ``fidelity``, ``calibration``, ``training`` (each ``add_arguments``/``run``), and
  ``cards``, which needs only ``plots`` so that ``hub`` can import it;
- ``arms``: the model under test and the attention arms it is run with;
- ``references``: reading reference-model folders;
- ``data``: test images, degradations, tasks;
- ``metrics`` (PSNR/SSIM under the official protocols), ``plots``, ``environment`` (machine, git commit,
  command line): leaves.

This ``__init__`` imports none of them: importing one module costs only what that module needs.
"""
