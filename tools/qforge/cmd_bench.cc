// `qforge bench MODEL [-p 512] [-n 128] [-r 3] [-t T]`: prefill / decode tokens/s like
// llama-bench (pp / tg rows, mean ± sd over the repetitions) and the decode bandwidth ratio.
#include <cstdio>

#include "common.h"
#include "eval/bench.h"
#include "kernels/qgemm.h"

namespace qf::cli {
namespace {

struct BenchArgs {
  std::string model;
  eval::BenchOptions opt;
  CommonOptions common;
};

int RunBenchCmd(const BenchArgs& a) {
  const int threads = ApplyThreads(a.common);
  auto m = model::Model::Load(a.model);
  if (!m.ok()) return Fail(m.error());
  auto r = eval::RunBench(*m, a.opt);
  if (!r.ok()) return Fail(r.error());
  const double mib = double(r->weight_bytes_per_token) / (1 << 20);
  if (a.common.json) {
    PrintJson({{"model", a.model},
               {"threads", threads},
               {"prompt", a.opt.prompt},
               {"gen", a.opt.gen},
               {"reps", a.opt.reps},
               {"prefill_tokens_per_second", r->prefill.mean},
               {"prefill_stddev", r->prefill.stddev},
               {"decode_tokens_per_second", r->decode.mean},
               {"decode_stddev", r->decode.stddev},
               {"weight_bytes_per_token", r->weight_bytes_per_token},
               {"bandwidth_bytes_per_second", r->bandwidth},
               {"decode_bandwidth_ratio", r->decode_bandwidth_ratio},
               {"prefill_kernels", kernels::PrefillKernels()}});
    return 0;
  }
  std::printf("| %-40s | threads | %8s | %20s |\n", "model", "test", "t/s");
  std::printf("|%s|--------:|---------:|---------------------:|\n", std::string(42, '-').c_str());
  if (a.opt.prompt > 0)
    std::printf("| %-40s | %7d | %8s | %12.2f ± %5.2f |\n", a.model.c_str(), threads,
                ("pp" + std::to_string(a.opt.prompt)).c_str(), r->prefill.mean, r->prefill.stddev);
  if (a.opt.gen > 0)
    std::printf("| %-40s | %7d | %8s | %12.2f ± %5.2f |\n", a.model.c_str(), threads,
                ("tg" + std::to_string(a.opt.gen)).c_str(), r->decode.mean, r->decode.stddev);
  std::printf(
      "decode: %.2f MiB of weights per token x %.1f tokens/s = %.2f GB/s of %.2f GB/s "
      "measured read bandwidth (%.0f%%)\n",
      mib, r->decode.mean, double(r->weight_bytes_per_token) * r->decode.mean / 1e9,
      r->bandwidth / 1e9, 100.0 * r->decode_bandwidth_ratio);
  std::printf("prefill kernels on this CPU: %s\n", kernels::PrefillKernels().c_str());
  return 0;
}

}  // namespace

void AddBenchOptions(CLI::App* cmd, eval::BenchOptions* opt) {
  cmd->add_option("-p,--prompt", opt->prompt, "prompt tokens processed in one pass (0: skip)")
      ->capture_default_str()
      ->check(IntegerIn(0, kMaxTokens, "0 = skip"));
  cmd->add_option("-n,--gen", opt->gen, "tokens decoded one at a time (0: skip)")
      ->capture_default_str()
      ->check(IntegerIn(0, kMaxTokens, "0 = skip"));
  cmd->add_option("-r,--reps", opt->reps, "timed repetitions (after one warm-up)")
      ->capture_default_str()
      ->check(IntegerIn(1, 100));
  cmd->add_option("--seed", opt->seed, "seed of the random token ids")
      ->capture_default_str()
      ->check(Seed());
}

void RegisterBench(CLI::App& app, int* rc) {
  auto a = std::make_shared<BenchArgs>();
  CLI::App* cmd = app.add_subcommand(
      "bench", "prefill and decode speed (llama-bench style) and decode bandwidth use");
  cmd->add_option("model", a->model, "model folder or .gguf")->required();
  AddBenchOptions(cmd, &a->opt);
  AddCommonOptions(cmd, &a->common);
  cmd->callback([a, rc] { *rc = RunBenchCmd(*a); });
}

}  // namespace qf::cli
