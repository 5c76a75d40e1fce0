// Saved base-model log-probabilities for `qforge kld --save-base-logits` / `--base-logits`:
// the base model's next-token distribution at every scored position, so that a later KL /
// top-1 comparison runs only the other model.
//
// File format (version 1, little-endian), the extension is free (".qfbl" suggested):
//   header, 96 bytes:
//     0  char[8]  magic "QFBASELP"
//     8  u32      version = 1
//    12  u32      scoring: 0 = qforge windows, 1 = llama.cpp chunks (eval::Scoring)
//    16  i64      vocab size V
//    24  i64      ctx (window length)
//    32  i64      windows stored W
//    40  i64      scored tokens per window S
//    48  i64      first scored position F (0 or ctx/2: rows F..F+S-1 of each window)
//    56  i64      tokens of the whole scored token stream (the text as tokenized for the mode)
//    64  u64      Hash64 of those token ids (int32 each): a different text/tokenizer is refused
//    72  i32      BOS id put first in every window (-1: none)
//    76  f32      log-probability range R of the codes (32)
//    80  i64      bytes per record = 24 + 2V
//    88  u64      Hash64 of bytes 0..87
//   W·S records, window by window, position by position, each:
//     0  f64      base NLL of the actual next token, from the fp32 logits (exact)
//     8  f32      lp0: log-probability of code 0
//    12  f32      step: log-probability per code unit (0 when every logit is equal)
//    16  i32      argmax of the base logits (first maximum), for exact top-1 agreement
//    20  u32      0 (reserved)
//    24  u16[V]   codes: log p_j ≈ lp0 + step·code_j
//   W × u64       Hash64 of each window's S records (corruption is found window by window)
//   The file size is exactly 96 + W·S·(24 + 2V) + 8W.
//
// Encoding (like llama.cpp's --kl-divergence-base: uint16 log-probabilities with a per-token
// minimum and scale, ~2V bytes per token): with m the max logit, lo = max(min logit, m − R),
// step = (m − lo)/65535, code_j = round((l_j − lo)/step) (0 below lo), lp0 = lo − m − lse.
// Decoding renormalises: q_j = lp0 + step·code_j, log p'_j = q_j − log Σ_k exp(q_k).
// Error bound: |q_j − log p_j − c| ≤ step/2 ≤ R/131070 (c is one constant per token, removed by
// the renormalisation), so |log p'_j − log p_j| ≤ step ≤ ε = R/65535 = 4.9e-4 for logits within
// R of the max; the others (p_j < e^−R relative to the top token) are stored at the floor, which
// adds at most V·e^−R (≈1.3e-14·V) of mass. Then for the KL to any distribution O
//   |KL(P'‖O) − KL(P‖O)| ≤ (e^ε − 1)·E_P|log P/O| + (e^ε − 1)² ≤ (e^ε − 1)(D + √(2D)) + (e^ε − 1)²
// with D = KL(P‖O) (E_P|log P/O| ≤ D + 2·TV ≤ D + √(2D) by Pinsker), plus the floor's share;
// by concavity the same bound holds for the mean KLD with D its mean. Rounding errors are of
// random sign, so the measured difference is far below the bound. The base NLL (so the base
// PPL) and the base top-1 token are stored exactly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/result.h"

namespace qf::eval {

inline constexpr uint32_t kBaseLogitsVersion = 1;
inline constexpr float kBaseLogitsRange = 32.0f;  // R above
inline constexpr size_t kBaseLogitsHeaderBytes = 96;
inline constexpr size_t kBaseLogitsRecordHeader = 24;

// Non-cryptographic 64-bit checksum (8-byte words, xor-multiply, final avalanche).
uint64_t Hash64(std::span<const std::byte> bytes, uint64_t seed = 0);
uint64_t HashTokens(const std::vector<int32_t>& tokens);

struct BaseLogitsInfo {
  uint32_t scoring = 0;  // static_cast of eval::Scoring
  int64_t vocab = 0, ctx = 0, windows = 0, scored_per_window = 0, first_scored = 0;
  int64_t text_tokens = 0;
  uint64_t tokens_hash = 0;
  int32_t bos_id = -1;
};

// The first scored row of a window of `ctx` tokens: 0, or ctx / 2 for llama.cpp scoring
// (scoring 1); rows from there to ctx - 2 are scored. perplexity.h's FirstScored applies it.
inline int64_t FirstScoredRow(uint32_t scoring, int64_t ctx) { return scoring == 1 ? ctx / 2 : 0; }

inline size_t BaseLogitsRecordBytes(int64_t vocab) {
  return kBaseLogitsRecordHeader + 2 * static_cast<size_t>(vocab);
}

// Writes one record (BaseLogitsRecordBytes(V) bytes at `rec`) for a row of fp32 logits
// predicting `target`; `nll` is the exact −log p(target) the caller computed.
void EncodeBaseRecord(const float* logits, int64_t vocab, double nll, std::byte* rec);

struct DecodedRecord {
  double nll = 0;
  int32_t argmax = 0;
};
// Decodes a record into the renormalised distribution P': logp[j] = log p'_j, p[j] = p'_j.
DecodedRecord DecodeBaseRecord(const std::byte* rec, int64_t vocab, double* logp, double* p);

// Streams records window by window to a temporary file renamed over `path` by Finish().
class BaseLogitsWriter {
 public:
  static Result<BaseLogitsWriter> Create(const std::filesystem::path& path,
                                         const BaseLogitsInfo& info);
  BaseLogitsWriter(BaseLogitsWriter&&) noexcept;
  ~BaseLogitsWriter();
  // The S records of the next window, in window order.
  Status WriteWindow(std::span<const std::byte> records);
  Status Finish();  // after all W windows: hash table, flush, rename
  const BaseLogitsInfo& info() const { return info_; }

 private:
  struct Impl;
  BaseLogitsWriter(std::unique_ptr<Impl> impl, const BaseLogitsInfo& info);
  std::unique_ptr<Impl> impl_;
  BaseLogitsInfo info_;
};

// A saved file, memory-mapped; Open checks the magic, version, header hash and exact size.
class BaseLogitsReader {
 public:
  static Result<BaseLogitsReader> Open(const std::filesystem::path& path);
  BaseLogitsReader(BaseLogitsReader&&) noexcept;
  ~BaseLogitsReader();
  const BaseLogitsInfo& info() const { return info_; }
  const std::filesystem::path& path() const;
  // One-line Error naming the file when it was saved for another scoring mode, ctx, vocabulary,
  // text (token count or hash), BOS, or holds fewer than `windows` windows.
  Status CheckMatches(const BaseLogitsInfo& want, int64_t windows) const;
  // The S records of window `w`, after checking its hash.
  Result<const std::byte*> Window(int64_t w) const;

 private:
  struct Impl;
  BaseLogitsReader(std::unique_ptr<Impl> impl, const BaseLogitsInfo& info);
  std::unique_ptr<Impl> impl_;
  BaseLogitsInfo info_;
};

}  // namespace qf::eval
