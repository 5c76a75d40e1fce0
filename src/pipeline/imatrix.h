// Importance matrices (llama.cpp's llama-imatrix) from qforge's own forward pass: for every linear
// of the model, Σ x² per input column of its input over the calibration tokens, and the token
// count, keyed by the GGUF tensor name `qforge convert` gives it.
//
// What is collected, as llama-imatrix does it (tools/imatrix/imatrix.cpp, master of 2026-08):
// the text (less one trailing newline, as llama.cpp's -f reads it) is tokenized whole, with BOS
// when the GGUF vocabulary adds one (tokenizer.ggml.add_bos_token); cut into chunks of ctx
// tokens from the start (the tail dropped, at most `chunks` of them, at least 2·ctx tokens
// needed); the first token of each chunk is replaced by BOS; each chunk runs from position 0 and
// every one of its tokens counts, for every blk.* linear (attn_q/attn_k/attn_v share the attn_norm
// output, ffn_gate/ffn_up the ffn_norm output), and for output.weight only with process_output
// (llama-imatrix --process-output; nothing when the embeddings are tied, as llama.cpp then
// multiplies by token_embd.weight). Contract: the sums are fp64 per chunk, added in chunk order, so
// the result does not depend on the thread count.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "core/result.h"
#include "io/imatrix.h"

namespace qf::pipeline {

struct ImatrixOptions {
  std::string text_path;        // calibration text
  std::string dataset;          // recorded in imatrix.datasets; empty: text_path
  int64_t ctx = 512;            // tokens per chunk
  int64_t chunks = -1;          // < 0: every whole chunk of the text
  bool process_output = false;  // also collect output.weight
};

struct ImatrixReport {
  int64_t text_tokens = 0;  // the tokenized text, BOS included
  int64_t chunks = 0;
  int64_t ctx = 0;
  bool add_bos = false;
  int32_t bos = -1;
  double seconds_tokenize = 0, seconds_forward = 0;
};

// llama-imatrix's chunks of `tokens` (already holding BOS at the start when the vocabulary adds
// it): at most max_chunks (< 0: all) chunks of ctx tokens from the start, each chunk's first
// token replaced by `bos` when bos >= 0. An Error when there are fewer than 2·ctx tokens.
Result<std::vector<std::vector<int32_t>>> ImatrixChunks(std::span<const int32_t> tokens,
                                                        int64_t ctx, int64_t max_chunks,
                                                        int32_t bos);

// `progress` (optional) is called with (chunks done, total).
Result<io::Imatrix> ComputeImatrix(const std::filesystem::path& model_dir,
                                   const ImatrixOptions& opt, ImatrixReport* report,
                                   const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace qf::pipeline
