#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite (ctest prints the closing summary).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cd "${BUILD_DIR:-build}"
ctest --output-on-failure -j"$(nproc)" --timeout 900
