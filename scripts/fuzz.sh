#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan, library instrumented too) and runs one.
# Contract: exits non-zero when the build fails or the fuzzer finds a crash/leak/timeout.
#
# Usage: scripts/fuzz.sh [seconds=60] [target=safetensors_fuzz|gguf_fuzz] [-libfuzzer_flag=value ...]
# Env:   BUILD_DIR (default build-fuzz), ARTIFACTS (default $BUILD_DIR/artifacts/<target>),
#        JOBS (parallel fuzzing workers, default 1), CXX (default clang++).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds=60
target=safetensors_fuzz
extra_flags=()
positional=0
for arg in "$@"; do
  if [[ "$arg" == -* ]]; then
    extra_flags+=("$arg")
  elif ((positional == 0)) && [[ "$arg" =~ ^[0-9]+$ ]]; then
    seconds="$arg"; positional=1
  else
    target="$arg"; positional=2
  fi
done

build="${BUILD_DIR:-$repo/build-fuzz}"
artifacts="${ARTIFACTS:-$build/artifacts/$target}"
work_corpus="$build/corpus/$target"  # grows during runs; the seeds in fuzz/corpus stay untouched
seeds="$repo/fuzz/corpus"
# A target with its own seed folder (fuzz/corpus/gguf) uses it; safetensors' seeds lie at the top.
[[ -d "$seeds/${target%_fuzz}" ]] && seeds="$seeds/${target%_fuzz}"
jobs="${JOBS:-1}"
sanitize="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined"

mkdir -p "$build"
cmake -S "$repo" -B "$build" \
  -DCMAKE_CXX_COMPILER="${CXX:-clang++}" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS="$sanitize -fno-omit-frame-pointer" \
  -DQF_FUZZ=ON -DQF_BUILD_TESTS=OFF -DQF_BUILD_BENCH=OFF >"$build/configure.log" 2>&1 \
  || { cat "$build/configure.log"; echo "fuzz.sh: configure failed" >&2; exit 2; }
cmake --build "$build" -j"$(nproc)" --target "$target"

mkdir -p "$artifacts" "$work_corpus"
dict=()
[[ -f "$repo/fuzz/${target%_fuzz}.dict" ]] && dict=(-dict="$repo/fuzz/${target%_fuzz}.dict")

echo "fuzz.sh: running $target for ${seconds}s; artifacts in $artifacts"
status=0
# -jobs > 1 forks workers that each log to fuzz-N.log in the current folder.
(cd "$build" && UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  "$build/$target" "$work_corpus" "$seeds" "${dict[@]}" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -max_len=65536 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 \
    $( ((jobs > 1)) && echo "-jobs=$jobs -workers=$jobs" ) "${extra_flags[@]}") || status=$?

found=$(find "$artifacts" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' \
  -o -name 'oom-*' \) | wc -l)
if ((status != 0 || found > 0)); then
  echo "fuzz.sh: FAILED (exit $status, $found artifact(s) in $artifacts)" >&2
  exit 1
fi
echo "fuzz.sh: no crashes in ${seconds}s"
