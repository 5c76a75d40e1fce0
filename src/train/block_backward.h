// One decoder block's training pass: the forward is model::WalkBlock itself (hooks substitute
// the block's linears and keep what the backward needs), so training sees exactly the forward
// that inference runs; the backward follows the walk's dataflow in reverse with the ops of
// train/backward_ops.h. One window of t tokens from position 0 at a time (calibration windows).
// Llama-style blocks, with or without q/k norms (Qwen3); biases and q/k norms run in the forward
// and are not trained; the attention and MLP input norms can be (NormGrads).
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "model/decoder_walk.h"
#include "model/model.h"

namespace qf::train {

// The block's linears as the walk should run them, in model::kBlockLinears order.
using BlockLinears = std::array<const model::Linear*, 7>;

// What one window's forward keeps: the stage inputs, q/k after RoPE, v, the residual stream
// after attention (x1) and the output (x).
struct BlockTape {
  BlockTape(const model::ModelConfig& c, int64_t t);
  int64_t t;
  std::vector<float> x, attn_in, q, k, v, att, proj, x1, mlp_in, g, u;
};

// tape.x = the block's output for input x0 [t, H] (positions 0..t-1, RoPE tables cos/sin).
void ForwardBlock(const model::ModelConfig& c, const model::Layer& blk, int64_t layer,
                  const BlockLinears& lin, const float* x0, const float* cos, const float* sin,
                  BlockTape& tape);

// Scratch of the backward pass for windows of t tokens.
struct BackwardScratch {
  BackwardScratch(const model::ModelConfig& c, int64_t t);
  std::vector<float> dx1, dmlp, dh, dgate, dup, gate, datt, dq, dk, dv, dyt, tmp;
  std::vector<float> q_lin, k_lin, dk_lin;  // families with q/k norms (Qwen3)
  std::vector<float> xq;                    // a linear's quantized input (activation schemes)
};

// The block's norms whose weight gradients a backward adds up (null: not wanted): attention
// and MLP input norms, [H] each.
struct NormGrads {
  float* attn_norm = nullptr;
  float* ffn_norm = nullptr;
};

// Given dout = ∂loss/∂(block output) [t, H], adds ∂loss/∂W of each linear (as run: lin[i]'s
// weight, times its input quantized as the forward did when lin[i]->act is enabled; the input's
// gradient passes that quantization straight through) to dw[i] ([n, k] each; a null entry is
// skipped), the norms' weight gradients to dnorm's non-null entries, and writes ∂loss/∂x0 to dx0
// when it is non-null. Linears must be fp32 (weight non-empty).
void BackwardBlock(const model::ModelConfig& c, const model::Layer& blk, const BlockLinears& lin,
                   const BlockTape& tape, const float* x0, const float* dout, const float* cos,
                   const float* sin, std::array<float*, 7> dw, float* dx0, BackwardScratch& s,
                   NormGrads dnorm = {});

}  // namespace qf::train
