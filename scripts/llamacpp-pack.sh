#!/usr/bin/env bash
# On a machine with network: llama.cpp's source as the llama-cpp-python sdist vendors it,
# trimmed to what a CUDA build of llama-bench needs, packed into one file to carry to a GPU
# machine for scripts/bench-llamacpp.sh.
#
#   scripts/llamacpp-pack.sh [OUT.tar.xz]   (default: dist/llamacpp.tar.xz; LLAMA_CPP_PYTHON
#                                            picks the sdist version, default 0.3.36)
# Needs pip, cmake and scikit-build-core (the sdist's metadata step runs cmake).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-dist/llamacpp.tar.xz}"
VERSION="${LLAMA_CPP_PYTHON:-0.3.36}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-deps --no-binary llama-cpp-python --no-build-isolation \
  "llama-cpp-python==$VERSION" -d "$tmp"
tar xzf "$tmp"/llama_cpp_python-"$VERSION".tar.gz -C "$tmp"
src="$tmp/llama_cpp_python-$VERSION/vendor"
mv "$src/llama.cpp" "$src/llamacpp"
# Docs, models, tests and examples are not built; of the ggml backends only the CPU and CUDA
# ones are. Of the server's web UI only what its build reads stays: llama-server builds with
# -DLLAMA_BUILD_SERVER=ON -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF, without a UI.
(cd "$src/llamacpp" && rm -rf docs models media tests examples &&
  find tools/ui -mindepth 1 -maxdepth 1 ! -name CMakeLists.txt ! -name '*.in' -exec rm -rf {} + &&
  find ggml/src -maxdepth 1 -type d -name 'ggml-*' ! -name ggml-cpu ! -name ggml-cuda -exec rm -rf {} +)
mkdir -p "$(dirname "$OUT")"
tar cJf "$OUT" -C "$src" llamacpp
echo "$OUT: $(du -h "$OUT" | cut -f1) (llama.cpp of llama-cpp-python $VERSION)"
