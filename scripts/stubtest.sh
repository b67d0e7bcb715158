#!/usr/bin/env bash
# The type stubs (python/rocmforge/*.pyi) agree with the installed package: every public name,
# signature and default. Needs rocmforge installed (pip install . or maturin develop).
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import mypy" 2>/dev/null || pip install -q mypy
allow=()
if [ -s scripts/stubtest-allowlist.txt ]; then allow=(--allowlist scripts/stubtest-allowlist.txt); fi
config="$PWD/scripts/stubtest-mypy.ini"
# Run outside the source tree so that the installed package (with its native module) is checked.
cd "$(mktemp -d)"
python -m mypy.stubtest rocmforge --mypy-config-file "$config" "${allow[@]}"
