// Shared CLI helpers: common flags, flag validators, model + tokenizer loading, JSON and error
// output. Validators return qforge's words; CLI11 prefixes the flag's name.
#include "common.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string_view>
#include <thread>

#include "core/mmap.h"
#include "core/progress.h"
#include "kernels/ops.h"
#include "model/gguf_model.h"

namespace qf::cli {

namespace {

// A decimal integer as typed: optional sign, then digits only. Magnitudes beyond 64 bits are
// `too_large`.
struct Decimal {
  bool negative = false, too_large = false;
  uint64_t magnitude = 0;
};

std::optional<Decimal> ParseDecimal(std::string_view s) {
  Decimal d;
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
    d.negative = s[0] == '-';
    s.remove_prefix(1);
  }
  if (s.empty()) return std::nullopt;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), d.magnitude);
  if (end != s.data() + s.size()) return std::nullopt;
  d.too_large = ec == std::errc::result_out_of_range;
  if (d.too_large) d.magnitude = std::numeric_limits<uint64_t>::max();
  if (d.magnitude == 0) d.negative = false;  // "-0" is 0
  return d;
}

// Below lo (which may be negative) or above hi (which may be up to 2^64-1).
bool BelowLow(const Decimal& d, int64_t lo) {
  if (d.negative) return lo >= 0 || d.too_large || d.magnitude - 1 > uint64_t(-(lo + 1));
  return lo > 0 && !d.too_large && d.magnitude < uint64_t(lo);
}
bool AboveHigh(const Decimal& d, uint64_t hi) {
  return !d.negative && (d.too_large || d.magnitude > hi);
}

std::string Quoted(const std::string& v) { return "'" + v + "'"; }

template <class T>
std::string Join(const std::vector<T>& items, const char* sep) {
  std::string s;
  for (size_t i = 0; i < items.size(); ++i) s += (i ? sep : "") + fmt::format("{}", items[i]);
  return s;
}

// Integers in [lo, hi]; hi = the largest int64 or uint64 means "no upper limit".
CLI::Validator IntegerRange(int64_t lo, uint64_t hi, std::string note) {
  const bool open = hi >= uint64_t(kNoMax);
  const std::string allowed =
      (open ? fmt::format("integers >= {}", lo) : fmt::format("integers from {} to {}", lo, hi)) +
      (note.empty() ? "" : " (" + note + ")");
  const std::string desc = open ? fmt::format(">= {}", lo) : fmt::format("[{}, {}]", lo, hi);
  return CLI::Validator(
      [lo, hi, allowed](std::string& v) -> std::string {
        const auto d = ParseDecimal(v);
        if (!d) return Quoted(v) + " is not an integer; allowed: " + allowed;
        if (BelowLow(*d, lo)) return v + " is out of range; allowed: " + allowed;
        if (AboveHigh(*d, hi)) return v + " is too large; allowed: " + allowed;
        v = (d->negative ? "-" : "") + std::to_string(d->magnitude);
        return {};
      },
      desc);
}

}  // namespace

CLI::Validator IntegerIn(int64_t lo, int64_t hi, std::string note) {
  return IntegerRange(lo, uint64_t(hi), std::move(note));
}

CLI::Validator Seed() { return IntegerRange(0, std::numeric_limits<uint64_t>::max(), ""); }

CLI::Validator NumberIn(double lo, double hi) {
  const std::string allowed = fmt::format("numbers from {} to {}", lo, hi);
  return CLI::Validator(
      [lo, hi, allowed](std::string& v) -> std::string {
        double x = 0;
        const char *first = v.data(), *last = v.data() + v.size();
        if (first != last && *first == '+') ++first;
        const auto [end, ec] = std::from_chars(first, last, x);
        if (first == last || end != last ||
            (ec != std::errc() && ec != std::errc::result_out_of_range))
          return Quoted(v) + " is not a number; allowed: " + allowed;
        if (ec != std::errc::result_out_of_range && !std::isfinite(x))
          return Quoted(v) + " is not a finite number; allowed: " + allowed;
        if (ec == std::errc::result_out_of_range || x < lo || x > hi)
          return v + " is out of range; allowed: " + allowed;
        return {};
      },
      fmt::format("[{}, {}]", lo, hi));
}

CLI::Validator IntegerOneOf(std::vector<int64_t> allowed) {
  const std::string list = Join(allowed, ", ");
  return CLI::Validator(
      [allowed, list](std::string& v) -> std::string {
        const auto d = ParseDecimal(v);
        if (!d) return Quoted(v) + " is not an integer; allowed: " + list;
        for (int64_t a : allowed) {
          if (!d->too_large && d->magnitude == uint64_t(a < 0 ? -a : a) && d->negative == (a < 0)) {
            v = std::to_string(a);
            return {};
          }
        }
        return v + " is not allowed; allowed: " + list;
      },
      "{" + Join(allowed, ",") + "}");
}

CLI::Validator OneOf(std::vector<std::string> names) {
  const std::string list = Join(names, ", ");
  return CLI::Validator(
      [names, list](std::string& v) -> std::string {
        for (const std::string& n : names)
          if (v == n) return {};
        return Quoted(v) + " is not allowed; allowed: " + list;
      },
      "{" + Join(names, ",") + "}");
}

CLI::Validator ValueCheck(std::string desc, std::function<std::string(const std::string&)> check) {
  return CLI::Validator([check](std::string& v) { return check(v); }, std::move(desc));
}

void AddCommonOptions(CLI::App* cmd, CommonOptions* opt, bool with_json) {
  cmd->add_option("-t,--threads", opt->threads, "threads (default: all cores)")
      ->check(IntegerIn(0, kMaxThreads, "0 = all cores"));
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
  return kExitBadInput;
}

int FailFlags(const Error& e) {
  Fail(e);
  return kExitBadFlags;
}

}  // namespace qf::cli
