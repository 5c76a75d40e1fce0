// `qforge bench` (see bench.h): timed prefill/decode runs on one KV cache, the weight bytes a
// decode step streams, and a multi-threaded read-bandwidth probe run in the same process.
#include "eval/bench.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>
#include <vector>

#include "core/vec_math.h"
#include "kernels/qgemm.h"

namespace qf::eval {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

uint64_t LinearBytes(const model::Linear& l) {
  uint64_t b = l.bias.size() * sizeof(float);
  if (l.ggml) {
    b += uint64_t(l.ggml->rows) * l.ggml->row_bytes;  // the blocks as mapped from the file
  } else if (l.quant) {
    // In the kernels' layout (kernels/qgemm.h QuantMatrix): what the kernels read.
    b += l.quant->StreamedBytes();
  } else {
    b += l.weight.size() * sizeof(float) + l.bf16.size() * sizeof(uint16_t);
  }
  return b;
}

Rate Summarize(const std::vector<double>& tps) {
  Rate r;
  for (double v : tps) r.mean += v / double(tps.size());
  for (double v : tps) r.stddev += (v - r.mean) * (v - r.mean);
  r.stddev = tps.size() > 1 ? std::sqrt(r.stddev / double(tps.size() - 1)) : 0.0;
  return r;
}

}  // namespace

uint64_t WeightBytesPerToken(const model::Model& m) {
  uint64_t total = LinearBytes(m.lm_head());
  for (const model::Layer& blk : m.layers())
    for (const model::LinearId id : model::kBlockLinears) total += LinearBytes(blk[id]);
  return total;
}

double MeasureReadBandwidth() {
  const size_t n = (size_t{512} << 20) / sizeof(float);
  std::vector<float> buf(n);
  // First touch in parallel so pages are spread like the reads.
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < int64_t(n); ++i) buf[size_t(i)] = float(i & 1023);
  // Each thread reduces its share with the vectorised max (Highway): memory-bound, unlike a
  // scalar float sum, whose add latency would limit it below the bandwidth.
  const int threads = std::max(1, omp_get_max_threads());
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    std::vector<float> part(static_cast<size_t>(threads));
    const auto t0 = Clock::now();
#pragma omp parallel num_threads(threads)
    {
      const int t = omp_get_thread_num();
      const size_t lo = n * size_t(t) / size_t(threads), hi = n * size_t(t + 1) / size_t(threads);
      part[size_t(t)] = vec::MaxValue(buf.data() + lo, int64_t(hi - lo));
    }
    const double s = Seconds(t0);
    if (*std::max_element(part.begin(), part.end()) < 0) return 0;  // keeps the reads alive
    best = std::max(best, double(n * sizeof(float)) / s);
  }
  return best;
}

Result<BenchResult> RunBench(const model::Model& m, const BenchOptions& opt) {
  const model::ModelConfig& c = m.config();
  if (opt.prompt < 0 || opt.gen < 0 || opt.reps < 1) return Err("bench: bad -p/-n/-r");
  if (opt.prompt > c.max_position || opt.gen > c.max_position)
    return Err("bench: -p {} / -n {} beyond the model's context of {}", opt.prompt, opt.gen,
               c.max_position);
  std::mt19937_64 rng(opt.seed);
  std::vector<int32_t> ids(static_cast<size_t>(std::max(opt.prompt, opt.gen)));
  for (int32_t& id : ids) id = int32_t(rng() % uint64_t(c.vocab_size));
  std::vector<float> logits(static_cast<size_t>(c.vocab_size));
  BenchResult r;
  std::vector<double> pp, tg;
  // One cache per test, cleared between repetitions (as llama-bench reuses its context): its
  // activation buffers are allocated and touched once, in the warm-up, not in every timed run.
  model::KVCache pp_cache = m.NewCache(std::max<int64_t>(opt.prompt, 1)),
                 tg_cache = m.NewCache(std::max<int64_t>(opt.gen, 1));
  for (int rep = 0; rep <= opt.reps; ++rep) {  // rep 0 warms caches and buffers up
    if (opt.prompt > 0) {
      pp_cache.Clear();
      const auto t0 = Clock::now();
      QF_TRY(m.Forward(std::span(ids).first(size_t(opt.prompt)), pp_cache, logits.data(), false));
      if (rep > 0) pp.push_back(double(opt.prompt) / Seconds(t0));
    }
    if (opt.gen > 0) {
      tg_cache.Clear();
      const auto t0 = Clock::now();
      for (int64_t i = 0; i < opt.gen; ++i)
        QF_TRY(m.Forward(std::span(ids).subspan(size_t(i), 1), tg_cache, logits.data(), false));
      if (rep > 0) tg.push_back(double(opt.gen) / Seconds(t0));
    }
  }
  if (!pp.empty()) r.prefill = Summarize(pp);
  if (!tg.empty()) r.decode = Summarize(tg);
  r.weight_bytes_per_token = WeightBytesPerToken(m);
  r.bandwidth = MeasureReadBandwidth();
  if (r.bandwidth > 0)
    r.decode_bandwidth_ratio = double(r.weight_bytes_per_token) * r.decode.mean / r.bandwidth;
  return r;
}

}  // namespace qf::eval
