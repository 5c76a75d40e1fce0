#!/usr/bin/env bash
# Quantization table for the README: for each row, quantize models/llama-27m and measure the
# WikiText-2 perplexity (ctx 512, whole file), beside the GPTQ authors' figure for the same
# scheme (../shared/anchors/peer_gptq_llama-27m.json). KLD=1 adds mean KLD and top-1 agreement
# against the fp model (twice the time). Usage: [KLD=1] scripts/quant_table.sh [WINDOWS=0 (all)]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
Q=build/qforge
MODEL=models/llama-27m
TEXT=../shared/data/wikitext-2/wiki.test.raw
CALIB=../shared/data/calib.txt
WINDOWS=${1:-0}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

# scheme|method|extra flags|reference figure (same method; "ao" = theirs with act-order)
ROWS=(
  "int4-channel-asym|rtn||146.5077"
  "int4-channel-asym|gptq|--act-order|142.8197 ao"
  "int4-g128-asym|rtn||144.2149"
  "int4-g128-asym|gptq||142.2075 (141.5553 ao)"
  "int4-g128-sym|rtn||146.0377"
  "int4-g128-sym|gptq||143.1763"
  "int3-channel-asym|rtn||154.6827"
  "int3-channel-asym|gptq|--act-order|148.4251 ao"
  "int3-g128-asym|rtn||154.9341"
  "int3-g128-asym|gptq||147.8214"
  "int2-g64-asym|rtn||214.5396"
  "int2-g64-asym|gptq||181.7348"
  "int8-channel-sym|rtn||140.8578"
  "fp8-e4m3-tensor|rtn||"
  "fp8-e4m3-channel|rtn||"
)

echo "| scheme | method | bits/weight | file MiB | PPL | reference | $([ "${KLD:-0}" = 1 ] && echo 'mean KLD | top-1 |') quantize s | peak RSS MiB |"
echo "|---|---|---|---|---|---|$([ "${KLD:-0}" = 1 ] && echo '---|---|')---|---|"
for row in "${ROWS[@]}"; do
  IFS='|' read -r scheme method flags ref <<< "$row"
  dir="$OUT/$scheme-$method"
  calib=""
  [ "$method" = gptq ] && calib="--calib $CALIB"
  qj=$($Q quantize $MODEL -o "$dir" --scheme "$scheme" --method "$method" $calib $flags --json -q 2>/dev/null)
  if [ "${KLD:-0}" = 1 ]; then
    kj=$($Q kld $MODEL "$dir" --text $TEXT --ctx 512 --max-windows "$WINDOWS" --json -q)
    ppl=$(jq .other_ppl.ppl <<< "$kj")
    extra=$(printf "%.5f | %.2f%% | " "$(jq .kld_mean <<< "$kj")" "$(jq '.top1_agreement * 100' <<< "$kj")")
  else
    ppl=$($Q ppl "$dir" --text $TEXT --ctx 512 --max-windows "$WINDOWS" --json -q | jq .ppl)
    extra=""
  fi
  printf "| %s | %s%s | %.3f | %.2f | %.3f | %s | %s%.1f | %.0f |\n" \
    "$scheme" "$method" "${flags:+ $flags}" "$(jq .bits_per_weight <<< "$qj")" \
    "$(jq '.output_bytes / 1048576' <<< "$qj")" "$ppl" "${ref:-–}" "$extra" \
    "$(jq '.seconds_calib_data + .seconds_forward + .seconds_statistics + .seconds_quantize + .seconds_write' <<< "$qj")" \
    "$(jq '.peak_rss_bytes / 1048576' <<< "$qj")"
done
