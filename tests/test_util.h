// Shared helpers for tests: where the repository, the bundled model and ../shared data live.
// Tests that need ../shared skip with QF_NEED_SHARED when it is absent; the rest run without it.
#pragma once

#include <gtest/gtest.h>
#include <hwy/targets.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "formats/quantize.h"
#include "kernels/qgemm.h"

namespace qf::testing {

std::filesystem::path RepoDir();  // the source tree
// ../shared beside the repository, or $QF_SHARED_DIR when set (QF_SHARED_DIR=/nonexistent runs
// the suite as on a machine with the repository alone).
std::filesystem::path SharedDir();
std::filesystem::path BundledModel();  // models/llama-27m in the repository
std::filesystem::path TempDir();       // a fresh, per-process scratch folder
std::string QforgeBinary();            // build/qforge of this build

// Empty when SharedDir() / `rel` exists; else one line saying what is missing, what it is and
// where it comes from, e.g. "needs ../shared/data/calib.txt (calibration text, from the
// project's shared data folder; see README); not found at /x/shared/data/calib.txt".
std::string MissingShared(const std::string& rel);

// A text for tests whose assertions hold for any text (window counts, errors, a model against
// itself or its own saved logits): the repository's README.md repeated to at least 100,000
// bytes, written once per process into TempDir(). Deterministic for a given checkout.
std::filesystem::path LocalText();

// Runs fn once per Highway SIMD target compiled into the binary that this CPU supports (each
// kernel's SIMD paths against its reference), then restores the default choice.
template <class Fn>
void ForEachTarget(Fn&& fn) {
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    SCOPED_TRACE(hwy::TargetName(target));
    fn();
  }
  hwy::SetSupportedTargetsForTest(0);
}

// Runs a shell command; returns its exit status and fills `output` with stdout+stderr.
int RunCommand(const std::string& cmd, std::string* output);

// n floats drawn from N(center, sd^2) by a std::mt19937_64 seeded with `seed`.
std::vector<float> RandomNormal(size_t n, uint64_t seed, float sd = 1.0f, float center = 0.0f);

// Quantize(w[n, k]) to the scheme `spec` (ParseScheme), adding a test failure (with the spec and
// the error) when either fails.
QuantizedTensor QuantizeOrDie(const std::vector<float>& w, int64_t n, int64_t k,
                              const std::string& spec);

// The error bound of a GEMV with fixed-point activations for one output y = w · x over k inputs
// (w: the reference decoder's weights): the activations' rounding, Σ|w| · max|x| / xmax / 2
// (none when xmax is 0: the float path), plus rel · Σ|w·x| of float rounding.
double FixedPointGemvBound(const float* w, const float* x, int64_t k, int xmax, double rel);
// kernels::GgmlGemv's: xmax = kernels::GgmlGemvActivationMax() on the SIMD target chosen now.
double GgmlGemvBound(const float* w, const float* x, int64_t k, double rel);

// kernels/cpu/q8_gemm.h's (activations in blocks of 32, 8 bits: half a block's step per
// weight, max|x over the block| / 127 / 2).
double Q8GemmBound(const float* w, const float* x, int64_t k, double rel);
// kernels/cpu/a16_gemm.h's (activations in spans of `span`, 16 bits: max|x over the span| /
// 32767 / 2 per weight).
double A16GemmBound(const float* w, const float* x, int64_t k, int64_t span, double rel);
// kernels::MatMulGgmlNT's for one output of w with m tokens (rel 1e-5): the GEMV's up to 8
// tokens, the Q8 prefill's beyond where it runs (the float tiles are exact up to float
// rounding, within either). wr: the output's decoded weight row, x: the token's activations.
double GgmlMatMulBound(const GgmlTensor& w, int64_t m, const float* wr, const float* x, int64_t k);

// Shorthands for CLI tests: the binary, the bundled model, the WikiText-2 test file, the local
// text as strings.
inline std::string Q() { return QforgeBinary(); }
inline std::string Bundled() { return BundledModel().string(); }
inline std::string Wiki() { return (SharedDir() / "data/wikitext-2/wiki.test.raw").string(); }
inline std::string Local() { return LocalText().string(); }

}  // namespace qf::testing

// Skips the current test (in a TEST body or a fixture's SetUp) with MissingShared's one-line
// reason unless ../shared/`rel` exists, e.g. QF_NEED_SHARED("data/wikitext-2/wiki.test.raw").
#define QF_NEED_SHARED(rel)                                                   \
  do {                                                                        \
    const std::string qf_missing_shared_ = ::qf::testing::MissingShared(rel); \
    if (!qf_missing_shared_.empty()) GTEST_SKIP() << qf_missing_shared_;      \
  } while (0)
