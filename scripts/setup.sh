#!/usr/bin/env bash
# Installs the Debian 12 packages qforge needs (only those missing), then configures and
# builds into build/ (all targets, or only $TARGETS, e.g. TARGETS=qforge). Safe to rerun; used
# by scripts/demo.sh, scripts/test.sh and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake pkg-config git
  nlohmann-json3-dev libsentencepiece-dev libpcre2-dev
  libhwy-dev libcli11-dev libfmt-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-14-dev jq
  # Open MPI: `mpirun -np N build/qforge quantize ...` (optional at build time; tests/mpi_test).
  libopenmpi-dev openmpi-bin
  # mpirun's default launcher (plm rsh) wants an ssh client even for ranks on this host.
  openssh-client
  # `qforge compare -o PREFIX` draws its plots with gnuplot (optional at run time).
  gnuplot-nox
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)" ${TARGETS:+--target $TARGETS}
