// Shared helpers for tests: where the repository, the bundled model and ../shared data live.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

namespace qf::testing {

std::filesystem::path RepoDir();      // the source tree
std::filesystem::path SharedDir();    // ../shared beside the repository
std::filesystem::path BundledModel(); // models/llama-27m in the repository
std::filesystem::path TempDir();      // a fresh, per-process scratch folder
std::string QforgeBinary();           // build/qforge of this build
// Runs a shell command; returns its exit status and fills `output` with stdout+stderr.
int RunCommand(const std::string& cmd, std::string* output);

// The error bound of kernels::GgmlGemv for one output y = w · x over k inputs (w: the reference
// decoder's weights): the fixed-point activations' rounding, Σ|w| · max|x| / xmax / 2 with xmax
// = kernels::GgmlGemvActivationMax() on the SIMD target chosen now, plus rel · Σ|w·x| of float
// rounding.
double GgmlGemvBound(const float* w, const float* x, int64_t k, double rel);

// Shorthands for CLI tests: the binary, the bundled model, the WikiText-2 test file as strings.
inline std::string Q() { return QforgeBinary(); }
inline std::string Bundled() { return BundledModel().string(); }
inline std::string Wiki() { return (SharedDir() / "data/wikitext-2/wiki.test.raw").string(); }

}  // namespace qf::testing
