// safetensors reader: strict header validation (rules of huggingface/safetensors), shard loading.
// Contract: never throws or aborts on bad bytes; every failure is a one-line Error naming the file.
#include "io/safetensors.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string_view>
#include <tuple>
#include <utility>

namespace qf::io {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // same limit as the reference Rust crate
constexpr size_t kHeaderLengthBytes = 8;
// A safetensors header needs 3 levels (root, tensor entry, shape); the bound keeps recursive
// walks over the parsed value (dump, destructors of foreign fields) off deep untrusted input.
constexpr int kMaxJsonDepth = 16;
constexpr size_t kMaxQuotedChars = 160;
constexpr size_t kMaxParseErrorChars = 300;
constexpr std::string_view kIndexName = "model.safetensors.index.json";
constexpr std::string_view kSingleName = "model.safetensors";

// Untrusted text made safe for a one-line message: control bytes escaped, long text truncated.
std::string OneLine(std::string_view s, size_t max_chars) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < max_chars; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += char(c);
    }
  }
  if (s.size() > max_chars) out += "...";
  return out;
}

std::string Quote(std::string_view s) { return "'" + OneLine(s, kMaxQuotedChars) + "'"; }

// Short description of a JSON value for messages; never recurses into containers.
std::string Describe(const Json& v) {
  if (v.is_object()) return "an object";
  if (v.is_array()) return "an array";
  if (v.is_string()) return "the string " + Quote(v.get_ref<const std::string&>());
  return v.dump();  // null, bool or number
}

// First pass over the header text: rejects what nlohmann's DOM parser would silently accept
// (duplicate keys, which it overwrites) or what is unsafe to hold (very deep nesting).
class StrictJsonChecker : public nlohmann::json_sax<Json> {
 public:
  const std::string& error() const { return error_; }

  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override {
    keys_.emplace_back();
    return Enter();
  }
  bool key(string_t& k) override {
    if (!keys_.back().insert(k).second) {
      error_ = "duplicate key " + Quote(k);
      return false;
    }
    return true;
  }
  bool end_object() override {
    keys_.pop_back();
    --depth_;
    return true;
  }
  bool start_array(std::size_t) override {
    keys_.emplace_back();  // arrays have no keys; keeps the stack in step with the nesting
    return Enter();
  }
  bool end_array() override { return end_object(); }
  bool parse_error(std::size_t, const std::string&,
                   const nlohmann::detail::exception& ex) override {
    // what() echoes the offending token, which may be long or hold raw bytes.
    error_ = OneLine(ex.what(), kMaxParseErrorChars);
    return false;
  }

 private:
  bool Enter() {
    if (++depth_ > kMaxJsonDepth) {
      error_ = fmt::format("nesting deeper than {} levels", kMaxJsonDepth);
      return false;
    }
    return true;
  }

  std::vector<std::set<std::string>> keys_;
  int depth_ = 0;
  std::string error_;
};

// Parses JSON text, rejecting syntax errors, trailing garbage, duplicate keys and deep nesting.
// `what` prefixes the error ("<file>: header").
Result<Json> ParseJsonStrict(std::string_view text, const std::string& what) {
  StrictJsonChecker checker;
  if (!Json::sax_parse(text.begin(), text.end(), &checker)) {
    return Err("{} is not valid JSON: {}", what, checker.error());
  }
  Json value = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) return Err("{} is not valid JSON", what);  // unreachable after check
  return value;
}

// A JSON number that is an integer in [0, INT64_MAX].
std::optional<int64_t> NonNegativeInt(const Json& v) {
  if (!v.is_number_unsigned()) return std::nullopt;  // nlohmann stores every n >= 0 as unsigned
  const uint64_t u = v.get<uint64_t>();
  if (u > uint64_t(std::numeric_limits<int64_t>::max())) return std::nullopt;
  return int64_t(u);
}

struct Entry {  // one tensor of a header, before the layout checks
  TensorInfo info;
  uint64_t begin = 0;  // data_offsets, relative to the data buffer
  uint64_t end = 0;
};

// Validates one tensor entry on its own: dtype, shape, offsets, byte count, bounds.
Result<Entry> ParseEntry(const std::string& file, const std::string& name, const Json& v,
                         uint64_t data_size) {
  const std::string where = fmt::format("{}: tensor {}", file, Quote(name));
  if (!v.is_object()) return Err("{}: entry is {}, not an object", where, Describe(v));
  Entry e;
  e.info.name = name;
  e.info.file = file;

  const auto dtype_it = v.find("dtype");
  if (dtype_it == v.end()) return Err("{}: missing \"dtype\"", where);
  if (!dtype_it->is_string())
    return Err("{}: dtype is {}, not a string", where, Describe(*dtype_it));
  const auto& dtype_name = dtype_it->get_ref<const std::string&>();
  const auto dtype = DTypeFromSafetensorsName(dtype_name);
  if (!dtype) return Err("{}: unknown dtype {}", where, Quote(dtype_name));
  e.info.dtype = *dtype;

  const auto shape_it = v.find("shape");
  if (shape_it == v.end()) return Err("{}: missing \"shape\"", where);
  if (!shape_it->is_array())
    return Err("{}: shape is {}, not an array", where, Describe(*shape_it));
  int64_t numel = 1;
  bool overflow = false;
  for (size_t i = 0; i < shape_it->size(); ++i) {
    const auto dim = NonNegativeInt((*shape_it)[i]);
    if (!dim) {
      return Err("{}: shape[{}] is {}, not a non-negative integer", where, i,
                 Describe((*shape_it)[i]));
    }
    e.info.shape.push_back(*dim);
    // Left-to-right like the reference crate, so numel() of an accepted shape cannot overflow.
    overflow = overflow || __builtin_mul_overflow(numel, *dim, &numel);
  }
  const std::string shape_str = fmt::format("[{}]", fmt::join(e.info.shape, ", "));
  const int64_t elem_bytes = int64_t(Info(e.info.dtype).bytes);
  int64_t nbytes = 0;
  if (overflow || __builtin_mul_overflow(numel, elem_bytes, &nbytes)) {
    return Err("{}: byte size of shape {} {} overflows int64", where, shape_str, dtype_name);
  }

  const auto off_it = v.find("data_offsets");
  if (off_it == v.end()) return Err("{}: missing \"data_offsets\"", where);
  std::optional<int64_t> begin, end;
  if (off_it->is_array() && off_it->size() == 2) {
    begin = NonNegativeInt((*off_it)[0]);
    end = NonNegativeInt((*off_it)[1]);
  }
  if (!begin || !end) {
    return Err("{}: data_offsets must be [begin, end] with non-negative integers", where);
  }
  if (*begin > *end) {
    return Err("{}: data_offsets [{}, {}] has begin > end", where, *begin, *end);
  }
  e.begin = uint64_t(*begin);
  e.end = uint64_t(*end);
  if (e.end - e.begin != uint64_t(nbytes)) {
    return Err("{}: expected {} bytes for shape {} {}, header says {}", where, nbytes, shape_str,
               dtype_name, e.end - e.begin);
  }
  if (e.end > data_size) {
    return Err("{}: data_offsets [{}, {}] out of the data buffer ({} bytes)", where, e.begin, e.end,
               data_size);
  }
  return e;
}

Result<std::map<std::string, std::string>> ParseMetadata(const std::string& file, const Json& v) {
  std::map<std::string, std::string> out;
  if (v.is_null()) return out;  // serde reads a null Option as absent
  if (!v.is_object()) return Err("{}: __metadata__ is {}, not an object", file, Describe(v));
  for (const auto& [key, value] : v.items()) {
    if (!value.is_string()) {
      return Err("{}: __metadata__ value of {} is {}, not a string", file, Quote(key),
                 Describe(value));
    }
    out.emplace(key, value.get<std::string>());
  }
  return out;
}

// Data must be covered exactly: sorted entries start at 0, each begins where the previous ends,
// and the last ends at the end of the buffer (the reference crate's MetadataIncompleteBuffer).
Status CheckLayout(const std::string& file, const std::vector<Entry>& entries, uint64_t data_size) {
  uint64_t pos = 0;
  const Entry* prev = nullptr;
  for (const Entry& e : entries) {
    if (e.begin < pos) {
      return Err("{}: tensors {} [{}, {}] and {} [{}, {}] overlap", file, Quote(prev->info.name),
                 prev->begin, prev->end, Quote(e.info.name), e.begin, e.end);
    }
    if (e.begin > pos) {
      return Err(
          "{}: hole of {} bytes before tensor {} (data_offsets [{}, {}], data before it "
          "ends at {})",
          file, e.begin - pos, Quote(e.info.name), e.begin, e.end, pos);
    }
    pos = e.end;
    prev = &e;
  }
  if (pos != data_size) {
    return Err(
        "{}: {} trailing bytes after the last tensor (data buffer is {} bytes, tensors "
        "cover {})",
        file, data_size - pos, data_size, pos);
  }
  return Status::Ok();
}

Result<SafetensorsHeader> ParseUnchecked(std::span<const std::byte> bytes,
                                         const std::string& file) {
  if (bytes.size() < kHeaderLengthBytes) {
    return Err("{}: file is {} bytes, shorter than the 8-byte header length", file, bytes.size());
  }
  uint64_t n = 0;
  for (size_t i = 0; i < kHeaderLengthBytes; ++i) n |= uint64_t(bytes[i]) << (8 * i);
  if (n > kMaxHeaderBytes) {
    return Err("{}: header length {} exceeds the {}-byte limit", file, n, kMaxHeaderBytes);
  }
  if (n > bytes.size() - kHeaderLengthBytes) {
    return Err("{}: header length {} runs past the end of the file ({} bytes)", file, n,
               bytes.size());
  }
  const std::string_view text(reinterpret_cast<const char*>(bytes.data()) + kHeaderLengthBytes,
                              size_t(n));
  const auto data = bytes.subspan(kHeaderLengthBytes + size_t(n));

  QF_ASSIGN(Json header, ParseJsonStrict(text, file + ": header"));
  if (!header.is_object()) {
    return Err("{}: header is {}, not a JSON object", file, Describe(header));
  }
  SafetensorsHeader out;
  std::vector<Entry> entries;
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      QF_ASSIGN(out.metadata, ParseMetadata(file, value));
      continue;
    }
    QF_ASSIGN(Entry e, ParseEntry(file, name, value, data.size()));
    entries.push_back(std::move(e));
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.begin, a.end, a.info.name) < std::tie(b.begin, b.end, b.info.name);
  });
  QF_TRY(CheckLayout(file, entries, data.size()));
  out.tensors.reserve(entries.size());
  for (Entry& e : entries) {
    e.info.data = data.subspan(size_t(e.begin), size_t(e.end - e.begin));
    out.tensors.push_back(std::move(e.info));
  }
  return out;
}

// A shard name from an index: a relative path that stays inside the model folder.
bool IsSafeShardName(const std::string& s) {
  if (s.empty()) return false;
  const fs::path p(s);
  if (p.is_absolute() || p.has_root_name()) return false;
  for (const auto& part : p) {
    if (part == "..") return false;
  }
  return true;
}

}  // namespace

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Result<SafetensorsHeader> ParseSafetensors(std::span<const std::byte> file_bytes,
                                           const std::string& name) {
  // The checks above avoid every throwing accessor; this catch is the last line for
  // std::bad_alloc and anything nlohmann might throw, since no exception may escape.
  try {
    return ParseUnchecked(file_bytes, name);
  } catch (const std::exception& ex) {
    return Err("{}: cannot parse header: {}", name, ex.what());
  }
}

Result<TensorStore> TensorStore::Open(const fs::path& path) {
  std::error_code ec;
  fs::path index_path;
  std::vector<fs::path> shard_paths;
  std::map<std::string, std::string> weight_map;  // tensor -> shard name, sharded models only
  if (fs::is_directory(path, ec)) {
    // Same preference as transformers: a single model.safetensors wins over an index.
    if (fs::exists(path / kSingleName, ec)) {
      shard_paths.push_back(path / kSingleName);
    } else if (fs::exists(path / kIndexName, ec)) {
      index_path = path / kIndexName;
    } else {
      return Err("{}: folder has neither {} nor {}", path.string(), kSingleName, kIndexName);
    }
  } else if (path.string().ends_with(".index.json")) {
    index_path = path;
  } else {
    shard_paths.push_back(path);  // MappedFile::Open reports a missing file
  }

  std::map<std::string, std::string> shard_of_path;  // shard path string -> name in the index
  if (!index_path.empty()) {
    const std::string where = index_path.string();
    QF_ASSIGN(const std::string text, ReadTextFile(index_path));
    QF_ASSIGN(const Json index, ParseJsonStrict(text, where));
    if (!index.is_object()) return Err("{}: index is {}, not an object", where, Describe(index));
    const auto wm = index.find("weight_map");
    if (wm == index.end()) return Err("{}: missing \"weight_map\"", where);
    if (!wm->is_object()) return Err("{}: weight_map is {}, not an object", where, Describe(*wm));
    if (wm->empty()) return Err("{}: weight_map is empty", where);
    std::set<std::string> shards;
    for (const auto& [tensor, shard] : wm->items()) {
      if (!shard.is_string()) {
        return Err("{}: weight_map entry {} is {}, not a file name", where, Quote(tensor),
                   Describe(shard));
      }
      const auto& shard_name = shard.get_ref<const std::string&>();
      if (!IsSafeShardName(shard_name)) {
        return Err("{}: weight_map entry {} names {}, which is not a file inside the folder", where,
                   Quote(tensor), Quote(shard_name));
      }
      weight_map.emplace(tensor, shard_name);
      shards.insert(shard_name);
    }
    for (const auto& s : shards) {
      const fs::path p = index_path.parent_path() / s;
      shard_paths.push_back(p);
      shard_of_path.emplace(p.string(), s);
    }
  }

  TensorStore store;
  for (const fs::path& p : shard_paths) {
    QF_ASSIGN(MappedFile mapped, MappedFile::Open(p));
    auto map = std::make_shared<MappedFile>(std::move(mapped));
    const std::string file = p.string();
    QF_ASSIGN(SafetensorsHeader header, ParseSafetensors(map->bytes(), file));
    for (TensorInfo& t : header.tensors) {
      if (const auto it = store.index_.find(t.name); it != store.index_.end()) {
        return Err("tensor {} appears in both {} and {}", Quote(t.name),
                   store.tensors_[it->second].file, file);
      }
      if (!index_path.empty()) {
        const auto listed = weight_map.find(t.name);
        if (listed == weight_map.end()) {
          return Err("{}: tensor {} is not listed in {}", file, Quote(t.name), index_path.string());
        }
        if (listed->second != shard_of_path.at(file)) {
          return Err("{}: tensor {} is in {}, but the index puts it in {}", index_path.string(),
                     Quote(t.name), file, Quote(listed->second));
        }
      }
      store.index_.emplace(t.name, store.tensors_.size());
      store.tensors_.push_back(std::move(t));
    }
    store.maps_.push_back(std::move(map));
    store.files_.push_back(p);
  }
  // Every tensor found was checked against its index entry, so any entry left over is missing.
  for (const auto& [tensor, shard] : weight_map) {
    if (!store.index_.contains(tensor)) {
      return Err("{}: index lists tensor {} in {}, but that shard does not contain it",
                 index_path.string(), Quote(tensor), Quote(shard));
    }
  }
  return store;
}

const TensorInfo* TensorStore::Find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

uint64_t TensorStore::total_bytes() const {
  uint64_t n = 0;
  for (const auto& t : tensors_) n += t.data.size();
  return n;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

}  // namespace qf::io
