"""Measurement tools: speed (``nystra-hub bench``), quality (``fidelity``) and per-layer calibration
(``calibrate``). Reference-model training lives in :mod:`nystra_hub.training`, model cards and their figures in
:mod:`nystra_hub.io` next to the hub folders they are written into.

Imports run one way, down this list (and into the layers below: inference, io, models, attention):

- the measurements ``bench`` (CPU speed, :func:`bench.run_bench`), ``gpu`` (the GPU run of ``benchmarks/gpu.sh``),
  ``fidelity`` (quality), ``calibration`` (per-layer plans); their commands live in :mod:`nystra_hub.cli`;
- ``timing``: the one round loop (``run_rounds``: arms in rotated order, one timed call each per round, their
  outputs compared, the times summarised), shared by ``bench`` and ``gpu``;
- ``arms``: the model under test and the attention arms it is run with;
- ``references``: reading reference-model folders;
- ``data``: test images, degradations, tasks;
- ``metrics`` (PSNR/SSIM under the official protocols), ``environment`` (machine, git commit, command line):
  leaves.

This ``__init__`` imports none of them: importing one module costs only what that module needs.
"""
