// BPE merge loop (see bpe_model.h): symbols in a linked list, candidate pairs in a min-heap by
// (rank, position), stale heap entries skipped; O(n log n) per word, cached per word.
#include "text/bpe_model.h"

#include <fmt/format.h>

#include <queue>

#include "text/unicode_util.h"

namespace qf::text {

Result<std::unique_ptr<BpeModel>> BpeModel::Create(
    StringMap<int32_t> vocab, const std::vector<std::pair<std::string, std::string>>& merges,
    const BpeOptions& options) {
  std::unique_ptr<BpeModel> m(new BpeModel());
  m->options_ = options;
  int32_t max_id = -1;
  for (const auto& [token, id] : vocab) {
    if (id < 0 || id >= kMaxTokenId) return Err("token '{}' has id {} out of range", token, id);
    max_id = std::max(max_id, id);
  }
  m->id_to_token_.resize(size_t(max_id) + 1);
  for (const auto& [token, id] : vocab) m->id_to_token_[id] = token;
  m->vocab_ = std::move(vocab);

  m->merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [a, b] = merges[rank];
    const int32_t a_id = m->Find(a), b_id = m->Find(b), new_id = m->Find(a + b);
    if (a_id < 0 || b_id < 0 || new_id < 0) {
      return Err("merge #{} '{} {}': '{}' is not in the vocabulary", rank, a, b,
                 a_id < 0   ? a
                 : b_id < 0 ? b
                            : a + b);
    }
    // Like HF, a repeated pair keeps its last rank.
    m->merges_[PairKey(a_id, b_id)] = Merge{int32_t(rank), new_id};
  }
  for (int b = 0; b < 256; ++b) m->byte_ids_[b] = m->Find(fmt::format("<0x{:02X}>", b));
  if (options.unk_id >= m->size())
    return Err("unknown-token id {} is out of range", options.unk_id);
  return m;
}

int32_t BpeModel::Find(std::string_view token) const {
  auto it = vocab_.find(token);
  return it == vocab_.end() ? -1 : it->second;
}

const std::string& BpeModel::Token(int32_t id) const {
  static const std::string kEmpty;
  return id >= 0 && id < size() ? id_to_token_[id] : kEmpty;
}

bool BpeModel::AnyTokenHasInterior(std::string_view piece) const {
  for (const auto& [token, id] : vocab_) {
    std::string_view t = token;
    while (t.substr(0, piece.size()) == piece) t.remove_prefix(piece.size());
    if (t.find(piece) != std::string_view::npos) return true;
  }
  return false;
}

void BpeModel::EncodeWord(std::string_view word, std::vector<int32_t>* ids) const {
  if (word.empty()) return;
  if (options_.ignore_merges) {
    const int32_t id = Find(word);
    if (id >= 0) {
      ids->push_back(id);
      return;
    }
  }
  if (word.size() > kMaxCachedWordBytes) {
    MergeWord(word, ids);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(word);
    if (it != cache_.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t start = ids->size();
  MergeWord(word, ids);
  std::lock_guard<std::mutex> lock(cache_mutex_);
  if (cache_.size() < kMaxCacheEntries) {
    cache_.emplace(std::string(word), std::vector<int32_t>(ids->begin() + start, ids->end()));
  }
}

void BpeModel::MergeWord(std::string_view word, std::vector<int32_t>* ids) const {
  // Initial symbols: one per character, or its <0xNN> bytes, or the unknown token.
  std::vector<int32_t> sym;
  sym.reserve(word.size());
  bool pending_unk = false;
  int32_t cp;
  for (size_t i = 0; i < word.size();) {
    const size_t n = Utf8Next(word, i, &cp);
    const std::string_view ch = word.substr(i, n);
    i += n;
    const int32_t id = Find(ch);
    if (id >= 0) {
      if (pending_unk) sym.push_back(options_.unk_id);
      pending_unk = false;
      sym.push_back(id);
      continue;
    }
    bool all_bytes = options_.byte_fallback;
    for (char c : ch) all_bytes = all_bytes && byte_ids_[uint8_t(c)] >= 0;
    if (all_bytes) {
      if (pending_unk) sym.push_back(options_.unk_id);
      pending_unk = false;
      for (char c : ch) sym.push_back(byte_ids_[uint8_t(c)]);
      continue;
    }
    if (options_.unk_id < 0) continue;
    if (pending_unk && !options_.fuse_unk) sym.push_back(options_.unk_id);
    pending_unk = true;
  }
  if (pending_unk) sym.push_back(options_.unk_id);

  const int n = int(sym.size());
  std::vector<int> prev(n), next(n);
  for (int i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    int32_t rank;
    int pos;  // index of the left symbol
    int32_t new_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto push = [&](int left) {
    const int right = next[left];
    if (right < 0) return;
    auto it = merges_.find(PairKey(sym[left], sym[right]));
    if (it != merges_.end()) heap.push({it->second.rank, left, it->second.new_id});
  };
  for (int i = 0; i + 1 < n; ++i) push(i);
  std::vector<bool> dead(n, false);
  while (!heap.empty()) {
    const Candidate top = heap.top();
    heap.pop();
    const int left = top.pos, right = next[left];
    if (dead[left] || right < 0) continue;
    // Stale entry: the pair at `left` changed since it was pushed.
    auto it = merges_.find(PairKey(sym[left], sym[right]));
    if (it == merges_.end() || it->second.new_id != top.new_id || it->second.rank != top.rank) {
      continue;
    }
    sym[left] = top.new_id;
    dead[right] = true;
    next[left] = next[right];
    if (next[right] >= 0) prev[next[right]] = left;
    if (prev[left] >= 0) push(prev[left]);
    push(left);
  }
  for (int i = 0; i < n; i = next[i]) {
    ids->push_back(sym[i]);
    if (next[i] < 0) break;
  }
}

}  // namespace qf::text
