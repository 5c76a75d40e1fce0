// One decoder block's forward (through model::WalkBlock) and backward (see block_backward.h).
#include "train/block_backward.h"

#include <algorithm>

#include "core/result.h"
#include "formats/activation.h"
#include "kernels/ops.h"
#include "train/backward_ops.h"

namespace qf::train {
namespace {

using model::LinearId;
constexpr size_t Index(LinearId id) { return size_t(id); }

// Substitutes the block's linears and copies the residual stream after attention (x1), which
// the walk updates in place, when the MLP's input is formed.
struct TapeHooks final : model::WalkHooks {
  const BlockLinears* lin = nullptr;
  const float* x = nullptr;
  float* x1 = nullptr;
  int64_t h = 0;
  void OnInput(const model::WalkPoint&, const float*, int64_t rows, int64_t) override {
    std::copy_n(x, rows * h, x1);
  }
  const model::Linear& Resolve(int64_t, LinearId id, const model::Linear&) override {
    return *(*lin)[Index(id)];
  }
};

}  // namespace

BlockTape::BlockTape(const model::ModelConfig& c, int64_t t_)
    : t(t_),
      x(size_t(t * c.hidden)),
      attn_in(x.size()),
      q(size_t(t * c.q_dim())),
      k(size_t(t * c.kv_dim())),
      v(k.size()),
      att(q.size()),
      proj(x.size()),
      x1(x.size()),
      mlp_in(x.size()),
      g(size_t(t * c.intermediate)),
      u(g.size()) {}

void ForwardBlock(const model::ModelConfig& c, const model::Layer& blk, int64_t layer,
                  const BlockLinears& lin, const float* x0, const float* cos, const float* sin,
                  BlockTape& tape) {
  const int64_t t = tape.t;
  std::copy_n(x0, t * c.hidden, tape.x.data());
  TapeHooks hooks;
  hooks.lin = &lin;
  hooks.x = tape.x.data();
  hooks.x1 = tape.x1.data();
  hooks.h = c.hidden;
  hooks.stages = model::StageBit(model::BlockStage::kMlpIn);
  hooks.resolves = true;
  model::BlockBuffers b;
  b.x = tape.x.data();
  b.attn_in = tape.attn_in.data();
  b.q = tape.q.data();
  b.att = tape.att.data();
  b.proj = tape.proj.data();
  b.mlp_in = tape.mlp_in.data();
  b.g = tape.g.data();
  b.u = tape.u.data();
  const model::KvSlot kv{tape.k.data(), tape.v.data(), cos, sin, 0};
  model::WalkBlock(c, blk, layer, b, t, {&kv, 1}, {}, &hooks);
}

BackwardScratch::BackwardScratch(const model::ModelConfig& c, int64_t t) {
  const int64_t H = c.hidden, F = c.intermediate, qd = c.q_dim(), kvd = c.kv_dim();
  const int64_t widest = std::max({H, F, qd});
  dx1.resize(size_t(t * H));
  dmlp.resize(size_t(t * H));
  dh.resize(size_t(t * F));
  dgate.resize(dh.size());
  dup.resize(dh.size());
  gate.resize(dh.size());
  datt.resize(size_t(t * qd));
  dq.resize(datt.size());
  dk.resize(size_t(t * kvd));
  dv.resize(dk.size());
  if (c.family && c.family->qk_norm) {  // q/k before their norms, recomputed by the backward
    q_lin.resize(size_t(t * qd));
    k_lin.resize(size_t(t * kvd));
    dk_lin.resize(k_lin.size());
  }
  dyt.resize(size_t(t * widest));
  xq.resize(dyt.size());
  tmp.resize(size_t(std::max(t, widest) * widest));
}

void BackwardBlock(const model::ModelConfig& c, const model::Layer& blk, const BlockLinears& lin,
                   const BlockTape& tape, const float* x0, const float* dout, const float* cos,
                   const float* sin, std::array<float*, 7> dw, float* dx0, BackwardScratch& s,
                   NormGrads dnorm) {
  const int64_t t = tape.t, H = c.hidden, F = c.intermediate;
  const float eps = float(c.rms_eps);
  auto back = [&](LinearId id, const float* x, const float* dy, float* dx, bool acc) {
    const model::Linear& L = *lin[Index(id)];
    QF_CHECK(!L.weight.empty(), "training: linear {} is not fp32", int(id));
    if (L.act.enabled()) {  // the weights multiplied the quantized input (dx: straight through)
      QuantizeActivations(L.act, x, s.xq.data(), t, L.k);
      x = s.xq.data();
    }
    LinearBackward(x, L.weight.data(), dy, dx, dw[Index(id)], t, L.n, L.k, acc, s.dyt.data(),
                   s.tmp.data());
  };
  // MLP: x2 = x1 + down(silu(gate) · up).
  back(LinearId::kDown, tape.g.data(), dout, s.dh.data(), false);
  lin[Index(LinearId::kGate)]->Apply(tape.mlp_in.data(), s.gate.data(), t);  // gate before SiLU
  SiluMulBackward(s.gate.data(), tape.u.data(), s.dh.data(), s.dgate.data(), s.dup.data(), t, F);
  back(LinearId::kGate, tape.mlp_in.data(), s.dgate.data(), s.dmlp.data(), false);
  back(LinearId::kUp, tape.mlp_in.data(), s.dup.data(), s.dmlp.data(), true);
  if (dnorm.ffn_norm)
    RmsNormWeightBackward(tape.x1.data(), s.dmlp.data(), dnorm.ffn_norm, t, H, eps);
  std::copy_n(dout, t * H, s.dx1.data());
  RmsNormBackward(tape.x1.data(), blk.ffn_norm.data(), s.dmlp.data(), s.dx1.data(), t, H, eps,
                  true);
  // Attention: x1 = x0 + o(attention(rope(q), rope(k), v)).
  back(LinearId::kO, tape.att.data(), s.dx1.data(), s.datt.data(), false);
  AttentionBackward(tape.q.data(), tape.k.data(), tape.v.data(), s.datt.data(), s.dq.data(),
                    s.dk.data(), s.dv.data(), t, c.heads, c.kv_heads, c.head_dim, c.sliding_window);
  kernels::RopeInverse(s.dq.data(), t, c.heads, c.head_dim, 0, cos, sin);
  kernels::RopeInverse(s.dk.data(), t, c.kv_heads, c.head_dim, 0, cos, sin);
  if (!blk.q_norm.empty()) {
    // Qwen3: q and k are RMS-normed per head before RoPE; the norms' inputs are the projections,
    // recomputed here (the walk normalises them in place). dq/dk become ∂loss/∂(projection).
    QF_CHECK(s.q_lin.size() == size_t(t * c.q_dim()), "training: scratch without q/k norms");
    lin[Index(LinearId::kQ)]->Apply(tape.attn_in.data(), s.q_lin.data(), t);
    lin[Index(LinearId::kK)]->Apply(tape.attn_in.data(), s.k_lin.data(), t);
    RmsNormBackward(s.q_lin.data(), blk.q_norm.data(), s.dq.data(), s.datt.data(), t * c.heads,
                    c.head_dim, eps, false);  // datt is free again
    RmsNormBackward(s.k_lin.data(), blk.k_norm.data(), s.dk.data(), s.dk_lin.data(), t * c.kv_heads,
                    c.head_dim, eps, false);
    std::swap(s.dq, s.datt);
    std::swap(s.dk, s.dk_lin);
  }
  // dmlp is free again: ∂loss/∂attn_in.
  float* dattn = dx0 || dnorm.attn_norm ? s.dmlp.data() : nullptr;
  back(LinearId::kQ, tape.attn_in.data(), s.dq.data(), dattn, false);
  back(LinearId::kK, tape.attn_in.data(), s.dk.data(), dattn, true);
  back(LinearId::kV, tape.attn_in.data(), s.dv.data(), dattn, true);
  if (dnorm.attn_norm) RmsNormWeightBackward(x0, s.dmlp.data(), dnorm.attn_norm, t, H, eps);
  if (dx0) {
    std::copy_n(s.dx1.data(), t * H, dx0);
    RmsNormBackward(x0, blk.attn_norm.data(), s.dmlp.data(), dx0, t, H, eps, true);
  }
}

}  // namespace qf::train
