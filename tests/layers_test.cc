// The folders of src/ are layers (docs/ARCHITECTURE.md): a file may include its own folder and
// the folders below it, never one above. This test reads every source file and checks each
// `#include "folder/..."` against the order, so a new upward include fails the suite.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "test_util.h"

namespace qf {
namespace {

namespace fs = std::filesystem;

// Bottom to top. tools/ (the CLI) and fuzz/ sit above all of them.
const std::vector<std::string> kLayers = {"core",  "formats", "kernels", "io",       "text",
                                          "model", "train",   "methods", "pipeline", "eval"};

int LayerOf(const std::string& folder) {
  for (size_t i = 0; i < kLayers.size(); ++i)
    if (kLayers[i] == folder) return int(i);
  return -1;
}

TEST(Layers, NoIncludeGoesUp) {
  const fs::path src = testing::RepoDir() / "src";
  const std::regex include(R"re(^\s*#\s*include\s*"([a-z_]+)/)re");
  int files = 0, includes = 0;
  for (const auto& e : fs::recursive_directory_iterator(src)) {
    if (!e.is_regular_file()) continue;
    const std::string ext = e.path().extension().string();
    if (ext != ".h" && ext != ".cc") continue;
    const std::string folder = fs::relative(e.path(), src).begin()->string();
    const int layer = LayerOf(folder);
    ASSERT_GE(layer, 0) << "src/" << folder << " is in no layer: add it to kLayers and to "
                        << "docs/ARCHITECTURE.md";
    ++files;
    std::ifstream in(e.path());
    std::string line;
    int n = 0;
    while (std::getline(in, line)) {
      ++n;
      std::smatch m;
      if (!std::regex_search(line, m, include)) continue;
      const int to = LayerOf(m[1]);
      if (to < 0) continue;  // a library header such as "hwy/..." or "fmt/..."
      ++includes;
      EXPECT_LE(to, layer) << fs::relative(e.path(), src).string() << ":" << n << " (" << folder
                           << ") includes " << m[1] << "/, a layer above it";
    }
  }
  EXPECT_GT(files, 50);      // the walk found the tree
  EXPECT_GT(includes, 100);  // and its includes
}

// Every folder of src/ is a layer and every layer a folder.
TEST(Layers, FoldersAreTheLayers) {
  std::vector<std::string> folders;
  for (const auto& e : fs::directory_iterator(testing::RepoDir() / "src"))
    if (e.is_directory()) folders.push_back(e.path().filename().string());
  std::sort(folders.begin(), folders.end());
  std::vector<std::string> layers = kLayers;
  std::sort(layers.begin(), layers.end());
  EXPECT_EQ(folders, layers);
}

}  // namespace
}  // namespace qf
