// GPTQ (arXiv 2210.17323): rounds W column by column through a format's Grid, feeding each
// column's error forward through the inverse Hessian. Knows nothing of the format beyond Grid.
// Contract: reproduces IST-DASLab/gptq fasterquant (blocks of 128, lazy sgemm updates, dead
// columns, percdamp, act-order, static groups); output is deterministic and independent of
// the thread count; groups are always contiguous original-order columns (no g_idx).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "core/result.h"
#include "formats/ggml_blocks.h"
#include "formats/grid.h"
#include "formats/quantize.h"
#include "formats/scheme.h"
#include "methods/hessian.h"

namespace qf::methods {

// Column order of the sweep. For schemes without groups both orders below are plain desc_act.
enum class ActOrder : uint8_t {
  kOff,         // original column order
  kDescending,  // desc_act: all columns by descending diag(H). A group then collects columns
                // from all over the sweep, so group parameters are fitted on the original W
                // up front (AutoGPTQ desc_act + static_groups; llm-compressor actorder=weight)
  kGroupAware,  // GAR (GPTQModel act_group_aware): whole groups by descending max diag(H),
                // columns by descending diag(H) inside each group; a group's columns stay
                // consecutive, so its parameters can still be fitted when the sweep reaches it
};

struct GptqOptions {
  int64_t block_size = 128;  // columns per lazy-update block (rounded to fit G for groups)
  double damp = 0.01;        // percdamp: λ = damp · mean(diag H) added to the diagonal
  ActOrder act_order = ActOrder::kOff;
  bool static_groups = false;  // fit every group on the original W before the sweep (implied
                               // by kDescending); otherwise when the sweep reaches the group
  FitOptions fit;              // clip search etc. for Grid::Fit; importance has K entries
  // Under mpirun: the inverse-Cholesky factor is made by all ranks together, each its share of
  // the O(K³) updates (kernels::CholeskySplit), with the one-process bits. Every rank must then
  // make the same factors in the same order (FactorHessian, Gptq, GptqGgml on the same H).
  bool factor_across_ranks = false;
};

struct GptqStats {
  // The reference's `Losses` sum: Σ over rows and columns of (w − q)² / (2 Hinv[i,i]²). Equals
  // ½ Σ_rows ΔW (H + λI) ΔWᵀ with ΔW = W − Ŵ, i.e. ‖X Wᵀ − X Ŵᵀ‖² / n plus the damping term.
  double loss = 0;
  int64_t dead_columns = 0;  // inputs that were always 0: weight set to 0, H[i,i] to 1
  double damp = 0;           // damping actually used (raised when Cholesky failed)
};

// Rows are independent in GPTQ's sweep, which runs them in fixed chunks of this many rows: the
// rows of any chunk-aligned slice of W come out as they do in the whole (data-parallel solves).
inline constexpr int64_t kGptqRowChunk = 32;

// Quantizes W[n, k] (row-major) with error feedback through h [k, k] (full symmetric, e.g.
// HessianAccumulator::matrix()); codes and parameters are in original column order. Group
// schemes whose G does not divide k fall back to per-channel (QuantizedTensor::fallback).
// Errors: shape mismatch, non-finite W or H, bad options, H not positive definite even with
// damping raised to 100% of mean(diag H).
Result<QuantizedTensor> Gptq(std::span<const float> w, int64_t n, int64_t k,
                             std::span<const double> h, const QuantScheme& scheme,
                             const GptqOptions& opt = {}, GptqStats* stats = nullptr);

// What GPTQ derives from the Hessian alone: the dead columns (inputs that were always 0), the
// sweep order and U, the upper inverse-Cholesky factor of the damped Hessian in sweep order.
// Linears that read the same input (q/k/v, gate/up) share one: one factorization per group.
struct GptqFactor {
  int64_t k = 0, g = 0;  // K; columns per parameter set of the resolved scheme (k: none)
  ActOrder act_order = ActOrder::kOff;
  double damp_asked = 0;      // GptqOptions::damp it was made with
  std::vector<uint8_t> dead;  // [k]: 1 where H[i,i] == 0
  int64_t dead_count = 0;
  std::vector<int64_t> perm;  // sweep position -> original column
  std::vector<float> u;       // [k, k] row-major, upper
  double damp = 0;            // damping actually used
};
// Errors: non-finite H, negative diagonal, bad damping, H not positive definite even with
// damping raised to 100% of mean(diag H).
// h is consumed (pass HessianAccumulator::Take() to spare a K x K copy).
Result<GptqFactor> FactorHessian(std::vector<double> h, int64_t k, int64_t g,
                                 const GptqOptions& opt = {});
// Gptq with a factor made by FactorHessian for this K, the scheme's group and these options
// (else an Error); bit for bit the Gptq of the Hessian it was made from.
Result<QuantizedTensor> Gptq(std::span<const float> w, int64_t n, int64_t k, const GptqFactor& f,
                             const QuantScheme& scheme, const GptqOptions& opt = {},
                             GptqStats* stats = nullptr);
// GPTQ with a ggml block type (formats/ggml_blocks) as the grid: when the sweep reaches a block
// of a row, the type's own encoder fits it (sub-block scales and mins, quantized as the format
// stores them) on the error-updated weights, weighted by `importance` [k] (empty: diag(H),
// floored at 1e-6 mean(diag H)); every column is then rounded to the nearest value that block
// can hold and its error fed forward. Returns the rows' blocks (GgmlRowsBytes(t, n, k) bytes).
// Errors as Gptq(), plus: activation-only types, k not a multiple of the block, act-order.
Result<std::vector<std::byte>> GptqGgml(std::span<const float> w, int64_t n, int64_t k,
                                        std::span<const double> h, const GgmlBlockType& t,
                                        std::span<const float> importance = {},
                                        const GptqOptions& opt = {}, GptqStats* stats = nullptr);

// As above with the accumulated Hessian; an Error if it has seen no samples.
Result<QuantizedTensor> Gptq(std::span<const float> w, int64_t n, int64_t k,
                             const HessianAccumulator& h, const QuantScheme& scheme,
                             const GptqOptions& opt = {}, GptqStats* stats = nullptr);

}  // namespace qf::methods
