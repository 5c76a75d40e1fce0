#!/usr/bin/env bash
# GGUF table for the README: for each llama.cpp type, qforge's GPTQ k-quants file of
# models/llama-27m (and, with IMATRIX=1, the plain encoder with qforge's own imatrix), scored by
# llama.cpp's own llama-perplexity against the F32 conversion exactly as the anchors in
# ../shared/anchors/llamacpp_llama-27m.txt were (-c 512 --chunks 200, KLD vs F32 logits), and
# printed beside the anchors' "none" and "imat" rows (llama-quantize without / with an imatrix
# from the same calibration text). Without an imatrix qforge's tensors are llama-quantize's bytes
# (tests/ggml_blocks_test.cc), so the "none" row is the anchor.
# Needs llama-perplexity built outside the repository:
#   LLAMA_PERPLEXITY=/path/to/llama-perplexity scripts/gguf_table.sh [TYPE-REGEX]
# EXTRA="--method gptq --rotate hadamard;--method gptq+qat": after each type's GPTQ row, one row
# per ';'-separated set of quantize flags (calibrated as the GPTQ row).
# Calibration: 128 x 512 tokens of ../shared/data/calib.txt, seed 0 (the imatrix: 128 chunks of
# 512, as the anchors' llama-imatrix run).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${LLAMA_PERPLEXITY:?set LLAMA_PERPLEXITY to a llama-perplexity binary (llama.cpp built outside the repository)}"
if [[ -z "${QFORGE:-}" ]]; then TARGETS=qforge bash scripts/setup.sh >/dev/null; fi
Q=${QFORGE:-build/qforge}  # QFORGE: an already built binary
MODEL=models/llama-27m
TEXT=../shared/data/wikitext-2/wiki.test.raw
CALIB=../shared/data/calib.txt
ANCHORS=../shared/anchors/llamacpp_llama-27m.txt
FILTER=${1:-.}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
IFS=';' read -ra EXTRA_ROWS <<< "${EXTRA:-}"
TYPES=(Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_0 Q4_1 Q4_K_S Q4_K_M Q5_0 Q5_1 Q5_K_S Q5_K_M Q6_K Q8_0 IQ4_NL IQ4_XS)

$Q convert $MODEL -o "$OUT/f32.gguf" --outtype f32 -q >/dev/null
"$LLAMA_PERPLEXITY" -m "$OUT/f32.gguf" -f $TEXT -c 512 --chunks 200 -t 2 \
  --kl-divergence-base "$OUT/f32.kld" >/dev/null 2>&1
if [[ "${IMATRIX:-0}" == 1 ]]; then
  $Q imatrix $MODEL --calib $CALIB --chunks 128 --ctx 512 -o "$OUT/imatrix.gguf" -q >/dev/null
fi

# Prints "ppl kld top1%" of one file.
score() {
  local log
  log=$("$LLAMA_PERPLEXITY" -m "$1" -f $TEXT -c 512 --chunks 200 -t 2 \
    --kl-divergence-base "$OUT/f32.kld" --kl-divergence 2>&1)
  echo "$(grep -E '^Mean PPL\(Q\)' <<< "$log" | head -1 | awk '{print $4}')" \
    "$(grep -E '^Mean +KLD:' <<< "$log" | awk '{print $3}')" \
    "$(grep -E '^Same top p:' <<< "$log" | awk '{print $4}')"
}
anchor() {  # type imatrix(none|imat) -> "bytes ppl kld top1"
  awk -v t="$1" -v i="$2" '$1 == t && $2 == i {print $3, $6, $7, $9}' $ANCHORS
}

echo "| type | method | file bytes | bits/weight | PPL | mean KLD | top-1 | quantize s |"
echo "|---|---|---|---|---|---|---|---|"
for t in "${TYPES[@]}"; do
  grep -qE -- "$FILTER" <<< "$t" || continue
  for i in none imat; do
    read -r bytes ppl kld top <<< "$(anchor "$t" "$i")"
    [[ -n "${bytes:-}" ]] || continue
    printf "| %s | llama-quantize%s | %s | | %s | %s | %s%% | |\n" "$t" \
      "$([[ $i == imat ]] && echo " + imatrix")" "$bytes" "$ppl" "$kld" "$top"
  done
  if [[ "${IMATRIX:-0}" == 1 ]]; then
    j=$($Q quantize $MODEL -o "$OUT/x.gguf" --scheme "$t" --imatrix "$OUT/imatrix.gguf" --json -q)
    read -r ppl kld top <<< "$(score "$OUT/x.gguf")"
    printf "| %s | qforge + qforge imatrix | %s | %.3f | %s | %s | %s%% | %.1f |\n" "$t" \
      "$(stat -c %s "$OUT/x.gguf")" "$(jq .bits_per_weight <<< "$j")" "$ppl" "$kld" "$top" "$(jq .seconds <<< "$j")"
  fi
  j=$($Q quantize $MODEL -o "$OUT/x.gguf" --scheme "$t" --method gptq --calib $CALIB --json -q)
  read -r ppl kld top <<< "$(score "$OUT/x.gguf")"
  printf "| %s | **qforge GPTQ** | %s | %.3f | %s | %s | %s%% | %.1f |\n" "$t" \
    "$(stat -c %s "$OUT/x.gguf")" "$(jq .bits_per_weight <<< "$j")" "$ppl" "$kld" "$top" "$(jq .seconds <<< "$j")"
  for e in "${EXTRA_ROWS[@]}"; do
    j=$($Q quantize $MODEL -o "$OUT/x.gguf" --scheme "$t" --calib $CALIB $e --json -q)
    read -r ppl kld top <<< "$(score "$OUT/x.gguf")"
    printf "| %s | qforge \`%s\` | %s | %.3f | %s | %s | %s%% | %.1f |\n" "$t" "$e" \
      "$(stat -c %s "$OUT/x.gguf")" "$(jq .bits_per_weight <<< "$j")" "$ppl" "$kld" "$top" "$(jq .seconds <<< "$j")"
  done
done
