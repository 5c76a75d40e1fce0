// Shared CLI helpers: common flags, model + tokenizer loading, JSON and error output.
#include "common.h"

#include <cstdio>
#include <iostream>
#include <thread>

#include "core/mmap.h"
#include "core/progress.h"
#include "kernels/ops.h"
#include "model/gguf_model.h"

namespace qf::cli {

void AddCommonOptions(CLI::App* cmd, CommonOptions* opt, bool with_json) {
  cmd->add_option("-t,--threads", opt->threads, "threads (default: all cores)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("-q,--quiet", opt->quiet, "no progress bar");
  if (with_json) cmd->add_flag("--json", opt->json, "print one JSON object on stdout");
}

int ApplyThreads(const CommonOptions& opt) {
  int t = opt.threads > 0 ? opt.threads : int(std::max(1u, std::thread::hardware_concurrency()));
  kernels::SetThreads(t);
  return t;
}

bool ShowProgress(const CommonOptions& opt) { return !opt.quiet && ProgressBar::IsInteractive(); }

Result<LoadedModel> LoadModelAndTokenizer(const std::string& path) {
  if (!std::filesystem::exists(path)) return Err("{}: no such file or folder", path);
  if (!std::filesystem::is_directory(path) && !model::IsGgufFile(path))
    return Err("{}: expected a model folder (config.json + *.safetensors) or a .gguf file", path);
  QF_ASSIGN(auto tok, text::LoadTokenizer(path));
  QF_ASSIGN(auto m, model::Model::Load(path));
  return LoadedModel{std::move(m), std::move(tok)};
}

Result<std::vector<int32_t>> TokenizeFile(const text::Tokenizer& tok, const std::string& path) {
  QF_ASSIGN(std::string text, ReadTextFile(path));
  return tok.Encode(text, /*add_bos=*/false);
}

void PrintJson(const nlohmann::json& j) { std::cout << j.dump(2) << std::endl; }

int Fail(const Error& e) {
  std::fflush(stdout);
  std::fprintf(stderr, "qforge: error: %s\n", e.message().c_str());
  return 1;
}

}  // namespace qf::cli
