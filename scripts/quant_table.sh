#!/usr/bin/env bash
# Quantization table for the README: for each scheme, quantize models/llama-27m, then measure
# WikiText-2 perplexity (ctx 512, whole file) and KL divergence / top-1 agreement against the
# fp model. Prints one markdown table. Usage: scripts/quant_table.sh [WINDOWS=0 (all)]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
Q=build/qforge
MODEL=models/llama-27m
TEXT=../shared/data/wikitext-2/wiki.test.raw
WINDOWS=${1:-0}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

# scheme|method|extra flags|GPTQ-reference RTN figure (anchors/peer_gptq_llama-27m.json)
ROWS=(
  "int8-channel-sym|rtn||140.8578"
  "int4-channel-asym|rtn||146.5077"
  "int4-g128-asym|rtn||144.2149"
  "int4-g128-sym|rtn||146.04"
  "int3-channel-asym|rtn||154.68"
  "int3-g128-asym|rtn||154.93"
  "int2-g64-asym|rtn||214.54"
  "int4-g128-sym|rtn|--clip|"
  "fp8-e4m3-tensor|rtn||"
  "fp8-e4m3-channel|rtn||"
)

base=$($Q ppl $MODEL --text $TEXT --ctx 512 --max-windows "$WINDOWS" --json -q | jq .ppl)
echo "fp32 baseline: PPL $base"
echo
echo "| scheme | method | bits/weight | file MiB | PPL | ΔPPL | reference RTN | mean KLD | top-1 | quantize s | peak RSS MiB |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for row in "${ROWS[@]}"; do
  IFS='|' read -r scheme method flags ref <<< "$row"
  dir="$OUT/$scheme-$method"
  qj=$($Q quantize $MODEL -o "$dir" --scheme "$scheme" --method "$method" $flags --json -q 2>/dev/null)
  kj=$($Q kld $MODEL "$dir" --text $TEXT --ctx 512 --max-windows "$WINDOWS" --json -q)
  ppl=$(jq .other_ppl.ppl <<< "$kj")
  printf "| %s | %s%s | %.3f | %.2f | %.3f | %+.3f | %s | %.5f | %.2f%% | %.2f | %.0f |\n" \
    "$scheme" "$method" "${flags:+ $flags}" "$(jq .bits_per_weight <<< "$qj")" \
    "$(jq '.output_bytes / 1048576' <<< "$qj")" "$ppl" "$(jq -n "$ppl - $base")" "${ref:-–}" \
    "$(jq .kld_mean <<< "$kj")" "$(jq '.top1_agreement * 100' <<< "$kj")" \
    "$(jq .seconds_quantize <<< "$qj")" "$(jq '.peak_rss_bytes / 1048576' <<< "$qj")"
done
