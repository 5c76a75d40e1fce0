// The one definition of a decoder block's dataflow (Llama/Mistral/Qwen2/Qwen3):
//   x → RmsNorm·attn_norm → q/k/v (→ q/k RmsNorm) → RoPE → causal GQA attention → o → x +=
//     → RmsNorm·ffn_norm → gate/up → SwiGLU → down → x +=
// Inference (one sequence of m tokens, or m sequences of one token each), calibration (observe
// each group's input, change a layer's weights between partial walks), imatrix collection and
// later passes all run blocks through WalkBlock / WalkHead and look at or substitute things
// through WalkHooks, as llama.cpp's graph callback serves its imatrix.
// Contract: the walk allocates nothing and adds no arithmetic of its own but the residual add
// (x[i] += proj[i], after the projection and its bias). It calls the kernels in one fixed order
// with fixed shapes, so outputs do not depend on who walks, and callers that split a block into
// spans get the bytes of one whole walk. Legend as in model.h.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "model/model.h"

namespace qf::model {

// Where the walk forms an input that a group of linears reads (and the block's output).
enum class BlockStage : uint8_t {
  kAttnIn,    // RmsNorm(x)·attn_norm [m, H]: read by q, k, v
  kAttnOut,   // attention output [m, Hq·D]: read by o
  kMlpIn,     // RmsNorm(x)·ffn_norm [m, H] (after the o residual): read by gate, up
  kMlpOut,    // silu(gate) * up [m, F]: read by down
  kBlockOut,  // x after the down residual [m, H]
  kHeadIn,    // RmsNorm(x)·final_norm [rows, H] after the last block: read by lm_head
};
inline constexpr int kBlockStages = 6;
constexpr uint32_t StageBit(BlockStage s) { return 1u << unsigned(s); }
// The inputs of the block's linears (what GPTQ's Hessians and imatrix's sums are made of).
inline constexpr uint32_t kLinearInputs =
    StageBit(BlockStage::kAttnIn) | StageBit(BlockStage::kAttnOut) | StageBit(BlockStage::kMlpIn) |
    StageBit(BlockStage::kMlpOut);

constexpr BlockStage InputOf(LinearId id) {
  switch (id) {
    case LinearId::kQ:
    case LinearId::kK:
    case LinearId::kV:
      return BlockStage::kAttnIn;
    case LinearId::kO:
      return BlockStage::kAttnOut;
    case LinearId::kGate:
    case LinearId::kUp:
      return BlockStage::kMlpIn;
    case LinearId::kDown:
      return BlockStage::kMlpOut;
  }
  return BlockStage::kAttnIn;
}

// One sequence's keys/values at one layer: rows pos0 .. pos0+m-1 of k/v [T, Hkv·D] are written,
// rows 0 .. pos0+m-1 are attended; cos/sin are RoPE tables [≥ pos0+m, D/2] (RopeTables).
struct KvSlot {
  float* k = nullptr;
  float* v = nullptr;
  const float* cos = nullptr;
  const float* sin = nullptr;
  int64_t pos0 = 0;
};
// A sequence's slot at each layer: its KVCache's rows from cache->len, or (cache null) one
// scratch slot reused by every layer (whole windows from position 0: calibration, imatrix).
struct SeqKv {
  KVCache* cache = nullptr;
  KvSlot scratch;
  KvSlot At(int64_t layer) const;
};

// Caller-owned activations for m rows. attn_in, proj and mlp_in may all be one buffer (the
// forward pass does that); a stage input in an aliased buffer is overwritten later in the walk,
// so a hook that needs it after OnInput returns copies it.
struct BlockBuffers {
  float* x = nullptr;        // [m, H] residual stream, updated in place
  float* attn_in = nullptr;  // [m, H]
  float* q = nullptr;        // [m, Hq·D] scratch
  float* att = nullptr;      // [m, Hq·D] (an input when a span starts at kAttnOut)
  float* proj = nullptr;     // [m, H] o / down output before the residual add
  float* mlp_in = nullptr;   // [m, H]
  float* g = nullptr;        // [m, F] (an input when a span starts at kMlpOut)
  float* u = nullptr;        // [m, F] scratch
  float* k_rows = nullptr;   // [m, Hkv·D]: m sequences of one token only
  float* v_rows = nullptr;
};

// Activations a walk of m rows owns (a calibration window, an imatrix chunk, a batched decoding
// step): attn_in on its own, mlp_in and the projections sharing h, so that every stage input up
// to kMlpOut is still there when a span ends; k/v of m rows, used as batched decoding's
// k_rows/v_rows or as the KV slot of a whole window from position 0 (Slot).
struct WalkScratch {
  WalkScratch(const ModelConfig& c, int64_t m);
  // The buffers of one walk; x, att and g are the caller's where given (calibration keeps them
  // per window), else this scratch's.
  BlockBuffers Buffers(float* x = nullptr, float* att = nullptr, float* g = nullptr);
  // k/v as the cache of a window of m tokens from position 0, with RoPE tables of >= m rows.
  KvSlot Slot(const float* cos, const float* sin);

  std::vector<float> x, attn_in, h, q, att, g, u, k, v;
};

struct WalkPoint {
  int64_t layer = 0;  // cfg.layers for kHeadIn
  BlockStage stage = BlockStage::kAttnIn;
};

// Observers and substitutes. Hooks run on the thread that walks; give each concurrent walk its
// own hooks object.
class WalkHooks {
 public:
  virtual ~WalkHooks() = default;
  // The input a group's linears read, [rows, cols] row-major in the caller's buffers, before
  // their activation quantization. Called for the stages in `stages` (StageBit()s).
  virtual void OnInput(const WalkPoint& at, const float* x, int64_t rows, int64_t cols) {}
  // The linear to run in place of the layer's own (fake-quantized, on another device...).
  // Called only when `resolves` is set.
  virtual const Linear& Resolve(int64_t layer, LinearId id, const Linear& own) { return own; }
  uint32_t stages = 0;
  bool resolves = false;
};

// A part of a block, for callers that change weights between parts (true-sequential
// calibration). The walk starts by forming `from`'s input (kAttnIn, kMlpIn: from x; kAttnOut:
// att is given, o runs first; kMlpOut: g is given, down runs first) and stops once `to`'s input
// is formed and shown to the hooks, before its linears run; to = kBlockOut: the whole rest.
struct BlockSpan {
  BlockStage from = BlockStage::kAttnIn;
  BlockStage to = BlockStage::kBlockOut;
};

// One block on m rows. slots.size() == 1: one sequence of m tokens. slots.size() == m > 1: m
// sequences of one token each (batched decoding; k/v go through b.k_rows/v_rows, RoPE and
// attention run per sequence).
void WalkBlock(const ModelConfig& c, const Layer& blk, int64_t layer, const BlockBuffers& b,
               int64_t m, std::span<const KvSlot> slots, BlockSpan span = {},
               WalkHooks* hooks = nullptr);
// Whole blocks 0 .. layers.size()-1 for one sequence (seqs.size() == 1) or m sequences of one
// token each (seqs.size() == m).
void WalkStack(const ModelConfig& c, std::span<const Layer> layers, const BlockBuffers& b,
               int64_t m, std::span<const SeqKv> seqs, WalkHooks* hooks = nullptr);
// h = RmsNorm(x)·final_norm over rows (kHeadIn), then logits [rows, V] = lm_head(h) unless
// lm_head is null.
void WalkHead(const ModelConfig& c, std::span<const float> final_norm, const Linear* lm_head,
              const float* x, float* h, int64_t rows, float* logits, WalkHooks* hooks = nullptr);
// x[i] = embed[ids[i]], rows of H. Ids must be in the vocabulary (callers check).
void Embed(std::span<const float> embed, int64_t H, std::span<const int32_t> ids, float* x);

}  // namespace qf::model
