#!/usr/bin/env bash
# CI gate (no GPU needed): every kernel the launchers can name (the registry in
# src/device/kernels.rs) compiles with the runtime's own source assembly and flags:
#   AMD:    hipcc (ROCm) for gfx1030 (RDNA2, wave32); gfx90a (CDNA2, wave64) is compiled by the
#           precompiling build of scripts/check-rocm-build.sh
#   (the compilations run in parallel, one per core)
#   NVIDIA: NVRTC (PyPI nvidia-cuda-nvrtc-cu12) for sm_80 and sm_90
# Then the kernels and their launchers run on a CPU emulation of the GPU at wave size 32 and 64
# against the CPU reference ops (src/backend/gpu/emulator_tests.rs).
# Usage: scripts/check-kernels.sh [--nvrtc-only | --hipcc-only | --emulator-only]
set -euo pipefail
cd "$(dirname "$0")/.."

want_nvrtc=1 want_hipcc=1 want_emulator=1
case "${1:-}" in
  --nvrtc-only) want_hipcc=0 want_emulator=0 ;;
  --hipcc-only) want_nvrtc=0 want_emulator=0 ;;
  --emulator-only) want_nvrtc=0 want_hipcc=0 ;;
esac

args=()
if [ "$want_nvrtc" = 1 ]; then
  nvrtc_lib() {
    python3 - <<'PY'
import os, sys
for p in sys.path:
    d = os.path.join(p, "nvidia", "cuda_nvrtc", "lib")
    if os.path.isdir(d):
        print(d)
        break
PY
  }
  lib="$(nvrtc_lib)"
  if [ -z "$lib" ]; then
    python3 -m pip install -q "nvidia-cuda-nvrtc-cu12>=12.4"
    lib="$(nvrtc_lib)"
  fi
  [ -n "$lib" ] || { echo "NVRTC not found after installing nvidia-cuda-nvrtc-cu12" >&2; exit 1; }
  export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  args+=(nvrtc sm_80 sm_90)
fi
if [ "$want_hipcc" = 1 ]; then
  command -v hipcc >/dev/null || { echo "hipcc not found (apt-get install hipcc)" >&2; exit 1; }
  # gfx90a (CDNA2, wave64): every file is compiled for it, with the same flags, by the
  # precompiling build of scripts/check-rocm-build.sh, which fails if one does not compile.
  args+=(hipcc gfx1030)
fi
if [ ${#args[@]} -gt 0 ]; then
  cargo run -q --example check_kernels -- "${args[@]}" 2> >(grep -v -E 'rocm_agent_enumerator|readFromKFD|Traceback|File "|target_list|^\s+main\(\)$' >&2)
fi
if [ "$want_emulator" = 1 ]; then
  echo "kernels on the CPU emulation (wave 32 and 64) against the CPU reference:"
  cargo test --lib emulator -- --ignored 2>&1 | grep -E "^test |test result|panicked|relative error"
fi
