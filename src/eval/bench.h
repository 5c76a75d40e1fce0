// `qforge bench`: prefill and decode speed in llama-bench's terms (pp<N>: one forward pass over
// N prompt tokens; tg<N>: N single-token decoding steps from an empty cache), plus the decode
// memory-bandwidth ratio: weight bytes streamed per token × tokens/s ÷ the read bandwidth
// measured in the same run.
#pragma once

#include <cstdint>

#include "core/result.h"
#include "model/model.h"

namespace qf::eval {

struct BenchOptions {
  int64_t prompt = 512;  // pp tokens (0: skip)
  int64_t gen = 128;     // tg tokens (0: skip)
  int reps = 3;          // timed repetitions after one warm-up
  uint64_t seed = 0;     // random token ids
};

struct Rate {
  double mean = 0, stddev = 0;  // tokens/s over the repetitions
};

struct BenchResult {
  Rate prefill, decode;
  uint64_t weight_bytes_per_token = 0;  // bytes of every linear (lm_head included) as stored
  double bandwidth = 0;                 // bytes/s, best of three parallel reads of 512 MiB
  double decode_bandwidth_ratio = 0;    // weight_bytes_per_token × decode.mean / bandwidth
};

// Bytes the decoding kernels read per token: each linear's weights in its stored form.
uint64_t WeightBytesPerToken(const model::Model& m);
// Read bandwidth of this machine with the current thread count (sum over a 512 MiB buffer).
double MeasureReadBandwidth();

Result<BenchResult> RunBench(const model::Model& m, const BenchOptions& opt);

}  // namespace qf::eval
