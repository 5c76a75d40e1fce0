// `qforge compare`: the before/after table of a quantization as users want to see it: for a base
// model and each quantized model, size, bits per weight, perplexity and its change, mean KL
// divergence and top-1 agreement against the base, prefill and decode tokens/s, and the memory
// the model took; as Markdown, as JSON, and as a gnuplot script drawing two SVG plots (quality
// and speed against bits per weight). The command (tools/qforge/cmd_eval.cc) runs the models;
// this file renders what they measured.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "eval/bench.h"
#include "eval/perplexity.h"

namespace qf::eval {

struct CompareRow {
  std::string path;            // as given on the command line
  std::string label;           // its last path component
  uint64_t file_bytes = 0;     // the model's files on disk
  int64_t params = 0;          // parameters stored (codes count as parameters)
  double bits_per_weight = 0;  // file_bytes * 8 / params
  PplResult ppl;
  double kld_mean = 0, kld_stderr = 0, top1 = 1;  // against the base (the base row: 0 and 1)
  bool benched = false;
  BenchResult bench;
  int64_t memory_bytes = 0;  // peak resident growth (allocated + mapped) while loaded and run
};

// The Markdown table (the first row is the base; ΔPPL relative to it).
std::string CompareMarkdown(const std::vector<CompareRow>& rows);
nlohmann::json CompareJson(const std::vector<CompareRow>& rows);
// A gnuplot script writing `quality_svg` (mean KLD against bits per weight, log scale; each
// point labelled) and `speed_svg` (prefill and decode tokens/s against bits per weight; only
// when the rows were benchmarked).
std::string CompareGnuplot(const std::vector<CompareRow>& rows, const std::string& quality_svg,
                           const std::string& speed_svg);

}  // namespace qf::eval
