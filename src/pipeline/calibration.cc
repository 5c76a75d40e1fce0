// Calibration windows from a text file or from the model's own samples.
#include "pipeline/calibration.h"

#include <random>

#include "core/mmap.h"
#include "model/sampler.h"

namespace qf::pipeline {

Result<std::vector<std::vector<int32_t>>> CalibrationWindows(const text::Tokenizer* tok,
                                                             const model::Model* model,
                                                             const CalibrationOptions& opt) {
  if (opt.nsamples <= 0) return Err("--nsamples must be positive, got {}", opt.nsamples);
  if (opt.seqlen < 2) return Err("--seqlen must be at least 2, got {}", opt.seqlen);
  std::vector<std::vector<int32_t>> out;
  std::mt19937_64 rng(opt.seed);  // fully specified: the same windows on every machine
  if (!opt.text_path.empty()) {
    if (!tok) return Err("{}: a calibration text needs the model's tokenizer", opt.text_path);
    QF_ASSIGN(std::string text, ReadTextFile(opt.text_path));
    const std::vector<int32_t> ids = tok->Encode(text, /*add_bos=*/false);
    if (int64_t(ids.size()) < opt.seqlen)
      return Err("{}: calibration text has {} tokens, shorter than one window of {} (--seqlen)",
                 opt.text_path, ids.size(), opt.seqlen);
    const uint64_t starts = uint64_t(ids.size()) - uint64_t(opt.seqlen) + 1;
    for (int64_t s = 0; s < opt.nsamples; ++s) {
      const uint64_t at = rng() % starts;
      out.emplace_back(ids.begin() + int64_t(at), ids.begin() + int64_t(at) + opt.seqlen);
    }
    return out;
  }
  if (!model) return Err("no calibration text and no model to sample from");
  const int32_t bos = tok && tok->bos_id() >= 0 ? tok->bos_id() : int32_t(model->config().bos_id);
  if (bos < 0 || bos >= model->config().vocab_size)
    return Err(
        "no calibration text given and no BOS token (tokenizer or config.json) to sample from");
  // All sequences advance in lockstep, so each step is one batched forward (weights streamed
  // once per step, not once per sequence); each sequence has its own seeded sampler.
  model::SamplingOptions so;
  so.temperature = 1.0f;
  so.top_k = 0;
  so.top_p = 1.0f;
  const int64_t B = opt.nsamples, V = model->config().vocab_size;
  std::vector<model::Sampler> samplers;
  std::vector<model::KVCache> caches;
  for (int64_t s = 0; s < B; ++s) {
    so.seed = rng();
    samplers.emplace_back(so);
    caches.push_back(model->NewCache(opt.seqlen));
  }
  out.assign(size_t(B), std::vector<int32_t>{bos});
  std::vector<int32_t> step(static_cast<size_t>(B), bos);
  std::vector<float> logits(static_cast<size_t>(B * V));
  for (int64_t p = 1; p < opt.seqlen; ++p) {
    QF_TRY(model->ForwardBatchStep(step, caches, logits.data()));
    for (int64_t s = 0; s < B; ++s) {
      step[size_t(s)] = samplers[size_t(s)].Sample(logits.data() + s * V, V);
      out[size_t(s)].push_back(step[size_t(s)]);
    }
  }
  return out;
}

}  // namespace qf::pipeline
