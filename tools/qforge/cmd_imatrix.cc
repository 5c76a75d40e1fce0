// `qforge imatrix MODEL --calib FILE -o OUT`: an importance matrix (Σx² per input column of every
// linear over the calibration chunks) in llama.cpp's GGUF imatrix format, or its legacy .dat.
#include <cstdio>
#include <memory>

#include "common.h"
#include "core/dist.h"
#include "core/progress.h"
#include "io/imatrix.h"
#include "pipeline/imatrix.h"
#include "io/gguf.h"
#include "model/config.h"
#include "model/gguf_model.h"

namespace qf::cli {
namespace {

struct ImatrixArgs {
  std::string model, calib, out;
  int64_t chunks = -1, ctx = 512;
  bool legacy = false, process_output = false;
  CommonOptions common;
};

int RunImatrix(const ImatrixArgs& a) {
  ApplyThreads(a.common);
  std::error_code ec;
  if (std::filesystem::is_directory(a.out, ec))
    return Fail(Err("{}: is a folder; -o takes the path of the imatrix file to write", a.out));
  if (!model::IsGgufFile(a.model) && !std::filesystem::is_directory(a.model, ec))
    return Fail(
        Err("{}: expected a model folder (config.json + *.safetensors) or a .gguf file", a.model));
  auto config = [&]() -> Result<model::ModelConfig> {
    if (!model::IsGgufFile(a.model)) return model::LoadHfConfig(a.model);
    QF_ASSIGN(const io::GgufFile f, io::GgufFile::Open(a.model));
    return model::GgufModelConfig(f);
  };
  if (auto cfg = config(); cfg.ok() && a.ctx > cfg->max_position)
    std::fprintf(
        stderr,
        "qforge: warning: the model was trained on only %lld context tokens (%lld specified)\n",
        (long long)cfg->max_position, (long long)a.ctx);
  pipeline::ImatrixOptions opt;
  opt.text_path = a.calib;
  opt.ctx = a.ctx;
  opt.chunks = a.chunks;
  opt.process_output = a.process_output;
  pipeline::ImatrixReport rep;
  std::unique_ptr<ProgressBar> pb;
  auto m = pipeline::ComputeImatrix(a.model, opt, &rep, [&](int64_t done, int64_t total) {
    if (!pb) pb = std::make_unique<ProgressBar>("imatrix chunks", total, ShowProgress(a.common));
    pb->Update(done);
  });
  if (pb) pb->Finish();
  if (!m.ok()) return Fail(m.error());
  if (a.process_output && !m->entries.count("output.weight"))
    std::fprintf(stderr,
                 "qforge: note: tied embeddings: llama.cpp multiplies by token_embd.weight and "
                 "collects nothing for the output\n");
  if (!dist::IsRoot()) return 0;  // under mpirun rank 0 writes
  const Status st = a.legacy ? io::WriteImatrixLegacy(*m, a.out) : io::WriteImatrixGguf(*m, a.out);
  if (!st.ok()) return Fail(st.error().Context(a.out));
  const double tps =
      rep.seconds_forward > 0 ? double(rep.chunks * rep.ctx) / rep.seconds_forward : 0.0;
  if (a.common.json) {
    PrintJson({{"model", a.model},
               {"calib", a.calib},
               {"output", a.out},
               {"format", a.legacy ? "dat" : "gguf"},
               {"entries", m->entries.size()},
               {"chunks", rep.chunks},
               {"ctx", rep.ctx},
               {"text_tokens", rep.text_tokens},
               {"add_bos", rep.add_bos},
               {"tokens", rep.chunks * rep.ctx},
               {"seconds_tokenize", rep.seconds_tokenize},
               {"seconds_forward", rep.seconds_forward},
               {"tokens_per_second", tps}});
    return 0;
  }
  std::printf(
      "wrote %s (%s): %zu entries over %lld chunks of %lld tokens (%lld of the text's %lld "
      "tokens%s); "
      "tokenize %.2f s, forward %.2f s (%.0f tokens/s)\n",
      a.out.c_str(), a.legacy ? "legacy .dat" : "GGUF", m->entries.size(), (long long)rep.chunks,
      (long long)rep.ctx, (long long)(rep.chunks * rep.ctx), (long long)rep.text_tokens,
      rep.add_bos ? ", BOS first" : "", rep.seconds_tokenize, rep.seconds_forward, tps);
  return 0;
}

}  // namespace

void RegisterImatrix(CLI::App& app, int* rc) {
  auto a = std::make_shared<ImatrixArgs>();
  CLI::App* cmd = app.add_subcommand(
      "imatrix", "importance matrix for GGUF quantization (llama.cpp's llama-imatrix format)");
  cmd->add_option("model", a->model, "model folder")->required();
  cmd->add_option("--calib", a->calib, "calibration text file")->required();
  cmd->add_option("-o,--output", a->out, "output file (GGUF imatrix; .dat with --legacy)")
      ->required();
  cmd->add_option("--chunks", a->chunks,
                  "chunks to process (default: every whole chunk of the text)")
      ->check(IntegerIn(1));
  cmd->add_option("--ctx", a->ctx, "tokens per chunk")
      ->capture_default_str()
      ->check(IntegerIn(2, kMaxTokens));
  cmd->add_flag("--legacy", a->legacy, "write the legacy .dat format instead of GGUF");
  cmd->add_flag("--process-output", a->process_output,
                "also collect output.weight (llama-imatrix --process-output)");
  AddCommonOptions(cmd, &a->common);
  cmd->callback([a, rc] { *rc = RunImatrix(*a); });
}

}  // namespace qf::cli
