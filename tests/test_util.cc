// Shared test helpers (paths, ../shared or why a test skips without it, scratch folders, a
// local text, running the CLI).
#include "test_util.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <sys/wait.h>

#include "core/result.h"
#include "kernels/cpu/ggml_dot.h"
#include "kernels/qgemm.h"

namespace qf::testing {

std::filesystem::path RepoDir() { return QF_SOURCE_DIR; }
std::filesystem::path SharedDir() {
  const char* env = std::getenv("QF_SHARED_DIR");
  if (env && *env) return env;
  return RepoDir().parent_path() / "shared";
}
std::filesystem::path BundledModel() { return RepoDir() / "models" / "llama-27m"; }

namespace {

// What the parts of ../shared that tests read are (the longest matching prefix describes a
// path); ../shared/README.md has the sources.
struct SharedItem {
  const char* prefix;
  const char* what;
};
constexpr SharedItem kSharedItems[] = {
    {"data/wikitext-2", "WikiText-2 test text"},
    {"data/calib.txt", "calibration text"},
    {"data/tinystories", "TinyStories validation text, stories260k's evaluation text"},
    {"data/tokenizers", "real Llama-2/Llama-3/Qwen3/GPT-2 tokenizers"},
    {"data/tokenizers/ggml-vocab", "llama.cpp's tokenizer test vectors and vocab-only GGUF files"},
    {"models/stories260k", "the stories260k model and its PyTorch reference logits"},
    {"anchors/llamacpp_llama-27m.txt", "llama.cpp's measured figures for llama-27m"},
    {"anchors/peer_gptq_llama-27m.json", "the GPTQ reference code's perplexities for llama-27m"},
};

}  // namespace

std::string MissingShared(const std::string& rel) {
  const std::filesystem::path path = SharedDir() / rel;
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) return "";
  std::string what = "test data";
  size_t best = 0;
  for (const SharedItem& item : kSharedItems) {
    const std::string prefix = item.prefix;
    if (rel.compare(0, prefix.size(), prefix) == 0 && prefix.size() > best) {
      best = prefix.size();
      what = item.what;
    }
  }
  return "needs ../shared/" + rel + " (" + what +
         ", from the project's shared data folder; see README); not found at " + path.string();
}

std::filesystem::path LocalText() {
  static const std::filesystem::path path = [] {
    std::ifstream in(RepoDir() / "README.md", std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    const std::string readme = ss.str();
    QF_CHECK(!readme.empty(), "cannot read {}", (RepoDir() / "README.md").string());
    std::string text;
    while (text.size() < 100000) text += readme;
    const auto p = TempDir() / "local_text.txt";
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }();
  return path;
}

std::filesystem::path TempDir() {
  // Removed when the test process exits (some tests write hundreds of MiB there), unless
  // QF_KEEP_TEST_DIRS is set. The handler reads its own copy of the path: it runs after the
  // static below is destroyed, having been registered while the static was being built.
  static const std::filesystem::path dir = [] {
    auto d = std::filesystem::temp_directory_path() / ("qforge_test_" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    static const std::string* doomed = new std::string(d.string());
    if (!std::getenv("QF_KEEP_TEST_DIRS"))
      std::atexit([] {
        std::error_code ec;
        std::filesystem::remove_all(*doomed, ec);
      });
    return d;
  }();
  return dir;
}

std::string QforgeBinary() { return std::string(QF_BINARY_DIR) + "/qforge"; }

int RunCommand(const std::string& cmd, std::string* output) {
  output->clear();
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return -1;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) output->append(buf.data(), n);
  const int st = ::pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

std::vector<float> RandomNormal(size_t n, uint64_t seed, float sd, float center) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(center, sd);
  std::vector<float> v(n);
  for (float& x : v) x = nd(rng);
  return v;
}

QuantizedTensor QuantizeOrDie(const std::vector<float>& w, int64_t n, int64_t k,
                              const std::string& spec) {
  Result<QuantScheme> s = ParseScheme(spec);
  EXPECT_TRUE(s.ok()) << spec << ": " << (s.ok() ? "" : s.error().message());
  if (!s.ok()) return {};
  Result<QuantizedTensor> q = Quantize(w, n, k, *s);
  EXPECT_TRUE(q.ok()) << spec << ": " << (q.ok() ? "" : q.error().message());
  return q.ok() ? std::move(q).value() : QuantizedTensor{};
}

double FixedPointGemvBound(const float* w, const float* x, int64_t k, int xmax, double rel) {
  double mag = 0, wsum = 0, amax = 0;
  for (int64_t i = 0; i < k; ++i) {
    mag += std::fabs(double(w[i]) * x[i]);
    wsum += std::fabs(double(w[i]));
    amax = std::max(amax, std::fabs(double(x[i])));
  }
  return (xmax > 0 ? wsum * amax / xmax / 2 : 0.0) + rel * mag + 1e-30;
}

double GgmlGemvBound(const float* w, const float* x, int64_t k, double rel) {
  return FixedPointGemvBound(w, x, k, kernels::GgmlGemvActivationMax(), rel);
}

double Q8GemmBound(const float* w, const float* x, int64_t k, double rel) {
  double mag = 0, err = 0;
  for (int64_t b = 0; b < k; b += 32) {
    double wsum = 0, amax = 0;
    for (int64_t i = b; i < std::min(k, b + 32); ++i) {
      mag += std::fabs(double(w[i]) * x[i]);
      wsum += std::fabs(double(w[i]));
      amax = std::max(amax, std::fabs(double(x[i])));
    }
    err += wsum * amax / 127 / 2;
  }
  return err + rel * mag + 1e-30;
}

double A16GemmBound(const float* w, const float* x, int64_t k, int64_t span, double rel) {
  double mag = 0, err = 0;
  for (int64_t b = 0; b < k; b += span) {
    double wsum = 0, amax = 0;
    for (int64_t i = b; i < std::min(k, b + span); ++i) {
      mag += std::fabs(double(w[i]) * x[i]);
      wsum += std::fabs(double(w[i]));
      amax = std::max(amax, std::fabs(double(x[i])));
    }
    err += wsum * amax / 32767 / 2;
  }
  return err + rel * mag + 1e-30;
}

double GgmlMatMulBound(const GgmlTensor& w, int64_t m, const float* wr, const float* x, int64_t k) {
  if (m > kernels::kGgmlGemvTokens && kernels::GgmlQ8Runs(w)) return Q8GemmBound(wr, x, k, 1e-5);
  return GgmlGemvBound(wr, x, k, 1e-5);
}

}  // namespace qf::testing
