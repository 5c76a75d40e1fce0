// Shared test helpers (paths, scratch folders, running the CLI).
#include "test_util.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <sys/wait.h>

#include "kernels/cpu/ggml_dot.h"

namespace qf::testing {

std::filesystem::path RepoDir() { return QF_SOURCE_DIR; }
std::filesystem::path SharedDir() { return RepoDir().parent_path() / "shared"; }
std::filesystem::path BundledModel() { return RepoDir() / "models" / "llama-27m"; }

std::filesystem::path TempDir() {
  static const std::filesystem::path dir = [] {
    auto d = std::filesystem::temp_directory_path() /
             ("qforge_test_" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
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

double GgmlGemvBound(const float* w, const float* x, int64_t k, double rel) {
  double mag = 0, wsum = 0, amax = 0;
  for (int64_t i = 0; i < k; ++i) {
    mag += std::fabs(double(w[i]) * x[i]);
    wsum += std::fabs(double(w[i]));
    amax = std::max(amax, std::fabs(double(x[i])));
  }
  const int xmax = kernels::GgmlGemvActivationMax();
  return (xmax > 0 ? wsum * amax / xmax / 2 : 0.0) + rel * mag + 1e-30;
}

}  // namespace qf::testing
