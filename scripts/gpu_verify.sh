#!/usr/bin/env bash
# One-call GPU verification on a lent GPU machine (see docs/gpu.md, "Verifying on a lent machine").
#
#   bash scripts/gpu_verify.sh [RESULTS_DIR]
#
# 1. If /tmp/ortgpu holds the onnxruntime-gpu wheel in parts (carried there one part per call, as
#    ../shared/gpu/README.md describes), joins and installs it into /tmp/site (nothing else changes).
# 2. Puts /tmp/site and this checkout on PYTHONPATH (no pip install of edgeseq needed).
# 3. Prints `edgeseq doctor`, runs the gpu-marked tests and bench/gpu_bench.py, and writes the logs and
#    bench/results/gpu-<device>.json into RESULTS_DIR (default: $OUT when set, else /tmp/gpu-verify).
# Exits non-zero when a GPU test fails; a benchmark that skips itself (CUDA unusable) says why.
set -uo pipefail
cd "$(dirname "$0")/.."
results=${1:-${OUT:-/tmp/gpu-verify}}
mkdir -p "$results"
py=${PYTHON:-python3}

if ! [ -d /tmp/site/onnxruntime ] && compgen -G "/tmp/ortgpu/part-*" >/dev/null; then
    wheel=/tmp/ortgpu/${ORT_GPU_WHEEL:-onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl}
    cat /tmp/ortgpu/part-* >"$wheel" &&
        "$py" -m pip install -q --no-index --no-deps --target /tmp/site "$wheel" ||
        { echo "gpu_verify: could not install $wheel from its parts (were all parts carried?)" >&2; exit 2; }
fi
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
    "$py" -c "import onnxruntime as o, torch; print('onnxruntime', o.__version__, o.get_available_providers()); print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
    "$py" -m edgeseq doctor
} 2>&1 | tee "$results/gpu-doctor.log"

"$py" -m pytest -q -m gpu tests/gpu -p no:cacheprovider -rs --junitxml="$results/gpu-tests.xml" 2>&1 |
    tee "$results/gpu-tests.log"
tests_rc=${PIPESTATUS[0]}

"$py" bench/gpu_bench.py --out "$results" 2>&1 | tee "$results/gpu-bench.log"
bench_rc=${PIPESTATUS[0]}

echo "gpu_verify: tests exit $tests_rc, benchmark exit $bench_rc; results in $results"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
