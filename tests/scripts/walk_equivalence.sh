#!/usr/bin/env bash
# Two builds of qforge give the same bytes on every path that walks the decoder blocks:
# walk_equivalence.sh BASE NEW MODEL SCRATCH runs each case below with the binary BASE (a build
# from before a refactoring) and NEW, and compares the outputs byte for byte (JSON figures
# without clock fields). A refactoring of model/, methods/ or the kernels that must not change
# results is checked with it (issue 12: "every output byte-identical before and after"). Both
# binaries must run on the same machine: the SIMD width changes bits (ggml blocks' decoders,
# Highway targets), so no hash is kept in the repository. BASE outputs are cached in
# SCRATCH/base (delete it when BASE changes). Calibration text is sampled from the model, or
# read from ../shared/data/calib.txt with CALIB=FILE. Exits non-zero on the first difference.
set -euo pipefail
base="$1"; new="$2"; model="$3"; scratch="$4"
mkdir -p "$scratch/base"; rm -rf "$scratch/new"; mkdir -p "$scratch/new"
text="$scratch/text.txt"
[[ -s "$text" ]] || "$base" generate "$model" -p "The history of the city" -n 300 --temp 0 -t 1 \
  >"$text" 2>/dev/null
calib=(--nsamples 4 --seqlen 64 --seed 3)
calib2=(--nsamples 2 --seqlen 48 --seed 5)   # two windows: the batched sampler's GEMV path
[[ -n "${CALIB:-}" ]] && calib=(--calib "$CALIB" --nsamples 8 --seqlen 128)
fails=0

run() {  # run NAME EXT ARGS... : ARGS contain OUT where the output NAME+EXT goes, TEXT the text
  local name="$1" ext="$2"; shift 2
  for side in base new; do
    local bin="$base"; [[ $side == new ]] && bin="$new"
    local out="$scratch/$side/$name"
    [[ $side == base && -e "$out.done" ]] && continue
    local args=("${@//OUT/$out}"); args=("${args[@]//TEXT/$text}")
    "$bin" "${args[@]}" -t 2 -q >"$out.stdout" 2>"$out.log" \
      || { echo "FAILED: $name ($side)"; tail -3 "$out.log"; exit 1; }
    # Commands that write a file are compared by it (their summary line has timings); the
    # others by what they print, without the clock fields of the JSON figures.
    if [[ "$*" == *OUT* ]]; then : >"$out.figures"
    else grep -v -e seconds -e tokens_per_second -e '"threads"' "$out.stdout" >"$out.figures" || true
    fi
    [[ $side == base ]] && touch "$out.done"
  done
  if [[ "$*" == *OUT* ]] && ! diff -r -q "$scratch/base/$name$ext" "$scratch/new/$name$ext" >/dev/null 2>&1; then
    echo "DIFFERS: $name$ext"; fails=$((fails + 1))
  elif ! cmp -s "$scratch/base/$name.figures" "$scratch/new/$name.figures"; then
    echo "DIFFERS: $name figures"; fails=$((fails + 1))
  else
    echo "same bytes: $name ($SECONDS s)"
  fi
}
# Inference: one window, the llama.cpp scoring's two-call split, greedy and sampled decoding.
run ppl "" ppl "$model" --text TEXT --ctx 64 --json
run ppl_llamacpp "" ppl "$model" --text TEXT --ctx 64 --scoring llama.cpp --json
run generate_greedy "" generate "$model" -p "Once upon a time" -n 40 --temp 0
run generate_sampled "" generate "$model" -p "Once upon a time" -n 40 --seed 7
# Quantization: every calibrated path of the block walk (sampled calibration also runs the
# batched decode step), GGUF with GPTQ k-quants (lm_head stage), imatrix.
run rtn_w4a16 "" quantize "$model" -o OUT --scheme W4A16
run gptq_w4a16 "" quantize "$model" -o OUT --scheme W4A16 --method gptq "${calib[@]}"
run gptq_w4a16_b2 "" quantize "$model" -o OUT --scheme W4A16 --method gptq "${calib2[@]}"
run gptq_actorder "" quantize "$model" -o OUT --scheme W4A16 --method gptq --act-order "${calib[@]}"
run awq "" quantize "$model" -o OUT --scheme W4A16 --method awq "${calib[@]}"
run awq_gptq "" quantize "$model" -o OUT --scheme W3A16 --method awq+gptq "${calib[@]}"
run smoothquant_w8a8 "" quantize "$model" -o OUT --scheme W8A8 --method smoothquant "${calib[@]}"
run smoothquant_static "" quantize "$model" -o OUT --scheme W8A8-static --method smoothquant "${calib[@]}"
run smoothquant_gptq_fp8 "" quantize "$model" -o OUT --scheme FP8 --method smoothquant+gptq "${calib[@]}"
run rtn_w8a8_static "" quantize "$model" -o OUT --scheme W8A8-static "${calib[@]}"
run q4_k_m .gguf quantize "$model" -o OUT.gguf --scheme Q4_K_M
run gptq_q3_k_m .gguf quantize "$model" -o OUT.gguf --scheme Q3_K_M --method gptq "${calib[@]}"
run imatrix .gguf imatrix "$model" --calib TEXT --ctx 64 -o OUT.gguf
run imatrix_output .gguf imatrix "$model" --calib TEXT --ctx 64 --process-output -o OUT.gguf
run q4_k_m_imatrix .gguf quantize "$model" -o OUT.gguf --scheme Q4_K_M --imatrix "$scratch/base/imatrix.gguf"
# The quantized models run: compressed-tensors with activation quantization, ggml blocks.
run kld_w8a8 "" kld "$model" "$scratch/base/smoothquant_static" --text TEXT --ctx 64 --json
run kld_w4a16 "" kld "$model" "$scratch/base/gptq_w4a16" --text TEXT --ctx 64 --json
run ppl_q4_k_m "" ppl "$scratch/base/q4_k_m.gguf" --text TEXT --ctx 64 --json
run ppl_gptq_q3_k_m "" ppl "$scratch/base/gptq_q3_k_m.gguf" --text TEXT --ctx 64 --scoring llama.cpp --json
[[ $fails == 0 ]] || { echo "walk_equivalence: $fails case(s) differ"; exit 1; }
echo "walk_equivalence: all outputs identical"
