// GGUF (llama.cpp's model file) reader and writer, and the table of ggml tensor types.
//
// Layout (ggml/include/gguf.h, little-endian): "GGUF", u32 version, i64 tensor count, i64 KV
// count; KV pairs (string key, i32 value type, value; arrays: i32 element type, u64 count,
// elements; strings: u64 length + bytes); tensor infos (string name, u32 n_dims, n_dims × i64
// ne in ggml order — fastest-varying first —, i32 ggml type, u64 offset into the data section);
// padding to the alignment (u32 "general.alignment", default 32); the data section.
//
// Contract (reader): ParseGguf never throws or aborts on bad bytes; anything malformed is a
// one-line Error naming the file and the key/tensor: bad magic, versions other than 2 and 3,
// truncation anywhere, counts larger than the file can hold, unknown value/ggml types (with
// their id), nested arrays, duplicate keys or tensor names, a bad general.alignment, rows not a
// whole number of blocks, offsets misaligned / overlapping / beyond the end of the file.
// Shapes are exposed row-major ([..., rows, cols], the reverse of ggml's ne) like safetensors.
// Tensor data stays memory-mapped.
//
// Contract (writer): bytes are a pure function of what was added (insertion order for KV pairs
// and tensors, zero padding), written through AtomicFile so no half file is ever left.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "core/dtype.h"
#include "core/mmap.h"
#include "core/result.h"
#include "formats/ggml_types.h"

namespace qf::io {

inline constexpr uint32_t kGgufDefaultAlignment = 32;
inline constexpr size_t kGgufMaxDims = 4;        // GGML_MAX_DIMS
inline constexpr size_t kGgufMaxNameBytes = 63;  // GGML_MAX_NAME - 1 (llama.cpp rejects longer)

// ggml tensor types: ids as in ggml.h's enum ggml_type (stored in files as i32), one per row of
// formats/ggml_types.h's list.
enum class GgmlType : uint32_t {
#define QF_GGML_ENUM(T, id, ...) k##T = id,
  QF_GGML_TYPES(QF_GGML_ENUM, QF_GGML_ENUM, QF_GGML_ENUM)
#undef QF_GGML_ENUM
};

struct GgmlTypeInfo {
  GgmlType type;
  std::string_view name;  // ggml's type_name ("f32", "q4_K", ...)
  int64_t block_size;     // weights per block (1 for plain types)
  size_t type_size;       // bytes per block
};

// All known types, ordered by id.
std::span<const GgmlTypeInfo> GgmlTypes();
// nullptr for ids that were never assigned or were removed from files (4, 5, 31-33, 36-38).
const GgmlTypeInfo* FindGgmlType(uint32_t id);
const GgmlTypeInfo* FindGgmlType(std::string_view name);  // case-insensitive ("Q8_0", "f16")
const GgmlTypeInfo& Info(GgmlType t);
// The DType of a plain float type (F32, F16, BF16); nullopt for every other type.
std::optional<DType> FloatDType(GgmlType t);
// Bytes of a tensor of `shape` (row-major) in type t; an Error when the last dimension is not a
// whole number of blocks, a dimension is negative, or the size overflows.
Result<uint64_t> GgmlTensorBytes(GgmlType t, const std::vector<int64_t>& shape);

// tokenizer.ggml.token_type values (gguf-py TokenType, llama.cpp's llama_token_type), written
// by the converter and read by the GGUF tokenizer.
namespace gguf_token {
enum Type : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};
}  // namespace gguf_token

// GGUF metadata value types (gguf_type).
enum class GgufType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};
std::string_view GgufTypeName(GgufType t);  // "u8", "str", "arr", ...

// One metadata value: a scalar or a (flat) array of one element type.
class GgufValue {
 public:
  using Storage = std::variant<uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, float, bool,
                               std::string, uint64_t, int64_t, double,  //
                               std::vector<uint8_t>, std::vector<int8_t>, std::vector<uint16_t>,
                               std::vector<int16_t>, std::vector<uint32_t>, std::vector<int32_t>,
                               std::vector<float>, std::vector<bool>, std::vector<std::string>,
                               std::vector<uint64_t>, std::vector<int64_t>, std::vector<double>>;

  GgufValue() = default;
  // Exactly one of the Storage types (no silent conversions: GgufValue(uint32_t{5}) is a u32).
  template <class T>
  requires(!std::is_same_v<std::decay_t<T>, GgufValue> &&
           !std::is_same_v<std::decay_t<T>, const char*> &&
           !std::is_same_v<std::decay_t<T>, char*>) explicit GgufValue(T&& v)
      : v_(std::forward<T>(v)) {}
  explicit GgufValue(const char* s) : v_(std::string(s)) {}

  GgufType type() const;          // kArray for arrays
  GgufType element_type() const;  // the element type of an array; type() for a scalar
  bool is_array() const { return v_.index() >= 12; }
  size_t array_size() const;  // 0 for scalars

  template <class T>
  const T* get() const {
    return std::get_if<T>(&v_);
  }
  // An integer scalar of any width as int64 (nullopt for other types or u64 > INT64_MAX).
  std::optional<int64_t> ToInt() const;
  // A float or integer scalar as double.
  std::optional<double> ToDouble() const;
  // Short display: scalars in full (strings quoted, truncated), arrays as
  // "[type × n] first items ...".
  std::string ToString(size_t max_items = 6) const;

  const Storage& storage() const { return v_; }
  bool operator==(const GgufValue& o) const { return v_ == o.v_; }

 private:
  Storage v_;
};

struct GgufKv {
  std::string key;
  GgufValue value;
};

struct GgufTensorInfo {
  std::string name;
  GgmlType type = GgmlType::kF32;
  std::vector<int64_t> shape;       // row-major: [..., rows, cols] (ggml ne reversed)
  uint64_t offset = 0;              // from the start of the data section
  std::span<const std::byte> data;  // the tensor's bytes inside the parsed buffer

  int64_t numel() const;
};

// Parsed header of a GGUF file (pure function of the bytes; fuzzed).
struct GgufContents {
  uint32_t version = 3;
  uint32_t alignment = kGgufDefaultAlignment;
  uint64_t data_offset = 0;  // where the data section starts
  std::vector<GgufKv> metadata;
  std::vector<GgufTensorInfo> tensors;  // in file order

  const GgufValue* Find(std::string_view key) const;
  const GgufTensorInfo* FindTensor(std::string_view name) const;
};

// `bytes` is the whole file; `name` is used in error messages only.
Result<GgufContents> ParseGguf(std::span<const std::byte> bytes, const std::string& name);

// A memory-mapped, validated GGUF file. Typed getters give one-line Errors naming the key
// (missing, or of another type).
class GgufFile {
 public:
  static Result<GgufFile> Open(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return map_.path(); }
  uint64_t file_size() const { return map_.bytes().size(); }
  const GgufContents& contents() const { return c_; }
  uint32_t version() const { return c_.version; }
  uint32_t alignment() const { return c_.alignment; }
  const std::vector<GgufKv>& metadata() const { return c_.metadata; }
  const std::vector<GgufTensorInfo>& tensors() const { return c_.tensors; }
  const GgufValue* Find(std::string_view key) const { return c_.Find(key); }
  const GgufTensorInfo* FindTensor(std::string_view name) const { return c_.FindTensor(name); }

  Result<std::string> GetString(std::string_view key) const;
  Result<int64_t> GetInt(std::string_view key) const;   // any integer type
  Result<double> GetFloat(std::string_view key) const;  // f32/f64 (or an integer)
  Result<bool> GetBool(std::string_view key) const;

 private:
  GgufFile(MappedFile map, GgufContents c) : map_(std::move(map)), c_(std::move(c)) {}
  MappedFile map_;
  GgufContents c_;
};

// Builds a GGUF v3 file. KV pairs and tensors are written in the order they were added; the
// data of each tensor starts at a multiple of the alignment (zero padding in between).
class GgufWriter {
 public:
  // Fills the tensor's bytes (exactly the size implied by its type and shape) when the file is
  // written, so that a converter holds one tensor at a time.
  using Fill = std::function<Status(std::span<std::byte> out)>;

  GgufWriter() = default;

  // Errors on an empty or duplicate key. "general.alignment" must be a u32 power of two; it
  // also sets the alignment used for the data.
  Status Set(std::string key, GgufValue value);
  // `data` must stay valid until Write() and be exactly the tensor's size.
  Status AddTensor(std::string name, GgmlType type, std::vector<int64_t> shape,
                   std::span<const std::byte> data);
  Status AddTensor(std::string name, GgmlType type, std::vector<int64_t> shape, Fill fill);

  uint32_t alignment() const { return alignment_; }
  size_t tensor_count() const { return tensors_.size(); }
  uint64_t FileSize() const;  // bytes Write() will produce

  // `progress` (optional) is called after each tensor with (tensors done, total).
  Status Write(const std::filesystem::path& path,
               const std::function<void(size_t, size_t)>& progress = {}) const;
  Result<std::vector<std::byte>> WriteToBytes() const;

 private:
  struct Tensor {
    std::string name;
    GgmlType type;
    std::vector<int64_t> shape;
    uint64_t bytes;
    Fill fill;
  };
  Status Emit(const std::function<Status(std::span<const std::byte>)>& sink,
              const std::function<void(size_t, size_t)>& progress) const;
  std::vector<std::byte> Header() const;
  Result<uint64_t> Validate(const std::string& name, GgmlType type,
                            const std::vector<int64_t>& shape) const;

  uint32_t alignment_ = kGgufDefaultAlignment;
  std::vector<GgufKv> kv_;
  std::vector<Tensor> tensors_;
};

}  // namespace qf::io
