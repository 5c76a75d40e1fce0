// Saved base-model log-probabilities: record encoding, the checksummed file writer (temporary
// file + rename) and the memory-mapped reader that validates header, size and each window.
#include "eval/base_logits.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/atomic_file.h"
#include "core/mmap.h"

namespace qf::eval {

static_assert(std::endian::native == std::endian::little, "base-logits files are little-endian");

namespace {

constexpr char kMagic[8] = {'Q', 'F', 'B', 'A', 'S', 'E', 'L', 'P'};

template <class T>
void Put(std::byte* at, T v) {
  std::memcpy(at, &v, sizeof(T));
}
template <class T>
T Get(const std::byte* at) {
  T v;
  std::memcpy(&v, at, sizeof(T));
  return v;
}

const char* ScoringName(uint32_t s) { return s == 0 ? "qforge" : s == 1 ? "llama.cpp" : "?"; }

void EncodeHeader(const BaseLogitsInfo& h, std::byte* b) {
  std::memset(b, 0, kBaseLogitsHeaderBytes);
  std::memcpy(b, kMagic, 8);
  Put<uint32_t>(b + 8, kBaseLogitsVersion);
  Put<uint32_t>(b + 12, h.scoring);
  Put<int64_t>(b + 16, h.vocab);
  Put<int64_t>(b + 24, h.ctx);
  Put<int64_t>(b + 32, h.windows);
  Put<int64_t>(b + 40, h.scored_per_window);
  Put<int64_t>(b + 48, h.first_scored);
  Put<int64_t>(b + 56, h.text_tokens);
  Put<uint64_t>(b + 64, h.tokens_hash);
  Put<int32_t>(b + 72, h.bos_id);
  Put<float>(b + 76, kBaseLogitsRange);
  Put<int64_t>(b + 80, int64_t(BaseLogitsRecordBytes(h.vocab)));
  Put<uint64_t>(b + 88, Hash64({b, 88}));
}

}  // namespace

uint64_t Hash64(std::span<const std::byte> bytes, uint64_t seed) {
  constexpr uint64_t kMul = 0x9E3779B97F4A7C15ULL;  // odd: each step is a bijection of h
  uint64_t h = 0xcbf29ce484222325ULL ^ seed ^ (uint64_t(bytes.size()) * kMul);
  const std::byte* p = bytes.data();
  size_t n = bytes.size();
  for (; n >= 8; n -= 8, p += 8) h = (std::rotl(h, 23) ^ Get<uint64_t>(p)) * kMul;
  for (; n > 0; --n, ++p) h = (std::rotl(h, 23) ^ uint64_t(*p)) * kMul;
  h ^= h >> 33;  // final avalanche (splitmix64 / murmur3 finaliser)
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

uint64_t HashTokens(const std::vector<int32_t>& tokens) {
  return Hash64(std::as_bytes(std::span(tokens.data(), tokens.size())), 0x746f6b656e73ULL);
}

void EncodeBaseRecord(const float* logits, int64_t vocab, double nll, std::byte* rec) {
  float mx = logits[0], mn = logits[0];
  int32_t argmax = 0;
  for (int64_t j = 1; j < vocab; ++j) {
    if (logits[j] > mx) {
      mx = logits[j];
      argmax = int32_t(j);
    }
    mn = std::min(mn, logits[j]);
  }
  double sum = 0;
  for (int64_t j = 0; j < vocab; ++j) sum += std::exp(double(logits[j]) - double(mx));
  const double lse = std::log(sum);
  const double lo = std::max(double(mn), double(mx) - double(kBaseLogitsRange));
  // The stored step is what decoding uses, so codes are fitted with exactly that value.
  const float step = float((double(mx) - lo) / 65535.0);
  Put<double>(rec, nll);
  Put<float>(rec + 8, float(lo - double(mx) - lse));
  Put<float>(rec + 12, step);
  Put<int32_t>(rec + 16, argmax);
  Put<uint32_t>(rec + 20, 0);
  std::byte* codes = rec + kBaseLogitsRecordHeader;
  const double inv = step > 0 ? 1.0 / double(step) : 0.0;
  for (int64_t j = 0; j < vocab; ++j) {
    const double c = std::nearbyint((double(logits[j]) - lo) * inv);
    Put<uint16_t>(codes + 2 * j, uint16_t(std::clamp(c, 0.0, 65535.0)));
  }
}

DecodedRecord DecodeBaseRecord(const std::byte* rec, int64_t vocab, double* logp, double* p) {
  DecodedRecord d;
  d.nll = Get<double>(rec);
  const double lp0 = Get<float>(rec + 8), step = Get<float>(rec + 12);
  d.argmax = Get<int32_t>(rec + 16);
  const std::byte* codes = rec + kBaseLogitsRecordHeader;
  double qmax = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < vocab; ++j) {
    logp[j] = lp0 + step * double(Get<uint16_t>(codes + 2 * j));
    qmax = std::max(qmax, logp[j]);
  }
  double sum = 0;
  for (int64_t j = 0; j < vocab; ++j) sum += (p[j] = std::exp(logp[j] - qmax));
  const double log_norm = qmax + std::log(sum), inv_sum = 1.0 / sum;
  for (int64_t j = 0; j < vocab; ++j) {
    logp[j] -= log_norm;
    p[j] *= inv_sum;
  }
  return d;
}

// ---- writer ----

struct BaseLogitsWriter::Impl {
  explicit Impl(AtomicFile f) : file(std::move(f)) {}
  AtomicFile file;
  std::vector<uint64_t> hashes;
};

BaseLogitsWriter::BaseLogitsWriter(std::unique_ptr<Impl> impl, const BaseLogitsInfo& info)
    : impl_(std::move(impl)), info_(info) {}
BaseLogitsWriter::BaseLogitsWriter(BaseLogitsWriter&&) noexcept = default;
BaseLogitsWriter::~BaseLogitsWriter() = default;

Result<BaseLogitsWriter> BaseLogitsWriter::Create(const std::filesystem::path& path,
                                                  const BaseLogitsInfo& info) {
  QF_ASSIGN(AtomicFile f, AtomicFile::Create(path));
  std::byte header[kBaseLogitsHeaderBytes];
  EncodeHeader(info, header);
  QF_TRY(f.Write(std::span<const std::byte>(header, kBaseLogitsHeaderBytes)));
  return BaseLogitsWriter(std::make_unique<Impl>(std::move(f)), info);
}

Status BaseLogitsWriter::WriteWindow(std::span<const std::byte> records) {
  QF_CHECK(records.size() == size_t(info_.scored_per_window) * BaseLogitsRecordBytes(info_.vocab));
  QF_CHECK(int64_t(impl_->hashes.size()) < info_.windows);
  impl_->hashes.push_back(Hash64(records));
  return impl_->file.Write(records);
}

Status BaseLogitsWriter::Finish() {
  QF_CHECK(int64_t(impl_->hashes.size()) == info_.windows);
  QF_TRY(impl_->file.Write(std::as_bytes(std::span(impl_->hashes))));
  return impl_->file.Commit();
}

// ---- reader ----

struct BaseLogitsReader::Impl {
  MappedFile map;
  size_t record_bytes = 0, window_bytes = 0;
};

BaseLogitsReader::BaseLogitsReader(std::unique_ptr<Impl> impl, const BaseLogitsInfo& info)
    : impl_(std::move(impl)), info_(info) {}
BaseLogitsReader::BaseLogitsReader(BaseLogitsReader&&) noexcept = default;
BaseLogitsReader::~BaseLogitsReader() = default;
const std::filesystem::path& BaseLogitsReader::path() const { return impl_->map.path(); }

Result<BaseLogitsReader> BaseLogitsReader::Open(const std::filesystem::path& path) {
  if (!std::filesystem::is_regular_file(path))
    return Err("{}: no such base-logits file", path.string());
  QF_ASSIGN(MappedFile map, MappedFile::Open(path));
  const std::span<const std::byte> b = map.bytes();
  const std::string name = path.string();
  if (b.size() < kBaseLogitsHeaderBytes || std::memcmp(b.data(), kMagic, 8) != 0)
    return Err("{}: not a qforge base-logits file (no QFBASELP header)", name);
  const uint32_t version = Get<uint32_t>(b.data() + 8);
  if (version != kBaseLogitsVersion)
    return Err("{}: base-logits format version {}, this qforge reads version {}", name, version,
               kBaseLogitsVersion);
  if (Get<uint64_t>(b.data() + 88) != Hash64(b.subspan(0, 88)))
    return Err("{}: corrupt base-logits header (checksum mismatch)", name);
  BaseLogitsInfo h;
  h.scoring = Get<uint32_t>(b.data() + 12);
  h.vocab = Get<int64_t>(b.data() + 16);
  h.ctx = Get<int64_t>(b.data() + 24);
  h.windows = Get<int64_t>(b.data() + 32);
  h.scored_per_window = Get<int64_t>(b.data() + 40);
  h.first_scored = Get<int64_t>(b.data() + 48);
  h.text_tokens = Get<int64_t>(b.data() + 56);
  h.tokens_hash = Get<uint64_t>(b.data() + 64);
  h.bos_id = Get<int32_t>(b.data() + 72);
  const float range = Get<float>(b.data() + 76);
  const int64_t record_bytes = Get<int64_t>(b.data() + 80);
  constexpr int64_t kBig = int64_t(1) << 31;
  if (h.scoring > 1 || h.vocab < 1 || h.vocab >= kBig || h.ctx < 2 || h.ctx >= kBig ||
      h.windows < 1 || h.windows >= kBig || h.scored_per_window < 1 || h.first_scored < 0 ||
      h.first_scored != FirstScoredRow(h.scoring, h.ctx) ||
      h.scored_per_window != h.ctx - 1 - h.first_scored || range != kBaseLogitsRange ||
      record_bytes != int64_t(BaseLogitsRecordBytes(h.vocab)))
    return Err("{}: inconsistent base-logits header", name);
  auto impl = std::make_unique<Impl>();
  impl->record_bytes = size_t(record_bytes);
  impl->window_bytes = size_t(h.scored_per_window) * impl->record_bytes;
  const unsigned __int128 want = (unsigned __int128)kBaseLogitsHeaderBytes +
                                 (unsigned __int128)h.windows * impl->window_bytes +
                                 8 * (unsigned __int128)h.windows;
  if (want != b.size())
    return Err(
        "{}: {} bytes, but its header describes {} windows of {} tokens = {} bytes "
        "(truncated or damaged file)",
        name, b.size(), h.windows, h.scored_per_window, uint64_t(want));
  impl->map = std::move(map);
  return BaseLogitsReader(std::move(impl), h);
}

Status BaseLogitsReader::CheckMatches(const BaseLogitsInfo& want, int64_t windows) const {
  const std::string name = path().string();
  const BaseLogitsInfo& h = info_;
  if (h.scoring != want.scoring)
    return Err("{}: saved with --scoring {}, not {}", name, ScoringName(h.scoring),
               ScoringName(want.scoring));
  if (h.ctx != want.ctx) return Err("{}: saved with --ctx {}, not {}", name, h.ctx, want.ctx);
  if (h.vocab != want.vocab)
    return Err("{}: saved for a vocabulary of {} tokens, the model has {}", name, h.vocab,
               want.vocab);
  if (h.text_tokens != want.text_tokens)
    return Err("{}: saved for another text or tokenizer ({} tokens, this text gives {})", name,
               h.text_tokens, want.text_tokens);
  if (h.tokens_hash != want.tokens_hash)
    return Err("{}: saved for another text or tokenizer (same length {}, different tokens)", name,
               h.text_tokens);
  if (h.bos_id != want.bos_id)
    return Err("{}: saved with BOS id {}, not {}", name, h.bos_id, want.bos_id);
  QF_CHECK(h.first_scored == want.first_scored && h.scored_per_window == want.scored_per_window);
  if (windows > h.windows)
    return Err("{}: holds {} windows, {} needed (score at most --max-windows {})", name, h.windows,
               windows, h.windows);
  return Status::Ok();
}

Result<const std::byte*> BaseLogitsReader::Window(int64_t w) const {
  QF_CHECK(w >= 0 && w < info_.windows);
  const std::byte* data = impl_->map.bytes().data();
  const std::byte* win = data + kBaseLogitsHeaderBytes + size_t(w) * impl_->window_bytes;
  const std::byte* table =
      data + kBaseLogitsHeaderBytes + size_t(info_.windows) * impl_->window_bytes;
  if (Get<uint64_t>(table + 8 * size_t(w)) != Hash64({win, impl_->window_bytes}))
    return Err("{}: corrupt data in window {} (checksum mismatch)", path().string(), w);
  // Each record as the writer makes them (a checksum only proves the bytes are unchanged).
  for (int64_t i = 0; i < info_.scored_per_window; ++i) {
    const std::byte* rec = win + size_t(i) * impl_->record_bytes;
    const double nll = Get<double>(rec);
    const float lp0 = Get<float>(rec + 8), step = Get<float>(rec + 12);
    const int32_t argmax = Get<int32_t>(rec + 16);
    if (!(std::isfinite(nll) && nll >= 0) || !std::isfinite(lp0) ||
        !(std::isfinite(step) && step >= 0) || argmax < 0 || argmax >= info_.vocab ||
        Get<uint32_t>(rec + 20) != 0)
      return Err("{}: corrupt record {} in window {} (NLL {}, lp0 {}, step {}, argmax {})",
                 path().string(), i, w, nll, lp0, step, argmax);
  }
  return win;
}

}  // namespace qf::eval
