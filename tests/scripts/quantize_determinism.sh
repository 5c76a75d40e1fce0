#!/usr/bin/env bash
# The output bytes of the calibrated commands do not depend on the thread count:
# quantize_determinism.sh QFORGE MODEL SCRATCH [all|gptq] runs each case with -t 1 and -t 2 and
# compares the outputs byte for byte: GPTQ to W4A16 and to Q4_K_M and the figures of ppl / kld
# always; with `all` (default) also AWQ, SmoothQuant + static activation scales and imatrix
# (their statistics and AWQ's loss run on the same own kernels as GPTQ's Hessians, which
# determinism_test checks). Calibration text: sampled from the model (no ../shared needed).
# Exits non-zero on the first difference, naming it.
set -euo pipefail
qforge="$1"; model="$2"; scratch="$3"; cases="${4:-all}"
rm -rf "$scratch"; mkdir -p "$scratch"
calib=(--nsamples 4 --seqlen 64 --seed 3)
text="$scratch/text.txt"
# Text for imatrix / ppl / kld: the model's own greedy continuation of a fixed prompt.
"$qforge" generate "$model" -p "The history of the city" -n 300 --temp 0 -t 1 >"$text" 2>/dev/null

run() {  # run NAME EXT ARGS... : ARGS contain OUT where the output path goes
  local name="$1" ext="$2"; shift 2
  for t in 1 2; do
    local out="$scratch/$name.t$t$ext"
    "$qforge" "${@//OUT/$out}" -t "$t" -q >"$scratch/$name.t$t.log" 2>&1 \
      || { echo "FAILED: $name -t $t"; cat "$scratch/$name.t$t.log"; exit 1; }
  done
  if ! diff -r "$scratch/$name.t1$ext" "$scratch/$name.t2$ext" >/dev/null; then
    echo "DIFFERS: $name output with -t 1 vs -t 2"; exit 1
  fi
  echo "same bytes: $name ($SECONDS s)"
}
run gptq_w4a16 "" quantize "$model" -o OUT --scheme W4A16 --method gptq "${calib[@]}"
run gptq_q4_k_m .gguf quantize "$model" -o OUT --scheme Q4_K_M --method gptq "${calib[@]}"
if [[ "$cases" == all ]]; then
run awq "" quantize "$model" -o OUT --scheme W4A16 --method awq "${calib[@]}"
run smoothquant_static "" quantize "$model" -o OUT --scheme W8A8-static --method smoothquant "${calib[@]}"
run imatrix .gguf imatrix "$model" --calib "$text" --ctx 64 -o OUT
fi

# ppl / kld print timings too: compare their JSON figures without the clock fields.
figures() {  # figures NAME ARGS...
  local name="$1"; shift
  for t in 1 2; do
    "$qforge" "$@" -t "$t" -q --json 2>/dev/null \
      | grep -v -e seconds -e tokens_per_second -e '"threads"' >"$scratch/$name.t$t.json" \
      || { echo "FAILED: $name -t $t"; exit 1; }
  done
  cmp -s "$scratch/$name.t1.json" "$scratch/$name.t2.json" \
    || { echo "DIFFERS: $name figures with -t 1 vs -t 2"; diff "$scratch/$name.t1.json" "$scratch/$name.t2.json"; exit 1; }
  echo "same figures: $name ($SECONDS s)"
}
figures ppl_gguf ppl "$scratch/gptq_q4_k_m.t1.gguf" --text "$text" --ctx 64
figures kld_w4a16 kld "$model" "$scratch/gptq_w4a16.t1" --text "$text" --ctx 64
[[ "$cases" == all ]] && figures kld_w8a8 kld "$model" "$scratch/smoothquant_static.t1" --text "$text" --ctx 64
echo "quantize_determinism: all outputs identical for 1 and 2 threads"
