// Nothing lost on a crash: `qforge quantize` (folder and GGUF output) and `convert` killed with
// SIGKILL at points spread over their run leave the destination either with its previous
// complete content, with the new complete content, or (when there was none) absent; never a
// half-written output under the final name.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

extern char** environ;

namespace qf {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// A file's bytes, or every regular file of a folder by name; empty when the path is absent.
using Content = std::map<std::string, std::string>;
Content ReadContent(const fs::path& p) {
  Content c;
  auto read = [](const fs::path& f) {
    std::ifstream in(f, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
  };
  std::error_code ec;
  if (fs::is_regular_file(p, ec)) {
    c[""] = read(p);
  } else if (fs::is_directory(p, ec)) {
    for (const auto& e : fs::directory_iterator(p))
      if (e.is_regular_file()) c[e.path().filename().string()] = read(e.path());
    c["<folder>"] = "";  // an empty folder is still not "absent"
  }
  return c;
}

// Starts qforge with `args`, kills it after `delay` (unless it ended); true when it was killed.
bool RunAndKill(const std::vector<std::string>& args, std::chrono::microseconds delay) {
  std::vector<std::string> all = {testing::QforgeBinary()};
  all.insert(all.end(), args.begin(), args.end());
  all.push_back("-q");
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  EXPECT_EQ(rc, 0) << "cannot start " << argv[0];
  if (rc != 0) return false;
  const auto end = Clock::now() + delay;
  int status = 0;
  while (Clock::now() < end) {
    if (waitpid(pid, &status, WNOHANG) == pid) return false;  // finished before the kill
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return WIFSIGNALED(status);
}

// Runs the command to completion and returns how long it took (the content is then `out`).
double RunWhole(const std::vector<std::string>& args) {
  std::string cmd = testing::Q();
  for (const auto& a : args) cmd += " '" + a + "'";
  const auto t0 = Clock::now();
  std::string log;
  EXPECT_EQ(testing::RunCommand(cmd + " -q", &log), 0) << cmd << "\n" << log;
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// `make(out)` is the command writing `out`; `previous(out)` writes other complete content there.
void CheckKills(const std::string& name, const std::string& ext,
                const std::function<std::vector<std::string>(const std::string&)>& make,
                const std::function<std::vector<std::string>(const std::string&)>& previous) {
  const fs::path dir = testing::TempDir() / ("crash_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string expected_path = (dir / ("expected" + ext)).string();
  const std::string previous_path = (dir / ("previous" + ext)).string();
  const double seconds = RunWhole(make(expected_path));
  RunWhole(previous(previous_path));
  const Content expected = ReadContent(expected_path), before = ReadContent(previous_path);
  ASSERT_FALSE(expected.empty());
  ASSERT_FALSE(before.empty());
  ASSERT_NE(expected, before);
  constexpr int kPoints = 8;
  int killed = 0;
  for (int i = 0; i < kPoints; ++i) {
    for (bool had_previous : {false, true}) {
      const fs::path out = dir / ("out" + std::to_string(i) + (had_previous ? "p" : "") + ext);
      if (had_previous) fs::copy(previous_path, out, fs::copy_options::recursive);
      // Points from the start of the run to just past its usual end.
      const auto delay = std::chrono::microseconds(int64_t(1e6 * seconds * (i + 0.5) / kPoints));
      killed += RunAndKill(make(out.string()), delay);
      const Content now = ReadContent(out);
      const bool ok = now == expected || (had_previous ? now == before : now.empty());
      EXPECT_TRUE(ok) << name << ": killed after " << delay.count() << " us, " << out
                      << " holds neither the old nor the new complete content (" << now.size()
                      << " entries)";
    }
  }
  EXPECT_GT(killed, kPoints / 2) << name << ": too few runs were killed before they ended";
}

TEST(Crash, QuantizeFolderIsWholeOrAbsent) {
  const std::string model = testing::Bundled();
  CheckKills(
      "folder", "",
      [&](const std::string& out) {
        return std::vector<std::string>{"quantize", model, "-o", out, "--scheme", "W4A16"};
      },
      [&](const std::string& out) {
        return std::vector<std::string>{"quantize", model, "-o", out, "--scheme", "W8A16"};
      });
}

TEST(Crash, QuantizeGgufIsWholeOrAbsent) {
  const std::string model = testing::Bundled();
  CheckKills(
      "gguf", ".gguf",
      [&](const std::string& out) {
        return std::vector<std::string>{"quantize", model, "-o", out, "--scheme", "Q4_K_M"};
      },
      [&](const std::string& out) {
        return std::vector<std::string>{"quantize", model, "-o", out, "--scheme", "Q8_0"};
      });
}

TEST(Crash, ConvertIsWholeOrAbsent) {
  const std::string model = testing::Bundled();
  CheckKills(
      "convert", ".gguf",
      [&](const std::string& out) {
        return std::vector<std::string>{"convert", model, "-o", out, "--outtype", "f32"};
      },
      [&](const std::string& out) {
        return std::vector<std::string>{"convert", model, "-o", out, "--outtype", "f16"};
      });
}

}  // namespace
}  // namespace qf
