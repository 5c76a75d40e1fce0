#!/usr/bin/env bash
# GGUF speed table for the README: `qforge bench` beside llama.cpp's `llama-bench` on the same
# files (models/llama-27m as F32, Q8_0, Q4_0 and Q4_K_M GGUF, written by qforge: byte-identical
# to llama-quantize's), same thread counts, -p 512 -n 128, in one run: for every file and thread
# count the two tools run back to back, REPS times alternating, and the table keeps each tool's
# best mean (the machine is shared; the best run is the least disturbed one).
# Needs llama-bench built outside the repository:
#   LLAMA_BENCH=/path/to/llama-bench scripts/gguf_bench.sh [TYPE-REGEX]
#   env: TYPES="F32 Q8_0 Q4_0 Q4_K_M" (any --scheme of quantize, or F32), REPS=3, THREADS="1 NPROC",
#        QFORGE=/path/to/qforge (another build, e.g. an older one, instead of build/qforge)
set -euo pipefail
cd "$(dirname "$0")/.."
: "${LLAMA_BENCH:?set LLAMA_BENCH to a llama-bench binary (llama.cpp built outside the repository)}"
if [[ -z "${QFORGE:-}" ]]; then TARGETS=qforge bash scripts/setup.sh >/dev/null; fi
Q=${QFORGE:-build/qforge}
MODEL=models/llama-27m
FILTER=${1:-.}
TYPES=${TYPES:-F32 Q8_0 Q4_0 Q4_K_M}
REPS=${REPS:-3}
THREADS=${THREADS:-"1 $(nproc)"}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

for t in $TYPES; do
  grep -qE -- "$FILTER" <<< "$t" || continue
  if [[ $t == F32 ]]; then
    $Q convert $MODEL -o "$OUT/$t.gguf" --outtype f32 -q >/dev/null
  else
    $Q quantize $MODEL -o "$OUT/$t.gguf" --scheme $t -q >/dev/null
  fi
done

best() { sort -g | tail -1; }
echo "| file | threads | test | qforge t/s | llama.cpp t/s | qforge / llama.cpp | qforge decode bandwidth use |"
echo "|---|---|---|---|---|---|---|"
for t in $TYPES; do
  [[ -f "$OUT/$t.gguf" ]] || continue
  for th in $THREADS; do
    : > "$OUT/q_pp"; : > "$OUT/q_tg"; : > "$OUT/l_pp"; : > "$OUT/l_tg"; : > "$OUT/q_bw"
    for ((r = 0; r < REPS; ++r)); do
      j=$($Q bench "$OUT/$t.gguf" -p 512 -n 128 -t "$th" -q --json)
      jq .prefill_tokens_per_second <<< "$j" >> "$OUT/q_pp"
      jq .decode_tokens_per_second <<< "$j" >> "$OUT/q_tg"
      jq .decode_bandwidth_ratio <<< "$j" >> "$OUT/q_bw"
      l=$("$LLAMA_BENCH" -m "$OUT/$t.gguf" -p 512 -n 128 -t "$th" -o json 2>/dev/null)
      jq '.[] | select(.n_prompt > 0) | .avg_ts' <<< "$l" >> "$OUT/l_pp"
      jq '.[] | select(.n_gen > 0) | .avg_ts' <<< "$l" >> "$OUT/l_tg"
    done
    for test in pp tg; do
      qv=$(best < "$OUT/q_$test"); lv=$(best < "$OUT/l_$test")
      bw=""
      [[ $test == tg ]] && bw=$(awk -v b="$(best < "$OUT/q_bw")" 'BEGIN {printf "%.0f%%", 100 * b}')
      printf "| %s | %s | %s | %.1f | %.1f | %.2f | %s |\n" "$t" "$th" \
        "$([[ $test == pp ]] && echo pp512 || echo tg128)" "$qv" "$lv" \
        "$(awk -v a="$qv" -v b="$lv" 'BEGIN {print a / b}')" "$bw"
    done
  done
done
