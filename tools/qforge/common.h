// Shared pieces of the qforge subcommands: options every command takes, flag validation,
// loading, output. Exit codes: 0 success, 1 bad input (files), 2 bad flags.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/result.h"
#include "eval/bench.h"
#include "model/model.h"
#include "text/tokenizer.h"

namespace qf::cli {

constexpr int kExitBadInput = 1;  // a file is missing, corrupt or unsuitable
constexpr int kExitBadFlags = 2;  // a flag value or a combination of flags is refused

// Flag validation: one vocabulary for every command. Each check runs on the text of a value
// while CLI11 parses the command line, before any file is read; main() prints its error as
// one line, "qforge: error: --FLAG: VALUE ...; allowed: ...", and exits kExitBadFlags.
constexpr int64_t kNoMax = std::numeric_limits<int64_t>::max();
// Longest token sequence a flag may ask for (--ctx, --seqlen, -n, ...): above any model's
// context, so the model's own limit gives the precise error later.
constexpr int64_t kMaxTokens = int64_t(1) << 20;
// Most threads -t accepts: far above any machine we run on; stops a typo starting millions.
constexpr int kMaxThreads = 1024;

// Decimal integers in [lo, hi] (no hex or octal: "010" is ten). `note` follows the allowed
// range in the error ("0 = all"). The value is rewritten in canonical form for CLI11 to convert.
CLI::Validator IntegerIn(int64_t lo, int64_t hi = kNoMax, std::string note = {});
// 64-bit seeds: 0 .. 2^64-1.
CLI::Validator Seed();
// Finite decimal numbers in [lo, hi].
CLI::Validator NumberIn(double lo, double hi);
// Integers from a fixed list (e.g. the group sizes of the scheme table).
CLI::Validator IntegerOneOf(std::vector<int64_t> allowed);
// One of these names, exactly.
CLI::Validator OneOf(std::vector<std::string> names);
// Any other check: `check` returns the error for a value ("'x' is not ...; allowed: ..."), or ""
// when it is fine. `desc` is shown after the type in --help.
CLI::Validator ValueCheck(std::string desc, std::function<std::string(const std::string&)> check);

struct CommonOptions {
  int threads = 0;  // 0 = all cores
  bool quiet = false;
  bool json = false;
};

// Adds --threads/--quiet/--json to a subcommand.
void AddCommonOptions(CLI::App* cmd, CommonOptions* opt, bool with_json = true);
// Adds bench's -p/--prompt, -n/--gen, -r/--reps and --seed (defaults: opt's values).
void AddBenchOptions(CLI::App* cmd, eval::BenchOptions* opt);  // cmd_bench.cc
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
// Prints "qforge: error: MESSAGE" on stderr and returns kExitBadInput.
int Fail(const Error& e);
// The same for a flag combination a handler refuses (before reading any file): kExitBadFlags.
int FailFlags(const Error& e);

// One registration function per subcommand: adds it to `app` and returns the handler's
// exit code through `*rc` when it runs.
void RegisterInfo(CLI::App& app, int* rc);
void RegisterPpl(CLI::App& app, int* rc);
void RegisterKld(CLI::App& app, int* rc);
void RegisterCompare(CLI::App& app, int* rc);  // cmd_eval.cc
void RegisterGenerate(CLI::App& app, int* rc);
void RegisterQuantize(CLI::App& app, int* rc);
void RegisterConvert(CLI::App& app, int* rc);

// `qforge info FILE.gguf` (in cmd_convert.cc): returns the exit code.
int RunGgufInfo(const std::string& path, bool json);

}  // namespace qf::cli
