// compressed-tensors folders: every scheme written and read back bit for bit, config.json keys,
// byte-identical rewrites, golden packed words by hand, and one Error per corruption rule.
#include "io/compressed_tensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <sstream>

#include "formats/grid.h"
#include "test_util.h"

namespace qf::io {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr const char* kModules[] = {"model.layers.0.self_attn.q_proj",
                                    "model.layers.0.mlp.down_proj",
                                    "model.layers.1.self_attn.o_proj"};

std::string FileBytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// stories260k's config.json and tokenizer files (a tiny config when ../shared is absent).
fs::path SourceDir() {
  static const fs::path dir = [] {
    const fs::path d = testing::TempDir() / "ct_src";
    fs::create_directories(d);
    const fs::path model = testing::SharedDir() / "models" / "stories260k";
    for (const char* f : {"config.json", "tokenizer.model", "tokenizer_config.json"}) {
      if (fs::exists(model / f)) {
        fs::copy_file(model / f, d / f, fs::copy_options::overwrite_existing);
      }
    }
    if (!fs::exists(d / "config.json")) {
      std::ofstream(d / "config.json")
          << R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64,)"
          << R"( "torch_dtype": "float32"})";
    }
    return d;
  }();
  return dir;
}

// A source folder whose config.json says torch_dtype = `dtype`.
fs::path SourceDirWithDType(const std::string& dtype) {
  const fs::path d = testing::TempDir() / ("ct_src_" + dtype);
  fs::create_directories(d);
  Json j = Json::parse(FileBytes(SourceDir() / "config.json"));
  j["torch_dtype"] = dtype;
  std::ofstream(d / "config.json") << j.dump(2);
  return d;
}

std::vector<float> RandomMatrix(int64_t n, int64_t k, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 0.02f);
  std::vector<float> w(static_cast<size_t>(n * k));
  for (float& x : w) x = dist(rng);
  return w;
}

using testing::QuantizeOrDie;

// Scales rounded to `dt`, codes re-encoded with them: what a quantizer writing bf16 scales does.
QuantizedTensor RoundScales(const std::vector<float>& w, QuantizedTensor q, DType dt) {
  for (float& s : q.scales) s = RoundScaleForStorage(s, dt);
  const Grid grid(q.scheme);
  for (int64_t r = 0; r < q.rows; ++r) {
    for (int64_t c = 0; c < q.cols; ++c) {
      const size_t i = static_cast<size_t>(r * q.cols + c);
      q.codes[i] = grid.Encode(w[i], q.Params(r, c));
    }
  }
  return q;
}

void ExpectSame(const QuantizedTensor& want, const QuantizedTensor& got, const std::string& what) {
  EXPECT_EQ(want.scheme.name, got.scheme.name) << what;
  EXPECT_EQ(want.rows, got.rows) << what;
  EXPECT_EQ(want.cols, got.cols) << what;
  EXPECT_EQ(want.codes, got.codes) << what;
  ASSERT_EQ(want.scales.size(), got.scales.size()) << what;
  for (size_t i = 0; i < want.scales.size(); ++i) {
    ASSERT_EQ(BitsFromF32(want.scales[i]), BitsFromF32(got.scales[i]))
        << what << " scale " << i << ": " << want.scales[i] << " vs " << got.scales[i];
  }
  EXPECT_EQ(want.zeros, got.zeros) << what;
}

struct Folder {
  fs::path dir;
  std::vector<QuantizedTensor> qs;  // one per kModules entry
  std::vector<float> embed;         // passthrough [4, 8]
};

Result<Folder> WriteFolder(const fs::path& dir, const std::vector<QuantizedTensor>& qs,
                           const CompressedTensorsWriteOptions& opt = {},
                           const fs::path& src = SourceDir(),
                           std::optional<float> input_scale = std::nullopt) {
  Folder f{dir, qs, RandomMatrix(4, 8, 7)};
  CompressedTensorsWriteOptions o = opt;
  if (input_scale) {
    for (size_t i = 0; i < f.qs.size(); ++i) o.input_scales[kModules[i]] = *input_scale;
  }
  std::vector<QuantizedLinearEntry> linears;
  for (size_t i = 0; i < f.qs.size(); ++i) {
    linears.push_back({kModules[i], &f.qs[i]});
  }
  const std::vector<TensorToWrite> passthrough = {
      {"model.embed_tokens.weight", DType::kF32, {4, 8}, std::as_bytes(std::span(f.embed))},
      {"lm_head.weight", DType::kF32, {4, 8}, std::as_bytes(std::span(f.embed))}};
  QF_TRY(WriteCompressedTensors(dir, src, passthrough, linears, o));
  return f;
}

// Every module of `dir` read back and compared with what was written.
void ExpectReadsBack(const Folder& f) {
  Result<TensorStore> store = TensorStore::Open(f.dir);
  ASSERT_TRUE(store.ok()) << store.error().message();
  Result<std::optional<CompressedTensorsConfig>> cfg = LoadQuantizationConfig(f.dir);
  ASSERT_TRUE(cfg.ok()) << cfg.error().message();
  ASSERT_TRUE(cfg->has_value());
  for (size_t i = 0; i < f.qs.size(); ++i) {
    auto got = ReadQuantizedLinear(*store, **cfg, kModules[i], f.qs[i].rows, f.qs[i].cols);
    ASSERT_TRUE(got.ok()) << got.error().message();
    ASSERT_TRUE(got->has_value()) << kModules[i];
    ExpectSame(f.qs[i], **got, kModules[i]);
  }
  auto lm_head = ReadQuantizedLinear(*store, **cfg, "lm_head", 4, 8);
  ASSERT_TRUE(lm_head.ok());
  EXPECT_FALSE(lm_head->has_value());  // ignored
  const TensorInfo* embed = store->Find("model.embed_tokens.weight");
  ASSERT_NE(embed, nullptr);
  EXPECT_EQ(0, std::memcmp(embed->data.data(), f.embed.data(), embed->data.size()));
}

Json ConfigOf(const fs::path& dir) { return Json::parse(FileBytes(dir / "config.json")); }

// ---- every scheme -------------------------------------------------------------------------------

struct Case {
  const char* scheme;
  int64_t n, k;
};

class RoundTrip : public ::testing::TestWithParam<Case> {};

TEST_P(RoundTrip, WritesExpectedLayoutAndReadsBackBitExact) {
  const Case c = GetParam();
  std::vector<QuantizedTensor> qs;
  for (uint32_t i = 0; i < 3; ++i)
    qs.push_back(QuantizeOrDie(RandomMatrix(c.n, c.k, i), c.n, c.k, c.scheme));
  const QuantScheme s = qs[0].scheme;
  ASSERT_TRUE(qs[0].fallback.empty());
  CompressedTensorsWriteOptions opt;
  opt.qforge_metadata = {{"method", "rtn"}, {"scheme", c.scheme}};
  const fs::path dir = testing::TempDir() / (std::string("rt_") + c.scheme);
  Result<Folder> f = WriteFolder(dir, qs, opt);
  ASSERT_TRUE(f.ok()) << f.error().message();
  ExpectReadsBack(*f);

  // config.json: the source config plus quantization_config.
  const Json j = ConfigOf(dir);
  const Json src = Json::parse(FileBytes(SourceDir() / "config.json"));
  EXPECT_EQ(j["hidden_size"], src["hidden_size"]);
  const Json& qc = j["quantization_config"];
  EXPECT_EQ(qc["quant_method"], "compressed-tensors");
  EXPECT_EQ(qc["quantization_status"], "compressed");
  EXPECT_EQ(qc["format"], s.is_int() ? "pack-quantized" : "naive-quantized");
  EXPECT_EQ(qc["ignore"], Json::array({"lm_head"}));
  EXPECT_EQ(qc["qforge"], opt.qforge_metadata);
  EXPECT_EQ(qc["version"], "0.18.0");
  EXPECT_EQ(qc["sparsity_config"], Json::object());
  EXPECT_EQ(qc["transform_config"], Json::object());
  EXPECT_TRUE(qc["kv_cache_scheme"].is_null());
  EXPECT_TRUE(qc["global_compression_ratio"].is_null());
  ASSERT_EQ(qc["config_groups"].size(), 1u);
  const Json& g = qc["config_groups"]["group_0"];
  EXPECT_EQ(g["targets"], Json::array({"Linear"}));
  EXPECT_EQ(g["format"], qc["format"]);
  EXPECT_TRUE(g["input_activations"].is_null());
  EXPECT_TRUE(g["output_activations"].is_null());
  const Json& w = g["weights"];
  EXPECT_EQ(w["num_bits"], s.bits);
  EXPECT_EQ(w["type"], s.is_int() ? "int" : "float");
  EXPECT_EQ(w["symmetric"], s.symmetric);
  const char* strategy[] = {"tensor", "channel", "group"};
  EXPECT_EQ(w["strategy"], strategy[static_cast<int>(s.granularity)]);
  EXPECT_EQ(w["group_size"], s.group_size ? Json(s.group_size) : Json());
  EXPECT_EQ(w["dynamic"], false);
  EXPECT_TRUE(w["actorder"].is_null());
  EXPECT_EQ(w["observer"], "minmax");
  EXPECT_EQ(w.size(), 10u) << w.dump();  // the key set of QuantizationArgs before scale_dtype

  // Tensor names, dtypes, shapes.
  Result<TensorStore> store = TensorStore::Open(dir);
  ASSERT_TRUE(store.ok());
  const std::string m = kModules[0];
  const auto expect = [&](const std::string& name, DType dt, std::vector<int64_t> shape) {
    const TensorInfo* t = store->Find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(Name(t->dtype), Name(dt)) << name;
    EXPECT_EQ(t->shape, shape) << name;
  };
  const int64_t sets = s.granularity == Granularity::kGroup ? c.k / s.group_size : 1;
  expect(m + ".weight_scale", DType::kF32,
         s.granularity == Granularity::kTensor ? std::vector<int64_t>{1}
                                               : std::vector<int64_t>{c.n, sets});
  if (!s.is_int()) {
    expect(m + ".weight", DType::kF8E4M3, {c.n, c.k});
  } else {
    expect(m + ".weight_packed", DType::kI32, {c.n, (c.k * s.bits + 31) / 32});
    expect(m + ".weight_shape", DType::kI64, {2});
    EXPECT_EQ(store->Find(m + ".weight"), nullptr);
  }
  if (s.is_int() && !s.symmetric) {
    if (s.granularity == Granularity::kTensor) {
      expect(m + ".weight_zero_point", DType::kI8, {1});
    } else {
      expect(m + ".weight_zero_point", DType::kI32, {(c.n * s.bits + 31) / 32, sets});
    }
  } else {
    EXPECT_EQ(store->Find(m + ".weight_zero_point"), nullptr);
  }
  EXPECT_EQ(FileBytes(dir / "tokenizer_config.json"),
            FileBytes(SourceDir() / "tokenizer_config.json"));
}

INSTANTIATE_TEST_SUITE_P(
    Schemes, RoundTrip,
    ::testing::Values(Case{"int4-g128-sym", 20, 256}, Case{"int4-g128-asym", 20, 256},
                      Case{"int8-channel-sym", 20, 200}, Case{"int3-g128-sym", 20, 256},
                      Case{"int2-g64-asym", 20, 256}, Case{"fp8-e4m3-tensor", 20, 200},
                      Case{"fp8-e4m3-channel", 20, 200}, Case{"int4-tensor-asym", 20, 200},
                      Case{"int3-channel-asym", 21, 200}, Case{"int8-g32-asym", 9, 64}),
    [](const ::testing::TestParamInfo<Case>& info) {
      std::string name = info.param.scheme;
      for (char& ch : name) ch = ch == '-' ? '_' : ch;
      return name;
    });

// ---- determinism, grouping, dtypes, activations -------------------------------------------------

TEST(CompressedTensors, SecondWriteIsByteIdentical) {
  std::vector<QuantizedTensor> qs;
  for (uint32_t i = 0; i < 3; ++i)
    qs.push_back(QuantizeOrDie(RandomMatrix(16, 128, i), 16, 128, "int4-g64-asym"));
  const fs::path a = testing::TempDir() / "det_a", b = testing::TempDir() / "det_b";
  ASSERT_TRUE(WriteFolder(a, qs).ok());
  ASSERT_TRUE(WriteFolder(b, qs).ok());
  ASSERT_TRUE(WriteFolder(a, qs).ok());  // rewriting in place gives the same bytes too
  for (const char* f : {"model.safetensors", "config.json"}) {
    EXPECT_EQ(FileBytes(a / f), FileBytes(b / f)) << f;
  }
  if (fs::exists(SourceDir() / "tokenizer.model")) {
    EXPECT_EQ(FileBytes(a / "tokenizer.model"), FileBytes(SourceDir() / "tokenizer.model"));
  }
}

TEST(CompressedTensors, GroupFallbackGetsItsOwnConfigGroup) {
  // Two K=256 linears keep g128; K=200 falls back to per channel and is listed by name.
  std::vector<QuantizedTensor> qs = {
      QuantizeOrDie(RandomMatrix(8, 256, 1), 8, 256, "int4-g128-sym"),
      QuantizeOrDie(RandomMatrix(8, 200, 2), 8, 200, "int4-g128-sym"),
      QuantizeOrDie(RandomMatrix(8, 256, 3), 8, 256, "int4-g128-sym")};
  ASSERT_FALSE(qs[1].fallback.empty());
  Result<Folder> f = WriteFolder(testing::TempDir() / "fallback", qs);
  ASSERT_TRUE(f.ok()) << f.error().message();
  ExpectReadsBack(*f);
  const Json qc = ConfigOf(f->dir)["quantization_config"];
  EXPECT_EQ(qc["format"], "pack-quantized");
  EXPECT_EQ(qc["config_groups"]["group_0"]["targets"], Json::array({"Linear"}));
  EXPECT_EQ(qc["config_groups"]["group_0"]["weights"]["group_size"], 128);
  EXPECT_EQ(qc["config_groups"]["group_1"]["targets"], Json::array({kModules[1]}));
  EXPECT_EQ(qc["config_groups"]["group_1"]["weights"]["strategy"], "channel");
}

TEST(CompressedTensors, IntAndFp8MixIsMixedPrecision) {
  std::vector<QuantizedTensor> qs = {
      QuantizeOrDie(RandomMatrix(8, 128, 1), 8, 128, "int4-g128-sym"),
      QuantizeOrDie(RandomMatrix(8, 128, 2), 8, 128, "fp8-e4m3-channel"),
      QuantizeOrDie(RandomMatrix(8, 128, 3), 8, 128, "int4-g128-sym")};
  Result<Folder> f = WriteFolder(testing::TempDir() / "mixed", qs);
  ASSERT_TRUE(f.ok()) << f.error().message();
  ExpectReadsBack(*f);
  const Json qc = ConfigOf(f->dir)["quantization_config"];
  EXPECT_EQ(qc["format"], "mixed-precision");
  EXPECT_EQ(qc["config_groups"]["group_0"]["format"], "pack-quantized");
  EXPECT_EQ(qc["config_groups"]["group_1"]["format"], "naive-quantized");
}

TEST(CompressedTensors, Bf16ScalesMustBeRoundedByTheQuantizer) {
  const fs::path src = SourceDirWithDType("bfloat16");
  std::vector<float> w = RandomMatrix(12, 128, 5);
  QuantizedTensor raw = QuantizeOrDie(w, 12, 128, "int4-g64-asym");
  std::vector<QuantizedTensor> qs(3, raw);
  Result<Folder> bad = WriteFolder(testing::TempDir() / "bf16_bad", qs, {}, src);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("not exact in BF16"), std::string::npos)
      << bad.error().message();
  qs.assign(3, RoundScales(w, raw, DType::kBF16));
  Result<Folder> f = WriteFolder(testing::TempDir() / "bf16", qs, {}, src);
  ASSERT_TRUE(f.ok()) << f.error().message();
  ExpectReadsBack(*f);
  Result<TensorStore> store = TensorStore::Open(f->dir);
  ASSERT_TRUE(store.ok());
  EXPECT_EQ(store->Find(std::string(kModules[0]) + ".weight_scale")->dtype, DType::kBF16);
  // An explicit dtype overrides the model's: f16 needs its own rounding.
  CompressedTensorsWriteOptions opt;
  opt.scale_dtype = "f16";
  qs.assign(3, RoundScales(w, raw, DType::kF16));
  Result<Folder> h = WriteFolder(testing::TempDir() / "f16", qs, opt, src);
  ASSERT_TRUE(h.ok()) << h.error().message();
  ExpectReadsBack(*h);
}

TEST(CompressedTensors, RoundScaleForStorageIsNearestEven) {
  EXPECT_EQ(RoundScaleForStorage(1.0f + 0x1p-8f, DType::kBF16), 1.0f);  // tie -> even
  EXPECT_EQ(RoundScaleForStorage(1.0f + 0x1p-8f + 0x1p-20f, DType::kBF16), 1.0f + 0x1p-7f);
  EXPECT_EQ(RoundScaleForStorage(1.0f + 0x1p-11f, DType::kF16), 1.0f);  // tie -> even
  EXPECT_EQ(RoundScaleForStorage(1.0f + 3 * 0x1p-11f, DType::kF16), 1.0f + 0x1p-9f);
  EXPECT_EQ(RoundScaleForStorage(0x1p-24f, DType::kF16), 0x1p-24f);  // smallest subnormal
  EXPECT_EQ(RoundScaleForStorage(0.1f, DType::kF32), 0.1f);
}

// 8-bit symmetric activation args as the W8A8 / FP8 presets of quant_scheme.py have them.
CtQuantArgs Activations(const std::string& type, const std::string& strategy, bool dynamic) {
  CtQuantArgs a;
  a.type = type;
  a.strategy = strategy;
  a.dynamic = dynamic;
  if (!dynamic) a.observer = "minmax";
  return a;
}

TEST(CompressedTensors, ActivationSchemesPickIntOrFloatQuantized) {
  // W8A8: int8 weights with dynamic per-token int8 activations -> int-quantized, int8 `weight`.
  CompressedTensorsWriteOptions w8a8;
  w8a8.input_activations = Activations("int", "token", /*dynamic=*/true);
  std::vector<QuantizedTensor> ints;
  for (uint32_t i = 0; i < 3; ++i)
    ints.push_back(QuantizeOrDie(RandomMatrix(8, 64, i), 8, 64,
                                 i == 1 ? "int8-channel-asym" : "int8-channel-sym"));
  Result<Folder> a = WriteFolder(testing::TempDir() / "w8a8", ints, w8a8);
  ASSERT_TRUE(a.ok()) << a.error().message();
  ExpectReadsBack(*a);
  Json qc = ConfigOf(a->dir)["quantization_config"];
  EXPECT_EQ(qc["format"], "int-quantized");
  const Json ia = qc["config_groups"]["group_0"]["input_activations"];
  EXPECT_EQ(ia["strategy"], "token");
  EXPECT_EQ(ia["dynamic"], true);
  EXPECT_TRUE(ia["observer"].is_null());
  Result<TensorStore> store = TensorStore::Open(a->dir);
  ASSERT_TRUE(store.ok());
  EXPECT_EQ(store->Find(std::string(kModules[0]) + ".weight")->dtype, DType::kI8);
  EXPECT_EQ(store->Find(std::string(kModules[1]) + ".weight_zero_point")->dtype, DType::kI8);

  // FP8 static: per-tensor weights and activations, input_scale per linear.
  CompressedTensorsWriteOptions fp8;
  fp8.input_activations = Activations("float", "tensor", /*dynamic=*/false);
  std::vector<QuantizedTensor> fps;
  for (uint32_t i = 0; i < 3; ++i)
    fps.push_back(QuantizeOrDie(RandomMatrix(8, 64, i), 8, 64, "fp8-e4m3-tensor"));
  Result<Folder> missing = WriteFolder(testing::TempDir() / "fp8_static_bad", fps, fp8);
  EXPECT_FALSE(missing.ok());
  Result<Folder> b = WriteFolder(testing::TempDir() / "fp8_static", fps, fp8, SourceDir(), 0.375f);
  ASSERT_TRUE(b.ok()) << b.error().message();
  ExpectReadsBack(*b);
  EXPECT_EQ(ConfigOf(b->dir)["quantization_config"]["format"], "float-quantized");
  Result<TensorStore> fstore = TensorStore::Open(b->dir);
  ASSERT_TRUE(fstore.ok());
  Result<std::optional<float>> is = ReadInputScale(*fstore, kModules[2]);
  ASSERT_TRUE(is.ok() && is->has_value());
  EXPECT_EQ(**is, 0.375f);
  Result<std::optional<float>> none = ReadInputScale(*fstore, "model.layers.9.mlp.up_proj");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

// ---- golden packed words
// -------------------------------------------------------------------------

// One linear written with hand-made codes; returns the raw int32 words of `tensor`.
std::vector<int32_t> WrittenWords(const std::string& name, QuantizedTensor q,
                                  const std::string& tensor) {
  const fs::path dir = testing::TempDir() / ("golden_" + name);
  std::vector<QuantizedLinearEntry> linears = {{kModules[0], &q}};
  Status st = WriteCompressedTensors(dir, SourceDir(), {}, linears, {});
  EXPECT_TRUE(st.ok()) << st.error().message();
  Result<TensorStore> store = TensorStore::Open(dir);
  EXPECT_TRUE(store.ok());
  const TensorInfo* t = store->Find(std::string(kModules[0]) + "." + tensor);
  EXPECT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, DType::kI32);
  std::vector<int32_t> words(t->data.size() / 4);
  std::memcpy(words.data(), t->data.data(), t->data.size());
  auto cfg = LoadQuantizationConfig(dir);
  auto back = ReadQuantizedLinear(*store, **cfg, kModules[0], q.rows, q.cols);
  EXPECT_TRUE(back.ok() && back->has_value());
  ExpectSame(q, **back, name);
  return words;
}

QuantizedTensor HandMade(const char* spec, int64_t n, int64_t k, std::vector<uint8_t> codes) {
  QuantizedTensor q;
  q.scheme = *ParseScheme(spec);
  q.rows = n;
  q.cols = k;
  q.codes = std::move(codes);
  q.scales.assign(q.scheme.granularity == Granularity::kTensor ? 1 : size_t(n), 0.5f);
  return q;
}

TEST(CompressedTensors, GoldenInt4Words) {
  // pack_to_int32: value i at bits [4i, 4i+4) of word i / 8, lowest index in the lowest bits.
  // Row 0 = 1..8, 15 -> 0x87654321, 0x0000000F; row 1 = 15..7 -> 0x89ABCDEF, 0x00000007.
  QuantizedTensor q = HandMade("int4-channel-sym", 2, 9,
                               {1, 2, 3, 4, 5, 6, 7, 8, 15,  //
                                15, 14, 13, 12, 11, 10, 9, 8, 7});
  const std::vector<int32_t> want = {int32_t(0x87654321u), 0xF, int32_t(0x89ABCDEFu), 0x7};
  EXPECT_EQ(WrittenWords("int4", q, "weight_packed"), want);
}

TEST(CompressedTensors, GoldenZeroPointWordsPackAlongRows) {
  // Zero points of 9 rows, one column, packed along dim 0: z[0..7] = 1..8 -> 0x87654321; z[8] = 9.
  QuantizedTensor q = HandMade("int4-channel-asym", 9, 4, std::vector<uint8_t>(36, 3));
  q.zeros = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  const std::vector<int32_t> want = {int32_t(0x87654321u), 9};
  EXPECT_EQ(WrittenWords("zp", q, "weight_zero_point"), want);
}

TEST(CompressedTensors, GoldenInt3WordsAreDense) {
  // CT >= 0.18 dense packing: value i at bits [3i, 3i+3) of the row's bit stream. Eleven 7s fill
  // bits 0..32: word 0 = 0xFFFFFFFF, bit 32 -> word 1 bit 0; value 11 = 5 (0b101) at bits 33..35
  // -> word 1 bits 1..3 = 0xA. Word 1 = 0xB. (CT <= 0.17 would give 0x3FFFFFFF, 0x2F.)
  std::vector<uint8_t> codes(11, 7);
  codes.push_back(5);
  QuantizedTensor q = HandMade("int3-channel-sym", 1, 12, codes);
  const std::vector<int32_t> want = {-1, 0xB};
  EXPECT_EQ(WrittenWords("int3", q, "weight_packed"), want);
}

// ---- corrupt files
// -------------------------------------------------------------------------------

struct RawTensor {
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<std::byte> bytes;
};
using RawFile = std::map<std::string, RawTensor>;

// A fresh good folder of `scheme`, its tensors edited by `edit`, then read: the Error message.
std::string ReadError(const std::string& scheme, const std::function<void(RawFile&)>& edit,
                      const std::function<void(Json&)>& edit_config = nullptr,
                      int64_t k_asked = 128) {
  static int serial = 0;
  const fs::path dir = testing::TempDir() / ("corrupt_" + std::to_string(serial++));
  std::vector<QuantizedTensor> qs;
  for (uint32_t i = 0; i < 3; ++i)
    qs.push_back(QuantizeOrDie(RandomMatrix(16, 128, i), 16, 128, scheme));
  EXPECT_TRUE(WriteFolder(dir, qs).ok());
  RawFile raw;
  {
    Result<TensorStore> store = TensorStore::Open(dir);
    for (const TensorInfo& t : store->tensors()) {
      raw[t.name] = {t.dtype, t.shape, std::vector<std::byte>(t.data.begin(), t.data.end())};
    }
  }
  edit(raw);
  std::vector<TensorToWrite> out;
  for (const auto& [name, t] : raw) out.push_back({name, t.dtype, t.shape, t.bytes});
  EXPECT_TRUE(WriteSafetensors(dir / "model.safetensors", out).ok());
  Json config = ConfigOf(dir);
  if (edit_config) edit_config(config);
  std::ofstream(dir / "config.json") << config.dump(2);
  Result<std::optional<CompressedTensorsConfig>> cfg =
      ParseQuantizationConfig(config, (dir / "config.json").string());
  if (!cfg.ok()) return cfg.error().message();
  Result<TensorStore> store = TensorStore::Open(dir);
  auto q = ReadQuantizedLinear(*store, **cfg, kModules[0], 16, k_asked);
  return q.ok() ? std::string("no error") : q.error().message();
}

template <class T>
void SetValues(RawTensor& t, std::vector<T> values) {
  t.bytes.resize(values.size() * sizeof(T));
  std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
}

const std::string kM = kModules[0];

void ExpectMentions(const std::string& msg, const std::string& what) {
  EXPECT_NE(msg.find(what), std::string::npos) << "expected \"" << what << "\" in: " << msg;
}

TEST(CompressedTensorsCorrupt, MissingWeightScale) {
  const std::string msg =
      ReadError("int4-g128-sym", [](RawFile& r) { r.erase(kM + ".weight_scale"); });
  ExpectMentions(msg, kM + ".weight_scale' is missing");
}

TEST(CompressedTensorsCorrupt, WrongPackedLength) {
  const std::string msg = ReadError("int4-g128-sym", [](RawFile& r) {
    RawTensor& t = r[kM + ".weight_packed"];
    t.shape = {16, 15};
    t.bytes.resize(16 * 15 * 4);
  });
  ExpectMentions(msg, "weight_packed' has shape [16, 15], expected [16, 16]");
}

TEST(CompressedTensorsCorrupt, ZeroPointOutOfRange) {
  const std::string msg = ReadError("int4-tensor-asym", [](RawFile& r) {
    SetValues(r[kM + ".weight_zero_point"], std::vector<int8_t>{9});
  });
  ExpectMentions(msg, "outside [-8, 7]");
}

TEST(CompressedTensorsCorrupt, Int8WeightOutOfRangeForInt3) {
  // int-quantized int3: stored int8 values must fit [-4, 3].
  const std::string msg = ReadError(
      "int4-g128-sym",
      [](RawFile& r) {
        r.erase(kM + ".weight_packed");
        r.erase(kM + ".weight_shape");
        RawTensor w{DType::kI8, {16, 128}, {}};
        SetValues(w, std::vector<int8_t>(16 * 128, 4));
        r[kM + ".weight"] = w;
      },
      [](Json& j) {
        j["quantization_config"]["format"] = "int-quantized";
        j["quantization_config"]["config_groups"]["group_0"]["format"] = "int-quantized";
        j["quantization_config"]["config_groups"]["group_0"]["weights"]["num_bits"] = 3;
      });
  ExpectMentions(msg, "outside [-4, 3]");
}

TEST(CompressedTensorsCorrupt, BadScales) {
  const std::string neg = ReadError("int4-g128-sym", [](RawFile& r) {
    SetValues(r[kM + ".weight_scale"], std::vector<float>(16, -1.0f));
  });
  ExpectMentions(neg, "expected finite and > 0");
  const std::string dtype =
      ReadError("fp8-e4m3-tensor", [](RawFile& r) { r[kM + ".weight_scale"].dtype = DType::kI32; });
  ExpectMentions(dtype, "dtype I32, expected F32 or BF16 or F16");
}

TEST(CompressedTensorsCorrupt, ShapesAndDtypes) {
  ExpectMentions(ReadError("int4-g128-sym",
                           [](RawFile& r) {
                             SetValues(r[kM + ".weight_shape"], std::vector<int64_t>{16, 256});
                           }),
                 "holds [16, 256], expected [16, 128]");
  ExpectMentions(ReadError("int4-g128-asym",
                           [](RawFile& r) {
                             r[kM + ".weight_zero_point"].shape = {1, 2};
                             r[kM + ".weight_zero_point"].bytes.resize(8);
                           }),
                 "weight_zero_point' has shape [1, 2], expected [2, 1]");
  ExpectMentions(
      ReadError("fp8-e4m3-channel", [](RawFile& r) { r[kM + ".weight"].dtype = DType::kU8; }),
      "dtype U8, expected F8_E4M3");
  ExpectMentions(ReadError(
                     "int4-g128-sym", [](RawFile&) {}, nullptr, 256),
                 "weight_scale' has shape [16, 1], expected [16, 2]");
}

TEST(CompressedTensorsCorrupt, ActOrderIsRejected) {
  const std::string msg = ReadError("int4-g128-sym", [](RawFile& r) {
    RawTensor g{DType::kI32, {128}, {}};
    SetValues(g, std::vector<int32_t>(128, 0));
    r[kM + ".weight_g_idx"] = g;
  });
  ExpectMentions(msg, "activation ordering");
}

TEST(CompressedTensorsCorrupt, ConfigErrors) {
  const auto config_error = [](const std::function<void(Json&)>& edit) {
    return ReadError(
        "int4-g128-sym", [](RawFile&) {}, edit);
  };
  ExpectMentions(config_error([](Json& j) { j["quantization_config"]["format"] = "int4-magic"; }),
                 "unknown compressed-tensors format 'int4-magic'");
  ExpectMentions(config_error([](Json& j) {
                   j["quantization_config"]["config_groups"]["group_0"]["weights"]["type"] = "nf";
                 }),
                 "unknown type 'nf'");
  ExpectMentions(config_error([](Json& j) {
                   j["quantization_config"]["config_groups"]["group_0"]["weights"]["strategy"] =
                       "diagonal";
                 }),
                 "unknown strategy 'diagonal'");
  ExpectMentions(config_error([](Json& j) { j["quantization_config"]["quant_method"] = "gptq"; }),
                 "quant_method is 'gptq'");
  ExpectMentions(config_error([](Json& j) {
                   j["quantization_config"]["config_groups"]["group_0"]["format"] = "marlin-24";
                 }),
                 "format 'marlin-24' with int weights is not supported");
  ExpectMentions(config_error([](Json& j) {
                   j["quantization_config"]["config_groups"]["group_0"]["weights"]["num_bits"] =
                       "four";
                 }),
                 "quantization_config");
}

TEST(CompressedTensorsCorrupt, PreDenseInt3LayoutIsRejected) {
  // CT <= 0.17 put 10 int3 values in a word; for small K the word count cannot tell the layouts
  // apart, so the version does. Written by an older CT -> Error, never a silent misread.
  const std::string msg = ReadError(
      "int3-g128-sym", [](RawFile&) {},
      [](Json& j) { j["quantization_config"]["version"] = "0.17.1"; });
  ExpectMentions(msg, "3-bit pack-quantized from compressed-tensors 0.17.1");
  ExpectMentions(ReadError(
                     "int4-g128-sym", [](RawFile&) {},
                     [](Json& j) { j["quantization_config"]["version"] = "0.12.2"; }),
                 "no error");  // 4 bits: the same layout in every version
}

// ---- selection and write-side errors
// -------------------------------------------------------------

TEST(CompressedTensors, ModuleSelection) {
  Json j = Json::parse(FileBytes(SourceDir() / "config.json"));
  auto none = ParseQuantizationConfig(j, "config.json");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  j["quantization_config"] = {{"quant_method", "compressed-tensors"},
                              {"format", "pack-quantized"},
                              {"ignore", {"re:.*mlp.*", "lm_head"}},
                              {"config_groups",
                               {{"group_0",
                                 {{"targets", {"model.layers.0.self_attn.q_proj"}},
                                  {"weights", {{"num_bits", 4}, {"group_size", 128}}}}},
                                {"group_1",
                                 {{"targets", {"re:.*self_attn\\.[kv]_proj$"}},
                                  {"weights", {{"num_bits", 8}, {"strategy", "channel"}}}}}}}};
  auto cfg = ParseQuantizationConfig(j, "config.json");
  ASSERT_TRUE(cfg.ok()) << cfg.error().message();
  ASSERT_TRUE(cfg->has_value());
  const CompressedTensorsConfig& c = **cfg;
  EXPECT_EQ(c.groups.size(), 2u);
  EXPECT_EQ(c.groups[0].weights->strategy, "group");  // inferred from group_size
  EXPECT_EQ(c.FindGroup("model.layers.0.self_attn.q_proj"), &c.groups[0]);
  EXPECT_EQ(c.FindGroup("model.layers.3.self_attn.v_proj"), &c.groups[1]);
  EXPECT_EQ(c.FindGroup("model.layers.3.self_attn.o_proj"), nullptr);  // not targeted
  EXPECT_EQ(c.FindGroup("model.layers.0.mlp.up_proj"), nullptr);       // ignored by regex
  EXPECT_TRUE(c.Ignored("lm_head"));
  EXPECT_FALSE(c.Ignored("lm_head_2"));
}

// Integer fields must be JSON integers in range: nlohmann's get<int>() would truncate 8.5 to 8
// and cast 8.8e28 with undefined behaviour (found by config_fuzz).
TEST(CompressedTensors, IntegerFieldsMustBeIntegersInRange) {
  for (const Json& bad : {Json(8.5), Json(8.8e28), Json(uint64_t(1) << 40), Json("8")}) {
    Json j = {{"quantization_config",
               {{"quant_method", "compressed-tensors"},
                {"format", "pack-quantized"},
                {"config_groups",
                 {{"group_0", {{"targets", {"Linear"}}, {"weights", {{"num_bits", bad}}}}}}}}}};
    const auto cfg = ParseQuantizationConfig(j, "config.json");
    ASSERT_FALSE(cfg.ok()) << bad.dump();
    EXPECT_NE(cfg.error().message().find("num_bits"), std::string::npos) << cfg.error().message();
  }
  Json j = {
      {"quantization_config",
       {{"quant_method", "compressed-tensors"},
        {"format", "pack-quantized"},
        {"config_groups",
         {{"group_0",
           {{"targets", {"Linear"}},
            {"weights",
             {{"num_bits", 4}, {"strategy", "block"}, {"block_structure", {128, 1.5}}}}}}}}}}};
  EXPECT_FALSE(ParseQuantizationConfig(j, "config.json").ok());
}

TEST(CompressedTensors, WriteRejectsInconsistentInput) {
  const std::vector<float> w = RandomMatrix(8, 64, 1);
  const QuantizedTensor q = QuantizeOrDie(w, 8, 64, "int4-g64-sym");
  const auto write = [&](std::vector<QuantizedLinearEntry> linears,
                         std::vector<TensorToWrite> passthrough, const fs::path& src) {
    Status st =
        WriteCompressedTensors(testing::TempDir() / "reject", src, passthrough, linears, {});
    return st.ok() ? std::string("no error") : st.error().message();
  };
  const auto bytes = std::as_bytes(std::span(w));
  fs::create_directories(testing::TempDir() / "reject");
  ExpectMentions(write({{"lm_head", &q}}, {}, SourceDir()), "matches the ignore list");
  ExpectMentions(
      write({{kModules[0], &q}}, {{kM + ".weight", DType::kF32, {8, 64}, bytes}}, SourceDir()),
      "belongs to a quantized linear");
  ExpectMentions(
      write({{kModules[0], &q}},
            {{"model.layers.5.self_attn.q_proj.weight", DType::kF32, {8, 64}, bytes}}, SourceDir()),
      "stored unquantized but not in the ignore list");
  const QuantizedTensor e5 = QuantizeOrDie(w, 8, 64, "fp8-e5m2-tensor");
  ExpectMentions(write({{kModules[0], &e5}}, {}, SourceDir()), "e4m3 only");
  ExpectMentions(write({{kModules[0], &q}}, {}, testing::TempDir() / "reject"),
                 "must differ from the source folder");
}

}  // namespace
}  // namespace qf::io
