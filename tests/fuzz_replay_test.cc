// Replays every fuzz harness (fuzz/harness.h) on its seed corpus (fuzz/corpus/<name>/) and on
// the inputs a fuzzer once found (tests/data/fuzz_regressions/<name>/), without clang or
// libFuzzer: what was fixed stays fixed. Each target must have seeds its parser accepts.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "harness.h"
#include "test_util.h"

namespace qf {
namespace {

namespace fs = std::filesystem;

std::vector<uint8_t> ReadAll(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

std::vector<fs::path> FilesIn(const fs::path& dir) {
  std::vector<fs::path> out;
  if (!fs::is_directory(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && e.path().extension() != ".md") out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

TEST(FuzzReplay, EveryHarnessHasABinaryAndEveryBinaryAHarness) {
  std::set<std::string> cmake, harnesses;
  std::stringstream list(QF_FUZZ_TARGETS);
  for (std::string name; std::getline(list, name, ',');) cmake.insert(name);
  for (const fuzz::Target& t : fuzz::Targets()) harnesses.insert(std::string(t.name));
  EXPECT_EQ(cmake, harnesses) << "CMakeLists.txt QF_FUZZ_TARGETS vs fuzz::Targets()";
}

class FuzzReplay : public ::testing::TestWithParam<fuzz::Target> {};

TEST_P(FuzzReplay, SeedsAndRegressionsKeepTheirContracts) {
  const fuzz::Target& t = GetParam();
  const fs::path seeds = testing::RepoDir() / "fuzz/corpus" / t.name;
  const fs::path regressions = testing::RepoDir() / "tests/data/fuzz_regressions" / t.name;
  size_t accepted = 0, seen = 0;
  for (const fs::path& dir : {seeds, regressions}) {
    for (const fs::path& f : FilesIn(dir)) {
      const std::vector<uint8_t> bytes = ReadAll(f);
      const fuzz::Outcome o = t.run(bytes);
      EXPECT_EQ(o.violated, "") << f;
      ++seen;
      if (dir == seeds && o.accepted) ++accepted;
    }
  }
  EXPECT_GT(accepted, 0u) << seeds << " should hold at least one input the parser accepts (" << seen
                          << " inputs replayed)";
}

INSTANTIATE_TEST_SUITE_P(Targets, FuzzReplay,
                         ::testing::ValuesIn(fuzz::Targets().begin(), fuzz::Targets().end()),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace qf
