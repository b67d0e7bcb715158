#!/usr/bin/env bash
# Build, on a machine with the ROCm headers (Debian 12: HIP_PATH=/usr, libamdhip64-dev,
# libclang-dev), everything scripts/hip-shim-gpu.sh needs on an NVIDIA GPU machine, into one
# folder to carry there (default: dist/hip-shim):
#   lib/libamdhip64.so.5   the test shim (tools/hip-shim: HIP + hipRTC on the CUDA driver API and
#                          NVRTC), SONAME libamdhip64.so.5, with libamdhip64.so and libhiprtc.so
#                          links to it
#   rocm/rocmforge-*.whl   the `rocm` build (no precompiled AMD code objects: hipRTC compiles),
#                          not repaired by auditwheel: it must find libamdhip64 at run time
#   cuda/rocmforge-*.whl   the ordinary build, for the greedy-generation comparison
# Checks that the rocm build needs exactly the shim's SONAME and that the shim exports every
# hip* symbol the rocm build imports. --compile-check also compiles every kernel file through
# the shim's hipRTC for sm_90 (needs libnvrtc, e.g. PyPI nvidia-cuda-nvrtc-cu12; no GPU).
# A test fixture: the shim is never part of the wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-dist/hip-shim}"
compile_check=0
[ "${2:-}" = "--compile-check" ] || [ "${1:-}" = "--compile-check" ] && compile_check=1
[ "$OUT" = "--compile-check" ] && OUT=dist/hip-shim
export HIP_PATH="${HIP_PATH:-/usr}"
unset ROCMFORGE_GPU_TARGETS  # no precompiled gfx code objects: every kernel goes through hipRTC
rm -rf "$OUT" && mkdir -p "$OUT/lib" "$OUT/rocm" "$OUT/cuda"

echo "== shim (tools/hip-shim)"
(cd tools/hip-shim && cargo build --release -q)
cp tools/hip-shim/target/release/libamdhip64_shim.so "$OUT/lib/libamdhip64.so.5"
ln -s libamdhip64.so.5 "$OUT/lib/libamdhip64.so"
ln -s libamdhip64.so.5 "$OUT/lib/libhiprtc.so"

echo "== rocm wheel"
# --features replaces pyproject's list, so it is repeated here.
maturin build --release -q --features python,pyo3/extension-module,rocm --auditwheel skip \
  -o "$OUT/rocm" 2>&1 | grep -E "Built wheel|error|warning: unused" || true
echo "== cuda wheel"
maturin build --release -q -o "$OUT/cuda" 2>&1 | grep -E "Built wheel|error" || true
rocm_whl=$(ls "$OUT"/rocm/rocmforge-*.whl) && cuda_whl=$(ls "$OUT"/cuda/rocmforge-*.whl)

echo "== link check"
tmp=$(mktemp -d)
python3 -m zipfile -e "$rocm_whl" "$tmp"
ext=$(ls "$tmp"/rocmforge/_rocmforge*.so)
soname=$(readelf -d "$OUT/lib/libamdhip64.so.5" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
needed=$(readelf -d "$ext" | sed -n 's/.*NEEDED.*\[\(libamdhip64[^]]*\)\]/\1/p')
echo "rocm build needs $needed; the shim is $soname"
[ "$needed" = "$soname" ] || { echo "SONAME mismatch: rebuild the shim with SHIM_SONAME=$needed" >&2; exit 1; }
nm -D --undefined-only "$ext" | awk '{print $2}' | grep '^hip' | sed 's/@.*//' | sort -u >"$tmp/need"
nm -D --defined-only "$OUT/lib/libamdhip64.so.5" | awk '{print $3}' | grep '^hip' | sort -u >"$tmp/have"
missing=$(comm -23 "$tmp/need" "$tmp/have")
[ -z "$missing" ] || { echo "the shim lacks: $missing" >&2; exit 1; }
echo "the shim exports all $(wc -l <"$tmp/need") hip* functions the rocm build imports"
grep -o '"hiprtc[A-Za-z]*"' src/device/hip.rs | tr -d '"' | sort -u | while read -r f; do
  grep -qx "$f" "$tmp/have" || { echo "the shim lacks $f (hip.rs loads it)" >&2; exit 1; }
done
echo "and the hipRTC functions hip.rs loads"

# Loading path, no GPU needed: with the shim first on the path and no libcuda here, the rocm
# build must load and report no GPU (a clean error, no crash).
if ! ldconfig -p | grep -q "libcuda.so"; then
  python3 -m zipfile -e "$rocm_whl" "$tmp/site"
  PY="${PYTHON:-python3}"  # one with numpy
  if ! $PY -c "import numpy" 2>/dev/null; then
    echo "loading check skipped: $PY has no numpy (set PYTHON)"
  else
    LD_LIBRARY_PATH="$OUT/lib" PYTHONPATH="$tmp/site" $PY - <<'PY'
import rocmforge as rf, numpy as np
print("devices under the shim, no libcuda:", rf.devices())
try:
    rf.ops.softmax(np.ones((2, 4), np.float32), device="gpu")
    raise SystemExit("a GPU op ran with no GPU")
except rf.DeviceError as e:
    print("device='gpu':", e)
PY
  fi
fi

if [ "$compile_check" = 1 ]; then
  echo "== hipRTC through the shim: every kernel file for sm_90"
  inst=$(ls -t target/release/build/rocmforge-*/out/matvec_instances.h | head -1)
  nvrtc=$(python3 -c "import nvidia.cuda_nvrtc, os; print(os.path.join(list(nvidia.cuda_nvrtc.__path__)[0], 'lib'))" 2>/dev/null || true)
  LD_LIBRARY_PATH="${nvrtc}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    python3 tools/hip-shim/scripts/compile_check.py "$OUT/lib/libamdhip64.so.5" kernels "$inst" sm_90
fi
rm -rf "$tmp"
echo "== carry $OUT to the GPU machine, then: scripts/hip-shim-gpu.sh $OUT"
ls -la "$OUT"/*
