// compressed-tensors folders: tensor layouts and quantization_config, written and read back
// (reference loops). Contract: see compressed_tensors.h; every layout rule below cites its source.
//
// Sources read ("CT" = vllm-project/compressed-tensors at tag 0.18.0; its 0.12.2 snapshot as
// neuralmagic/compressed-tensors was read too):
// - CT compressors/pack_quantized/base.py (0.12: quantized_compressors/pack_quantized.py): names
//   weight_packed / weight_shape / weight_scale / weight_zero_point / weight_g_idx; weight_shape
//   = torch.tensor(weight.shape), i.e. int64; zero points packed along dim 0 only for the group
//   and channel strategies (a tensor-strategy zero point stays unpacked int8).
// - CT compressors/pack_quantized/helpers.py pack_to_int32 / unpack_from_int32: value + 2^(b-1),
//   value i of a run at bits [i*b, i*b+b) of its little-endian bit stream, ceil(count*b/32)
//   words. Since 0.18.0 (commit 66e631f6) values straddle words ("dense", qforge formats/pack.h);
//   up to 0.17 a word held floor(32/b) values. Same bytes for b = 1, 2, 4, 8; for b = 3 we write
//   and read the dense layout and reject files whose version predates it.
// - CT compressors/naive_quantized/base.py: naive-, int- and float-quantized store `weight` in
//   QuantizationArgs.pytorch_dtype() (int8, or float8_e4m3fn for float 8 bits); compressors/
//   base.py _remove_symmetric_zp drops symmetric zero points.
// - CT compressors/format.py infer_module_format: int-quantized (INT weights + input activations)
//   > pack-quantized (INT, 1..8 bits) > float-quantized (FLOAT weights + input activations) >
//   naive-quantized (the rest: FP8 weights only).
// - CT quantization/lifecycle/initialize.py: scale shape (1,) tensor, (N, 1) channel, (N, K/G)
//   group; scale dtype = the weight's dtype. quantization/utils/helpers.py calculate_qparams:
//   signed zero point in [-2^(b-1), 2^(b-1) - 1].
// - CT quantization/quant_args.py, quant_scheme.py (presets W4A16, W8A16, W8A8, FP8,
//   FP8_DYNAMIC), quant_config.py: QuantizationArgs / QuantizationScheme forbid extra keys and
//   scale_dtype / zp_dtype exist only since 0.14.0, so we write the older key set;
//   model_compressors/model_compressor.py update_config: quantization_config = {version,
//   quant_method, sparsity_config {}, transform_config {}, config_groups, format,
//   quantization_status, kv_cache_scheme, global_compression_ratio, ignore}, sorted keys.
// - vllm-project/vllm model_executor/layers/quantization/compressed_tensors/compressed_tensors.py
//   _get_scheme_from_parts (WNA16: format pack-quantized, channel/group, num_bits 4 or 8; FP8 and
//   int8 W8A8: an activation format naive/int/float-quantized), schemes/compressed_tensors_wNa16.py
//   (zero points for 4/8 bits, weight_shape int64), _w8a8_fp8.py, _w8a8_int8.py (weight [N, K],
//   f32 weight_scale [N, 1] or per tensor, input_scale), utils.py find_matched_target (name or
//   regex first, then fused shards, then the class name).
// - vllm-project/llm-compressor examples/quantization_w4a16/llama3_example.py: targets "Linear",
//   ignore ["lm_head"].
#include "io/compressed_tensors.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <type_traits>

#include "core/atomic_file.h"
#include "core/json.h"
#include "formats/fp8.h"
#include "formats/pack.h"

namespace qf::io {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr char kQuantMethod[] = "compressed-tensors";
constexpr char kWrittenVersion[] = "0.18.0";  // the CT release whose layout we write
constexpr char kPackQuantized[] = "pack-quantized";
constexpr char kIntQuantized[] = "int-quantized";
constexpr char kFloatQuantized[] = "float-quantized";
constexpr char kNaiveQuantized[] = "naive-quantized";
constexpr char kMixedPrecision[] = "mixed-precision";
// CT config/base.py CompressionFormat values, plus the QuantizationConfig default "fakequant".
const std::set<std::string> kKnownFormats = {
    "dense",           "sparse-bitmask",       "sparse-24-bitmask",    "int-quantized",
    "float-quantized", "naive-quantized",      "pack-quantized",       "marlin-24",
    "mixed-precision", "nvfp4-pack-quantized", "mxfp4-pack-quantized", "mxfp8-quantized",
    "fakequant"};
const std::set<std::string> kStrategies = {"tensor", "channel",      "group",    "block",
                                           "token",  "tensor_group", "attn_head"};
// clang-format off
constexpr const char* kTokenizerFiles[] = {"tokenizer.model", "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
    "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja"};
// clang-format on

// "0.17.1.dev3" -> true for (0, 18); empty -> false.
bool VersionBefore(const std::string& version, int major, int minor) {
  int a = -1, b = -1;
  if (std::sscanf(version.c_str(), "%d.%d", &a, &b) != 2) return false;
  return a < major || (a == major && b < minor);
}

// ---- scale dtypes ------------------------------------------------------------------------------

// Scales (or input scales) as `dtype` bytes; each must be finite, > 0 and exact in `dtype`.
Result<std::vector<std::byte>> EncodeScales(std::span<const float> values, DType dtype,
                                            const std::string& what) {
  std::vector<std::byte> out(values.size() * Info(dtype).bytes);
  for (size_t i = 0; i < values.size(); ++i) {
    const float v = values[i];
    if (!std::isfinite(v) || v <= 0.0f) {
      return Err("{}: scale {} at index {} is not finite and positive", what, v, i);
    }
    if (RoundScaleForStorage(v, dtype) != v) {
      return Err(
          "{}: scale {} at index {} is not exact in {}; round scales with "
          "RoundScaleForStorage before encoding the codes",
          what, v, i, Name(dtype));
    }
    if (dtype == DType::kF32) {
      std::memcpy(&out[i * 4], &v, 4);
    } else {
      const uint16_t h = dtype == DType::kBF16 ? Bf16BitsRne(v) : F16BitsRne(v);
      std::memcpy(&out[i * 2], &h, 2);
    }
  }
  return out;
}

// ---- files -------------------------------------------------------------------------------------

Result<std::string> ReadFileText(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Err("{}: cannot open", path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return Err("{}: read error", path.string());
  return ss.str();
}

Status WriteFileText(const fs::path& path, const std::string& text) {
  QF_ASSIGN(AtomicFile out, AtomicFile::Create(path));
  QF_TRY(out.Write(text));
  return out.Commit();
}

Result<Json> ReadJsonFile(const fs::path& path) {
  QF_ASSIGN(std::string text, ReadFileText(path));
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Err("{}: not valid JSON", path.string());
  return j;
}

// ---- config parsing ----------------------------------------------------------------------------

std::string Lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool IsRegexTarget(const std::string& t) { return t.rfind("re:", 0) == 0; }

// Python re.match semantics: anchored at the start, not at the end.
bool RegexMatches(const std::string& pattern, const std::string& name) {
  try {
    return std::regex_search(name, std::regex(pattern), std::regex_constants::match_continuous);
  } catch (const std::regex_error&) {
    return false;  // rejected by ParseQuantizationConfig already
  }
}

bool MatchesName(const std::string& target, const std::string& module) {
  return IsRegexTarget(target) ? RegexMatches(target.substr(3), module) : target == module;
}

Status CheckTargets(const std::vector<std::string>& targets, const std::string& where) {
  for (const std::string& t : targets) {
    if (!IsRegexTarget(t)) continue;
    try {
      std::regex re(t.substr(3));
    } catch (const std::regex_error&) {
      return Err("{}: target '{}' is not a regular expression qforge understands", where, t);
    }
  }
  return Status::Ok();
}

Result<std::vector<std::string>> StringList(const Json& j, const std::string& where) {
  std::vector<std::string> out;
  if (j.is_null()) return out;
  if (!j.is_array()) return Err("{}: expected a list of strings", where);
  for (const Json& e : j) {
    if (!e.is_string()) return Err("{}: expected a list of strings", where);
    out.push_back(e.get<std::string>());
  }
  QF_TRY(CheckTargets(out, where));
  return out;
}

// j[key] as T, or nullopt when absent or null; a value of another JSON type throws.
template <class T>
std::optional<T> Field(const Json& j, const char* key) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    return JsonInt<T>(*it, key);
  } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
    if (!it->is_array())
      throw Json::type_error::create(302, fmt::format("'{}' must be a list", key), &*it);
    std::vector<int64_t> out;
    for (const Json& e : *it) out.push_back(JsonInt<int64_t>(e, key));
    return out;
  } else {
    return it->get<T>();
  }
}

// QuantizationArgs as quant_args.py validates it (field validators and validate_model_after).
Result<CtQuantArgs> ParseArgs(const Json& j, const std::string& where) {
  if (!j.is_object()) return Err("{}: expected an object", where);
  CtQuantArgs a;
  a.num_bits = Field<int>(j, "num_bits").value_or(8);
  if (a.num_bits < 1 || a.num_bits > 32) return Err("{}: bad num_bits {}", where, a.num_bits);
  a.type = Lower(Field<std::string>(j, "type").value_or("int"));
  if (a.type != "int" && a.type != "float") return Err("{}: unknown type '{}'", where, a.type);
  a.symmetric = Field<bool>(j, "symmetric").value_or(true);
  a.group_size = Field<int64_t>(j, "group_size");
  if (a.group_size && *a.group_size < -1) return Err("{}: bad group_size {}", where, *a.group_size);
  const std::string inferred = !a.group_size ? "tensor" : *a.group_size > 0 ? "group" : "channel";
  a.strategy = Lower(Field<std::string>(j, "strategy").value_or(inferred));
  if (!kStrategies.count(a.strategy)) return Err("{}: unknown strategy '{}'", where, a.strategy);
  if (j.contains("dynamic") && j.at("dynamic").is_string()) {
    return Err("{}: dynamic '{}' (NVFP4) is not supported", where,
               j.at("dynamic").get<std::string>());
  }
  a.dynamic = Field<bool>(j, "dynamic").value_or(false);
  if (j.contains("actorder") && !j.at("actorder").is_null()) {
    const Json& o = j.at("actorder");
    std::string s = o.is_boolean() ? (o.get<bool>() ? "group" : "") : Lower(o.get<std::string>());
    s = s == "dynamic" ? "group" : s == "static" ? "weight" : s;  // ActivationOrdering aliases
    if (!s.empty() && s != "group" && s != "weight") {
      return Err("{}: unknown actorder '{}'", where, s);
    }
    if (!s.empty()) a.actorder = s;
  }
  a.observer = Field<std::string>(j, "observer");
  a.block_structure =
      Field<std::vector<int64_t>>(j, "block_structure").value_or(std::vector<int64_t>{});
  const bool grouped = a.strategy == "group" || a.strategy == "tensor_group";
  if (grouped && (!a.group_size || *a.group_size <= 0)) {
    return Err("{}: strategy {} needs a positive group_size", where, a.strategy);
  }
  if (!grouped && a.group_size && *a.group_size > 0) {
    return Err("{}: group_size {} needs strategy group, not {}", where, *a.group_size, a.strategy);
  }
  return a;
}

Result<std::optional<CtQuantArgs>> OptionalArgs(const Json& parent, const char* key,
                                                const std::string& where) {
  if (!parent.contains(key) || parent.at(key).is_null()) return std::optional<CtQuantArgs>();
  QF_ASSIGN(CtQuantArgs a, ParseArgs(parent.at(key), where + "." + key));
  return std::optional<CtQuantArgs>(std::move(a));
}

Result<CompressedTensorsConfig> ParseConfigObject(const Json& qc, const std::string& where) {
  CompressedTensorsConfig cfg;
  const std::string method = qc.value("quant_method", std::string());
  if (method != kQuantMethod) {
    return Err("{}: quant_method is '{}', expected '{}'", where, method, kQuantMethod);
  }
  cfg.format = qc.value("format", std::string("fakequant"));
  if (!kKnownFormats.count(cfg.format)) {
    return Err("{}: unknown compressed-tensors format '{}'", where, cfg.format);
  }
  cfg.quantization_status = qc.value("quantization_status", std::string("initialized"));
  cfg.version = Field<std::string>(qc, "version").value_or("");
  QF_ASSIGN(cfg.ignore, StringList(qc.value("ignore", Json()), where + ".ignore"));
  if (!qc.contains("config_groups") || !qc.at("config_groups").is_object()) {
    return Err("{}: config_groups is missing or not an object", where);
  }
  for (const auto& [name, g] : qc.at("config_groups").items()) {
    const std::string gw = where + ".config_groups." + name;
    if (!g.is_object()) {
      return Err("{}: preset groups (a target list under a scheme name) are not supported", gw);
    }
    CtSchemeGroup group;
    group.name = name;
    QF_ASSIGN(group.targets, StringList(g.value("targets", Json()), gw + ".targets"));
    if (group.targets.empty()) return Err("{}: no targets", gw);
    QF_ASSIGN(group.weights, OptionalArgs(g, "weights", gw));
    QF_ASSIGN(group.input_activations, OptionalArgs(g, "input_activations", gw));
    QF_ASSIGN(group.output_activations, OptionalArgs(g, "output_activations", gw));
    group.format = Field<std::string>(g, "format").value_or(cfg.format);
    if (!kKnownFormats.count(group.format)) {
      return Err("{}: unknown compressed-tensors format '{}'", gw, group.format);
    }
    cfg.groups.push_back(std::move(group));
  }
  QF_ASSIGN(cfg.kv_cache_scheme, OptionalArgs(qc, "kv_cache_scheme", where));
  if (qc.contains("qforge")) cfg.qforge = qc.at("qforge");
  return cfg;
}

// ---- reading tensors ---------------------------------------------------------------------------

std::string StoreName(const TensorStore& store) {
  return store.files().empty() ? "(no files)" : store.files()[0].parent_path().string();
}

// The tensor `name` with one of `dtypes` and exactly `shape`.
Result<const TensorInfo*> Need(const TensorStore& store, const std::string& name,
                               std::initializer_list<DType> dtypes,
                               const std::vector<int64_t>& shape) {
  const TensorInfo* t = store.Find(name);
  if (!t) return Err("{}: tensor '{}' is missing", StoreName(store), name);
  if (std::find(dtypes.begin(), dtypes.end(), t->dtype) == dtypes.end()) {
    std::vector<std::string_view> names;
    for (DType d : dtypes) names.push_back(Name(d));
    return Err("{}: tensor '{}' has dtype {}, expected {}", t->file, name, Name(t->dtype),
               fmt::join(names, " or "));
  }
  if (t->shape != shape) {
    return Err("{}: tensor '{}' has shape {}, expected {}", t->file, name, ShapeString(t->shape),
               ShapeString(shape));
  }
  return t;
}

template <class T>
std::vector<T> Elements(const TensorInfo& t) {
  std::vector<T> out(t.data.size() / sizeof(T));
  std::memcpy(out.data(), t.data.data(), out.size() * sizeof(T));
  return out;
}

// Integer elements of an I8, I32 or I64 tensor.
std::vector<int64_t> Integers(const TensorInfo& t) {
  std::vector<int64_t> out;
  if (t.dtype == DType::kI8) {
    for (int8_t v : Elements<int8_t>(t)) out.push_back(v);
  } else if (t.dtype == DType::kI32) {
    for (int32_t v : Elements<int32_t>(t)) out.push_back(v);
  } else if (t.dtype == DType::kI64) {
    out = Elements<int64_t>(t);
  }
  return out;
}

Result<std::vector<float>> ReadScales(const TensorStore& store, const std::string& name,
                                      const std::vector<int64_t>& shape) {
  const TensorInfo* t = store.Find(name);
  std::vector<int64_t> want = shape;
  if (t && shape == std::vector<int64_t>{1} && t->shape.empty()) want = {};  // scalar per tensor
  QF_ASSIGN(const TensorInfo* info,
            Need(store, name, {DType::kF32, DType::kBF16, DType::kF16}, want));
  std::vector<float> out(size_t(info->numel()));
  ConvertToF32(info->dtype, info->data.data(), out.size(), out.data());
  for (size_t i = 0; i < out.size(); ++i) {
    if (!std::isfinite(out[i]) || out[i] <= 0.0f) {
      return Err("{}: tensor '{}' has scale {} at index {}, expected finite and > 0", info->file,
                 name, out[i], i);
    }
  }
  return out;
}

// Unsigned codes from signed stored values (int8 weights, unpacked zero points).
template <class T>
Status SignedToUnsigned(const std::vector<int64_t>& stored, int bits, const TensorInfo& t,
                        std::vector<T>* out) {
  const int64_t lo = -(int64_t{1} << (bits - 1)), hi = (int64_t{1} << (bits - 1)) - 1;
  out->resize(stored.size());
  for (size_t i = 0; i < stored.size(); ++i) {
    if (stored[i] < lo || stored[i] > hi) {
      return Err("{}: tensor '{}' has {} at index {}, outside [{}, {}] for {} bits", t.file, t.name,
                 stored[i], i, lo, hi, bits);
    }
    (*out)[i] = T(stored[i] - lo);
  }
  return Status::Ok();
}

Result<QuantScheme> SchemeFromArgs(const CtQuantArgs& w, int64_t k, const std::string& where) {
  Granularity g = Granularity::kTensor;
  int group = 0;
  if (w.strategy == "channel") g = Granularity::kChannel;
  if (w.strategy == "group") {
    g = Granularity::kGroup;
    group = int(*w.group_size);
    if (k % group != 0) return Err("{}: K = {} is not a multiple of G = {}", where, k, group);
  }
  if (w.strategy != "tensor" && w.strategy != "channel" && w.strategy != "group") {
    return Err("{}: weight strategy '{}' is not supported", where, w.strategy);
  }
  if (w.dynamic) return Err("{}: dynamic weight quantization is not supported", where);
  const QuantKind kind = w.type == "int" ? QuantKind::kInt : QuantKind::kFp8E4M3;
  Result<QuantScheme> s = FindScheme(kind, w.num_bits, w.symmetric, g, group);
  if (!s.ok()) return s.error().Context(where);
  return s;
}

std::vector<int64_t> ScaleShape(const QuantScheme& s, int64_t n, int64_t k) {
  if (s.granularity == Granularity::kTensor) return {1};
  if (s.granularity == Granularity::kChannel) return {n, 1};
  return {n, k / s.group_size};
}

// ---- writing -----------------------------------------------------------------------------------

// A linear's tensors as they are encoded.
struct TensorSink {
  std::vector<EncodedTensor> tensors;

  void Add(std::string name, DType dtype, std::vector<int64_t> shape, std::vector<std::byte> b) {
    tensors.push_back({std::move(name), dtype, std::move(shape), std::move(b)});
  }
  template <class T>
  void AddValues(std::string name, DType dtype, std::vector<int64_t> shape,
                 const std::vector<T>& v) {
    std::vector<std::byte> b(v.size() * sizeof(T));
    std::memcpy(b.data(), v.data(), b.size());
    Add(std::move(name), dtype, std::move(shape), std::move(b));
  }
};

std::string FormatFor(const QuantScheme& s, bool with_activations) {
  if (s.is_int()) return with_activations ? kIntQuantized : kPackQuantized;
  return with_activations ? kFloatQuantized : kNaiveQuantized;
}

CtQuantArgs ArgsFromScheme(const QuantScheme& s) {
  CtQuantArgs a;
  a.num_bits = s.bits;
  a.type = s.is_int() ? "int" : "float";
  a.symmetric = s.symmetric;
  a.strategy = s.granularity == Granularity::kTensor    ? "tensor"
               : s.granularity == Granularity::kChannel ? "channel"
                                                        : "group";
  if (s.granularity == Granularity::kGroup) a.group_size = s.group_size;
  a.observer = "minmax";
  return a;
}

Status AppendLinear(const QuantizedLinearEntry& e, const std::string& format, DType scale_dtype,
                    std::optional<float> input_scale, TensorSink* sink) {
  const QuantizedTensor& q = *e.q;
  const std::string& m = e.module;
  const int bits = q.scheme.bits;
  const int64_t n = q.rows, k = q.cols;
  QF_ASSIGN(std::vector<std::byte> scales,
            EncodeScales(q.scales, scale_dtype, m + ".weight_scale"));
  sink->Add(m + ".weight_scale", scale_dtype, ScaleShape(q.scheme, n, k), std::move(scales));
  if (input_scale) {
    QF_ASSIGN(std::vector<std::byte> s,
              EncodeScales(std::span(&*input_scale, 1), scale_dtype, m + ".input_scale"));
    sink->Add(m + ".input_scale", scale_dtype, {1}, std::move(s));
  }
  if (!q.scheme.is_int()) {
    sink->AddValues(m + ".weight", DType::kF8E4M3, {n, k}, q.codes);
    return Status::Ok();
  }
  const int offset = 1 << (bits - 1);
  const bool packed_zeros = q.scheme.granularity != Granularity::kTensor;
  if (format == kPackQuantized) {
    sink->AddValues(m + ".weight_packed", DType::kI32, {n, PackedLength(k, bits)},
                    PackAlongCols(q.codes, n, k, bits));
    sink->AddValues(m + ".weight_shape", DType::kI64, {2}, std::vector<int64_t>{n, k});
  } else {
    std::vector<int8_t> w(q.codes.size());
    for (size_t i = 0; i < w.size(); ++i) w[i] = int8_t(int(q.codes[i]) - offset);
    sink->AddValues(m + ".weight", DType::kI8, {n, k}, w);
  }
  if (q.scheme.symmetric) return Status::Ok();
  if (format == kPackQuantized && packed_zeros) {
    const int64_t groups = q.zeros.size() / size_t(n);
    sink->AddValues(m + ".weight_zero_point", DType::kI32, {PackedLength(n, bits), groups},
                    PackAlongRows(q.zeros, n, groups, bits));
  } else {
    std::vector<int8_t> z(q.zeros.size());
    for (size_t i = 0; i < z.size(); ++i) z[i] = int8_t(q.zeros[i] - offset);
    sink->AddValues(m + ".weight_zero_point", DType::kI8, ScaleShape(q.scheme, n, k), z);
  }
  return Status::Ok();
}

std::string LastComponent(const std::string& name) {
  const size_t dot = name.rfind('.');
  return dot == std::string::npos ? name : name.substr(dot + 1);
}

}  // namespace

// ---- public: config ----------------------------------------------------------------------------

Json CtQuantArgs::ToJson() const {
  Json j = Json::object();
  j["num_bits"] = num_bits;
  j["type"] = type;
  j["symmetric"] = symmetric;
  j["strategy"] = strategy;
  j["group_size"] = group_size ? Json(*group_size) : Json();
  j["dynamic"] = dynamic;
  j["actorder"] = actorder ? Json(*actorder) : Json();
  j["observer"] = observer ? Json(*observer) : Json();
  j["observer_kwargs"] = Json::object();
  j["block_structure"] = block_structure.empty() ? Json() : Json(block_structure);
  return j;
}

CtQuantArgs CtArgsFromActScheme(const ActScheme& s) {
  CtQuantArgs a;
  a.num_bits = 8;
  a.type = s.kind == QuantKind::kInt ? "int" : "float";
  a.symmetric = true;
  a.strategy = s.dynamic ? "token" : "tensor";
  a.dynamic = s.dynamic;
  if (!s.dynamic) a.observer = "minmax";  // quant_args.py: dynamic args have no observer
  return a;
}

Result<ActScheme> ActSchemeFromCt(const CtQuantArgs& a) {
  const std::string what = fmt::format("input_activations {}{} {}{}", a.type, a.num_bits,
                                       a.strategy, a.dynamic ? " dynamic" : " static");
  if (a.type != "int" && a.type != "float") return Err("{}: unknown type '{}'", what, a.type);
  if (a.num_bits != 8) return Err("{}: only 8-bit activations are supported", what);
  if (!a.symmetric) return Err("{}: asymmetric activations are not supported", what);
  if (a.strategy != "token" && a.strategy != "tensor") {
    return Err("{}: activation strategy '{}' is not supported (token or tensor)", what, a.strategy);
  }
  if (a.strategy == "token" && !a.dynamic) {
    return Err("{}: per-token activation scales must be dynamic", what);
  }
  if (a.strategy == "tensor" && a.dynamic) {
    return Err(
        "{}: dynamic per-tensor activations are not supported (static per tensor, or "
        "dynamic per token)",
        what);
  }
  const std::string name = fmt::format("{}-{}", a.type == "int" ? "int8" : "fp8-e4m3", a.strategy);
  Result<ActScheme> s = ParseActScheme(name);
  if (!s.ok()) return s.error().Context(what);
  return s;
}

bool CompressedTensorsConfig::Ignored(const std::string& module) const {
  return std::any_of(ignore.begin(), ignore.end(),
                     [&](const std::string& t) { return MatchesName(t, module); });
}

const CtSchemeGroup* CompressedTensorsConfig::FindGroup(const std::string& module) const {
  if (Ignored(module)) return nullptr;
  for (int pass = 0; pass < 3; ++pass) {  // exact name, regex, class name
    for (const CtSchemeGroup& g : groups) {
      for (const std::string& t : g.targets) {
        const bool hit = pass == 0   ? (!IsRegexTarget(t) && t == module)
                         : pass == 1 ? (IsRegexTarget(t) && MatchesName(t, module))
                                     : t == "Linear";
        if (hit) return &g;
      }
    }
  }
  return nullptr;
}

Result<std::optional<CompressedTensorsConfig>> ParseQuantizationConfig(const Json& config_json,
                                                                       const std::string& source) {
  using Out = std::optional<CompressedTensorsConfig>;
  if (!config_json.is_object()) return Err("{}: not a JSON object", source);
  const auto it = config_json.find("quantization_config");
  if (it == config_json.end() || it->is_null()) return Out();
  const std::string where = source + ": quantization_config";
  if (!it->is_object()) return Err("{}: not an object", where);
  try {
    QF_ASSIGN(CompressedTensorsConfig cfg, ParseConfigObject(*it, where));
    cfg.source = source;
    return Out(std::move(cfg));
  } catch (const Json::exception& e) {  // a field of an unexpected JSON type
    return Err("{}: {}", where, e.what());
  }
}

Result<std::optional<CompressedTensorsConfig>> LoadQuantizationConfig(const fs::path& model_dir) {
  const fs::path path = model_dir / "config.json";
  QF_ASSIGN(Json j, ReadJsonFile(path));
  return ParseQuantizationConfig(j, path.string());
}

// ---- public: reading ---------------------------------------------------------------------------

Result<std::optional<QuantizedTensor>> ReadQuantizedLinear(const TensorStore& store,
                                                           const CompressedTensorsConfig& cfg,
                                                           const std::string& module, int64_t n,
                                                           int64_t k) {
  using Out = std::optional<QuantizedTensor>;
  const CtSchemeGroup* g = cfg.FindGroup(module);
  if (!g || !g->weights) return Out();
  const std::string where = fmt::format("{}: {} ({})", cfg.source, module, g->name);
  if (n <= 0 || k <= 0) return Err("{}: bad shape [{}, {}]", where, n, k);
  const CtQuantArgs& w = *g->weights;
  if (w.actorder == "group" || store.Find(module + ".weight_g_idx")) {
    return Err("{}: activation ordering (weight_g_idx) is not supported", where);
  }
  QF_ASSIGN(QuantScheme scheme, SchemeFromArgs(w, k, where));
  const std::string& f = g->format;
  const bool is_int = scheme.is_int();
  if (!(f == kPackQuantized && is_int) && !(f == kIntQuantized && is_int) &&
      !(f == kFloatQuantized && !is_int) && f != kNaiveQuantized) {
    return Err(
        "{}: format '{}' with {} weights is not supported (pack-quantized, int-quantized, "
        "float-quantized, naive-quantized are)",
        where, f, w.type);
  }
  QuantizedTensor q;
  q.scheme = scheme;
  q.rows = n;
  q.cols = k;
  const std::vector<int64_t> sshape = ScaleShape(scheme, n, k);
  QF_ASSIGN(q.scales, ReadScales(store, module + ".weight_scale", sshape));
  const int bits = scheme.bits;
  if (!is_int) {
    QF_ASSIGN(const TensorInfo* t, Need(store, module + ".weight", {DType::kF8E4M3}, {n, k}));
    q.codes = Elements<uint8_t>(*t);
    for (size_t i = 0; i < q.codes.size(); ++i) {
      if ((q.codes[i] & 0x7f) == 0x7f) return Err("{}: '{}' has NaN at {}", t->file, t->name, i);
    }
  } else if (f == kPackQuantized) {
    if (32 % bits != 0 && VersionBefore(cfg.version, 0, 18)) {
      return Err(
          "{}: {}-bit pack-quantized from compressed-tensors {} uses the pre-0.18 layout "
          "(floor(32/b) values per word), which qforge does not read",
          where, bits, cfg.version);
    }
    QF_ASSIGN(const TensorInfo* ws,
              Need(store, module + ".weight_shape", {DType::kI32, DType::kI64}, {2}));
    if (Integers(*ws) != std::vector<int64_t>{n, k}) {
      return Err("{}: tensor '{}' holds {}, expected [{}, {}]", ws->file, ws->name,
                 ShapeString(Integers(*ws)), n, k);
    }
    QF_ASSIGN(const TensorInfo* t,
              Need(store, module + ".weight_packed", {DType::kI32}, {n, PackedLength(k, bits)}));
    QF_ASSIGN(q.codes, UnpackAlongCols(Elements<int32_t>(*t), n, k, bits));
  } else {
    QF_ASSIGN(const TensorInfo* t, Need(store, module + ".weight", {DType::kI8}, {n, k}));
    QF_TRY(SignedToUnsigned(Integers(*t), bits, *t, &q.codes));
  }
  if (is_int && !scheme.symmetric) {
    const std::string zname = module + ".weight_zero_point";
    const int64_t groups = sshape.size() == 2 ? sshape[1] : 1;
    if (f == kPackQuantized && scheme.granularity != Granularity::kTensor) {
      QF_ASSIGN(const TensorInfo* t,
                Need(store, zname, {DType::kI32}, {PackedLength(n, bits), groups}));
      QF_ASSIGN(q.zeros, UnpackAlongRows(Elements<int32_t>(*t), n, groups, bits));
    } else {
      const TensorInfo* z = store.Find(zname);
      const std::vector<int64_t> zshape =
          z && z->shape.empty() && sshape.size() == 1 ? std::vector<int64_t>{} : sshape;
      QF_ASSIGN(const TensorInfo* t, Need(store, zname, {DType::kI8, DType::kI32}, zshape));
      QF_TRY(SignedToUnsigned(Integers(*t), bits, *t, &q.zeros));
    }
  }
  Status valid = Validate(q);
  if (!valid.ok()) return valid.error().Context(where);
  return Out(std::move(q));
}

Result<std::optional<float>> ReadInputScale(const TensorStore& store, const std::string& module) {
  const std::string name = module + ".input_scale";
  if (!store.Find(name)) return std::optional<float>();
  QF_ASSIGN(std::vector<float> s, ReadScales(store, name, {1}));
  return std::optional<float>(s[0]);
}

// ---- public: writing ---------------------------------------------------------------------------

Result<DType> ResolveScaleDType(const std::string& scale_dtype, const Json& src_config) {
  std::string s = Lower(scale_dtype);
  if (s == "auto") {
    s.clear();
    for (const char* key : {"torch_dtype", "dtype"}) {
      if (src_config.is_object() && src_config.contains(key) && src_config.at(key).is_string()) {
        s = src_config.at(key).get<std::string>();
        break;
      }
    }
    if (s != "bfloat16" && s != "float16") return DType::kF32;
  }
  if (s == "f32" || s == "float32") return DType::kF32;
  if (s == "bf16" || s == "bfloat16") return DType::kBF16;
  if (s == "f16" || s == "float16") return DType::kF16;
  return Err("scale dtype '{}' is not one of auto, f32, bf16, f16", scale_dtype);
}

namespace {
// The writer's first checks: a separate output folder, something to write.
Status CheckFolders(const fs::path& out_dir, const fs::path& src_dir, size_t linears) {
  std::error_code ec;
  if (fs::exists(out_dir) && fs::equivalent(out_dir, src_dir, ec))
    return Err("{}: the output folder must differ from the source folder", out_dir.string());
  if (linears == 0) return Err("{}: no quantized linears to write", out_dir.string());
  return Status::Ok();
}
Result<Json> ReadConfig(const fs::path& src_dir) {
  QF_ASSIGN(Json config, ReadJsonFile(src_dir / "config.json"));
  if (!config.is_object()) return Err("{}: not a JSON object", (src_dir / "config.json").string());
  return config;
}
Status WriteEncoded(const fs::path& out_dir, const fs::path& src_dir, Json config,
                    const std::vector<TensorToWrite>& passthrough,
                    const std::vector<EncodedLinear>& linears,
                    const std::vector<TensorToWrite>& encoded,
                    const CompressedTensorsWriteOptions& opt);
}  // namespace

Result<std::vector<EncodedTensor>> EncodeLinear(const QuantizedLinearEntry& e,
                                                bool with_activations, DType scale_dtype,
                                                const std::map<std::string, float>& input_scales) {
  if (!e.q) return Err("{} has no QuantizedTensor", e.module);
  Status valid = Validate(*e.q);
  if (!valid.ok()) return valid.error().Context(e.module);
  if (e.q->scheme.kind == QuantKind::kFp8E5M2)
    return Err("{}: compressed-tensors float weights are e4m3 only", e.module);
  const auto it = input_scales.find(e.module);
  TensorSink sink;
  QF_TRY(AppendLinear(e, FormatFor(e.q->scheme, with_activations), scale_dtype,
                      it == input_scales.end() ? std::nullopt : std::optional(it->second), &sink));
  return std::move(sink.tensors);
}

Status WriteCompressedTensors(const fs::path& out_dir, const fs::path& src_dir,
                              const std::vector<TensorToWrite>& passthrough,
                              const std::vector<QuantizedLinearEntry>& linears,
                              const CompressedTensorsWriteOptions& opt) {
  const std::string where = out_dir.string();
  QF_TRY(CheckFolders(out_dir, src_dir, linears.size()));
  QF_ASSIGN(Json config, ReadConfig(src_dir));
  QF_ASSIGN(const DType scale_dtype, ResolveScaleDType(opt.scale_dtype, config));
  std::deque<EncodedTensor> storage;  // elements never move
  std::vector<TensorToWrite> encoded;
  std::vector<EncodedLinear> modules;
  for (const QuantizedLinearEntry& e : linears) {
    Result<std::vector<EncodedTensor>> ts =
        EncodeLinear(e, opt.input_activations.has_value(), scale_dtype, opt.input_scales);
    if (!ts.ok()) return ts.error().Context(where);
    for (EncodedTensor& t : *ts) {
      storage.push_back(std::move(t));
      encoded.push_back(
          {storage.back().name, storage.back().dtype, storage.back().shape, storage.back().bytes});
    }
    modules.push_back({e.module, e.q->scheme});
  }
  return WriteEncoded(out_dir, src_dir, std::move(config), passthrough, modules, encoded, opt);
}

Status WriteCompressedTensors(const fs::path& out_dir, const fs::path& src_dir,
                              const std::vector<TensorToWrite>& passthrough,
                              const std::vector<EncodedLinear>& linears,
                              const std::vector<TensorToWrite>& encoded,
                              const CompressedTensorsWriteOptions& opt) {
  QF_TRY(CheckFolders(out_dir, src_dir, linears.size()));
  QF_ASSIGN(Json config, ReadConfig(src_dir));
  return WriteEncoded(out_dir, src_dir, std::move(config), passthrough, linears, encoded, opt);
}

namespace {
// Both WriteCompressedTensors, after their checks, with src_dir's config.json read.
Status WriteEncoded(const fs::path& out_dir, const fs::path& src_dir, Json config,
                    const std::vector<TensorToWrite>& passthrough,
                    const std::vector<EncodedLinear>& linears,
                    const std::vector<TensorToWrite>& encoded,
                    const CompressedTensorsWriteOptions& opt) {
  const std::string where = out_dir.string();
  std::error_code ec;
  CompressedTensorsConfig ignore_only;
  ignore_only.ignore = opt.ignore;
  QF_TRY(CheckTargets(opt.ignore, where + ": ignore"));
  const std::optional<CtQuantArgs>& acts = opt.input_activations;
  const bool static_acts = acts && !acts->dynamic;
  if (static_acts && acts->strategy != "tensor") {
    return Err("{}: static input activations must be per tensor, not {}", where, acts->strategy);
  }
  // Linears grouped by scheme name, modules in input order.
  std::map<std::string, std::vector<const EncodedLinear*>> by_scheme;
  std::set<std::string> modules, last_components;
  for (const EncodedLinear& e : linears) {
    if (e.scheme.kind == QuantKind::kFp8E5M2) {
      return Err("{}: {}: compressed-tensors float weights are e4m3 only", where, e.module);
    }
    if (!modules.insert(e.module).second) return Err("{}: {} given twice", where, e.module);
    if (ignore_only.Ignored(e.module)) {
      return Err("{}: {} is quantized but matches the ignore list", where, e.module);
    }
    if (static_acts != (opt.input_scales.count(e.module) > 0)) {
      return Err("{}: {}: input_scale must be given exactly when input activations are static",
                 where, e.module);
    }
    by_scheme[std::string(e.scheme.name)].push_back(&e);
    last_components.insert(LastComponent(e.module));
  }
  for (const auto& [m, scale] : opt.input_scales) {
    if (!modules.count(m)) return Err("{}: input scale for {}, which is not quantized", where, m);
  }
  for (const TensorToWrite& t : passthrough) {
    if (!t.name.ends_with(".weight")) continue;
    const std::string m = t.name.substr(0, t.name.size() - 7);
    if (modules.count(m)) {
      return Err("{}: passthrough tensor {} belongs to a quantized linear", where, t.name);
    }
    if (t.shape.size() == 2 && last_components.count(LastComponent(m)) && !ignore_only.Ignored(m)) {
      return Err("{}: linear {} is stored unquantized but not in the ignore list", where, m);
    }
  }
  // The most common scheme (ties: smaller name) targets "Linear"; others name their modules.
  std::string main_scheme;
  for (const auto& [name, list] : by_scheme) {
    if (main_scheme.empty() || list.size() > by_scheme.at(main_scheme).size()) main_scheme = name;
  }
  Json groups = Json::object();
  std::set<std::string> formats;
  int index = 1;
  for (const auto& [name, list] : by_scheme) {
    const QuantScheme& scheme = list.front()->scheme;
    const std::string format = FormatFor(scheme, acts.has_value());
    formats.insert(format);
    std::vector<std::string> targets;
    for (const EncodedLinear* e : list) targets.push_back(e->module);
    std::sort(targets.begin(), targets.end());
    if (name == main_scheme) targets = {"Linear"};
    const std::string group_name =
        name == main_scheme ? "group_0" : fmt::format("group_{}", index++);
    groups[group_name] = {{"targets", targets},
                          {"weights", ArgsFromScheme(scheme).ToJson()},
                          {"input_activations", acts ? acts->ToJson() : Json()},
                          {"output_activations", nullptr},
                          {"format", format}};
  }
  Json qc = {{"config_groups", groups},
             {"format", formats.size() == 1 ? *formats.begin() : std::string(kMixedPrecision)},
             {"global_compression_ratio", nullptr},
             {"ignore", opt.ignore},
             {"kv_cache_scheme", nullptr},
             {"quant_method", kQuantMethod},
             {"quantization_status", "compressed"},
             {"sparsity_config", Json::object()},
             {"transform_config", Json::object()},
             {"version", kWrittenVersion}};
  if (!opt.qforge_metadata.is_null()) qc["qforge"] = opt.qforge_metadata;
  config["quantization_config"] = qc;

  fs::create_directories(out_dir, ec);
  if (ec) return Err("{}: cannot create folder: {}", where, ec.message());
  std::vector<TensorToWrite> all = passthrough;
  all.insert(all.end(), encoded.begin(), encoded.end());
  QF_TRY(WriteSafetensorsShards(out_dir, std::move(all), {{"format", "pt"}}, opt.max_shard_bytes));
  QF_TRY(WriteFileText(out_dir / "config.json", config.dump(2) + "\n"));
  for (const char* name : kTokenizerFiles) {
    if (!fs::is_regular_file(src_dir / name)) continue;
    QF_ASSIGN(std::string bytes, ReadFileText(src_dir / name));
    QF_TRY(WriteFileText(out_dir / name, bytes));
  }
  return Status::Ok();
}
}  // namespace

int64_t LogicalParameterCount(const TensorStore& store) {
  auto ends_with = [](const std::string& s, std::string_view suf) {
    return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
  };
  int64_t params = 0;
  for (const auto& t : store.tensors()) {
    if (ends_with(t.name, ".weight_shape") && t.numel() == 2 &&
        (t.dtype == DType::kI64 || t.dtype == DType::kI32)) {
      int64_t dims[2];
      for (int i = 0; i < 2; ++i) {
        if (t.dtype == DType::kI64) {
          std::memcpy(&dims[i], t.data.data() + 8 * i, 8);
        } else {
          int32_t v;
          std::memcpy(&v, t.data.data() + 4 * i, 4);
          dims[i] = v;
        }
      }
      params += dims[0] * dims[1];
    } else if (!ends_with(t.name, ".weight_packed") && !ends_with(t.name, ".weight_scale") &&
               !ends_with(t.name, ".weight_zero_point") && !ends_with(t.name, ".input_scale")) {
      params += t.numel();
    }
  }
  return params;
}

}  // namespace qf::io
