// Perplexity and KL divergence over non-overlapping windows of a token stream.
// Scoring rules (WindowOptions::scoring):
//   kQforge (default, as GPTQ/AWQ): the text tokenized whole without BOS; windows of ctx tokens
//     from the start, the tail shorter than ctx dropped; every token after the first of each
//     window scored (ctx − 1 per window).
//   kLlamaCpp (llama.cpp's llama-perplexity, so figures compare one to one): the text, less one
//     trailing '\n', tokenized whole with BOS added once at the start when the vocabulary adds
//     BOS; chunks = tokens / ctx (at least 2·ctx tokens needed), the tail dropped; the first
//     token of every chunk replaced by BOS (when the vocabulary adds it); the first ctx/2
//     positions are context only: the tokens at ctx/2 + 1 .. ctx − 1 are scored
//     (ctx − 1 − ctx/2 per chunk, 255 at ctx 512).
// Both: PPL = exp(mean NLL) over all scored tokens, reported ± PPL · sqrt((E[nll²] −
// E[nll]²)/(N − 1)) (llama.cpp's "Final estimate" uncertainty).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "core/result.h"
#include "eval/base_logits.h"
#include "model/model.h"
#include "text/tokenizer.h"

namespace qf::eval {

using ProgressFn = std::function<void(int64_t done, int64_t total)>;

enum class Scoring : uint32_t { kQforge = 0, kLlamaCpp = 1 };
const char* ScoringName(Scoring s);  // "qforge", "llama.cpp"

struct WindowOptions {
  int64_t ctx = 512;
  int64_t max_windows = 0;  // 0 = all
  Scoring scoring = Scoring::kQforge;
  int32_t bos_id = -1;  // kLlamaCpp: put first in every window; -1 = none (no BOS added)
};

// Position whose logits predict the first scored token (0, or ctx/2 for kLlamaCpp), and the
// number of scored tokens per window.
int64_t FirstScored(const WindowOptions& opt);
int64_t ScoredPerWindow(const WindowOptions& opt);

// Whether llama.cpp adds BOS for the model (a folder or a GGUF file): pipeline::LlamaCppVocabBos,
// false when the tokenizer has no BOS id.
Result<bool> LlamaCppAddsBos(const std::filesystem::path& model_dir, const text::Tokenizer& tok);

// The token stream the scoring mode evaluates: kQforge = Encode(text) without BOS;
// kLlamaCpp = Encode(text less one trailing '\n', add_bos).
std::vector<int32_t> TokenizeForScoring(const text::Tokenizer& tok, std::string text,
                                        Scoring scoring, bool add_bos);

struct PplResult {
  double ppl = 0;
  double ppl_stderr = 0;  // ppl · standard error of the mean NLL
  double mean_nll = 0;
  int64_t windows = 0;
  int64_t scored_tokens = 0;
  int64_t evaluated_tokens = 0;  // tokens run through the model
  double seconds = 0;
  double tokens_per_second = 0;
};

// Number of windows the options give for `n_tokens`, or an Error when there is not one.
Result<int64_t> CountWindows(int64_t n_tokens, const WindowOptions& opt, int64_t model_ctx);

Result<PplResult> Perplexity(const model::Model& model, const std::vector<int32_t>& tokens,
                             const WindowOptions& opt, const ProgressFn& progress = {});

struct KldResult {
  // Median: the middle value (mean of the two middle ones). p99: nearest rank for kQforge,
  // llama.cpp's linear interpolation at 0.99·(N − 1) for kLlamaCpp.
  double kld_mean = 0, kld_stderr = 0, kld_median = 0, kld_p99 = 0, kld_max = 0;
  double top1_agreement = 0;  // fraction of scored tokens with equal argmax
  PplResult base, other;
};

// KL(P_base || P_other) per scored token over the same windows, in one pass. With
// `save_base_logits` non-empty the base model's log-probabilities are also written there
// (base_logits.h).
Result<KldResult> KlDivergence(const model::Model& base, const model::Model& other,
                               const std::vector<int32_t>& tokens, const WindowOptions& opt,
                               const ProgressFn& progress = {},
                               const std::filesystem::path& save_base_logits = {});

// Runs only the base model and writes its log-probabilities to `path`; returns its perplexity.
Result<PplResult> SaveBaseLogits(const model::Model& base, const std::vector<int32_t>& tokens,
                                 const WindowOptions& opt, const std::filesystem::path& path,
                                 const ProgressFn& progress = {});

// KL(P'_base || P_other) with P'_base read from a saved file (the same windows and tokens; the
// file must match the text, ctx, scoring and vocabulary, else a one-line Error). Base PPL and
// top-1 are exact; the KLD is within the bound in base_logits.h of the direct run's.
Result<KldResult> KlDivergence(const BaseLogitsReader& base, const model::Model& other,
                               const std::vector<int32_t>& tokens, const WindowOptions& opt,
                               const ProgressFn& progress = {});

}  // namespace qf::eval
