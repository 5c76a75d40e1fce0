// The decoder block's dataflow (see decoder_walk.h). A plain translation unit on purpose: the
// only arithmetic here is the residual add, and the kernels it calls round on their own.
#include "model/decoder_walk.h"

#include <algorithm>

#include "core/result.h"
#include "kernels/ops.h"

namespace qf::model {

KvSlot SeqKv::At(int64_t layer) const {
  if (!cache) return scratch;
  const size_t l = size_t(layer);
  return {cache->k[l].data(), cache->v[l].data(), cache->cos.data(), cache->sin.data(), cache->len};
}

WalkScratch::WalkScratch(const ModelConfig& c, int64_t m)
    : x(size_t(m * c.hidden)),
      attn_in(x.size()),
      h(x.size()),
      q(size_t(m * c.q_dim())),
      att(q.size()),
      g(size_t(m * c.intermediate)),
      u(g.size()),
      k(size_t(m * c.kv_dim())),
      v(k.size()) {}

BlockBuffers WalkScratch::Buffers(float* x_in, float* att_in, float* g_in) {
  return {x_in ? x_in : x.data(),
          attn_in.data(),
          q.data(),
          att_in ? att_in : att.data(),
          h.data(),
          h.data(),
          g_in ? g_in : g.data(),
          u.data(),
          k.data(),
          v.data()};
}

KvSlot WalkScratch::Slot(const float* cos, const float* sin) {
  return {k.data(), v.data(), cos, sin, 0};
}

void WalkBlock(const ModelConfig& c, const Layer& blk, int64_t layer, const BlockBuffers& b,
               int64_t m, std::span<const KvSlot> slots, BlockSpan span, WalkHooks* hooks) {
  using S = BlockStage;
  QF_CHECK(span.from <= span.to && span.from <= S::kMlpOut && span.to <= S::kBlockOut,
           "walk span {}..{}", int(span.from), int(span.to));
  QF_CHECK(slots.size() == 1 || int64_t(slots.size()) == m, "{} KV slots for {} rows", slots.size(),
           m);
  const int64_t H = c.hidden, F = c.intermediate, D = c.head_dim, qd = c.q_dim(), kvd = c.kv_dim();
  const float eps = float(c.rms_eps);
  const bool batched = slots.size() > 1;

  auto lin = [&](LinearId id) -> const Linear& {
    return hooks && hooks->resolves ? hooks->Resolve(layer, id, blk[id]) : blk[id];
  };
  // Shows a stage's input to the hooks; true when the span ends there.
  auto reached = [&](S stage, const float* in, int64_t cols) {
    if (hooks && (hooks->stages & StageBit(stage))) hooks->OnInput({layer, stage}, in, m, cols);
    return stage == span.to;
  };
  // x += in · linᵀ: the projection (and its bias) first, then the residual add.
  auto add_projection = [&](LinearId id, const float* in) {
    const Linear& w = lin(id);
    w.Apply(in, b.proj, m);
    const int64_t n = m * w.n;
    for (int64_t i = 0; i < n; ++i) b.x[i] += b.proj[i];
  };

  if (span.from == S::kAttnIn) {
    kernels::RmsNorm(b.x, blk.attn_norm.data(), b.attn_in, m, H, eps);
    if (reached(S::kAttnIn, b.attn_in, H)) return;
    // One sequence: k/v are projected straight into the cache rows. Several: into k_rows /
    // v_rows, then each sequence's row goes to its cache.
    const KvSlot& s0 = slots[0];
    float* kd = batched ? b.k_rows : s0.k + s0.pos0 * kvd;
    float* vd = batched ? b.v_rows : s0.v + s0.pos0 * kvd;
    lin(LinearId::kQ).Apply(b.attn_in, b.q, m);
    lin(LinearId::kK).Apply(b.attn_in, kd, m);
    lin(LinearId::kV).Apply(b.attn_in, vd, m);
    if (!blk.q_norm.empty()) {
      kernels::RmsNorm(b.q, blk.q_norm.data(), b.q, m * c.heads, D, eps);
      kernels::RmsNorm(kd, blk.k_norm.data(), kd, m * c.kv_heads, D, eps);
    }
    if (!batched) {
      kernels::Rope(b.q, m, c.heads, D, s0.pos0, s0.cos, s0.sin);
      kernels::Rope(kd, m, c.kv_heads, D, s0.pos0, s0.cos, s0.sin);
      kernels::Attention(b.q, s0.k, s0.v, b.att, m, s0.pos0, c.heads, c.kv_heads, D,
                         c.sliding_window);
    } else {
#pragma omp parallel for
      for (int64_t r = 0; r < m; ++r) {
        const KvSlot& s = slots[size_t(r)];
        float* kc = s.k + s.pos0 * kvd;
        std::copy_n(b.k_rows + r * kvd, kvd, kc);
        std::copy_n(b.v_rows + r * kvd, kvd, s.v + s.pos0 * kvd);
        kernels::Rope(b.q + r * qd, 1, c.heads, D, s.pos0, s.cos, s.sin);
        kernels::Rope(kc, 1, c.kv_heads, D, s.pos0, s.cos, s.sin);
        kernels::Attention(b.q + r * qd, s.k, s.v, b.att + r * qd, 1, s.pos0, c.heads, c.kv_heads,
                           D, c.sliding_window);
      }
    }
  }
  if (span.from <= S::kAttnOut) {
    if (reached(S::kAttnOut, b.att, qd)) return;
    add_projection(LinearId::kO, b.att);
  }
  if (span.from <= S::kMlpIn) {
    kernels::RmsNorm(b.x, blk.ffn_norm.data(), b.mlp_in, m, H, eps);
    if (reached(S::kMlpIn, b.mlp_in, H)) return;
    lin(LinearId::kGate).Apply(b.mlp_in, b.g, m);
    lin(LinearId::kUp).Apply(b.mlp_in, b.u, m);
    kernels::SiluMul(b.g, b.u, m, F);
  }
  if (reached(S::kMlpOut, b.g, F)) return;
  add_projection(LinearId::kDown, b.g);
  reached(S::kBlockOut, b.x, H);
}

void WalkStack(const ModelConfig& c, std::span<const Layer> layers, const BlockBuffers& b,
               int64_t m, std::span<const SeqKv> seqs, WalkHooks* hooks) {
  std::vector<KvSlot> slots(seqs.size());
  for (size_t l = 0; l < layers.size(); ++l) {
    for (size_t i = 0; i < seqs.size(); ++i) slots[i] = seqs[i].At(int64_t(l));
    WalkBlock(c, layers[l], int64_t(l), b, m, slots, {}, hooks);
  }
}

void WalkHead(const ModelConfig& c, std::span<const float> final_norm, const Linear* lm_head,
              const float* x, float* h, int64_t rows, float* logits, WalkHooks* hooks) {
  kernels::RmsNorm(x, final_norm.data(), h, rows, c.hidden, float(c.rms_eps));
  if (hooks && (hooks->stages & StageBit(BlockStage::kHeadIn)))
    hooks->OnInput({c.layers, BlockStage::kHeadIn}, h, rows, c.hidden);
  if (lm_head) lm_head->Apply(h, logits, rows);
}

void Embed(std::span<const float> embed, int64_t H, std::span<const int32_t> ids, float* x) {
  for (size_t i = 0; i < ids.size(); ++i)
    std::copy_n(embed.data() + int64_t(ids[i]) * H, H, x + int64_t(i) * H);
}

}  // namespace qf::model
