// Importance matrix files (see imatrix.h): llama.cpp's GGUF layout through GgufWriter/ParseGguf,
// the legacy .dat layout by hand with every size checked against the bytes left.
#include "io/imatrix.h"

#include <fmt/format.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/atomic_file.h"
#include "core/mmap.h"
#include "io/gguf.h"

namespace qf::io {
namespace {

static_assert(std::endian::native == std::endian::little,
              "imatrix I/O assumes a little-endian host");

constexpr std::string_view kSumSuffix = ".in_sum2", kCountSuffix = ".counts";

// A name from a file, printable and short, for error messages.
std::string Quote(std::string_view s) {
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < 80; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    out += (c >= 0x20 && c < 0x7f) ? std::string(1, char(c)) : fmt::format("\\x{:02x}", c);
  }
  return out + (s.size() > 80 ? "...'" : "'");
}

Status CheckValues(const std::string& file, const std::string& entry, std::span<const float> v) {
  for (size_t j = 0; j < v.size(); ++j)
    if (!std::isfinite(v[j]) || v[j] < 0)
      return Err("{}: entry {}: value {} at column {} (expected finite and >= 0)", file,
                 Quote(entry), v[j], j);
  return Status::Ok();
}

// Reads little-endian values from a byte span; every read is bounds-checked.
class Cursor {
 public:
  explicit Cursor(std::span<const std::byte> b) : b_(b) {}
  size_t pos() const { return pos_; }
  size_t left() const { return b_.size() - pos_; }
  Result<int32_t> I32(const std::string& what) {
    if (left() < 4) return Err("truncated at byte {} reading {}", pos_, what);
    int32_t v;
    std::memcpy(&v, b_.data() + pos_, 4);
    pos_ += 4;
    return v;
  }
  Result<std::span<const std::byte>> Bytes(size_t n, const std::string& what) {
    if (left() < n)
      return Err("truncated at byte {} reading {} ({} bytes, {} left)", pos_, what, n, left());
    auto s = b_.subspan(pos_, n);
    pos_ += n;
    return s;
  }

 private:
  std::span<const std::byte> b_;
  size_t pos_ = 0;
};

Result<Imatrix> ParseLegacy(std::span<const std::byte> bytes) {
  Cursor c(bytes);
  Imatrix m;
  m.legacy = true;
  QF_ASSIGN(const int32_t n, c.I32("the entry count"));
  // Each entry takes at least 16 bytes (name length, ncall, nval, one value).
  if (n < 1 || size_t(n) > c.left() / 16)
    return Err("legacy imatrix: entry count {} (expected 1..{} for {} bytes)", n, c.left() / 16,
               bytes.size());
  for (int32_t i = 0; i < n; ++i) {
    const std::string what = fmt::format("entry {}", i);
    QF_ASSIGN(const int32_t len, c.I32(what + " name length"));
    if (len < 1 || size_t(len) > c.left())
      return Err("legacy imatrix: {}: name length {}", what, len);
    QF_ASSIGN(const auto name_bytes, c.Bytes(size_t(len), what + " name"));
    std::string name(reinterpret_cast<const char*>(name_bytes.data()), name_bytes.size());
    QF_ASSIGN(const int32_t ncall, c.I32(what + " ncall"));
    QF_ASSIGN(const int32_t nval, c.I32(what + " value count"));
    if (nval < 1 || size_t(nval) > c.left() / 4)
      return Err("legacy imatrix: entry {}: {} values ({} bytes left)", Quote(name), nval,
                 c.left());
    QF_ASSIGN(const auto vb, c.Bytes(size_t(nval) * 4, what + " values"));
    ImatrixEntry e;
    e.sum2.resize(static_cast<size_t>(nval));
    std::memcpy(e.sum2.data(), vb.data(), vb.size());
    e.count = ncall > 0 ? ncall : 1;  // llama-quantize uses the stored values as they are then
    QF_TRY(CheckValues("legacy imatrix", name, e.sum2));
    if (!m.entries.emplace(name, std::move(e)).second)
      return Err("legacy imatrix: duplicate entry {}", Quote(name));
  }
  if (c.left() > 0) {  // optional trailer: chunk count and dataset name
    QF_ASSIGN(const int32_t chunks, c.I32("the chunk count"));
    QF_ASSIGN(const int32_t len, c.I32("the dataset name length"));
    if (len < 0 || size_t(len) > c.left())
      return Err("legacy imatrix: dataset name length {} ({} bytes left)", len, c.left());
    QF_ASSIGN(const auto ds, c.Bytes(size_t(len), "the dataset name"));
    m.chunk_count = chunks;
    if (len > 0) m.datasets.emplace_back(reinterpret_cast<const char*>(ds.data()), ds.size());
  }
  if (c.left() > 0)
    return Err("legacy imatrix: {} unexpected bytes after the end at byte {}", c.left(), c.pos());
  return m;
}

Result<Imatrix> ParseGgufImatrix(std::span<const std::byte> bytes, const std::string& name) {
  QF_ASSIGN(GgufContents g, ParseGguf(bytes, name));
  Imatrix m;
  if (const GgufValue* t = g.Find("general.type");
      t && t->get<std::string>() && *t->get<std::string>() != "imatrix")
    return Err("{}: general.type is '{}', not 'imatrix'", name, *t->get<std::string>());
  const GgufValue* ds = g.Find("imatrix.datasets");
  const GgufValue* cc = g.Find("imatrix.chunk_count");
  const GgufValue* cs = g.Find("imatrix.chunk_size");
  if (!ds || !cc || !cs)
    return Err(
        "{}: missing imatrix metadata (imatrix.datasets, imatrix.chunk_count, imatrix.chunk_size)",
        name);
  const auto* names = ds->get<std::vector<std::string>>();
  if (!names)
    return Err("{}: imatrix.datasets is {}, expected an array of strings", name,
               GgufTypeName(ds->type()));
  m.datasets = *names;
  const auto chunks = cc->ToInt(), size = cs->ToInt();
  if (!chunks || *chunks < 0)
    return Err("{}: imatrix.chunk_count is {}, expected an unsigned integer", name, cc->ToString());
  if (!size || *size < 0)
    return Err("{}: imatrix.chunk_size is {}, expected an unsigned integer", name, cs->ToString());
  m.chunk_count = *chunks;
  m.chunk_size = *size;

  struct Pair {
    const GgufTensorInfo* sum = nullptr;
    const GgufTensorInfo* count = nullptr;
  };
  std::map<std::string, Pair> pairs;
  auto ends_with = [](const std::string& s, std::string_view suf) {
    return s.size() > suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
  };
  for (const GgufTensorInfo& t : g.tensors) {
    if (ends_with(t.name, kSumSuffix))
      pairs[t.name.substr(0, t.name.size() - kSumSuffix.size())].sum = &t;
    else if (ends_with(t.name, kCountSuffix))
      pairs[t.name.substr(0, t.name.size() - kCountSuffix.size())].count = &t;
  }
  if (pairs.empty())
    return Err("{}: no imatrix entries (no <name>.in_sum2 / <name>.counts tensors)", name);
  for (const auto& [entry, p] : pairs) {
    if (!p.sum || !p.count)
      return Err("{}: entry {} has {} but no {}", name, Quote(entry),
                 p.sum ? kSumSuffix : kCountSuffix, p.sum ? kCountSuffix : kSumSuffix);
    for (const GgufTensorInfo* t : {p.sum, p.count})
      if (t->type != GgmlType::kF32)
        return Err("{}: tensor {} is {}, expected f32", name, Quote(t->name), Info(t->type).name);
    if (p.count->numel() != 1)
      return Err("{}: entry {} has {} counts (per-expert imatrix entries are not supported)", name,
                 Quote(entry), p.count->numel());
    if (p.sum->numel() < 1) return Err("{}: entry {} has no values", name, Quote(entry));
    ImatrixEntry e;
    e.sum2.resize(static_cast<size_t>(p.sum->numel()));
    std::memcpy(e.sum2.data(), p.sum->data.data(), e.sum2.size() * sizeof(float));
    float count = 0;
    std::memcpy(&count, p.count->data.data(), sizeof(float));
    if (!std::isfinite(count) || count < 0 || count > 9e18f)
      return Err("{}: entry {} has count {} (expected a finite value >= 0)", name, Quote(entry),
                 count);
    e.count = std::lround(count);
    QF_TRY(CheckValues(name, entry, e.sum2));
    m.entries.emplace(entry, std::move(e));
  }
  return m;
}

}  // namespace

Result<Imatrix> ParseImatrix(std::span<const std::byte> bytes, const std::string& name) {
  if (bytes.size() >= 4 && std::memcmp(bytes.data(), "GGUF", 4) == 0)
    return ParseGgufImatrix(bytes, name);
  auto m = ParseLegacy(bytes);
  if (!m.ok()) return m.error().Context(name);
  return m;
}

Result<Imatrix> ReadImatrix(const std::filesystem::path& path) {
  QF_ASSIGN(MappedFile f, MappedFile::Open(path));
  return ParseImatrix(f.bytes(), path.string());
}

Result<std::vector<std::byte>> ImatrixGgufBytes(const Imatrix& m) {
  GgufWriter w;
  QF_TRY(w.Set("general.type", GgufValue("imatrix")));
  QF_TRY(w.Set("imatrix.datasets", GgufValue(m.datasets)));
  if (m.chunk_count < 0 || m.chunk_count > std::numeric_limits<uint32_t>::max() ||
      m.chunk_size < 0 || m.chunk_size > std::numeric_limits<uint32_t>::max())
    return Err("imatrix: chunk count {} / size {} do not fit a u32", m.chunk_count, m.chunk_size);
  QF_TRY(w.Set("imatrix.chunk_count", GgufValue(uint32_t(m.chunk_count))));
  QF_TRY(w.Set("imatrix.chunk_size", GgufValue(uint32_t(m.chunk_size))));
  // Counts live here until the bytes are produced (AddTensor keeps spans).
  std::vector<float> counts;
  counts.reserve(m.entries.size());
  for (const auto& [name, e] : m.entries) {
    if (e.sum2.empty()) return Err("imatrix: entry {} has no values", Quote(name));
    counts.push_back(float(e.count));
    QF_TRY(w.AddTensor(name + std::string(kSumSuffix), GgmlType::kF32, {int64_t(e.sum2.size())},
                       std::as_bytes(std::span(e.sum2))));
    QF_TRY(w.AddTensor(name + std::string(kCountSuffix), GgmlType::kF32, {1},
                       std::as_bytes(std::span(counts).last(1))));
  }
  return w.WriteToBytes();
}

Status WriteImatrixGguf(const Imatrix& m, const std::filesystem::path& path) {
  QF_ASSIGN(const std::vector<std::byte> bytes, ImatrixGgufBytes(m));
  QF_ASSIGN(AtomicFile f, AtomicFile::Create(path));
  QF_TRY(f.Write(bytes));
  return f.Commit();
}

Result<std::vector<std::byte>> ImatrixLegacyBytes(const Imatrix& m) {
  if (!m.legacy && m.chunk_size <= 0)
    return Err("imatrix: the legacy format needs a chunk size > 0");
  if (m.entries.empty()) return Err("imatrix: no entries to write");
  std::vector<std::byte> out;
  auto put = [&out](const void* p, size_t n) {
    const auto* b = static_cast<const std::byte*>(p);
    out.insert(out.end(), b, b + n);
  };
  auto put_i32 = [&put](int64_t v) {
    const int32_t x = int32_t(v);
    put(&x, 4);
  };
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  if (int64_t(m.entries.size()) > kMax)
    return Err("imatrix: too many entries for the legacy format");
  put_i32(int64_t(m.entries.size()));
  for (const auto& [name, e] : m.entries) {
    if (e.sum2.empty() || int64_t(e.sum2.size()) > kMax || int64_t(name.size()) > kMax)
      return Err("imatrix: entry {} cannot be written in the legacy format ({} values)",
                 Quote(name), e.sum2.size());
    put_i32(int64_t(name.size()));
    put(name.data(), name.size());
    // save_imatrix_legacy: ncall = ceil(count / chunk_size), values (sum / count) × ncall in fp32.
    const int64_t ncall = m.legacy ? e.count : (e.count + m.chunk_size - 1) / m.chunk_size;
    if (ncall > kMax)
      return Err("imatrix: entry {}: {} calls do not fit the legacy format", Quote(name), ncall);
    put_i32(ncall);
    put_i32(int64_t(e.sum2.size()));
    if (m.legacy) {
      put(e.sum2.data(), e.sum2.size() * sizeof(float));
      continue;
    }
    std::vector<float> v(e.sum2.size());
    for (size_t j = 0; j < v.size(); ++j) {
      float value = e.sum2[j], count = float(e.count);
      if (count == 0.0f) value = count = 1.0f;  // "store 1 for partial data"
      v[j] = (value / count) * float(ncall);
    }
    put(v.data(), v.size() * sizeof(float));
  }
  if (m.chunk_count > kMax)
    return Err("imatrix: chunk count {} does not fit the legacy format", m.chunk_count);
  put_i32(m.chunk_count);
  const std::string ds = m.datasets.empty() ? std::string() : m.datasets.back();
  put_i32(int64_t(ds.size()));
  put(ds.data(), ds.size());
  return out;
}

Status WriteImatrixLegacy(const Imatrix& m, const std::filesystem::path& path) {
  QF_ASSIGN(const std::vector<std::byte> bytes, ImatrixLegacyBytes(m));
  QF_ASSIGN(AtomicFile f, AtomicFile::Create(path));
  QF_TRY(f.Write(bytes));
  return f.Commit();
}

std::vector<float> Importance(const ImatrixEntry& e) {
  std::vector<float> w(e.sum2.size(), 1.0f);
  if (e.count > 0) {
    const float count = float(e.count);
    for (size_t j = 0; j < w.size(); ++j) w[j] = e.sum2[j] / count;
  }
  return w;
}

}  // namespace qf::io
