#!/usr/bin/env bash
# CI gate (no GPU needed): the `rocm` feature builds and links against the system's ROCm:
# hip-runtime-sys generates its bindings with bindgen from the installed HIP headers
# (HIP_PATH, /usr on Debian: apt-get install hipcc libamdhip64-dev libclang-dev), and build.rs
# precompiles AMD code objects for ROCMFORGE_GPU_TARGETS. The HIP runtime itself is not run
# here: there is no AMD GPU in CI (the kernels' AMD compile is checked by check-kernels.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export HIP_PATH="${HIP_PATH:-/usr}"
[ -e "$HIP_PATH/include/hip/hip_runtime_api.h" ] || { echo "no HIP headers under HIP_PATH=$HIP_PATH" >&2; exit 1; }
ROCMFORGE_GPU_TARGETS="${ROCMFORGE_GPU_TARGETS:-gfx90a}" cargo build --features rocm 2>&1 \
  | grep -v -E 'rocm_agent_enumerator|readFromKFD|Traceback|File "|target_list|^\s+main\(\)$' | tail -5
echo "rocm build OK (HIP_PATH=$HIP_PATH, precompiled for ${ROCMFORGE_GPU_TARGETS:-gfx90a})"
