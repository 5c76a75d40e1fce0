#!/usr/bin/env bash
# Regenerates the generated seeds under fuzz/corpus/<target>/ (the hand-written ones stay): tiny
# models and tokenizers from build/fuzz_seeds, quantized by build/qforge into compressed-tensors
# folders and GGUF files, each packed as one fuzz input. Deterministic (fixed seeds), so a rerun
# gives the same bytes. Usage: fuzz/make_seeds.sh   (after scripts/setup.sh)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$repo/build}"
q="$build/qforge"
corpus="$repo/fuzz/corpus"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

"$build/fuzz_seeds" "$tmp"
mkdir -p "$corpus"/{config,checkpoint,tokenizer_json,sentencepiece,imatrix,base_logits,gguf}
cp "$tmp/tiny-bpe/tokenizer.json" "$corpus/tokenizer_json/tiny_bytelevel.json"
cp "$tmp/tiny-spm/tokenizer.model" "$corpus/sentencepiece/tiny_bpe_bytefallback.model"
cp "$tmp"/imatrix/* "$repo"/tests/data/imatrix/*.{dat,gguf} "$corpus/imatrix/"
cp "$tmp"/base_logits/* "$corpus/base_logits/"
cp "$repo/models/llama-27m/config.json" "$corpus/config/llama27m.json"

# A model folder as one checkpoint input: config.json, the marker, model.safetensors.
pack() {
  { cat "$1/config.json"; printf '\n--qforge-fuzz-safetensors--\n'; cat "$1/model.safetensors"; } >"$2"
}
pack "$tmp/tiny-bpe" "$corpus/checkpoint/f16"
for scheme in W4A16 W4A16-asym W3A16 W2A16 W8A16 W8A8 FP8-dynamic int4-g32-asym int3-channel; do
  "$q" quantize "$tmp/tiny-bpe" -o "$tmp/ct-$scheme" --scheme "$scheme" -q >/dev/null
  pack "$tmp/ct-$scheme" "$corpus/checkpoint/$scheme"
  cp "$tmp/ct-$scheme/config.json" "$corpus/config/ct-$scheme.json"
done
for src in tiny-bpe tiny-spm; do
  "$q" convert "$tmp/$src" -o "$corpus/gguf/$src-f16.gguf" --outtype f16 >/dev/null
  for t in Q8_0 Q4_K_M; do
    "$q" quantize "$tmp/$src" -o "$corpus/gguf/$src-$t.gguf" --scheme "$t" >/dev/null
  done
done
ls -l "$corpus"/*/ | awk 'NF > 5 && $5 > 65536 {print "make_seeds: larger than the fuzzers'"'"' 64 KiB inputs: " $NF}'
echo "make_seeds: seeds written under $corpus"
