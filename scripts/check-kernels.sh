#!/usr/bin/env bash
# CI gate (no GPU needed): every kernel the launchers can name (the registry in
# src/device/kernels.rs) compiles with the runtime's own source assembly and flags:
#   NVIDIA: NVRTC (PyPI nvidia-cuda-nvrtc-cu12) for sm_80 and sm_90
#   AMD:    hipcc (ROCm 5.2, Debian 12) for gfx1030 (RDNA2, wave32); gfx90a (CDNA2, wave64) is
#           compiled by the precompiling build of scripts/check-rocm-build.sh
#   AMD:    clang-19 in hipRTC's dialect (examples/check_kernels/clang.rs says how) for gfx1030,
#           gfx1100 (RDNA3), gfx1201 (RDNA4), gfx90a and gfx942 (CDNA3, wave64): the targets
#           hipcc 5.2 does not know, and the two it does, with hipRTC's header and options.
#           From these code objects it prints each kernel's registers, LDS, scratch, spills and
#           occupancy per target, and enforces the rule below; on the targets with matrix cores
#           (gfx1100, gfx1201: WMMA; gfx90a, gfx942: MFMA) it disassembles matmul.hip and
#           attention.hip and fails unless every matrix-core kernel (the tensor-core prefill
#           matmuls, flash_attn_mx_*) holds v_wmma / v_mfma instructions.
#   (each file once per target; the compilations of all targets run in one pool, one per
#   core, the largest files first; clang's code objects are cached between runs under
#   ~/.cache/rocmforge/check-kernels, keyed by everything that goes into them:
#   CHECK_KERNELS_CACHE names another folder, `off` turns it off)
# Then the kernels and their launchers run on a CPU emulation of the GPU at wave size 32 and 64
# against the CPU reference ops (src/backend/gpu/emulator_tests.rs).
#
# Usage: scripts/check-kernels.sh [--nvrtc-only | --hipcc-only | --clang-only | --emulator-only]
#                                 [--write-docs]
#   --write-docs: also write the clang resource table into docs/AMD.md (needs the clang step).
set -euo pipefail
cd "$(dirname "$0")/.."

# The clang targets.
CLANG_TARGETS=(gfx1030 gfx1100 gfx1201 gfx90a gfx942)
# The resource rule: on every clang target, no hot kernel that an AMD launcher can take spills
# (SGPRs into VGPR lanes, VGPRs) or uses scratch memory (a stack frame), or the gate fails. Hot
# kernels are those whose name starts with one of:
#   matvec    the decode matvecs (m = 1 projections, fused QKV + rope, fused gate/up + GLU)
#   matmul_   the prefill matmuls (the tensor-core tiles on matrix-core targets, the tiled ones
#             elsewhere)
#   attn_     decode attention
#   flash_    prefill (flash) attention and its combine; the tiles that need more than the
#             64 KiB of LDS an AMD workgroup has are never launched there, so not judged
#   rms_norm  the RMS norm
#   rope      rope, and rope with the KV-cache append
# Spills of other kernels are printed as warnings. Every spill is in the table.
HOT_KERNELS=matvec,matmul_,attn_,flash_,rms_norm,rope
# Hot kernels known to spill or use scratch on some targets (open work, docs/AMD.md), as
# PATTERN@TARGET+TARGET,... (`*` wildcards): the gate fails on any other, or on these
# elsewhere. None now: keep it empty unless a kernel must ship spilling, and say why here.
KNOWN_SPILLS=""

want_nvrtc=1 want_hipcc=1 want_clang=1 want_emulator=1 write_docs=0
for arg in "$@"; do
  case "$arg" in
    --nvrtc-only) want_hipcc=0 want_clang=0 want_emulator=0 ;;
    --hipcc-only) want_nvrtc=0 want_clang=0 want_emulator=0 ;;
    --clang-only) want_nvrtc=0 want_hipcc=0 want_emulator=0 ;;
    --emulator-only) want_nvrtc=0 want_hipcc=0 want_clang=0 ;;
    --write-docs) write_docs=1 ;;
    *) echo "unknown option $arg" >&2; exit 2 ;;
  esac
done
if [ "$write_docs" = 1 ] && [ "$want_clang" = 0 ]; then
  echo "--write-docs needs the clang step" >&2; exit 2
fi

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
if [ "$want_clang" = 1 ]; then
  # clang-19 compiles, lld-19 links the code objects, llvm-19 has llvm-readobj (metadata) and
  # llvm-as (the generated device library); hipRTC's header comes from libhiprtc-builtins5 (with libamdhip64-dev),
  # the device libraries from rocm-device-libs (with hipcc). CLANG names another clang.
  clang="${CLANG:-clang-19}"
  if ! command -v "$clang" >/dev/null || ! [ -x "$("$clang" --print-prog-name=ld.lld)" ] \
    || ! [ -x "$("$clang" --print-prog-name=llvm-readobj)" ]; then
    echo "$clang, its ld.lld or its llvm-readobj not found (apt-get install clang-19 lld-19" \
      "llvm-19)" >&2
    exit 1
  fi
  # The gate's own pieces (metadata and remark parsing, the hipRTC header reader) first.
  tests="$(cargo test -q --example check_kernels 2>&1)" || { echo "$tests" | tail -40; exit 1; }
  echo "$tests" | grep "test result"
  args+=(clang "${CLANG_TARGETS[@]}" --hot "$HOT_KERNELS" --known "$KNOWN_SPILLS")
  if [ "$write_docs" = 1 ]; then
    args+=(--docs docs/AMD.md)
  fi
fi
# A failed compile gate does not stop the emulator run: one failure hides no other.
status=0
if [ ${#args[@]} -gt 0 ]; then
  cargo run -q --example check_kernels -- "${args[@]}" \
    2> >(grep --line-buffered -v -E 'rocm_agent_enumerator|readFromKFD|Traceback|File "|target_list|^\s+main\(\)$' >&2) \
    || status=1
fi
if [ "$want_emulator" = 1 ]; then
  echo "kernels on the CPU emulation (wave 32 and 64) against the CPU reference:"
  cargo test --lib emulator -- --ignored 2>&1 | grep -E "^test |test result|panicked|relative error" \
    || status=1
fi
exit "$status"
