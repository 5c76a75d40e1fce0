// Quantization-aware training of one decoder block (EfficientQAT's Block-AP, arXiv 2407.11062):
// the block runs with fake-quantized weights ŵ = s·(clamp(rne(w/s) + round(z), 0, maxq) −
// round(z)), the latent weights w and the parameters s, z are trained with AdamW and a cosine
// schedule to minimise the mean squared error between the block's output on the quantized
// model's inputs and the fp model's block output; then the codes are frozen. Rounding passes
// gradients straight through (STE) to the weights: ∂ŵ/∂w = 1 inside the grid, 0 where the code
// clamps. The scales get the exact derivative at fixed codes, ∂ŵ/∂s = code − zero (not LSQ's
// rne(w/s) − w/s: that one is ~0 on a solver's grid-point weights and, as the latent weights
// drift, pushes every scale down); the zeros ∂ŵ/∂z = −s where the code clamps, else 0. Integer
// schemes of the format table; symmetric ones keep z at 2^(bits−1). Contract: the same inputs,
// options and seed give the same codes whatever the thread count (the forward and backward products
// run on kernels::F32Gemm; sums in fixed order).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <functional>
#include <span>
#include <utility>
#include <vector>

#include "core/result.h"
#include "formats/fp8.h"
#include "formats/ggml_blocks.h"
#include "formats/quantize.h"
#include "model/model.h"

namespace qf::methods {

// A linear under training: latent weights and one (scale, zero) per parameter set.
class QatLinear {
 public:
  // Starts from a rounding of the scheme (codes are ignored: the scales and zeros are kept)
  // and latent weights w [rows, cols] (the fp weights, or a solver's dequantized result).
  static Result<QatLinear> Init(const QuantizedTensor& start, std::span<const float> w);

  int64_t rows() const { return n_; }
  int64_t cols() const { return k_; }
  // ŵ [rows, cols], the values the block runs with.
  void FakeQuantize(float* out) const { FakeQuantize(out, 0, n_); }
  // Gradients of the latent weights, scales and zeros (overwritten) from ∂loss/∂ŵ.
  void Backward(const float* dwhat, float* dw, float* ds, float* dz) const {
    Backward(dwhat, dw, ds, dz, 0, n_);
  }
  // The same for rows [r0, r1) only: the other rows' entries of out, dw, and of ds / dz beyond
  // ParamsOfRows(r0, r1), are left as they are (a per-tensor scheme's one set needs every row).
  void FakeQuantize(float* out, int64_t r0, int64_t r1) const;
  void Backward(const float* dwhat, float* dw, float* ds, float* dz, int64_t r0, int64_t r1) const;
  // The parameter sets [p0, p1) of rows [r0, r1), when rows own their sets (channel and group
  // schemes; else the one set of the tensor).
  bool RowsOwnParams() const { return shape_.RowsOwnParams(); }
  std::pair<int64_t, int64_t> ParamsOfRows(int64_t r0, int64_t r1) const {
    return shape_.ParamsOfRows(r0, r1);
  }
  // The codes and parameters of the current state: Dequantize(Freeze()) equals FakeQuantize.
  QuantizedTensor Freeze() const;
  // Calls f(p, c0, c1) for each parameter set p of row r and the columns [c0, c1) it covers,
  // in column order (a per-tensor scheme: the whole row, p = 0).
  template <class F>
  void ForEachParam(int64_t r, F&& f) const {
    shape_.ForEachParam(r, std::forward<F>(f));
  }

  std::vector<float> w, s, z;  // z: code units (asymmetric schemes; fixed otherwise)

 private:
  float Zero(int64_t p) const;
  // The code of latent weight w in the set of scale sc and zero zi: clamp(rne(w/sc) + zi, 0, maxq).
  float Code(float w, float sc, float zi) const {
    return std::clamp(RoundHalfEven(w / sc) + zi, 0.0f, maxq_);
  }
  QuantizedTensor shape_;  // scheme, rows, cols (codes/scales unused)
  int64_t n_ = 0, k_ = 0;
  float maxq_ = 0;

 public:
  // What the optimiser steps (QatStepper): each parameter set's columns with the size of one
  // code step there (f(c0, c1, unit)), and how the zeros train (code units, not as
  // GgmlQatLinear's min factors).
  template <class F>
  void ForEachRun(int64_t r, F&& f) const {
    ForEachParam(r, [&](int64_t p, int64_t c0, int64_t c1) { f(c0, c1, std::fabs(s[size_t(p)])); });
  }
  static constexpr bool kMinsFollowScales = false;
  // Its codes follow the latent weights (the end-to-end pass's frozen codes use CodeLevels).
  static constexpr bool codes_frozen() { return false; }
};

// A linear stored as ggml blocks of any type with codes (Q4_1, Q5_0, Q5_1, the k-quants, IQ4_NL,
// IQ4_XS; Q4_0 and Q8_0 too), under training: latent weights and each block's fp16 header floats
// d and m (Q4_1 / Q5_1 m, k-quant dmin; 0 where the type has none), as d and m / d. Weight i of a
// block runs as S · level(code_i) + O where its run's lattice (GgmlCodeFormat::run) is linear in
// the header, S = d · a + m · a', O = d · o + m · o', the coefficients read once from the starting
// blocks' integers (sub-block scales and mins, which keep the values the start chose), and code_i
// is the nearest code to the latent weight on that lattice (GgmlCodeFormat::Nearest). Gradients as
// QatLinear's scales and zeros: the latent weights straight through inside the grid (0 beyond half
// a level step past its ends), d the exact derivative at fixed codes (and m / d), m / d through the
// weights out of the grid only (inside it rounding passes the move straight to the value's code).
// The optimiser trains d and m / d in log space (relative; the sign kept, a zero stays zero) and
// the latent weights in units of one level step of their run.
class GgmlQatLinear {
 public:
  // blocks: rows x cols weights of type t (GgmlRowsBytes bytes, e.g. GPTQ's or the type's own
  // rounding); w [rows, cols]: the latent weights to start from.
  static Result<GgmlQatLinear> Init(const GgmlBlockType& t, std::span<const std::byte> blocks,
                                    int64_t rows, int64_t cols, std::span<const float> w);

  const GgmlBlockType& type() const { return *t_; }
  int64_t rows() const { return n_; }
  int64_t cols() const { return k_; }
  void FakeQuantize(float* out) const { FakeQuantize(out, 0, n_); }
  void FakeQuantize(float* out, int64_t r0, int64_t r1) const;
  // ∂loss/∂w (dw [rows, cols]) and ∂loss/∂d, ∂loss/∂m (dd, dm, one per block) of rows [r0, r1)
  // from ∂loss/∂ŵ; other entries are left as they are.
  void Backward(const float* dwhat, float* dw, float* dd, float* dm, int64_t r0, int64_t r1) const;
  bool RowsOwnParams() const { return true; }
  std::pair<int64_t, int64_t> ParamsOfRows(int64_t r0, int64_t r1) const {
    return {r0 * blocks_per_row_, r1 * blocks_per_row_};
  }
  template <class F>
  void ForEachRun(int64_t r, F&& f) const {
    const int64_t run = t_->codes->run;
    for (int64_t c0 = 0; c0 < k_; c0 += run) {
      const GgmlLattice l = Lattice(r, c0);
      f(c0, c0 + run, std::fabs(l.scale) * spacing_);
    }
  }
  static constexpr bool kMinsFollowScales = true;
  // The blocks of the current state: d and m rounded to fp16 (nearest even) into the starting
  // blocks, every code the nearest to its latent weight on the rounded lattice. Decoded, they
  // are FakeQuantize's values up to that rounding (exactly, when d and m are fp16 values).
  // With FreezeCodes: the starting blocks with d and m rounded in, and the frozen codes.
  std::vector<std::byte> Freeze() const;
  // The end-to-end pass's scale-only mode (QatLinear's frozen codes and zeros): every code is
  // fixed at the nearest to its latent weight now; from then on the values are S · level + O of
  // those codes, the latent weights and m / d get no gradient (m follows d) and only d trains:
  // each block's values scale about zero.
  void FreezeCodes();
  bool codes_frozen() const { return !codes_.empty(); }

  // Latent weights [rows, cols]; d and m per block. They train as d and m / d (kMinsFollowScales:
  // a step of d scales the block's values about zero, as QatLinear's scales do, and m with it;
  // m's own step moves the offsets).
  std::vector<float> w, s, z;

 private:
  // The lattice of row r's run starting at column c.
  GgmlLattice Lattice(int64_t r, int64_t c) const {
    const int64_t b = r * blocks_per_row_ + c / t_->block;
    const float* k = coef_.data() + 4 * (b * runs_per_block_ + (c % t_->block) / t_->codes->run);
    const float d = s[size_t(b)], m = z[size_t(b)];
    return {d * k[0] + m * k[2], d * k[1] + m * k[3]};
  }
  const GgmlBlockType* t_ = nullptr;
  int64_t n_ = 0, k_ = 0, blocks_per_row_ = 0, runs_per_block_ = 0;
  float spacing_ = 1;             // mean distance of adjacent levels
  float lo_ = 0, hi_ = 0;         // the grid's ends in level units, half a step beyond
  std::vector<std::byte> start_;  // the starting blocks (their integers are kept)
  std::vector<float> coef_;       // per run: a, o, a', o'
  std::vector<uint8_t> codes_;    // [rows, cols] once frozen (FreezeCodes)
  // Weight i's code: the frozen one, else the nearest to its latent weight on lattice l.
  int CodeOf(size_t i, GgmlLattice l) const {
    return codes_.empty() ? t_->codes->Nearest(l, w[i]) : codes_[i];
  }
};

// What the end-to-end tuning minimises: the next-token cross-entropy of the calibration text,
// the KL divergence from the fp model's next-token distributions (every position), or their sum
// (every position with a next token: distillation with the true next token mixed in).
enum class E2eLoss : uint8_t { kNextToken, kKlToFp, kNextTokenAndKl };

// What block-wise training minimises over the block's output: the squared error (EfficientQAT's
// MSE), or each token's squared error divided by the mean square of that token's fp output
// (relative). The next block reads each token through an RMSNorm, i.e. its direction: under the
// plain MSE a token weighs in proportion to its residual-stream norm squared.
enum class BlockLoss : uint8_t { kMse, kRelative };

// Defaults measured on llama-27m (int2/3/4, 128 x 512 calibration tokens): one pass over the
// windows, one window per step.
struct QatOptions {
  int epochs = 1;
  double lr = 1e-2;    // latent weights (AdamW), in units of their group's scale: a step
                       // moves a weight by at most ~lr of one code step, at any bit width
  double lr_q = 1e-3;  // scales (relative: AdamW on log s) and zeros (code units)
  double weight_decay = 0;
  BlockLoss block_loss = BlockLoss::kRelative;
  // Block-wise training: train the block's attention and MLP input norm weights too (AdamW with
  // lr_q, as e2e_norms). They stay fp in every output format.
  bool block_norms = false;
  int64_t batch = 1;  // windows per step
  uint64_t seed = 0;  // window order
  // End-to-end tuning only: train the latent weights too (codes may change, lr; the zeros with
  // lr_q), not only the scales.
  bool e2e_weights = false;
  // End-to-end tuning only: train every block's attention and MLP input RMSNorm weights too
  // (AdamW with lr_q, a step of lr_q moving a weight by at most ~lr_q of its starting value).
  // They stay fp in every output format.
  bool e2e_norms = false;
  // End-to-end tuning only: train the final norm's weights too (as e2e_norms). The final
  // RMSNorm sets the scale of the logits, i.e. the output's temperature: on llama-27m it moved
  // the same way at 2, 3 and 4 bits (-1.7% on average) and the trained vector lowers the fp
  // model's own PPL by as much as the quantized one's, so it tunes the model to the calibration
  // text rather than recover what quantization lost. Off unless asked for.
  bool e2e_final_norm = false;
  E2eLoss e2e_loss = E2eLoss::kNextToken;  // end-to-end tuning only
};

struct QatBlockReport {
  int64_t layer = 0;
  BlockLoss loss = BlockLoss::kRelative;
  // The block loss on the held-out windows (the last eighth, at least one; all when S = 1): of
  // the starting rounding, and of the frozen codes.
  double loss_start = 0;
  double loss_end = 0;
  bool reverted = false;           // training ended above loss_start: the starting rounding is kept
  bool norms = false;              // the block's input norms trained too
  std::vector<double> epoch_loss;  // mean training loss of each epoch (training windows)
  std::vector<float> step_loss;    // the loss of each step's batch: the loss curve
  int64_t steps = 0;
  double seconds = 0;
};

// step, total steps, latest batch loss
using QatProgress = std::function<void(int64_t, int64_t, double)>;

// Trains the non-null entries of `train` (in model::kBlockLinears order; the others run as
// `blk` holds them; with opt.block_norms blk's input norms too, in place) on S windows of T tokens:
// inputs [S', T, H] (the quantized model's block inputs), targets [S', T, H] (the fp block's
// outputs), RoPE tables cos/sin of >= T rows. S' = S in one process; under mpirun the inputs and
// targets are this rank's share dist::Share(S) of the windows: each step's windows run on the ranks
// that hold them, their gradients are summed over those ranks in rank order, and every rank takes
// the same step (with one window per step the result is the single process's, bit for bit).
Result<QatBlockReport> TrainBlock(const model::ModelConfig& c, model::Layer& blk, int64_t layer,
                                  std::array<QatLinear*, 7> train, const float* inputs,
                                  const float* targets, int64_t S, int64_t T, const float* cos,
                                  const float* sin, const QatOptions& opt,
                                  const QatProgress& progress = {});
// The same for linears stored as ggml blocks.
Result<QatBlockReport> TrainBlock(const model::ModelConfig& c, model::Layer& blk, int64_t layer,
                                  std::array<GgmlQatLinear*, 7> train, const float* inputs,
                                  const float* targets, int64_t S, int64_t T, const float* cos,
                                  const float* sin, const QatOptions& opt,
                                  const QatProgress& progress = {});

// Frozen codes, trained scales (the end-to-end pass without e2e_weights): ŵ = s · level with
// level = code − zero per weight. The levels of q [rows, cols] (integer schemes).
std::vector<float> CodeLevels(const QuantizedTensor& q);
// ∂loss/∂s of each parameter set of rows [r0, r1) (a per-tensor scheme: its one set over those
// rows) from dw = ∂loss/∂ŵ [rows, cols]: Σ dw · level over the set's weights, summed in double
// in element order, written to ds (indexed as q.scales); other entries of ds are left alone.
void ScaleGradients(const QuantizedTensor& q, std::span<const float> level, const float* dw,
                    int64_t r0, int64_t r1, float* ds);

// A linear stored as ggml blocks (rows x cols weights of `type`, GgmlRowsBytes bytes), owned and
// rewritten by the end-to-end pass (qf::GgmlTensor is the kernels' read-only view of such bytes).
struct GgmlBlocks {
  const GgmlBlockType* type = nullptr;
  int64_t rows = 0, cols = 0;
  std::vector<std::byte> bytes;
};

// End-to-end tuning of the quantization scales (EfficientQAT's E2E-QP): the codes and zeros
// stay frozen, only the scales of every quantized linear are trained (AdamW on log s, cosine
// schedule, `opt.epochs` passes, `opt.batch` windows per step, lr_q) to minimise the
// next-token cross-entropy of the whole model on the calibration windows; the output stays
// in the same format. With opt.e2e_weights every linear trains as in TrainBlock instead
// (latent weights from the dequantized values with lr, scales and zeros with lr_q; codes
// refrozen at the end): quantization-aware training of the whole model. With opt.e2e_loss =
// kKlToFp the loss is the mean KL(p_fp || p_q) over every position instead (kNextTokenAndKl:
// cross-entropy + KL, over the positions with a next token), p_fp from
// `fp_layers` (the fp model's blocks, final_norm as given and the same lm_head) window by
// window. With opt.e2e_norms the input norms of `layers` train too, with opt.e2e_final_norm
// `final_norm`; both are updated in place.
// `tensors[l][i]` is layer l's linear kBlockLinears[i] (null: kept as `layers` holds it); `layers`
// must hold the dequantized weights of those tensors and is updated with the tuned ones.
// `ggml[l][i]` (optional) is a linear stored as ggml blocks instead (its `tensors` entry null):
// it tunes each block's d with the codes frozen (GgmlQatLinear::FreezeCodes; with e2e_weights it
// trains as in TrainBlock) and its bytes are replaced by the tuned blocks. The last
// eighth of the windows is held out as in TrainBlock. Under mpirun every rank passes all windows
// and the whole model; each window runs on the rank holding it in dist::Share(S), gradients are
// summed as in TrainBlock.
struct QatE2eReport {
  E2eLoss loss = E2eLoss::kNextToken;
  double loss_start = 0, loss_end = 0;  // held-out loss (nats per token)
  std::vector<float> step_loss;
  int64_t steps = 0;
  bool reverted = false;
  bool norms = false;       // the blocks' input norms trained too
  bool final_norm = false;  // the final norm trained too
  double seconds = 0;
};
Result<QatE2eReport> TuneScalesEndToEnd(
    const model::ModelConfig& c, std::vector<model::Layer>& layers,
    const std::vector<std::array<QuantizedTensor*, 7>>& tensors, std::span<const float> embed,
    std::vector<float>& final_norm, const model::Linear& lm_head,
    const std::vector<std::vector<int32_t>>& windows, const float* cos, const float* sin,
    const QatOptions& opt, const QatProgress& progress = {},
    const std::vector<model::Layer>* fp_layers = nullptr,
    const std::vector<std::array<GgmlBlocks*, 7>>* ggml = nullptr);

}  // namespace qf::methods
