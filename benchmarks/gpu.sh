#!/usr/bin/env bash
# The GPU measurement behind the model cards' GPU columns: benchmarks/gpu.sh OUT_DIR [--dry-run] [gpu_bench.py options]
#
# Runs on a bare GPU machine whose python3 already has torch (no network, no pip install of this package, so the
# machine's own torch and CUDA are kept): the checkout is put first on PYTHONPATH, and spandrel (the official
# code-path baseline) is installed from a wheel downloaded beforehand into .whl/ of the checkout:
#     pip download spandrel --no-deps -d .whl/
# Writes OUT_DIR/gpu-bench.json (schema nystra_hub.gpu_bench/1) and OUT_DIR/gpu-bench.log. About 8.5 minutes on an
# H200 with the default --budget-s, 300 (the 512² cases always run: the estimate is above cases_full() in
# nystra_hub/measure/gpu.py), so give it one device call of 10 minutes; --dry-run runs every code path on the CPU
# with tiny models in about a minute (CI runs it).
# The measurement is nystra_hub/measure/gpu.py (timing shared with nystra-hub bench: measure/timing.py);
# gpu_bench.py only reads the options.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: benchmarks/gpu.sh OUT_DIR [--dry-run] [gpu_bench.py options]}
shift
python=${PYTHON:-python3}
if ! "$python" -c "import spandrel" 2>/dev/null && compgen -G ".whl/spandrel-*.whl" >/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --target /tmp/nystra-bench-site .whl/spandrel-*.whl
    export PYTHONPATH=/tmp/nystra-bench-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$out"
{
    command -v nvidia-smi >/dev/null && nvidia-smi
    "$python" benchmarks/gpu_bench.py --out "$out" "$@"
} 2>&1 | tee "$out/gpu-bench.log"
