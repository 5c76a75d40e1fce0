// Shared pieces of the qforge subcommands: options every command takes, loading, output.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/result.h"
#include "model/model.h"
#include "text/tokenizer.h"

namespace qf::cli {

struct CommonOptions {
  int threads = 0;  // 0 = all cores
  bool quiet = false;
  bool json = false;
};

// Adds --threads/--quiet/--json to a subcommand.
void AddCommonOptions(CLI::App* cmd, CommonOptions* opt, bool with_json = true);
// Applies --threads; returns the thread count in use.
int ApplyThreads(const CommonOptions& opt);
bool ShowProgress(const CommonOptions& opt);

struct LoadedModel {
  model::Model model;
  std::unique_ptr<text::Tokenizer> tokenizer;
};
Result<LoadedModel> LoadModelAndTokenizer(const std::string& path);
// Reads a text file and tokenizes it whole, without BOS.
Result<std::vector<int32_t>> TokenizeFile(const text::Tokenizer& tok, const std::string& path);

void PrintJson(const nlohmann::json& j);
// Prints "qforge: error: MESSAGE" on stderr and returns the exit code 1.
int Fail(const Error& e);

// One registration function per subcommand: adds it to `app` and returns the handler's
// exit code through `*rc` when it runs.
void RegisterInfo(CLI::App& app, int* rc);
void RegisterPpl(CLI::App& app, int* rc);
void RegisterKld(CLI::App& app, int* rc);
void RegisterGenerate(CLI::App& app, int* rc);
void RegisterQuantize(CLI::App& app, int* rc);
void RegisterConvert(CLI::App& app, int* rc);

// `qforge info FILE.gguf` (in cmd_convert.cc): returns the exit code.
int RunGgufInfo(const std::string& path, bool json);

}  // namespace qf::cli
