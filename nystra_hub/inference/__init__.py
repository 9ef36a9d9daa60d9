"""Running a loaded model on images: ``restore`` (official pre/post-processing, tiling, blending), ``precision``
(half precision that never returns a non-finite image), ``export`` (ONNX / OpenVINO graphs, cached) and
``backends`` (the runtimes that run them)."""
