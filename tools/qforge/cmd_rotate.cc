// `qforge rotate MODEL -o OUT`: the rotated checkpoint that `quantize --rotate` quantizes,
// written as a model folder of its own (pipeline/rotate.h), for any tool that quantizes or runs
// a Hugging Face folder: norms folded into the linears, residual stream (and with
// hadamard+heads each head's values) rotated by a random Hadamard matrix seeded with --seed.
#include <cstdio>
#include <memory>

#include "common.h"
#include "pipeline/rotate.h"

namespace qf::cli {
namespace {

struct RotateArgs {
  std::string model, out, mode = "hadamard";
  uint64_t seed = 0;
  CommonOptions common;
};

int RunRotate(const RotateArgs& a) {
  const pipeline::RotateOptions opt = *pipeline::RotateFromName(a.mode, a.seed);  // --mode checked
  auto r = pipeline::RotateModel(a.model, a.out, opt);
  if (!r.ok()) return Fail(r.error());
  if (a.common.json) {
    PrintJson({{"output", a.out},
               {"rotate", std::string(pipeline::RotateName(opt))},
               {"seed", a.seed},
               {"untied", r->untied},
               {"seconds", r->seconds}});
    return 0;
  }
  if (a.common.quiet) return 0;
  std::printf("wrote %s: norms folded, residual stream rotated by %s (seed %llu)%s; %.2f s\n",
              a.out.c_str(), std::string(pipeline::RotateName(opt)).c_str(),
              (unsigned long long)a.seed, r->untied ? "; tied embeddings written untied" : "",
              r->seconds);
  return 0;
}

}  // namespace

void RegisterRotate(CLI::App& app, int* rc) {
  auto a = std::make_shared<RotateArgs>();
  CLI::App* cmd = app.add_subcommand(
      "rotate",
      "fold the norms and rotate the residual stream by a random Hadamard matrix (QuaRot / "
      "SpinQuant R1): a model folder with the same outputs, easier to quantize");
  cmd->add_option("model", a->model, "model folder (config.json + *.safetensors)")->required();
  cmd->add_option("-o,--output", a->out, "folder to write")->required();
  cmd->add_option("--mode", a->mode,
                  "hadamard, or hadamard+heads to rotate each attention head's values too (R2)")
      ->capture_default_str()
      ->check(OneOf({"hadamard", "hadamard+heads"}));
  cmd->add_option("--seed", a->seed, "the rotation's random signs")
      ->capture_default_str()
      ->check(Seed());
  // No --threads: one tensor at a time, bound by reading and writing.
  cmd->add_flag("-q,--quiet", a->common.quiet, "print nothing but errors");
  cmd->add_flag("--json", a->common.json, "print one JSON object on stdout");
  cmd->callback([a, rc] { *rc = RunRotate(*a); });
}

}  // namespace qf::cli
