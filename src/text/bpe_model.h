// Byte-pair-encoding model as in Hugging Face tokenizers' BPE: vocabulary, ranked merges, byte
// fallback, unknown token; merges one pre-tokenized word at a time, lowest rank first.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/result.h"

namespace qf::text {

// Hash/equality that let unordered maps keyed by std::string be searched with string_view.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
struct StringEq {
  using is_transparent = void;
  bool operator()(std::string_view a, std::string_view b) const { return a == b; }
};
template <class V>
using StringMap = std::unordered_map<std::string, V, StringHash, StringEq>;

struct BpeOptions {
  bool byte_fallback = false;  // characters not in the vocabulary become <0xNN> tokens
  bool ignore_merges = false;  // a word found whole in the vocabulary is emitted as is
  bool fuse_unk = false;       // consecutive unknown characters give one unknown token
  int32_t unk_id = -1;         // -1: unknown characters are dropped (as HF does without one)
};

class BpeModel {
 public:
  // Ids are dense in practice; this bounds the tables a hostile file can make us allocate.
  static constexpr int32_t kMaxTokenId = 1 << 24;
  // `merges` in rank order (rank = index); each side and their concatenation must be tokens.
  static Result<std::unique_ptr<BpeModel>> Create(
      StringMap<int32_t> vocab, const std::vector<std::pair<std::string, std::string>>& merges,
      const BpeOptions& options);

  // Appends the ids of one word, given in the vocabulary's alphabet (already normalized and,
  // for byte-level models, mapped). Thread-safe; results for short words are cached.
  void EncodeWord(std::string_view word, std::vector<int32_t>* ids) const;

  // Token id of `token`, or -1.
  int32_t Find(std::string_view token) const;
  // The token string of `id` ("" for an id the vocabulary does not use).
  const std::string& Token(int32_t id) const;
  // One past the largest id.
  int32_t size() const { return int32_t(id_to_token_.size()); }
  // Whether some token has `piece` after its first code point that is not itself `piece`
  // repeated from the start ("▁▁x" no, "x▁" yes): when false, a word can be cut before every
  // `piece` that follows another character without changing the merges.
  bool AnyTokenHasInterior(std::string_view piece) const;

 private:
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  static uint64_t PairKey(int32_t a, int32_t b) {
    return uint64_t(uint32_t(a)) << 32 | uint32_t(b);
  }
  void MergeWord(std::string_view word, std::vector<int32_t>* ids) const;

  StringMap<int32_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::unordered_map<uint64_t, Merge> merges_;
  BpeOptions options_;
  int32_t byte_ids_[256];  // <0xNN> token ids, -1 where absent

  // Words of at most kMaxCachedWordBytes, up to kMaxCacheEntries of them, as in HF's cache.
  static constexpr size_t kMaxCachedWordBytes = 256;
  static constexpr size_t kMaxCacheEntries = 1 << 18;
  mutable std::mutex cache_mutex_;
  mutable StringMap<std::vector<int32_t>> cache_;
};

}  // namespace qf::text
