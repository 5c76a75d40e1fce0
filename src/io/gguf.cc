// GGUF reader (strict validation over a byte span) and writer (deterministic, atomic).
// Contract: never throws or aborts on bad bytes; every failure is a one-line Error naming the
// file and the key or tensor. Sizes are checked against the bytes left before anything is
// allocated, so a forged count cannot make the reader reserve more than the file could hold.
#include "io/gguf.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cctype>
#include <cstring>
#include <limits>
#include <numeric>
#include <set>
#include <type_traits>
#include <unordered_set>

#include "core/atomic_file.h"

namespace qf::io {
namespace {

static_assert(std::endian::native == std::endian::little, "GGUF I/O assumes a little-endian host");

// Every row of formats/ggml_types.h's list, ordered by id.
constexpr GgmlTypeInfo kGgmlTypes[] = {
#define QF_GGML_INFO(T, id, type_name, weights, bytes, ...) \
  {GgmlType::k##T, type_name, weights, bytes},
    QF_GGML_TYPES(QF_GGML_INFO, QF_GGML_INFO, QF_GGML_INFO)
#undef QF_GGML_INFO
};

// Ids that once existed and were removed from files (named in the error for such a tensor).
std::string_view RemovedTypeName(uint32_t id) {
  switch (id) {
    case 4:
      return "Q4_2";
    case 5:
      return "Q4_3";
    case 31:
      return "Q4_0_4_4";
    case 32:
      return "Q4_0_4_8";
    case 33:
      return "Q4_0_8_8";
    case 36:
      return "IQ4_NL_4_4";
    case 37:
      return "IQ4_NL_4_8";
    case 38:
      return "IQ4_NL_8_8";
    default:
      return {};
  }
}

constexpr std::array<std::string_view, 13> kGgufTypeNames = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "arr", "u64", "i64", "f64"};

// Storage index of a scalar alternative -> GgufType (index 9 onwards skips kArray).
constexpr GgufType ScalarTypeOfIndex(size_t i) { return GgufType(uint32_t(i < 9 ? i : i + 1)); }

// Smallest encoding of one value of a (non-array) type: strings need their u64 length.
size_t MinBytes(GgufType t) {
  switch (t) {
    case GgufType::kU8:
    case GgufType::kI8:
    case GgufType::kBool:
      return 1;
    case GgufType::kU16:
    case GgufType::kI16:
      return 2;
    case GgufType::kU32:
    case GgufType::kI32:
    case GgufType::kF32:
      return 4;
    default:
      return 8;  // u64, i64, f64, string length
  }
}

constexpr size_t kMaxQuotedChars = 80;

// Untrusted text made safe for a one-line message: control bytes escaped, long text truncated.
std::string Quote(std::string_view s, size_t max_chars = kMaxQuotedChars) {
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < max_chars; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += char(c);
    }
  }
  if (s.size() > max_chars) out += "...";
  return out + "'";
}

uint64_t PadTo(uint64_t n, uint64_t alignment) {
  return (n + alignment - 1) / alignment * alignment;
}

// Bounds-checked little-endian cursor over the file bytes. Errors say what was being read.
class Cursor {
 public:
  explicit Cursor(std::span<const std::byte> b) : b_(b) {}
  uint64_t pos() const { return pos_; }
  uint64_t left() const { return b_.size() - pos_; }

  Status Need(uint64_t n, std::string_view what) const {
    if (n > left()) {
      return Err("truncated: {} needs {} bytes at offset {}, the file has {} left", what, n, pos_,
                 left());
    }
    return Status::Ok();
  }
  template <class T>
  Result<T> Read(std::string_view what) {
    QF_TRY(Need(sizeof(T), what));
    T v;
    std::memcpy(&v, b_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  Result<std::string> ReadString(std::string_view what) {
    QF_ASSIGN(uint64_t n, Read<uint64_t>(what));
    QF_TRY(Need(n, what));
    std::string s(reinterpret_cast<const char*>(b_.data() + pos_), size_t(n));
    pos_ += n;
    return s;
  }

 private:
  std::span<const std::byte> b_;
  uint64_t pos_ = 0;
};

template <class T>
Result<GgufValue> ReadArray(Cursor& c, uint64_t n, std::string_view what) {
  std::vector<T> v;
  v.reserve(size_t(n));  // n was checked against the bytes left
  for (uint64_t i = 0; i < n; ++i) {
    if constexpr (std::is_same_v<T, std::string>) {
      QF_ASSIGN(std::string s, c.ReadString(what));
      v.push_back(std::move(s));
    } else if constexpr (std::is_same_v<T, bool>) {
      QF_ASSIGN(uint8_t b, c.Read<uint8_t>(what));
      if (b > 1) return Err("{}: bool element {} has value {} (expected 0 or 1)", what, i, b);
      v.push_back(b != 0);
    } else {
      QF_ASSIGN(T x, c.Read<T>(what));
      v.push_back(x);
    }
  }
  return GgufValue(std::move(v));
}

template <class T>
Result<GgufValue> ReadScalar(Cursor& c, std::string_view what) {
  if constexpr (std::is_same_v<T, std::string>) {
    QF_ASSIGN(std::string s, c.ReadString(what));
    return GgufValue(std::move(s));
  } else if constexpr (std::is_same_v<T, bool>) {
    QF_ASSIGN(uint8_t b, c.Read<uint8_t>(what));
    if (b > 1) return Err("{}: bool has value {} (expected 0 or 1)", what, b);
    return GgufValue(b != 0);
  } else {
    QF_ASSIGN(T x, c.Read<T>(what));
    return GgufValue(x);
  }
}

// Calls f.template operator()<T>() with the C++ type of a (non-array) GGUF type.
template <class F>
auto Dispatch(GgufType t, F&& f) {
  switch (t) {
    case GgufType::kU8:
      return f.template operator()<uint8_t>();
    case GgufType::kI8:
      return f.template operator()<int8_t>();
    case GgufType::kU16:
      return f.template operator()<uint16_t>();
    case GgufType::kI16:
      return f.template operator()<int16_t>();
    case GgufType::kU32:
      return f.template operator()<uint32_t>();
    case GgufType::kI32:
      return f.template operator()<int32_t>();
    case GgufType::kF32:
      return f.template operator()<float>();
    case GgufType::kBool:
      return f.template operator()<bool>();
    case GgufType::kString:
      return f.template operator()<std::string>();
    case GgufType::kU64:
      return f.template operator()<uint64_t>();
    case GgufType::kI64:
      return f.template operator()<int64_t>();
    default:
      return f.template operator()<double>();  // kF64; callers exclude kArray
  }
}

bool KnownScalarType(uint32_t id) { return id <= 12 && id != 9; }

Result<GgufValue> ReadValue(Cursor& c, const std::string& key) {
  const std::string what = "value of key " + Quote(key);
  QF_ASSIGN(uint32_t type_id, c.Read<uint32_t>(what));
  if (type_id == uint32_t(GgufType::kArray)) {
    QF_ASSIGN(uint32_t elem_id, c.Read<uint32_t>(what));
    if (elem_id == uint32_t(GgufType::kArray))
      return Err("key {}: nested arrays are not supported", Quote(key));
    if (!KnownScalarType(elem_id))
      return Err("key {}: unknown array element type id {}", Quote(key), elem_id);
    QF_ASSIGN(uint64_t n, c.Read<uint64_t>(what));
    const GgufType elem = GgufType(elem_id);
    if (n > c.left() / MinBytes(elem)) {
      return Err("key {}: array of {} {} elements cannot fit in the {} bytes left at offset {}",
                 Quote(key), n, GgufTypeName(elem), c.left(), c.pos());
    }
    return Dispatch(elem, [&]<class T>() { return ReadArray<T>(c, n, what); });
  }
  if (!KnownScalarType(type_id))
    return Err("key {}: unknown value type id {}", Quote(key), type_id);
  return Dispatch(GgufType(type_id), [&]<class T>() { return ReadScalar<T>(c, what); });
}

std::string DimsString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

Result<GgufContents> Parse(std::span<const std::byte> bytes) {
  Cursor c(bytes);
  GgufContents out;
  if (bytes.size() < 4) return Err("truncated: {} bytes, too short for a GGUF file", bytes.size());
  if (std::memcmp(bytes.data(), "GGUF", 4) != 0) {
    return Err("bad magic {} (expected 'GGUF'): not a GGUF file",
               Quote(std::string_view(reinterpret_cast<const char*>(bytes.data()), 4)));
  }
  (void)c.Read<uint32_t>("magic");
  QF_ASSIGN(out.version, c.Read<uint32_t>("version"));
  if (out.version != 2 && out.version != 3) {
    if (out.version == 1) return Err("GGUF version 1 is not supported (only 2 and 3)");
    if ((out.version & 0xffff) == 0 && (out.version >> 24) <= 3)
      return Err("GGUF version {:#x} looks big-endian; only little-endian files are supported",
                 out.version);
    return Err("unsupported GGUF version {} (only 2 and 3)", out.version);
  }
  QF_ASSIGN(int64_t n_tensors, c.Read<int64_t>("tensor count"));
  QF_ASSIGN(int64_t n_kv, c.Read<int64_t>("metadata count"));
  // Every KV takes >= 13 bytes (key length, type, 1-byte value) and every tensor info >= 24
  // (name length, n_dims, type, offset): larger counts cannot be honest.
  if (n_tensors < 0 || uint64_t(n_tensors) > c.left() / 24) {
    return Err("tensor count {} is impossible for the {} bytes after the header", n_tensors,
               c.left());
  }
  if (n_kv < 0 || uint64_t(n_kv) > c.left() / 13) {
    return Err("metadata count {} is impossible for the {} bytes after the header", n_kv, c.left());
  }

  std::unordered_set<std::string> keys;
  out.metadata.reserve(size_t(n_kv));
  for (int64_t i = 0; i < n_kv; ++i) {
    QF_ASSIGN(std::string key, c.ReadString(fmt::format("key #{}", i)));
    if (key.empty()) return Err("key #{} is empty", i);
    if (!keys.insert(key).second) return Err("duplicate key {}", Quote(key));
    QF_ASSIGN(GgufValue value, ReadValue(c, key));
    out.metadata.push_back({std::move(key), std::move(value)});
  }
  if (const GgufValue* a = out.Find("general.alignment")) {
    const uint32_t* v = a->get<uint32_t>();
    if (v == nullptr) {
      return Err("general.alignment has type {} (expected u32)",
                 GgufTypeName(a->is_array() ? GgufType::kArray : a->type()));
    }
    if (*v == 0 || !std::has_single_bit(*v))
      return Err("general.alignment {} is not a power of two", *v);
    out.alignment = *v;
  }

  std::unordered_set<std::string> names;
  out.tensors.reserve(size_t(n_tensors));
  std::vector<uint64_t> sizes;
  sizes.reserve(size_t(n_tensors));
  for (int64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    QF_ASSIGN(t.name, c.ReadString(fmt::format("tensor #{} name", i)));
    const std::string q = Quote(t.name);
    if (t.name.empty()) return Err("tensor #{} has an empty name", i);
    if (t.name.size() > kGgufMaxNameBytes)
      return Err("tensor {}: name is {} bytes (at most {})", q, t.name.size(), kGgufMaxNameBytes);
    if (!names.insert(t.name).second) return Err("duplicate tensor name {}", q);
    const std::string what = "tensor " + q;
    QF_ASSIGN(uint32_t n_dims, c.Read<uint32_t>(what));
    if (n_dims > kGgufMaxDims)
      return Err("tensor {}: {} dimensions (at most {})", q, n_dims, kGgufMaxDims);
    t.shape.resize(n_dims);
    for (uint32_t d = 0; d < n_dims; ++d) {
      QF_ASSIGN(int64_t ne, c.Read<int64_t>(what));
      if (ne < 0) return Err("tensor {}: dimension {} is negative ({})", q, d, ne);
      t.shape[n_dims - 1 - d] = ne;  // ggml's ne[0] is the row length: the last row-major dim
    }
    QF_ASSIGN(uint32_t type_id, c.Read<uint32_t>(what));
    const GgmlTypeInfo* info = FindGgmlType(type_id);
    if (info == nullptr) {
      const std::string_view removed = RemovedTypeName(type_id);
      if (!removed.empty())
        return Err("tensor {}: ggml type id {} ({}) was removed from GGUF files", q, type_id,
                   removed);
      return Err("tensor {}: unknown ggml type id {}", q, type_id);
    }
    t.type = info->type;
    auto nbytes = GgmlTensorBytes(t.type, t.shape);
    if (!nbytes.ok()) return nbytes.error().Context("tensor " + q);
    QF_ASSIGN(t.offset, c.Read<uint64_t>(what));
    if (t.offset % out.alignment != 0) {
      return Err("tensor {}: data offset {} is not a multiple of the alignment {}", q, t.offset,
                 out.alignment);
    }
    sizes.push_back(*nbytes);
    out.tensors.push_back(std::move(t));
  }

  out.data_offset = n_tensors > 0 ? PadTo(c.pos(), out.alignment) : c.pos();
  if (out.data_offset > bytes.size()) {
    return Err("truncated: the data section starts at offset {} but the file has {} bytes",
               out.data_offset, bytes.size());
  }
  const uint64_t data_size = bytes.size() - out.data_offset;
  for (size_t i = 0; i < out.tensors.size(); ++i) {
    GgufTensorInfo& t = out.tensors[i];
    if (t.offset > data_size || sizes[i] > data_size - t.offset) {
      return Err(
          "tensor {} {} {}: data [{}, {}) lies beyond the end of the file (data section "
          "has {} bytes)",
          Quote(t.name), Info(t.type).name, DimsString(t.shape), t.offset, t.offset + sizes[i],
          data_size);
    }
    t.data = bytes.subspan(size_t(out.data_offset + t.offset), size_t(sizes[i]));
  }
  // No two tensors may share bytes (empty tensors overlap nothing).
  std::vector<size_t> order(out.tensors.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return out.tensors[a].offset < out.tensors[b].offset; });
  const GgufTensorInfo* prev = nullptr;
  uint64_t prev_end = 0;
  for (size_t i : order) {
    const GgufTensorInfo& t = out.tensors[i];
    if (sizes[i] == 0) continue;
    if (prev != nullptr && t.offset < prev_end) {
      return Err("tensors {} and {} overlap (data [{}, {}) and [{}, {}))", Quote(prev->name),
                 Quote(t.name), prev->offset, prev_end, t.offset, t.offset + sizes[i]);
    }
    prev = &t;
    prev_end = t.offset + sizes[i];
  }
  return out;
}

template <class T>
void AppendRaw(std::vector<std::byte>& out, const T& v) {
  const auto* p = reinterpret_cast<const std::byte*>(&v);
  out.insert(out.end(), p, p + sizeof(T));
}

void AppendString(std::vector<std::byte>& out, std::string_view s) {
  AppendRaw(out, uint64_t(s.size()));
  const auto* p = reinterpret_cast<const std::byte*>(s.data());
  out.insert(out.end(), p, p + s.size());
}

template <class T>
void AppendElement(std::vector<std::byte>& out, const T& v) {
  if constexpr (std::is_same_v<T, std::string>) {
    AppendString(out, v);
  } else if constexpr (std::is_same_v<T, bool>) {
    AppendRaw(out, uint8_t(v ? 1 : 0));
  } else {
    AppendRaw(out, v);
  }
}

void AppendValue(std::vector<std::byte>& out, const GgufValue& value) {
  AppendRaw(out, uint32_t(value.type()));
  std::visit(
      [&](const auto& v) {
        using V = std::decay_t<decltype(v)>;
        if constexpr (requires { typename V::value_type; } && !std::is_same_v<V, std::string>) {
          AppendRaw(out, uint32_t(value.element_type()));
          AppendRaw(out, uint64_t(v.size()));
          if constexpr (std::is_same_v<V, std::vector<bool>>) {
            for (bool e : v) AppendElement(out, e);
          } else {
            for (const auto& e : v) AppendElement(out, e);
          }
        } else {
          AppendElement(out, v);
        }
      },
      value.storage());
}

}  // namespace

// --- ggml types --------------------------------------------------------------------------

std::span<const GgmlTypeInfo> GgmlTypes() { return kGgmlTypes; }

const GgmlTypeInfo* FindGgmlType(uint32_t id) {
  for (const auto& row : kGgmlTypes) {
    if (uint32_t(row.type) == id) return &row;
  }
  return nullptr;
}

const GgmlTypeInfo* FindGgmlType(std::string_view name) {
  for (const auto& row : kGgmlTypes) {
    if (row.name.size() == name.size() &&
        std::equal(name.begin(), name.end(), row.name.begin(), [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) ==
                 std::tolower(static_cast<unsigned char>(b));
        })) {
      return &row;
    }
  }
  return nullptr;
}

std::optional<DType> FloatDType(GgmlType t) {
  switch (t) {
    case GgmlType::kF32:
      return DType::kF32;
    case GgmlType::kF16:
      return DType::kF16;
    case GgmlType::kBF16:
      return DType::kBF16;
    default:
      return std::nullopt;
  }
}

const GgmlTypeInfo& Info(GgmlType t) {
  const GgmlTypeInfo* row = FindGgmlType(uint32_t(t));
  QF_CHECK(row != nullptr, "GgmlType {} has no table row", uint32_t(t));
  return *row;
}

Result<uint64_t> GgmlTensorBytes(GgmlType t, const std::vector<int64_t>& shape) {
  const GgmlTypeInfo& info = Info(t);
  uint64_t numel = 1;
  for (int64_t d : shape) {
    if (d < 0) return Err("negative dimension in shape {}", DimsString(shape));
    if (d != 0 && numel > uint64_t(std::numeric_limits<int64_t>::max()) / uint64_t(d))
      return Err("shape {} has too many elements", DimsString(shape));
    numel *= uint64_t(d);
  }
  const int64_t cols = shape.empty() ? 1 : shape.back();
  if (cols % info.block_size != 0) {
    return Err("rows of {} elements are not a whole number of {} blocks of {}", cols, info.name,
               info.block_size);
  }
  const uint64_t blocks = numel / uint64_t(info.block_size);
  if (blocks > std::numeric_limits<uint64_t>::max() / 2 / info.type_size)
    return Err("shape {} is too large for {}", DimsString(shape), info.name);
  return blocks * info.type_size;
}

// --- values ------------------------------------------------------------------------------

std::string_view GgufTypeName(GgufType t) {
  const auto i = uint32_t(t);
  return i < kGgufTypeNames.size() ? kGgufTypeNames[i] : std::string_view("?");
}

GgufType GgufValue::type() const {
  return is_array() ? GgufType::kArray : ScalarTypeOfIndex(v_.index());
}

GgufType GgufValue::element_type() const {
  return ScalarTypeOfIndex(is_array() ? v_.index() - 12 : v_.index());
}

size_t GgufValue::array_size() const {
  return std::visit(
      [](const auto& v) -> size_t {
        using V = std::decay_t<decltype(v)>;
        if constexpr (requires { typename V::value_type; } && !std::is_same_v<V, std::string>) {
          return v.size();
        } else {
          return 0;
        }
      },
      v_);
}

std::optional<int64_t> GgufValue::ToInt() const {
  return std::visit(
      [](const auto& v) -> std::optional<int64_t> {
        using V = std::decay_t<decltype(v)>;
        if constexpr (std::is_integral_v<V> && !std::is_same_v<V, bool>) {
          if constexpr (std::is_same_v<V, uint64_t>) {
            if (v > uint64_t(std::numeric_limits<int64_t>::max())) return std::nullopt;
          }
          return int64_t(v);
        } else {
          return std::nullopt;
        }
      },
      v_);
}

std::optional<double> GgufValue::ToDouble() const {
  if (const float* f = get<float>()) return double(*f);
  if (const double* d = get<double>()) return *d;
  if (auto i = ToInt()) return double(*i);
  return std::nullopt;
}

std::string GgufValue::ToString(size_t max_items) const {
  auto one = [](const auto& e) -> std::string {
    using E = std::decay_t<decltype(e)>;
    if constexpr (std::is_same_v<E, std::string>) {
      return Quote(e, 60);
    } else if constexpr (std::is_same_v<E, bool>) {
      return e ? "true" : "false";
    } else if constexpr (std::is_same_v<E, uint8_t> || std::is_same_v<E, int8_t>) {
      return std::to_string(int(e));
    } else {
      return fmt::format("{}", e);
    }
  };
  return std::visit(
      [&](const auto& v) -> std::string {
        using V = std::decay_t<decltype(v)>;
        if constexpr (requires { typename V::value_type; } && !std::is_same_v<V, std::string>) {
          std::string s = fmt::format("[{} × {}]", GgufTypeName(element_type()), v.size());
          size_t i = 0;
          for (auto it = v.begin(); it != v.end() && i < max_items; ++it, ++i)
            s += (i ? ", " : " ") + one(typename V::value_type(*it));
          if (v.size() > max_items) s += ", ...";
          return s;
        } else {
          return one(v);
        }
      },
      v_);
}

// --- reader ------------------------------------------------------------------------------

int64_t GgufTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

const GgufValue* GgufContents::Find(std::string_view key) const {
  for (const auto& kv : metadata) {
    if (kv.key == key) return &kv.value;
  }
  return nullptr;
}

const GgufTensorInfo* GgufContents::FindTensor(std::string_view name) const {
  for (const auto& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

Result<GgufContents> ParseGguf(std::span<const std::byte> bytes, const std::string& name) {
  auto r = Parse(bytes);
  if (!r.ok()) return r.error().Context(name);
  return r;
}

Result<GgufFile> GgufFile::Open(const std::filesystem::path& path) {
  QF_ASSIGN(MappedFile map, MappedFile::Open(path));
  QF_ASSIGN(GgufContents c, ParseGguf(map.bytes(), path.string()));
  return GgufFile(std::move(map), std::move(c));
}

Result<std::string> GgufFile::GetString(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return Err("{}: missing key '{}'", path().string(), key);
  if (const std::string* s = v->get<std::string>()) return *s;
  return Err("{}: key '{}' has type {} (expected str)", path().string(), key,
             GgufTypeName(v->type()));
}

Result<int64_t> GgufFile::GetInt(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return Err("{}: missing key '{}'", path().string(), key);
  if (auto i = v->ToInt()) return *i;
  return Err("{}: key '{}' has type {} (expected an integer)", path().string(), key,
             GgufTypeName(v->type()));
}

Result<double> GgufFile::GetFloat(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return Err("{}: missing key '{}'", path().string(), key);
  if (auto d = v->ToDouble()) return *d;
  return Err("{}: key '{}' has type {} (expected a number)", path().string(), key,
             GgufTypeName(v->type()));
}

Result<bool> GgufFile::GetBool(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return Err("{}: missing key '{}'", path().string(), key);
  if (const bool* b = v->get<bool>()) return *b;
  return Err("{}: key '{}' has type {} (expected bool)", path().string(), key,
             GgufTypeName(v->type()));
}

// --- writer ------------------------------------------------------------------------------

Status GgufWriter::Set(std::string key, GgufValue value) {
  if (key.empty()) return Err("GGUF metadata key is empty");
  for (const auto& kv : kv_) {
    if (kv.key == key) return Err("duplicate GGUF metadata key {}", Quote(key));
  }
  if (key == "general.alignment") {
    const uint32_t* a = value.get<uint32_t>();
    if (a == nullptr) return Err("general.alignment must be a u32");
    if (*a == 0 || !std::has_single_bit(*a))
      return Err("general.alignment {} is not a power of two", *a);
    alignment_ = *a;
  }
  kv_.push_back({std::move(key), std::move(value)});
  return Status::Ok();
}

Result<uint64_t> GgufWriter::Validate(const std::string& name, GgmlType type,
                                      const std::vector<int64_t>& shape) const {
  if (name.empty()) return Err("GGUF tensor name is empty");
  if (name.size() > kGgufMaxNameBytes)
    return Err("GGUF tensor name {} is longer than {} bytes", Quote(name), kGgufMaxNameBytes);
  for (const auto& t : tensors_) {
    if (t.name == name) return Err("duplicate GGUF tensor name {}", Quote(name));
  }
  if (shape.size() > kGgufMaxDims)
    return Err("tensor {}: {} dimensions (GGUF allows {})", Quote(name), shape.size(),
               kGgufMaxDims);
  if (FindGgmlType(uint32_t(type)) == nullptr)
    return Err("tensor {}: unknown ggml type id {}", Quote(name), uint32_t(type));
  auto bytes = GgmlTensorBytes(type, shape);
  if (!bytes.ok()) return bytes.error().Context("tensor " + Quote(name));
  return bytes;
}

Status GgufWriter::AddTensor(std::string name, GgmlType type, std::vector<int64_t> shape,
                             std::span<const std::byte> data) {
  QF_ASSIGN(uint64_t bytes, Validate(name, type, shape));
  if (data.size() != bytes) {
    return Err("tensor {}: {} bytes given, {} {} needs {}", Quote(name), data.size(),
               Info(type).name, DimsString(shape), bytes);
  }
  tensors_.push_back(
      {std::move(name), type, std::move(shape), bytes, [data](std::span<std::byte> out) {
         std::memcpy(out.data(), data.data(), data.size());
         return Status::Ok();
       }});
  return Status::Ok();
}

Status GgufWriter::AddTensor(std::string name, GgmlType type, std::vector<int64_t> shape,
                             Fill fill) {
  QF_ASSIGN(uint64_t bytes, Validate(name, type, shape));
  tensors_.push_back({std::move(name), type, std::move(shape), bytes, std::move(fill)});
  return Status::Ok();
}

std::vector<std::byte> GgufWriter::Header() const {
  std::vector<std::byte> out;
  out.insert(out.end(), {std::byte{'G'}, std::byte{'G'}, std::byte{'U'}, std::byte{'F'}});
  AppendRaw(out, uint32_t(3));
  AppendRaw(out, int64_t(tensors_.size()));
  AppendRaw(out, int64_t(kv_.size()));
  for (const auto& kv : kv_) {
    AppendString(out, kv.key);
    AppendValue(out, kv.value);
  }
  uint64_t offset = 0;
  for (const auto& t : tensors_) {
    AppendString(out, t.name);
    AppendRaw(out, uint32_t(t.shape.size()));
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) AppendRaw(out, int64_t(*it));
    AppendRaw(out, uint32_t(t.type));
    AppendRaw(out, offset);
    offset += PadTo(t.bytes, alignment_);
  }
  // Like llama.cpp, the data section is aligned only when there is one.
  if (!tensors_.empty()) out.resize(size_t(PadTo(out.size(), alignment_)), std::byte{0});
  return out;
}

uint64_t GgufWriter::FileSize() const {
  uint64_t n = Header().size();
  for (const auto& t : tensors_) n += PadTo(t.bytes, alignment_);
  return n;
}

Status GgufWriter::Emit(const std::function<Status(std::span<const std::byte>)>& sink,
                        const std::function<void(size_t, size_t)>& progress) const {
  QF_TRY(sink(Header()));
  std::vector<std::byte> buf;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const Tensor& t = tensors_[i];
    // Zeroed once per tensor: a Fill that leaves bytes untouched still writes the same file.
    buf.assign(size_t(PadTo(t.bytes, alignment_)), std::byte{0});
    auto st = t.fill(std::span<std::byte>(buf.data(), size_t(t.bytes)));
    if (!st.ok()) return st.error().Context("tensor " + Quote(t.name));
    QF_TRY(sink(buf));
    if (progress) progress(i + 1, tensors_.size());
  }
  return Status::Ok();
}

Status GgufWriter::Write(const std::filesystem::path& path,
                         const std::function<void(size_t, size_t)>& progress) const {
  QF_ASSIGN(AtomicFile file, AtomicFile::Create(path));
  QF_TRY(Emit([&](std::span<const std::byte> b) { return file.Write(b); }, progress));
  return file.Commit();
}

Result<std::vector<std::byte>> GgufWriter::WriteToBytes() const {
  std::vector<std::byte> out;
  QF_TRY(Emit(
      [&](std::span<const std::byte> b) {
        out.insert(out.end(), b.begin(), b.end());
        return Status::Ok();
      },
      {}));
  return out;
}

}  // namespace qf::io
