#!/usr/bin/env bash
# Prefill and decode speed of every format qforge writes, on a random-weight checkpoint with a
# real model's block shapes (bench/random_model: weights that do not fit in cache), as a
# Markdown table; with BASE_QFORGE set, the same benchmarks with that (older) binary run in the
# same script, row by row beside this build's, so both see the same machine state.
# Usage: scripts/speed_table.sh [SHAPE=llama-3.2-1b] [WORK=build/speed]
#   env: BASE_QFORGE=/path/to/qforge (optional), THREADS=2, PP=512, TG=32, REPS=2 (bench -r),
#        ROUNDS=1 (rounds over all formats, alternating the binaries; each row its best round),
#        LAYERS=N (random_model --layers; e.g. 4 for llama-3.1-8b),
#        FORMATS="fp32 W4A16 W8A16 W8A8 FP8-dynamic Q4_0 Q8_0"
# Run on an otherwise idle machine; the table names the CPU (lscpu).
set -euo pipefail
cd "$(dirname "$0")/.."
SHAPE=${1:-llama-3.2-1b}
WORK=${2:-build/speed}
THREADS=${THREADS:-2}
PP=${PP:-512}
TG=${TG:-32}
REPS=${REPS:-2}
ROUNDS=${ROUNDS:-1}
FORMATS=${FORMATS:-fp32 W4A16 W8A16 W8A8 FP8-dynamic Q4_0 Q8_0}
Q=build/qforge
[[ -x $Q && -x build/random_model ]] || { echo "speed_table: build first (scripts/setup.sh)" >&2; exit 1; }
mkdir -p "$WORK"
MODEL=$WORK/$SHAPE${LAYERS:+-$LAYERS}
if [[ ! -f $MODEL/config.json ]]; then
  build/random_model "$SHAPE" "$MODEL" ${LAYERS:+--layers $LAYERS} >&2
fi

path_of() {  # the model file or folder of a format (made on first use)
  local f=$1
  case $f in
    fp32) echo "$MODEL" ;;
    Q*|IQ*)
      [[ -f $MODEL-$f.gguf ]] || $Q quantize "$MODEL" -o "$MODEL-$f.gguf" --scheme "$f" -q >&2
      echo "$MODEL-$f.gguf" ;;
    *)
      [[ -f $MODEL-$f/config.json ]] || $Q quantize "$MODEL" -o "$MODEL-$f" --scheme "$f" -q >/dev/null
      echo "$MODEL-$f" ;;
  esac
}

bench() {  # binary model -> "pp tg ratio bytes"
  "$1" bench "$2" -p "$PP" -n "$TG" -r "$REPS" -t "$THREADS" -q --json 2>/dev/null |
    jq -r '"\(.prefill_tokens_per_second) \(.decode_tokens_per_second) \(.decode_bandwidth_ratio) \(.weight_bytes_per_token)"' |
    awk '{ printf "%.2f %.2f %.3f %.0f\n", $1, $2, $3, $4 }'
}
calc() { awk "BEGIN { printf \"$1\", $2 }"; }  # calc FORMAT EXPRESSION

cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
kernels=$($Q bench "$MODEL" -p 0 -n 1 -r 1 -q --json 2>/dev/null | jq -r .prefill_kernels)
echo "$SHAPE${LAYERS:+ ($LAYERS layers)}, $THREADS threads, pp$PP / tg$TG, $REPS reps, best of $ROUNDS rounds; $cpu"
echo "(prefill kernels: $kernels)"
echo
if [[ -n ${BASE_QFORGE:-} ]]; then
  echo "| format | MiB/token | pp$PP before | pp$PP | × fp32 | tg$TG before | tg$TG | × fp32 | bandwidth used |"
  echo "|---|--:|--:|--:|--:|--:|--:|--:|--:|"
else
  echo "| format | MiB/token | pp$PP | × fp32 | tg$TG | × fp32 | bandwidth used |"
  echo "|---|--:|--:|--:|--:|--:|--:|"
fi
# ROUNDS rounds over all formats (and binaries), each row keeping its best run: rows then see
# the same machine states, as gguf_bench.sh alternates its tools.
declare -A best_pp best_tg best_ratio bytes_of
keep() {  # key pp tg ratio bytes: the best prefill and decode of key so far
  local k=$1
  if [[ -z ${best_pp[$k]:-} ]] || awk "BEGIN { exit !($2 > ${best_pp[$k]}) }"; then best_pp[$k]=$2; fi
  if [[ -z ${best_tg[$k]:-} ]] || awk "BEGIN { exit !($3 > ${best_tg[$k]}) }"; then
    best_tg[$k]=$3 best_ratio[$k]=$4
  fi
  bytes_of[$k]=$5
}
for ((round = 0; round < ROUNDS; ++round)); do
  for f in $FORMATS; do
    p=$(path_of "$f")
    keep "new $f" $(bench $Q "$p")
    if [[ -n ${BASE_QFORGE:-} ]]; then keep "base $f" $(bench "$BASE_QFORGE" "$p"); fi
  done
done

fp_pp="" fp_tg=""
for f in $FORMATS; do
  pp=${best_pp["new $f"]} tg=${best_tg["new $f"]}
  if [[ -z $fp_pp ]]; then fp_pp=$pp fp_tg=$tg; fi
  xpp=$(calc %.2f "$pp / $fp_pp")
  xtg=$(calc %.2f "$tg / $fp_tg")
  mib=$(calc %.0f "${bytes_of["new $f"]} / 1048576")
  pct=$(calc %.0f%% "${best_ratio["new $f"]} * 100")
  if [[ -n ${BASE_QFORGE:-} ]]; then
    echo "| $f | $mib | ${best_pp["base $f"]} | $pp | $xpp | ${best_tg["base $f"]} | $tg | $xtg | $pct |"
  else
    echo "| $f | $mib | $pp | $xpp | $tg | $xtg | $pct |"
  fi
done
