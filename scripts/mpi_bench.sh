#!/usr/bin/env bash
# Data-parallel calibration speed for the README (issue 15): `qforge quantize` as one process
# with one thread beside `mpirun -np N` with one thread per rank, same model, scheme, method and
# calibration, REPS times alternating (the table keeps each side's fastest run: the machine is
# shared), with the time breakdown of that run and whether the outputs are byte-identical.
# Usage: scripts/mpi_bench.sh [MODEL=models/llama-27m]
#   env: RANKS=2 REPS=2 SCHEME=W4A16 METHOD=gptq CALIB=../shared/data/calib.txt NSAMPLES=128
#        SEQLEN=512 EXTRA="" (more quantize flags, e.g. "--batch 4" for QAT)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-models/llama-27m}
RANKS=${RANKS:-2}
REPS=${REPS:-2}
SCHEME=${SCHEME:-W4A16}
METHOD=${METHOD:-gptq}
CALIB=${CALIB:-../shared/data/calib.txt}
NSAMPLES=${NSAMPLES:-128}
SEQLEN=${SEQLEN:-512}
EXTRA=${EXTRA:-}
# The run's total: its report's parts (QAT's training included).
TOTAL='.seconds_calib_data + .seconds_forward + .seconds_statistics + .seconds_reduce +
  .seconds_quantize + (.seconds_qat // 0) + .seconds_write'
Q=build/qforge
[[ -x $Q ]] || { echo "mpi_bench: build first (scripts/setup.sh)" >&2; exit 1; }
command -v mpirun >/dev/null || { echo "mpi_bench: mpirun not found (openmpi-bin)" >&2; exit 1; }
[[ -f $CALIB ]] || { echo "mpi_bench: no calibration text $CALIB" >&2; exit 1; }
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

run() {  # run NAME LAUNCHER... -> json in $OUT/NAME-REP.json, output in $OUT/NAME
  local name=$1 rep=$2
  shift 2
  "$@" "$Q" quantize "$MODEL" -o "$OUT/$name" --scheme "$SCHEME" --method "$METHOD" \
    --calib "$CALIB" --nsamples "$NSAMPLES" --seqlen "$SEQLEN" -t 1 --json $EXTRA \
    >"$OUT/$name-$rep.json" 2>"$OUT/$name.err" || { cat "$OUT/$name.err" >&2; exit 1; }
}
for rep in $(seq "$REPS"); do
  run one "$rep"
  run ranks "$rep" mpirun --oversubscribe --allow-run-as-root -np "$RANKS"
done
best() {  # the fastest run's json
  for f in "$OUT/$1"-*.json; do echo "$(jq "$TOTAL" "$f") $f"; done |
    sort -g | head -1 | cut -d' ' -f2
}
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
echo "$MODEL, --scheme $SCHEME --method $METHOD $EXTRA, $NSAMPLES x $SEQLEN calibration tokens," \
  "one thread per process, best of $REPS; $cpu, $(nproc) cores"
echo
echo "| run | total s | data s | forward s | statistics s | across ranks s | solve/round s | qat s | write s | peak allocated MiB (rank 0) |"
echo "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
row() {
  jq -r --arg n "$1" "[\$n, ($TOTAL), .seconds_calib_data, .seconds_forward,
    .seconds_statistics, .seconds_reduce, .seconds_quantize, (.seconds_qat // 0), .seconds_write,
    (.peak_rss_anon_bytes / 1048576)]"' | "| \(.[0]) | " + ([.[1:][] | (. * 100 | round / 100 |
    tostring)] | join(" | ")) + " |"' "$2"
}
one=$(best one)
ranks=$(best ranks)
row "1 process" "$one"
row "mpirun -np $RANKS" "$ranks"
t1=$(jq "$TOTAL" "$one")
tn=$(jq "$TOTAL" "$ranks")
echo
same=$(cmp -s "$OUT/one/model.safetensors" "$OUT/ranks/model.safetensors" && echo "byte-identical" ||
  echo "NOT byte-identical")
awk -v a="$t1" -v b="$tn" -v n="$RANKS" -v s="$same" \
  'BEGIN { printf "speed-up with %d ranks: %.2fx; outputs %s\n", n, a / b, s }'
