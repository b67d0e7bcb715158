#!/usr/bin/env bash
# On an NVIDIA GPU machine with no ROCm: run rocmforge's `rocm` build, with src/device/hip.rs
# doing every allocation, copy, stream, event, graph, module load and launch, on the HIP test
# shim (tools/hip-shim: HIP + hipRTC on the CUDA driver API and NVRTC). A test of hip.rs's
# logic, not of AMD hardware or of AMD's runtime. See docs/AMD.md, "The HIP runtime through
# a test shim".
#
#   scripts/hip-shim-gpu.sh [DIR] [ops|all|TEST...]  (DIR: what scripts/hip-shim-build.sh
#                                               built, default dist/hip-shim; default: ops)
#     ops      the op tables and GPU tests on device="gpu" (as scripts/gpu-check.sh ops)
#     all      the whole of tests_py with ROCMFORGE_TEST_DEVICES=gpu
#     TEST...  these test files (or node ids) only
# Then a greedy generation on the rocm build (hip via the shim) against the cuda build, same
# model, same GPU: MODEL=path.gguf, else the default model if cached (ROCMFORGE_MODEL, ~/.cache).
# Needs python3 with numpy and pytest (and gguf for some tests), libcuda, and libnvrtc (CUDA
# toolkit, or PyPI nvidia-cuda-nvrtc-cu12). Logs go to $LOGS (default hip-shim-logs/);
# SLICE_TIMEOUT (seconds) stops the pytest run that runs longer.
set -uo pipefail
cd "$(dirname "$0")/.."
DIR="$(realpath "${1:-dist/hip-shim}")"
SLICE="${2:-ops}"
shift $(( $# < 2 ? $# : 2 ))
EXTRA=("$@")  # more test files after a first one given as the slice
PY="${PYTHON:-python3}"
LOGS="${LOGS:-hip-shim-logs}"
mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1
[ -e "$DIR/lib/libamdhip64.so.5" ] || { echo "no shim under $DIR/lib (scripts/hip-shim-build.sh)" >&2; exit 2; }

# The two builds, unpacked (no pip install: nothing to fetch, nothing left behind).
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
$PY -m zipfile -e "$(ls "$DIR"/rocm/rocmforge-*.whl)" "$site/rocm"
$PY -m zipfile -e "$(ls "$DIR"/cuda/rocmforge-*.whl)" "$site/cuda"
# The extension's own kernel cache, apart from any other build's.
export ROCMFORGE_KERNEL_CACHE="$site/kernels"

# NVRTC for the shim's hipRTC (rocmforge's CUDA backend finds it the same way).
nvrtc=$($PY -c "import nvidia.cuda_nvrtc, os; print(os.path.join(list(nvidia.cuda_nvrtc.__path__)[0], 'lib'))" 2>/dev/null || true)
SHIM_PATH="$DIR/lib${nvrtc:+:$nvrtc}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
rocm() { LD_LIBRARY_PATH="$SHIM_PATH" PYTHONPATH="$site/rocm:tests_py:tools" "$@"; }
cuda() { LD_LIBRARY_PATH="${nvrtc}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" PYTHONPATH="$site/cuda:tests_py:tools" "$@"; }

echo "== devices (rocm build, shim first on LD_LIBRARY_PATH)"
rocm $PY - <<'PY' | tee "$LOGS/devices.txt" || exit 1
import rocmforge as rf
ds = rf.devices()
for d in ds:
    print("device:", d)
gpu = [d for d in ds if d["device"].startswith("gpu")]
# Slot order: HIP devices first, so device="gpu" is the shim's device 0.
assert gpu, "no GPU found (is libcuda there? see the device list above)"
assert gpu[0]["backend"] == "hip", "device gpu:0 is not the HIP runtime: the shim was not loaded"
assert gpu[0]["arch"].startswith("sm_") and gpu[0]["warp_size"] == 32, gpu[0]
print("gpu:0 is hip on the shim:", gpu[0]["name"], gpu[0]["arch"])
PY

status=0
export ROCMFORGE_TEST_DEVICES=gpu
case "$SLICE" in
  ops) tests="$(ls tests_py/test_ops_*.py tests_py/test_gpu_*.py | tr '\n' ' ')" ;;
  all) tests=tests_py ;;
  *) [ -e "${SLICE%%::*}" ] || { echo "unknown slice $SLICE" >&2; exit 2; }
     tests="$SLICE ${EXTRA[*]}"; SLICE=files ;;
esac
echo "== pytest ($SLICE) on the rocm build through the shim"
# shellcheck disable=SC2086
rocm timeout "${SLICE_TIMEOUT:-0}" $PY -m pytest $tests -q -rfEs -p no:cacheprovider \
  >"$LOGS/pytest-$SLICE.log" 2>&1 || status=1
tail -3 "$LOGS/pytest-$SLICE.log"
grep -h "^FAILED\|^ERROR" "$LOGS/pytest-$SLICE.log" | head -30

echo "== greedy generation: rocm build (hip via the shim) vs cuda build"
gen=$(cat <<'PY'
import json, os, sys
import numpy as np
import rocmforge as rf
from rocmforge._models import default_model_path
path = os.environ.get("MODEL")
if not path:
    try:
        path = str(default_model_path(fetch=False))
    except Exception as e:
        print(json.dumps({"skip": f"no model: set MODEL ({e})"})); sys.exit(0)
backend = next(d["backend"] for d in rf.devices() if d["device"] == "gpu:0")
with rf.Model(path, device="gpu") as m:
    ids = m.tokenize("The capital of France is") if hasattr(m, "tokenize") else [1, 2, 3, 4]
    toks = m.generate_tokens(ids, max_tokens=48, temperature=0.0)
    logits = m.logits(ids)
np.save(sys.argv[1], logits)
print(json.dumps({"backend": backend, "model": path, "prompt": list(map(int, ids)), "tokens": toks}))
PY
)
r=$(rocm $PY -c "$gen" "$site/rocm-logits.npy" 2>"$LOGS/gen-rocm.err" | tail -1)
c=$(cuda $PY -c "$gen" "$site/cuda-logits.npy" 2>"$LOGS/gen-cuda.err" | tail -1)
echo "rocm: $r" | tee "$LOGS/gen.txt"
echo "cuda: $c" | tee -a "$LOGS/gen.txt"
$PY - "$r" "$c" "$site" <<'PY' || status=1
import json, sys, numpy as np
r, c = (json.loads(x) if x else {"error": "no output (see the .err logs)"} for x in sys.argv[1:3])
if "skip" in r or "skip" in c:
    print("generation comparison skipped:", r.get("skip") or c.get("skip")); sys.exit(0)
if "error" in r or "error" in c:
    print("generation failed:", r, c); sys.exit(1)
assert r["backend"] == "hip" and c["backend"] == "cuda", (r["backend"], c["backend"])
a, b = np.load(f"{sys.argv[3]}/rocm-logits.npy"), np.load(f"{sys.argv[3]}/cuda-logits.npy")
same = r["tokens"] == c["tokens"]
print(f"greedy tokens {'identical' if same else 'DIFFER'} ({len(r['tokens'])} tokens); "
      f"prompt logits max |diff| {float(np.abs(a - b).max()):.3g}")
sys.exit(0 if same else 1)
PY
echo "== hip-shim-gpu: $([ $status = 0 ] && echo OK || echo FAILED) (logs in $LOGS)"
exit $status
