#!/usr/bin/env bash
# Runs a command under one OpenBLAS kernel family: with_coretype.sh CORE COMMAND [ARGS...].
# CORE is an OPENBLAS_CORETYPE value (Haswell, SkylakeX, Zen, ...) or "unset" (OpenBLAS picks
# by CPU detection). Exits 77 (ctest: skipped) when this CPU cannot run that family.
set -euo pipefail
core="$1"; shift
if [[ "$core" == unset ]]; then
  exec env -u OPENBLAS_CORETYPE "$@"
fi
flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
need=""
case "$core" in
  SkylakeX|Cooperlake|SapphireRapids) need=avx512f ;;
  Haswell|Zen) need=avx2 ;;
esac
if [[ -n "$need" && " $flags " != *" $need "* ]]; then
  echo "skipped: this CPU has no $need, needed by OpenBLAS core type $core"
  exit 77
fi
exec env OPENBLAS_CORETYPE="$core" "$@"
