// `mpirun -np 2 qforge quantize ...` (core/dist.h): the calibration windows spread over two
// ranks give the single process's bytes, run after run; a rank that dies
// fails the job with no output under the final name; QAT trains on the ranks' windows; kld
// --save-base-logits writes the single process's file;
// commands that do not spread their work refuse to run under mpirun. Skips where the build has no
// MPI or mpirun is missing.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>

#include "core/dist.h"
#include "test_util.h"

namespace qf {
namespace {

namespace fs = std::filesystem;
using qf::testing::Bundled;
using qf::testing::Local;
using qf::testing::Q;
using qf::testing::RunCommand;

// Root runs as in CI need --allow-run-as-root; two ranks on a 2-core machine, --oversubscribe
// where it has fewer.
const char* kMpirun = "mpirun --oversubscribe --allow-run-as-root -np 2 ";
const char* kMpirun3 = "mpirun --oversubscribe --allow-run-as-root -np 3 ";

#define QF_NEED_MPI()                                                                  \
  do {                                                                                 \
    if (!dist::Built()) GTEST_SKIP() << "this build has no Open MPI (libopenmpi-dev)"; \
    std::string o_;                                                                    \
    if (RunCommand("mpirun --version", &o_) != 0)                                      \
      GTEST_SKIP() << "mpirun not found (openmpi-bin)";                                \
  } while (0)

// The JSON object in a command's output (stdout and stderr together: mpirun may add lines of
// its own before or after it).
nlohmann::json JsonIn(const std::string& out) {
  const size_t a = out.find('{'), b = out.rfind('}');
  if (a == std::string::npos || b == std::string::npos || b < a) return nullptr;
  return nlohmann::json::parse(out.substr(a, b - a + 1));
}

// A ppl / kld --json report without its timing fields (they differ from run to run).
nlohmann::json Figures(const std::string& out) {
  nlohmann::json j = JsonIn(out);
  for (const char* key : {"seconds", "tokens_per_second"}) {
    j.erase(key);
    for (const char* side : {"base_ppl", "other_ppl"})
      if (j.contains(side)) j[side].erase(key);
  }
  return j;
}

std::string Bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Calibration of the bundled model on the local text, 8 windows of 128 tokens, `threads` per
// process; `flags` picks scheme and method.
std::string Quantize(const std::string& launcher, const fs::path& out, const std::string& flags,
                     int threads = 1) {
  return launcher + Q() + " quantize " + Bundled() + " -o " + out.string() + " " + flags +
         " --calib " + Local() + " --nsamples 8 --seqlen 128 -t " + std::to_string(threads);
}

// Two ranks give the single process's bytes: the Hessians are summed in double-double
// (methods/hessian.h), so folding the ranks' sums gives the bits of one process's sum; channel
// maxima fold exactly; GPTQ's rows are solved in the same fixed chunks on whichever rank holds
// them; AWQ's scale candidates are scored on the ranks in shares and gathered. GPTQ (W4A16),
// SmoothQuant with a static activation scale (W8A8-static), AWQ (W4A16) and
// GPTQ into GGUF k-quants (Q4_K_M, rows split as for W4A16), GPTQ on the rotated model (each
// rank writes its own rotated copy); GPTQ also twice on two ranks.
TEST(Mpi, TwoRanksGiveTheSingleProcessBytes) {
  QF_NEED_MPI();
  const fs::path dir = qf::testing::TempDir() / "mpi";
  for (const auto& [name, flags] :
       {std::pair<std::string, std::string>{"gptq", "--scheme W4A16 --method gptq"},
        {"sq", "--scheme W8A8-static --method smoothquant"},
        {"awq", "--scheme W4A16 --method awq"},
        {"q4km.gguf", "--scheme Q4_K_M --method gptq"},
        {"rot", "--scheme W4A16 --method gptq --rotate hadamard"}}) {
    SCOPED_TRACE(name);
    const bool gguf = name.ends_with(".gguf");
    const auto file = [&](const std::string& run) {
      const fs::path out = dir / (run + "-" + name);
      return gguf ? out : out / "model.safetensors";
    };
    std::string log;
    ASSERT_EQ(RunCommand(Quantize(kMpirun, dir / ("a-" + name), flags) + " --json", &log), 0)
        << log;
    const auto rep = JsonIn(log);
    EXPECT_EQ(rep["ranks"], 2) << log;
    // The single process on two threads (the output does not depend on the thread count).
    ASSERT_EQ(RunCommand(Quantize("", dir / ("one-" + name), flags, 2), &log), 0) << log;
    const std::string a = Bytes(file("a"));
    ASSERT_FALSE(a.empty());
    EXPECT_TRUE(a == Bytes(file("one"))) << "2 ranks differ from one process";
    if (name == "gptq") {  // and run after run
      ASSERT_EQ(RunCommand(Quantize(kMpirun, dir / ("b-" + name), flags), &log), 0) << log;
      EXPECT_TRUE(a == Bytes(file("b"))) << "two 2-rank runs differ";
    }
  }
}

// A rank killed during calibration (at its first exchange) fails the whole job: non-zero exit,
// mpirun names the dead rank, and nothing is left under the output's name.
TEST(Mpi, ADeadRankFailsTheJobWithoutOutput) {
  QF_NEED_MPI();
  const fs::path out = qf::testing::TempDir() / "mpi_dead";
  std::string log;
  const int rc = RunCommand(Quantize(std::string(kMpirun) + "-x QF_TEST_KILL_RANK=1 ", out,
                                     "--scheme W4A16 --method gptq"),
                            &log);
  EXPECT_NE(rc, 0) << log;
  EXPECT_NE(log.find("rank 1"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(out)) << log;
}

// Commands that would run whole on every rank refuse.
TEST(Mpi, OtherCommandsRefuse) {
  QF_NEED_MPI();
  std::string log;
  EXPECT_NE(RunCommand(std::string(kMpirun) + Q() + " generate " + Bundled() + " -p Hi -n 2", &log),
            0);
  EXPECT_NE(log.find("under mpirun only 'quantize', 'imatrix', 'ppl' and 'kld' run"),
            std::string::npos)
      << log;
}

// kld --save-base-logits on two ranks (BASE alone, and BASE OTHER): rank 0 writes its windows,
// rank 1 hands its windows over at the end: the single process's file, byte for byte; and
// kld --base-logits reads it on two ranks with the single process's figures.
TEST(Mpi, TwoRanksSaveTheSingleProcessBaseLogits) {
  QF_NEED_MPI();
  const fs::path dir = qf::testing::TempDir() / "mpi_base_logits";
  fs::create_directories(dir);
  const fs::path q = dir / "rtn";
  std::string log;
  ASSERT_EQ(
      RunCommand(Q() + " quantize " + Bundled() + " -o " + q.string() + " --scheme W4A16 -q", &log),
      0)
      << log;
  const std::string args = " --text " + Local() + " --ctx 64 --max-windows 5 -q -t 1";
  for (const std::string& other : {std::string(), " " + q.string()}) {
    SCOPED_TRACE(other.empty() ? "BASE alone" : "BASE OTHER");
    const std::string cmd = " kld " + Bundled() + other + args + " --save-base-logits ";
    ASSERT_EQ(RunCommand(Q() + cmd + (dir / "one.qfbl").string(), &log), 0) << log;
    ASSERT_EQ(RunCommand(std::string(kMpirun) + Q() + cmd + (dir / "two.qfbl").string(), &log), 0)
        << log;
    const std::string one = Bytes(dir / "one.qfbl");
    ASSERT_FALSE(one.empty());
    EXPECT_TRUE(one == Bytes(dir / "two.qfbl")) << "2 ranks differ from one process";
    for (const auto& e : fs::directory_iterator(dir))  // the scratch file is gone
      EXPECT_EQ(e.path().filename().string().find(".spill"), std::string::npos) << e.path();
  }
  std::string one, two;
  const std::string read =
      " kld --base-logits " + (dir / "two.qfbl").string() + " " + q.string() + args + " --json";
  ASSERT_EQ(RunCommand(Q() + read, &one), 0) << one;
  ASSERT_EQ(RunCommand(std::string(kMpirun) + Q() + read, &two), 0) << two;
  EXPECT_EQ(Figures(one), Figures(two));
}

// QAT on two ranks (methods/qat.h): each rank trains on the windows it holds and the
// gradients of a step are summed over the ranks that ran its windows. One window per step
// (the default) gives the single process's bytes, block-wise and end to end; with several
// windows per step the sums group otherwise, and two 2-rank runs agree with each other.
TEST(Mpi, QatOnTwoRanks) {
  QF_NEED_MPI();
  const fs::path dir = qf::testing::TempDir() / "mpi_qat";
  const std::string flags = "--scheme W2A16 --method gptq+qat --e2e-epochs 1 -q";
  std::string log;
  ASSERT_EQ(RunCommand(Quantize("", dir / "one", flags, 2), &log), 0) << log;
  ASSERT_EQ(RunCommand(Quantize(kMpirun, dir / "two", flags), &log), 0) << log;
  const std::string one = Bytes(dir / "one" / "model.safetensors");
  ASSERT_FALSE(one.empty());
  EXPECT_TRUE(one == Bytes(dir / "two" / "model.safetensors")) << "2 ranks differ from one process";
  for (const std::string run : {"b1", "b2"})
    ASSERT_EQ(RunCommand(Quantize(kMpirun, dir / run, flags + " --batch 3"), &log), 0) << log;
  const std::string b1 = Bytes(dir / "b1" / "model.safetensors");
  ASSERT_FALSE(b1.empty());
  EXPECT_TRUE(b1 == Bytes(dir / "b2" / "model.safetensors")) << "two 2-rank runs differ";
  EXPECT_FALSE(b1 == one) << "--batch 3 trained as --batch 1";
  // Trained norms (block-wise and end to end): every rank steps every norm from the summed
  // gradients, so one window per step is again the single process's bytes.
  const std::string nflags = flags + " --block-norms --e2e-norms --e2e-final-norm";
  ASSERT_EQ(RunCommand(Quantize("", dir / "n1", nflags, 2), &log), 0) << log;
  ASSERT_EQ(RunCommand(Quantize(kMpirun, dir / "n2", nflags), &log), 0) << log;
  const std::string n1 = Bytes(dir / "n1" / "model.safetensors");
  ASSERT_FALSE(n1.empty());
  EXPECT_TRUE(n1 == Bytes(dir / "n2" / "model.safetensors")) << "norms: 2 ranks differ";
  EXPECT_FALSE(n1 == one) << "the norms did not train";
  // QAT into GGUF k-quant blocks (GgmlQatLinear: rows and their blocks' d, m split as above).
  const std::string gflags = "--scheme Q2_K --method gptq+qat --e2e-epochs 1 -q";
  ASSERT_EQ(RunCommand(Quantize("", dir / "g1.gguf", gflags, 2), &log), 0) << log;
  ASSERT_EQ(RunCommand(Quantize(kMpirun, dir / "g2.gguf", gflags), &log), 0) << log;
  const std::string g1 = Bytes(dir / "g1.gguf");
  ASSERT_FALSE(g1.empty());
  EXPECT_TRUE(g1 == Bytes(dir / "g2.gguf")) << "Q2_K QAT: 2 ranks differ from one process";
}

// ppl and kld on two ranks (windows split, per-window results gathered and summed in window
// order) print the single process's figures to the last digit.
TEST(Mpi, TwoRanksScoreAsOneProcess) {
  QF_NEED_MPI();
  const fs::path q = qf::testing::TempDir() / "mpi_rtn";
  std::string log;
  ASSERT_EQ(
      RunCommand(Q() + " quantize " + Bundled() + " -o " + q.string() + " --scheme W4A16 -q", &log),
      0)
      << log;
  const std::string args = " --text " + Local() + " --ctx 128 --max-windows 9 --json -q -t 1";
  for (const std::string& cmd :
       {"ppl " + Bundled() + args, "kld " + Bundled() + " " + q.string() + args}) {
    SCOPED_TRACE(cmd);
    std::string one, two;
    ASSERT_EQ(RunCommand(Q() + " " + cmd, &one), 0) << one;
    ASSERT_EQ(RunCommand(std::string(kMpirun) + Q() + " " + cmd, &two), 0) << two;
    EXPECT_EQ(Figures(one), Figures(two));
  }
}

// imatrix on three ranks (chunks split 3/3/3 of 9, sums in double-double folded in rank order)
// writes the single process's file, GGUF and legacy .dat.
TEST(Mpi, ImatrixOnRanksWritesTheSingleProcessFile) {
  QF_NEED_MPI();
  const fs::path dir = qf::testing::TempDir() / "mpi_imatrix";
  fs::create_directories(dir);
  for (const std::string ext : {".gguf", ".dat"}) {
    SCOPED_TRACE(ext);
    const std::string args = " imatrix " + Bundled() + " --calib " + Local() +
                             " --ctx 64 --chunks 9 -t 1 -q" + (ext == ".dat" ? " --legacy" : "") +
                             " -o " + (dir / "r").string();
    std::string log;
    ASSERT_EQ(RunCommand(Q() + args + "one" + ext, &log), 0) << log;
    ASSERT_EQ(RunCommand(std::string(kMpirun3) + Q() + args + "three" + ext, &log), 0) << log;
    const std::string one = Bytes(dir / ("rone" + ext));
    ASSERT_FALSE(one.empty());
    EXPECT_TRUE(one == Bytes(dir / ("rthree" + ext))) << "3 ranks differ from one process";
  }
}

}  // namespace
}  // namespace qf
