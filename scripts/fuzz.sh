#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan, library instrumented too) and runs one
# or all of them (fuzz/harness.cc has one harness per parser of untrusted input).
# Contract: exits non-zero when the build fails or a fuzzer finds a crash/leak/timeout/OOM or a
# contract violation; prints one summary line per target (executions, corpus, findings), which
# is also appended to $BUILD_DIR/fuzz-summary.tsv.
#
# Usage: scripts/fuzz.sh [seconds=60] [target|all=safetensors] [-libfuzzer_flag=value ...]
#   targets: safetensors gguf config checkpoint tokenizer_json sentencepiece imatrix base_logits
#   (a trailing _fuzz is accepted), several as a,b,c; `all` runs each for the given seconds,
#   one after another.
# Env:   BUILD_DIR (default build-fuzz), ARTIFACTS (default $BUILD_DIR/artifacts/<target>),
#        JOBS (parallel fuzzing workers, default 1), CXX (default clang++).
# A crasher goes to tests/data/fuzz_regressions/<target>/ once fixed; fuzz_replay_test replays it.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
all_targets=(safetensors gguf config checkpoint tokenizer_json sentencepiece imatrix base_logits)
seconds=60
target=safetensors
extra_flags=()
positional=0
for arg in "$@"; do
  if [[ "$arg" == -* ]]; then
    extra_flags+=("$arg")
  elif ((positional == 0)) && [[ "$arg" =~ ^[0-9]+$ ]]; then
    seconds="$arg"; positional=1
  else
    target="${arg%_fuzz}"; positional=2
  fi
done
if [[ "$target" == all ]]; then
  targets=("${all_targets[@]}")
else
  IFS=, read -ra targets <<<"$target"
  for t in "${targets[@]}"; do
    if [[ " ${all_targets[*]} " != *" ${t%_fuzz} "* ]]; then
      echo "fuzz.sh: unknown target '$t' (one of: ${all_targets[*]}, all)" >&2
      exit 2
    fi
  done
  targets=("${targets[@]%_fuzz}")
fi

build="${BUILD_DIR:-$repo/build-fuzz}"
jobs="${JOBS:-1}"
sanitize="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined"

mkdir -p "$build"
cmake -S "$repo" -B "$build" \
  -DCMAKE_CXX_COMPILER="${CXX:-clang++}" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS="$sanitize -fno-omit-frame-pointer" \
  -DQF_FUZZ=ON -DQF_BUILD_TESTS=OFF -DQF_BUILD_BENCH=OFF >"$build/configure.log" 2>&1 \
  || { cat "$build/configure.log"; echo "fuzz.sh: configure failed" >&2; exit 2; }
cmake --build "$build" -j"$(nproc)" --target "${targets[@]/%/_fuzz}"

failed=0
for t in "${targets[@]}"; do
  artifacts="${ARTIFACTS:-$build/artifacts/$t}"
  work_corpus="$build/corpus/$t"  # grows during runs; the seeds in fuzz/corpus stay untouched
  mkdir -p "$artifacts" "$work_corpus"
  dict=()
  [[ -f "$repo/fuzz/$t.dict" ]] && dict=(-dict="$repo/fuzz/$t.dict")
  log="$build/$t.log"
  echo "fuzz.sh: running ${t}_fuzz for ${seconds}s; artifacts in $artifacts, log $log"
  status=0
  start=$SECONDS
  # -jobs > 1 forks workers that each log to fuzz-N.log in the current folder.
  (cd "$build" && UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ASAN_OPTIONS=detect_leaks=1 \
    "$build/${t}_fuzz" "$work_corpus" "$repo/fuzz/corpus/$t" "${dict[@]}" \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -max_len=65536 \
      -artifact_prefix="$artifacts/" -print_final_stats=1 \
      $( ((jobs > 1)) && echo "-jobs=$jobs -workers=$jobs" ) "${extra_flags[@]}") >"$log" 2>&1 \
    || status=$?
  found=$(find "$artifacts" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' \
    -o -name 'oom-*' \) | wc -l)
  execs=$(grep -ao 'stat::number_of_executed_units: *[0-9]*' "$log" | awk '{s += $2} END {print s + 0}')
  corpus=$(find "$work_corpus" -type f | wc -l)
  line="$(date -u +%F)	$t	$((SECONDS - start))s	$execs executions	corpus $corpus	findings $found	exit $status"
  echo "$line" | tee -a "$build/fuzz-summary.tsv"
  if ((status != 0 || found > 0)); then
    grep -m 3 -E 'ERROR|contract violated|runtime error' "$log" >&2 || true
    echo "fuzz.sh: $t FAILED (exit $status, $found artifact(s) in $artifacts)" >&2
    failed=1
  fi
done
exit $failed
