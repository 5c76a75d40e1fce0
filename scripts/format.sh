#!/usr/bin/env bash
# Formats qforge's C++ sources with the committed .clang-format (clang-format 14, Debian's
# clang-format package): `bash scripts/format.sh` rewrites them in place; `--check` changes
# nothing and lists the files that differ (exit 1 when any does). The generated Unicode table
# (src/text/unicode_nfc_data.cc, from unicode_nfc_gen.py) is left as generated.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "format.sh: clang-format not found (apt install clang-format)"; exit 2; }
mapfile -t files < <(git ls-files 'src/*.cc' 'src/*.h' 'tools/*.cc' 'tools/*.h' 'tests/*.cc' \
  'tests/*.h' 'bench/*.cc' 'fuzz/*.cc' 'fuzz/*.h' ':!src/text/unicode_nfc_data.cc')
if [[ "${1:-}" == --check ]]; then
  bad=0
  for f in "${files[@]}"; do
    if ! clang-format --style=file "$f" | cmp -s - "$f"; then echo "not formatted: $f"; bad=1; fi
  done
  exit $bad
fi
clang-format --style=file -i "${files[@]}"
echo "format.sh: formatted ${#files[@]} files"
