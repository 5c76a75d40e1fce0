// Activation quantization (formats/activation.h): table rows and presets, the fast path against
// the reference bit for bit, error bounds and exact grid values, the compressed-tensors
// input_activations mapping, and end to end: W8A8 (dynamic int8) and FP8 (static, calibrated
// input_scale) folders of the bundled model loaded and run by Model.
#include "formats/activation.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <cstring>
#include <random>
#include <set>
#include <sstream>
#include <utility>

#include "core/dtype.h"
#include "eval/perplexity.h"
#include "formats/fp8.h"
#include "formats/gguf_mix.h"
#include "formats/quantize.h"
#include "io/compressed_tensors.h"
#include "io/safetensors.h"
#include "kernels/cpu/a16_gemm.h"
#include "kernels/ops.h"
#include "kernels/qgemm.h"
#include "model/decoder_walk.h"
#include "model/model.h"
#include "pipeline/quantize_gguf.h"
#include "test_util.h"
#include "text/tokenizer.h"

namespace qf {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

ActScheme Row(std::string_view name) {
  Result<ActScheme> s = ParseActScheme(name);
  EXPECT_TRUE(s.ok()) << name;
  return *s;
}

ActQuant Dynamic(std::string_view name) { return ActQuant{Row(name), 0.0f}; }
ActQuant Static(std::string_view name, float scale) { return ActQuant{Row(name), scale}; }

// ---- table rows, parser, presets ---------------------------------------------------------------

TEST(ActScheme, TableRowsParseToThemselves) {
  ASSERT_EQ(ActSchemeTable().size(), 4u);
  for (const ActScheme& s : ActSchemeTable()) {
    Result<ActScheme> p = ParseActScheme(s.name);
    ASSERT_TRUE(p.ok()) << s.name;
    EXPECT_EQ(p->name, s.name);
    EXPECT_EQ(p->kind, s.kind);
    EXPECT_EQ(p->dynamic, s.dynamic);
  }
  EXPECT_EQ(Row("int8-token").kind, QuantKind::kInt);
  EXPECT_TRUE(Row("int8-token").dynamic);
  EXPECT_FALSE(Row("int8-tensor").dynamic);
  EXPECT_EQ(Row("fp8-e4m3-token").kind, QuantKind::kFp8E4M3);
  EXPECT_TRUE(Row("fp8-e4m3-token").dynamic);
  EXPECT_FALSE(Row("fp8-e4m3-tensor").dynamic);

  const std::pair<std::string_view, std::string_view> aliases[] = {
      {"fp8-token", "fp8-e4m3-token"},      {"FP8_TENSOR", "fp8-e4m3-tensor"},
      {"INT8_TOKEN", "int8-token"},         {"Int8-Tensor", "int8-tensor"},
      {"fp8_e4m3_token", "fp8-e4m3-token"},
  };
  for (const auto& [spec, want] : aliases) EXPECT_EQ(Row(spec).name, want) << spec;
  for (std::string_view bad : {"", "int8", "int4-token", "fp8-e5m2-token", "int8-channel"}) {
    Result<ActScheme> r = ParseActScheme(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.error().message().find("int8-token"), std::string::npos) << r.error().message();
  }
}

TEST(ActScheme, QMaxAndScales) {
  EXPECT_EQ(ActQMax(Row("int8-token")), 127.0f);
  EXPECT_EQ(ActQMax(Row("fp8-tensor")), 448.0f);
  const ActScheme i8 = Row("int8-token"), f8 = Row("fp8-token");
  EXPECT_EQ(ActScaleFromAbsMax(i8, 254.0f), 2.0f);
  EXPECT_EQ(ActScaleFromAbsMax(f8, 224.0f), 0.5f);
  EXPECT_EQ(ActScaleFromAbsMax(i8, 0.0f), 1.0f);
  EXPECT_EQ(ActScaleFromAbsMax(i8, std::numeric_limits<float>::infinity()), 1.0f);
  EXPECT_EQ(ActScaleFromAbsMax(f8, std::numeric_limits<float>::quiet_NaN()), 1.0f);
  EXPECT_EQ(ActScaleFromAbsMax(f8, std::numeric_limits<float>::denorm_min()), 1.0f);  // underflow
}

TEST(ActScheme, Presets) {
  const std::pair<std::string_view, std::string_view> cases[] = {
      {"W8A8", "int8-token"},
      {"w8a8_static", "int8-tensor"},
      {"FP8", "fp8-e4m3-tensor"},
      {"FP8_DYNAMIC", "fp8-e4m3-token"},
  };
  for (const auto& [spec, want] : cases) {
    Result<std::optional<ActScheme>> a = PresetActivations(spec);
    ASSERT_TRUE(a.ok()) << spec;
    ASSERT_TRUE(a->has_value()) << spec;
    EXPECT_EQ((*a)->name, want) << spec;
  }
  EXPECT_EQ(ParseScheme("W8A8")->name, "int8-channel-sym");
  EXPECT_EQ(ParseScheme("W8A8-static")->name, "int8-channel-sym");
  EXPECT_EQ(ParseScheme("FP8")->name, "fp8-e4m3-tensor");
  EXPECT_EQ(ParseScheme("FP8-dynamic")->name, "fp8-e4m3-channel");
  for (std::string_view a16 : {"W4A16", "W8A16", "int8-channel", "fp8-e4m3-tensor", "nonsense"}) {
    Result<std::optional<ActScheme>> a = PresetActivations(a16);
    ASSERT_TRUE(a.ok()) << a16;
    EXPECT_FALSE(a->has_value()) << a16;
  }
  for (const SchemePreset& p : SchemePresets()) {
    EXPECT_EQ(FindPreset(p.name), &p);
    if (!p.act.empty()) {
      EXPECT_TRUE(ParseActScheme(p.act).ok()) << p.name;
    }
  }
  EXPECT_EQ(FindPreset("int4-g128"), nullptr);
}

// ---- reference vs fast path --------------------------------------------------------------------

// Rows of very different magnitudes: zeros, -0 and tiny (f32 subnormal) values, ordinary
// activations, outlier rows, huge (1e30) and infinite values.
std::vector<float> MixedActivations(int64_t m, int64_t k, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(m * k));
  for (int64_t r = 0; r < m; ++r) {
    float* row = x.data() + r * k;
    const int kind = int(r % 7);
    for (int64_t c = 0; c < k; ++c) {
      const float z = normal(rng);
      switch (kind) {
        case 0:
          row[c] = 0.0f;
          break;
        case 1:
          row[c] = z * 3.0f;
          break;
        case 2:
          row[c] = z * 1e-3f * (c % 17 == 0 ? 500.0f : 1.0f);
          break;  // outlier channels
        case 3:
          row[c] = z * std::numeric_limits<float>::denorm_min() * 8;
          break;
        case 4:
          row[c] = c % 9 == 0 ? -0.0f : z * 1e30f;
          break;
        case 5:
          row[c] = c == 5 ? -std::numeric_limits<float>::infinity() : z * 40.0f;
          break;
        default:
          row[c] = std::ldexp(z, int(c % 40) - 20);
          break;  // many binades
      }
    }
  }
  return x;
}

void ExpectBitEqual(const std::vector<float>& want, const std::vector<float>& got,
                    const std::string& what) {
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(BitsFromF32(want[i]), BitsFromF32(got[i]))
        << what << " at " << i << ": ref " << want[i] << " fast " << got[i];
  }
}

TEST(QuantizeActivations, FastEqualsReferenceBitForBit) {
  // {m, k}: tiny, odd sizes (vector tails), and large enough for the parallel path.
  const std::pair<int64_t, int64_t> shapes[] = {{1, 1}, {3, 7}, {14, 33}, {70, 1031}, {64, 2048}};
  std::vector<ActQuant> quants;
  for (const ActScheme& s : ActSchemeTable()) {
    if (s.dynamic) {
      quants.push_back({s, 0.0f});
    } else {
      for (float scale : {0.01f, 0.3f, 1.0f, 7.0f}) quants.push_back({s, scale});  // saturating
    }
  }
  uint32_t seed = 1;
  for (const auto& [m, k] : shapes) {
    const std::vector<float> x = MixedActivations(m, k, seed++);
    for (const ActQuant& a : quants) {
      const std::string what = fmt::format("{} scale {} [{}, {}]", a.scheme->name, a.scale, m, k);
      std::vector<float> ref(x.size()), fast(x.size());
      QuantizeActivationsRef(a, x.data(), ref.data(), m, k);
      QuantizeActivations(a, x.data(), fast.data(), m, k);
      ExpectBitEqual(ref, fast, what);
      for (float v : ref) ASSERT_TRUE(std::isfinite(v)) << what;
      std::vector<float> in_place = x;  // out == x
      QuantizeActivations(a, in_place.data(), in_place.data(), m, k);
      ExpectBitEqual(ref, in_place, what + " in place");
      std::vector<float> ref_in_place = x;
      QuantizeActivationsRef(a, ref_in_place.data(), ref_in_place.data(), m, k);
      ExpectBitEqual(ref, ref_in_place, what + " ref in place");
      // Inside an OpenMP region (the serial row loop), one call per thread.
      std::vector<std::vector<float>> per_thread(4, std::vector<float>(x.size()));
#pragma omp parallel for num_threads(2)
      for (int t = 0; t < 4; ++t) {
        QuantizeActivations(a, x.data(), per_thread[size_t(t)].data(), m, k);
      }
      for (const auto& got : per_thread) ExpectBitEqual(ref, got, what + " nested");
    }
  }
}

TEST(QuantizeActivations, SaturatesAndKeepsZeroRows) {
  const std::vector<float> x = {0.0f, -0.0f, 0.0f, 1e30f, -1e30f, 1.0f};
  std::vector<float> out(x.size());
  QuantizeActivations(Static("int8-tensor", 0.5f), x.data(), out.data(), 2, 3);
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_TRUE(std::signbit(out[1]));
  EXPECT_EQ(out[3], 63.5f);  // 127 * 0.5
  EXPECT_EQ(out[4], -64.0f);
  EXPECT_EQ(out[5], 1.0f);
  QuantizeActivations(Static("fp8-tensor", 0.5f), x.data(), out.data(), 2, 3);
  EXPECT_EQ(out[3], 224.0f);  // 448 * 0.5
  EXPECT_EQ(out[4], -224.0f);
  const std::vector<float> rows = {0.0f, -0.0f, 0.0f, 448.0f, -448.0f, 1.0f};
  QuantizeActivations(Dynamic("fp8-token"), rows.data(), out.data(), 2, 3);
  EXPECT_EQ(out, rows);  // an all-zero row keeps its zeros (scale 1); the other has scale 1 too
  EXPECT_TRUE(std::signbit(out[1]));
}

TEST(QuantizeActivations, NanStaysNan) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> x = {1.0f, nan, -3.0f, 2.0f};
  for (const ActScheme& s : ActSchemeTable()) {
    const ActQuant a{s, 0.25f};
    std::vector<float> ref(x.size()), fast(x.size());
    QuantizeActivationsRef(a, x.data(), ref.data(), 1, 4);
    QuantizeActivations(a, x.data(), fast.data(), 1, 4);
    EXPECT_TRUE(std::isnan(ref[1]) && std::isnan(fast[1])) << s.name;
    for (size_t i : {0u, 2u, 3u}) EXPECT_EQ(ref[i], fast[i]) << s.name << " " << i;
    if (s.dynamic) {
      EXPECT_EQ(fast[2], -3.0f) << s.name << ": absmax 3 (NaN skipped) is exact";
    }
  }
}

TEST(QuantizeActivations, Int8ErrorIsAtMostHalfAStep) {
  const int64_t m = 40, k = 300;
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(m * k));
  for (int64_t r = 0; r < m; ++r)
    for (int64_t c = 0; c < k; ++c) x[size_t(r * k + c)] = normal(rng) * float(r + 1);
  std::vector<float> out(x.size());
  // Dynamic: every value is inside [-127, 127] steps of its row's scale.
  QuantizeActivations(Dynamic("int8-token"), x.data(), out.data(), m, k);
  for (int64_t r = 0; r < m; ++r) {
    float absmax = 0.0f;
    for (int64_t c = 0; c < k; ++c) absmax = std::max(absmax, std::fabs(x[size_t(r * k + c)]));
    const float s = absmax / 127.0f;
    for (int64_t c = 0; c < k; ++c) {
      const size_t i = size_t(r * k + c);
      EXPECT_LE(std::fabs(out[i] - x[i]), s * 0.5f * (1.0f + 1e-5f)) << r << "," << c;
      const float q = out[i] / s;  // a code, up to the rounding of q * s / s
      EXPECT_NEAR(q, std::nearbyint(q), 1e-4) << "not a multiple of the scale";
      EXPECT_LE(std::fabs(std::nearbyint(q)), 127.0f);
    }
  }
  // Static: the same bound inside the range [-128 s, 127 s].
  const float s = 0.05f;
  QuantizeActivations(Static("int8-tensor", s), x.data(), out.data(), m, k);
  for (size_t i = 0; i < x.size(); ++i) {
    if (x[i] < -128.0f * s || x[i] > 127.0f * s) {
      EXPECT_EQ(out[i], (x[i] < 0 ? -128.0f : 127.0f) * s);
    } else {
      EXPECT_LE(std::fabs(out[i] - x[i]), s * 0.5f * (1.0f + 1e-5f)) << i;
    }
  }
}

TEST(QuantizeActivations, GridValuesAreExact) {
  // fp8: every finite e4m3 value times a power-of-two scale comes back unchanged, and its code is
  // the byte EncodeF8E4M3 gives.
  const std::array<float, 256>& values = F8E4M3Values();
  std::vector<float> x;
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7f) == 0x7f) continue;  // NaN codes
    x.push_back(values[size_t(c)]);
    EXPECT_EQ(EncodeF8E4M3(values[size_t(c)]), c) << c;
  }
  for (float scale : {1.0f, 0.0078125f, 16.0f}) {
    std::vector<float> scaled(x.size()), out(x.size());
    for (size_t i = 0; i < x.size(); ++i) scaled[i] = x[i] * scale;
    QuantizeActivations(Static("fp8-tensor", scale), scaled.data(), out.data(), 2,
                        int64_t(x.size()) / 2);
    ExpectBitEqual(scaled, out, fmt::format("fp8 grid, scale {}", scale));
    // Dynamic: the row maximum is 448 * scale, so the row scale is `scale` again.
    QuantizeActivations(Dynamic("fp8-token"), scaled.data(), out.data(), 1, int64_t(x.size()));
    ExpectBitEqual(scaled, out, fmt::format("fp8 grid dynamic, scale {}", scale));
  }
  // Between two neighbours the fast path rounds to the nearest, ties to the even code.
  const float lo = values[0x48], hi = values[0x49];  // 0x48: even mantissa
  const std::vector<float> mid = {(lo + hi) / 2, std::nextafter((lo + hi) / 2, hi)};
  std::vector<float> got(2);
  QuantizeActivations(Static("fp8-tensor", 1.0f), mid.data(), got.data(), 1, 2);
  EXPECT_EQ(got[0], lo);
  EXPECT_EQ(got[1], hi);

  // int8: q * scale for every code q, power-of-two scale.
  std::vector<float> ints;
  for (int q = -128; q <= 127; ++q) ints.push_back(float(q) * 0.125f);
  std::vector<float> out(ints.size());
  QuantizeActivations(Static("int8-tensor", 0.125f), ints.data(), out.data(), 1,
                      int64_t(ints.size()));
  ExpectBitEqual(ints, out, "int8 grid");
  // Ties go to the even code: 2.5 -> 2, 3.5 -> 4, -2.5 -> -2.
  const std::vector<float> ties = {2.5f, 3.5f, -2.5f, 126.5f, 127.5f, -128.5f};
  std::vector<float> t(ties.size());
  QuantizeActivations(Static("int8-tensor", 1.0f), ties.data(), t.data(), 1, 6);
  EXPECT_EQ(t, (std::vector<float>{2.0f, 4.0f, -2.0f, 126.0f, 127.0f, -128.0f}));
}

// ---- compressed-tensors mapping ----------------------------------------------------------------

TEST(ActCompressedTensors, RoundTripsEveryRow) {
  for (const ActScheme& s : ActSchemeTable()) {
    const io::CtQuantArgs a = io::CtArgsFromActScheme(s);
    EXPECT_EQ(a.num_bits, 8);
    EXPECT_EQ(a.type, s.kind == QuantKind::kInt ? "int" : "float");
    EXPECT_TRUE(a.symmetric);
    EXPECT_EQ(a.strategy, s.dynamic ? "token" : "tensor");
    EXPECT_EQ(a.dynamic, s.dynamic);
    EXPECT_EQ(a.observer, s.dynamic ? std::nullopt : std::optional<std::string>("minmax"));
    EXPECT_FALSE(a.group_size.has_value());
    Result<ActScheme> back = io::ActSchemeFromCt(a);
    ASSERT_TRUE(back.ok()) << back.error().message();
    EXPECT_EQ(back->name, s.name);
    // Through config.json text, as a reader sees it.
    const Json config = {
        {"quantization_config",
         {{"quant_method", "compressed-tensors"},
          {"format", s.kind == QuantKind::kInt ? "int-quantized" : "float-quantized"},
          {"config_groups",
           {{"group_0", {{"targets", {"Linear"}}, {"input_activations", a.ToJson()}}}}}}}};
    Result<std::optional<io::CompressedTensorsConfig>> cfg =
        io::ParseQuantizationConfig(Json::parse(config.dump()), "config.json");
    ASSERT_TRUE(cfg.ok()) << cfg.error().message();
    Result<ActScheme> parsed = io::ActSchemeFromCt(*(*cfg)->groups[0].input_activations);
    ASSERT_TRUE(parsed.ok()) << parsed.error().message();
    EXPECT_EQ(parsed->name, s.name);
  }
}

TEST(ActCompressedTensors, UnsupportedArgsAreErrors) {
  const io::CtQuantArgs token = io::CtArgsFromActScheme(Row("int8-token"));
  const std::pair<std::function<void(io::CtQuantArgs&)>, std::string_view> cases[] = {
      {[](io::CtQuantArgs& a) { a.num_bits = 4; }, "8-bit"},
      {[](io::CtQuantArgs& a) { a.symmetric = false; }, "asymmetric"},
      {[](io::CtQuantArgs& a) { a.dynamic = false; }, "must be dynamic"},
      {[](io::CtQuantArgs& a) { a.strategy = "tensor"; }, "dynamic per-tensor"},
      {[](io::CtQuantArgs& a) { a.strategy = "channel"; }, "strategy 'channel'"},
      {[](io::CtQuantArgs& a) { a.strategy = "group", a.group_size = 128; }, "strategy 'group'"},
      {[](io::CtQuantArgs& a) { a.strategy = "tensor_group", a.group_size = 16; }, "tensor_group"},
      {[](io::CtQuantArgs& a) { a.strategy = "block"; }, "strategy 'block'"},
      {[](io::CtQuantArgs& a) { a.type = "nf4"; }, "unknown type"},
  };
  for (const auto& [mutate, want] : cases) {
    io::CtQuantArgs a = token;
    mutate(a);
    Result<ActScheme> r = io::ActSchemeFromCt(a);
    ASSERT_FALSE(r.ok()) << want;
    EXPECT_NE(r.error().message().find(want), std::string::npos) << r.error().message();
    EXPECT_NE(r.error().message().find("input_activations"), std::string::npos);
  }
}

// ---- end to end: the bundled model as W8A8 / FP8 folders ----------------------------------------

const model::Model& FpModel() {
  static const model::Model* m = [] {
    kernels::SetThreads(2);
    Result<model::Model> r = model::Model::Load(testing::BundledModel());
    if (!r.ok()) {
      ADD_FAILURE() << r.error().message();
      std::abort();
    }
    return new model::Model(std::move(r).value());
  }();
  return *m;
}

model::Model LoadOrDie(const fs::path& dir) {
  Result<model::Model> r = model::Model::Load(dir);
  if (!r.ok()) {
    ADD_FAILURE() << r.error().message();
    std::abort();
  }
  return std::move(r).value();
}

const std::vector<int32_t> kIds = {1, 355, 2225, 4761, 282, 2251, 263, 1809, 5350, 704, 528, 7842};

// The linear modules of a layer, with the Layer member each one is.
std::vector<std::pair<std::string, const model::Linear*>> LayerLinears(const model::ModelConfig& c,
                                                                       const model::Layer& L,
                                                                       int64_t l) {
  std::vector<std::pair<std::string, const model::Linear*>> out;
  for (const model::LinearId id : model::kBlockLinears) {
    const std::string w = model::LayerTensorName(model::WeightPattern(*c.family->names, id), l);
    out.emplace_back(w.substr(0, w.size() - 7), &L[id]);
  }
  return out;
}

// Largest |input| each linear sees while the fp model runs kIds: the static calibration a
// minmax observer would do.
std::map<std::string, float> CalibrateAbsMax(const model::Model& m) {
  const model::ModelConfig& c = m.config();
  const int64_t M = int64_t(kIds.size()), H = c.hidden, F = c.intermediate, qd = c.q_dim();
  std::vector<float> x(static_cast<size_t>(M * H)), h(x.size());
  std::vector<float> q(static_cast<size_t>(M * qd)), att(q.size());
  std::vector<float> g(static_cast<size_t>(M * F)), u(g.size());
  model::Embed(m.embedding(), H, kIds, x.data());
  model::KVCache cache = m.NewCache(M);
  // Every linear reading the shown input gets its absmax.
  struct AbsMax final : model::WalkHooks {
    const model::ModelConfig* c = nullptr;
    std::map<std::string, float> absmax;
    void OnInput(const model::WalkPoint& p, const float* in, int64_t rows, int64_t cols) override {
      float a = 0.0f;
      for (int64_t i = 0; i < rows * cols; ++i) a = std::max(a, std::fabs(in[i]));
      for (const model::LinearId id : model::kBlockLinears) {
        if (model::InputOf(id) != p.stage) continue;
        const std::string w =
            model::LayerTensorName(model::WeightPattern(*c->family->names, id), p.layer);
        absmax[w.substr(0, w.size() - 7)] = a;
      }
    }
  } hooks;
  hooks.c = &c;
  hooks.stages = model::kLinearInputs;
  const model::BlockBuffers b{x.data(), h.data(), q.data(), att.data(),
                              h.data(), h.data(), g.data(), u.data()};
  const model::SeqKv seq{&cache, {}};
  model::WalkStack(c, m.layers(), b, M, {&seq, 1}, &hooks);
  return hooks.absmax;
}

// Removes its folder when the test ends (each model folder here is ~40 MB).
struct ScratchDir {
  fs::path dir;
  explicit ScratchDir(fs::path d) : dir(std::move(d)) {}
  ScratchDir(ScratchDir&& o) noexcept : dir(std::exchange(o.dir, fs::path())) {}
  ScratchDir(const ScratchDir&) = delete;
  ~ScratchDir() {
    std::error_code ec;
    if (!dir.empty()) fs::remove_all(dir, ec);
  }
};

// The bundled model with every decoder linear quantized to `weights`, written as a
// compressed-tensors folder with the given activation args and static scales (f32 scales).
struct Written {
  fs::path dir;
  std::map<std::string, QuantizedTensor> q;
  ScratchDir cleanup{dir};
};

Written WriteBundled(const std::string& name, std::string_view weights,
                     const std::optional<io::CtQuantArgs>& acts,
                     const std::map<std::string, float>& input_scales = {}) {
  Written w{testing::TempDir() / name, {}, ScratchDir(testing::TempDir() / name)};
  Result<io::TensorStore> store = io::TensorStore::Open(testing::BundledModel());
  EXPECT_TRUE(store.ok());
  const QuantScheme scheme = *ParseScheme(weights);
  std::vector<io::TensorToWrite> passthrough;
  for (const io::TensorInfo& t : store->tensors()) {
    if (t.shape.size() == 2 && t.name.starts_with("model.layers.")) {
      const std::string module = t.name.substr(0, t.name.size() - 7);
      Result<std::vector<float>> f = model::ReadTensorF32(*store, t.name, t.shape);
      EXPECT_TRUE(f.ok());
      Result<QuantizedTensor> q = Quantize(*f, t.shape[0], t.shape[1], scheme);
      EXPECT_TRUE(q.ok()) << q.error().message();
      w.q[module] = std::move(q).value();
    } else {
      passthrough.push_back({t.name, t.dtype, t.shape, t.data});
    }
  }
  std::vector<io::QuantizedLinearEntry> linears;
  for (const auto& [module, q] : w.q) linears.push_back({module, &q});
  io::CompressedTensorsWriteOptions opt;
  opt.scale_dtype = "f32";
  opt.input_activations = acts;
  opt.input_scales = input_scales;
  Status st = io::WriteCompressedTensors(w.dir, testing::BundledModel(), passthrough, linears, opt);
  EXPECT_TRUE(st.ok()) << st.error().message();
  return w;
}

std::vector<float> Logits(const model::Model& m) {
  std::vector<float> out(kIds.size() * size_t(m.config().vocab_size));
  model::KVCache cache = m.NewCache(int64_t(kIds.size()));
  Status st = m.Forward(kIds, cache, out.data(), true);
  EXPECT_TRUE(st.ok()) << st.error().message();
  return out;
}

struct Diff {
  double mean_abs = 0;  // mean |a - b|
  double mean_ref = 0;  // mean |b|
  int top1_same = 0;    // positions with the same argmax
};

Diff Compare(const std::vector<float>& a, const std::vector<float>& b, int64_t vocab) {
  Diff d;
  for (size_t i = 0; i < a.size(); ++i) {
    d.mean_abs += std::fabs(double(a[i]) - b[i]);
    d.mean_ref += std::fabs(double(b[i]));
  }
  d.mean_abs /= double(a.size());
  d.mean_ref /= double(a.size());
  for (size_t p = 0; p < a.size() / size_t(vocab); ++p) {
    const float* ra = a.data() + p * size_t(vocab);
    const float* rb = b.data() + p * size_t(vocab);
    d.top1_same += std::max_element(ra, ra + vocab) - ra == std::max_element(rb, rb + vocab) - rb;
  }
  return d;
}

// Loads `with_acts` and `weight_only` (same codes), checks every linear's activation row, that
// Apply equals the weight-only Apply on QuantizeActivationsRef(x) bit for bit, and that the logits
// move but stay close. Returns the logits difference for the caller's bounds.
Diff CheckEndToEnd(const Written& with_acts, const Written& weight_only, const ActScheme& want,
                   const std::map<std::string, float>& input_scales) {
  const model::Model qa = LoadOrDie(with_acts.dir);
  const model::Model qw = LoadOrDie(weight_only.dir);
  const model::ModelConfig& c = qa.config();
  int checked = 0;
  for (int64_t l = 0; l < c.layers; ++l) {
    const auto la = LayerLinears(c, qa.layers()[size_t(l)], l);
    const auto lw = LayerLinears(c, qw.layers()[size_t(l)], l);
    for (size_t i = 0; i < la.size(); ++i) {
      const auto& [module, lin] = la[i];
      const model::Linear& plain = *lw[i].second;
      EXPECT_TRUE(lin->act.enabled()) << module;
      if (!lin->act.enabled()) continue;
      EXPECT_EQ(lin->act.scheme->name, want.name) << module;
      EXPECT_FALSE(plain.act.enabled()) << module;
      if (!want.dynamic) {
        EXPECT_EQ(lin->act.scale, input_scales.at(module)) << module;
      }
      EXPECT_TRUE(lin->quant && plain.quant) << module;
      if (!lin->quant || !plain.quant) continue;
      const QuantizedTensor a = kernels::FromKernelLayout(*lin->quant),
                            b = kernels::FromKernelLayout(*plain.quant);
      EXPECT_EQ(a.codes, b.codes) << module;
      EXPECT_EQ(a.scales, b.scales) << module;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 7 * c.layers);

  // One Apply, by hand: x -> QuantizeActivationsRef -> the same weights without activations.
  const model::Linear& down = qa.layers()[1].down;
  const model::Linear& down_w = qw.layers()[1].down;
  const int64_t m = 5;
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  std::vector<float> x(static_cast<size_t>(m * down.k));
  for (float& v : x) v = normal(rng);
  x[3] = 9.0f;  // an outlier
  std::vector<float> y(static_cast<size_t>(m * down.n)), y_manual(y.size()), y_ref(y.size());
  down.Apply(x.data(), y.data(), m);
  std::vector<float> xq(x.size());
  QuantizeActivationsRef(down.act, x.data(), xq.data(), m, down.k);
  EXPECT_NE(xq, x);
  down_w.Apply(xq.data(), y_manual.data(), m);
  if (down.quant->layout == kernels::QuantMatrix::Layout::kInt8x16) {
    // int8 × int8: the exact integer product times the scales (kernels/qgemm.h); the float
    // reference below bounds it too.
    std::vector<float> y_int(y.size());
    kernels::MatMulQuantNTRef(x.data(), *down.quant, down.act, nullptr, y_int.data(), m);
    ExpectBitEqual(y_int, y, "Apply vs the int8 GEMM's reference");
  } else {
    ExpectBitEqual(y_manual, y, "Apply vs weight-only Apply on QuantizeActivationsRef(x)");
  }
  kernels::MatMulDequantNTRef(xq.data(), kernels::FromKernelLayout(*down.quant), nullptr,
                              y_ref.data(), m);
  for (size_t i = 0; i < y.size(); ++i)
    EXPECT_NEAR(y[i], y_ref[i], 1e-4 + 1e-4 * std::fabs(y_ref[i]));
  // Apply from several threads at once (per-thread buffers), different M per thread.
  std::vector<std::vector<float>> ys(4);
#pragma omp parallel for num_threads(2)
  for (int t = 0; t < 4; ++t) {
    std::vector<float> out(static_cast<size_t>((t + 2) * down.n));
    down.Apply(x.data(), out.data(), std::min<int64_t>(m, t + 2));
    ys[size_t(t)] = std::move(out);
  }
  for (int t = 0; t < 4; ++t) {  // one thread each there: not bit for bit
    const size_t rows = size_t(std::min<int64_t>(m, t + 2));
    for (size_t i = 0; i < rows * size_t(down.n); ++i)
      EXPECT_NEAR(ys[size_t(t)][i], y[i], 1e-5 + 1e-5 * std::fabs(y[i])) << t;
  }

  const std::vector<float> la = Logits(qa), lw = Logits(qw), lf = Logits(FpModel());
  const Diff d = Compare(la, lw, c.vocab_size);
  const Diff dw = Compare(lw, lf, c.vocab_size);
  const Diff da = Compare(la, lf, c.vocab_size);
  std::printf(
      "%s: mean |logit| %.3f; mean |Δ| acts vs weight-only %.4f (top-1 %d/%zu); "
      "weight-only vs fp %.4f; acts vs fp %.4f (top-1 %d/%zu)\n",
      std::string(want.name).c_str(), d.mean_ref, d.mean_abs, d.top1_same, kIds.size(), dw.mean_abs,
      da.mean_abs, da.top1_same, kIds.size());
  EXPECT_GT(d.mean_abs, 0.0) << "activation quantization changed nothing";
  return d;
}

TEST(ActivationEndToEnd, W8A8DynamicInt8Tokens) {
  const ActScheme row = Row("int8-token");
  const Written acts = WriteBundled("e2e_w8a8", "int8-channel-sym", io::CtArgsFromActScheme(row));
  const Written plain = WriteBundled("e2e_w8a16", "int8-channel-sym", std::nullopt);
  const Json qc = Json::parse(std::ifstream(acts.dir / "config.json"))["quantization_config"];
  EXPECT_EQ(qc["format"], "int-quantized");
  const Diff d = CheckEndToEnd(acts, plain, row, {});
  EXPECT_LT(d.mean_abs, 0.02 * d.mean_ref);
  EXPECT_GE(d.top1_same, int(kIds.size()) - 1);
}

// The perplexity tests' text: 32 windows of 256 tokens (+1) of the local text, bundled tokenizer.
std::vector<int32_t> PplTokens() {
  auto tok = text::LoadTokenizer(testing::BundledModel());
  EXPECT_TRUE(tok.ok()) << tok.error().message();
  if (!tok.ok()) return {};
  std::ifstream in(testing::LocalText());
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<int32_t> tokens = (*tok)->Encode(text.substr(0, 200000), true);
  tokens.resize(std::min<size_t>(tokens.size(), 32 * 256 + 1));
  return tokens;
}

// W8A8 multiplies int8 by int8 (kernels/qgemm.h): its perplexity equals the float path's (the
// activations quantized, dequantized and multiplied in fp32) up to fp32 rounding, which the
// next layer's int8 rounding can amplify where a value sits on a rounding boundary: on
// WikiText-2 test (375k tokens) 140.9641 vs 140.9762, 8.6e-5 relative; on these 8k tokens of
// the local text 2.8e-4 (2k tokens gave 3.3e-3: the flips average out), and 2e-3 is allowed
// (a wrong scale, zero or row moves it by far more).
// A quantized checkpoint's unquantized bf16 lm_head is held as stored (half the bytes per
// decoded token): decoding gives the fp32 path's bits on the widened weights, prefill (tiles
// before the sgemm) the same products within float rounding.
TEST(ActivationEndToEnd, QuantizedCheckpointKeepsItsBf16LmHead) {
  const Written w = WriteBundled("e2e_bf16_head", "int4-g128-sym", std::nullopt);
  const model::Model a = LoadOrDie(w.dir);
  const model::Linear& head = a.lm_head();
  ASSERT_EQ(head.bf16.size(), size_t(head.n * head.k));
  ASSERT_TRUE(head.weight.empty());
  model::Linear f = head;
  f.bf16.clear();
  for (uint16_t v : head.bf16) f.weight.push_back(BF16ToF32(v));
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  for (int64_t m : {1, 2, 5, 40}) {
    SCOPED_TRACE(m);
    std::vector<float> x(size_t(m * head.k));
    for (float& v : x) v = nd(rng);
    std::vector<float> y(size_t(m * head.n)), yf(y.size());
    head.Apply(x.data(), y.data(), m);
    f.Apply(x.data(), yf.data(), m);
    if (m <= kernels::kGemmNTGemvTokens) {
      EXPECT_EQ(0, std::memcmp(y.data(), yf.data(), y.size() * sizeof(float)));
    } else {
      for (size_t i = 0; i < y.size(); ++i)
        ASSERT_NEAR(y[i], yf[i], 1e-4f * (1 + std::fabs(yf[i])));
    }
  }
  // The fp model keeps fp32 (the calibrated methods run on it).
  EXPECT_TRUE(FpModel().lm_head().bf16.empty());
}

TEST(ActivationEndToEnd, W8A8PerplexityMovesOnlyByFp32Rounding) {
  const Written acts =
      WriteBundled("e2e_w8a8_ppl", "int8-channel-sym", io::CtArgsFromActScheme(Row("int8-token")));
  model::Model a = LoadOrDie(acts.dir), b = LoadOrDie(acts.dir);
  ASSERT_EQ(a.layers()[0].down.quant->layout, kernels::QuantMatrix::Layout::kInt8x16);
  b.UseFloatActivationGemm();
  ASSERT_NE(b.layers()[0].down.quant->layout, kernels::QuantMatrix::Layout::kInt8x16);
  const std::vector<int32_t> tokens = PplTokens();
  ASSERT_EQ(tokens.size(), size_t(32 * 256 + 1));
  eval::WindowOptions win;
  win.ctx = 256;
  Result<eval::PplResult> pa = eval::Perplexity(a, tokens, win),
                          pb = eval::Perplexity(b, tokens, win);
  ASSERT_TRUE(pa.ok() && pb.ok());
  std::printf("W8A8 ppl: int8 GEMM %.6f, float path %.6f\n", pa->ppl, pb->ppl);
  EXPECT_NE(pa->ppl, pb->ppl);  // the two paths really differ, else this compares nothing
  EXPECT_NEAR(pa->ppl, pb->ppl, 2e-3 * pb->ppl);
}

// GGUF prefill multiplies 8-bit activations in blocks of 32 by the blocks' integer levels
// (kernels/cpu/q8_gemm.h, as llama.cpp does): perplexity moves from the float tiles' (decoded
// weights times fp32 activations) by that rounding only. WikiText-2 test: Q4_0 142.9494 ->
// 142.9818 (2.3e-4 relative), Q4_K_M 141.9652 -> 141.9846 (1.4e-4); 2e-3 allowed on 8k tokens
// of the local text (a wrong level, factor or span moves it by far more).
TEST(ActivationEndToEnd, GgufPrefillOnQ8ActivationsMovesPplLittle) {
  const std::vector<int32_t> tokens = PplTokens();
  ASSERT_EQ(tokens.size(), size_t(32 * 256 + 1));
  eval::WindowOptions win;
  win.ctx = 256;
  for (const char* mix : {"Q4_0", "Q4_K_M"}) {
    SCOPED_TRACE(mix);
    const fs::path file = testing::TempDir() / (std::string("q8_prefill_") + mix + ".gguf");
    pipeline::GgufQuantizeOptions opt;
    opt.mix = FindGgufMix(mix);
    ASSERT_NE(opt.mix, nullptr);
    auto r = pipeline::QuantizeToGguf(testing::BundledModel(), file, opt);
    ASSERT_TRUE(r.ok()) << r.error().message();
    Result<model::Model> a = model::Model::LoadGguf(file), b = model::Model::LoadGguf(file);
    ASSERT_TRUE(a.ok() && b.ok());
    if (!kernels::GgmlQ8Runs(*a->layers()[0].down.ggml))
      GTEST_SKIP() << "the integer prefill does not run on this CPU (no AVX512-VNNI)";
    b->UseFloatActivationGemm();
    ASSERT_TRUE(b->layers()[0].down.ggml->float_prefill);
    Result<eval::PplResult> pa = eval::Perplexity(*a, tokens, win),
                            pb = eval::Perplexity(*b, tokens, win);
    ASSERT_TRUE(pa.ok() && pb.ok());
    std::printf("%s ppl: Q8 prefill %.6f, float tiles %.6f\n", mix, pa->ppl, pb->ppl);
    EXPECT_NE(pa->ppl, pb->ppl);  // the two paths really differ, else this compares nothing
    EXPECT_NEAR(pa->ppl, pb->ppl, 2e-3 * pb->ppl);
  }
}

// Integer weight-only prefill multiplies 16-bit activations (spans of up to 128, step 2^-15 of
// the span's largest value) by the codes' levels (kernels/cpu/a16_gemm.h): perplexity moves from
// the float tiles' by that rounding only, two orders of magnitude below the Q8 prefill's.
TEST(ActivationEndToEnd, WeightOnlyPrefillOnA16ActivationsMovesPplLittle) {
  if (!kernels::A16GemmFast())
    GTEST_SKIP() << "the integer prefill does not run on this CPU (no AVX512-VNNI)";
  const std::vector<int32_t> tokens = PplTokens();
  ASSERT_EQ(tokens.size(), size_t(32 * 256 + 1));
  eval::WindowOptions win;
  win.ctx = 256;
  for (const char* spec : {"int4-g128-asym", "int8-channel-sym"}) {
    SCOPED_TRACE(spec);
    const Written w = WriteBundled(std::string("e2e_a16_") + spec, spec, std::nullopt);
    model::Model a = LoadOrDie(w.dir), b = LoadOrDie(w.dir);
    b.UseFloatActivationGemm();
    ASSERT_TRUE(b.layers()[0].down.quant->float_prefill);
    ASSERT_FALSE(a.layers()[0].down.quant->float_prefill);
    Result<eval::PplResult> pa = eval::Perplexity(a, tokens, win),
                            pb = eval::Perplexity(b, tokens, win);
    ASSERT_TRUE(pa.ok() && pb.ok());
    std::printf("%s ppl: A16 prefill %.8f, float tiles %.8f\n", spec, pa->ppl, pb->ppl);
    EXPECT_NE(pa->ppl, pb->ppl);  // the two paths really differ, else this compares nothing
    EXPECT_NEAR(pa->ppl, pb->ppl, 2e-5 * pb->ppl);
  }
}

TEST(ActivationEndToEnd, Fp8StaticTensorWithInputScales) {
  const ActScheme row = Row("fp8-e4m3-tensor");
  std::map<std::string, float> scales;
  for (const auto& [module, absmax] : CalibrateAbsMax(FpModel())) {
    scales[module] = ActScaleFromAbsMax(row, absmax);
  }
  ASSERT_EQ(scales.size(), size_t(7 * FpModel().config().layers));
  const Written acts =
      WriteBundled("e2e_fp8", "fp8-e4m3-tensor", io::CtArgsFromActScheme(row), scales);
  const Written plain = WriteBundled("e2e_fp8_w", "fp8-e4m3-tensor", std::nullopt);
  const Json qc = Json::parse(std::ifstream(acts.dir / "config.json"))["quantization_config"];
  EXPECT_EQ(qc["format"], "float-quantized");
  EXPECT_EQ(qc["config_groups"]["group_0"]["input_activations"]["observer"], "minmax");
  const Diff d = CheckEndToEnd(acts, plain, row, scales);
  EXPECT_LT(d.mean_abs, 0.05 * d.mean_ref);
  EXPECT_GE(d.top1_same, int(kIds.size()) - 2);
}

// A copy of `src` (model.safetensors hard-linked) whose quantization_config `edit` changes.
fs::path EditedCopy(const fs::path& src, const std::string& name,
                    const std::function<void(Json&)>& edit) {
  const fs::path dir = testing::TempDir() / name;
  fs::create_directories(dir);
  fs::create_hard_link(src / "model.safetensors", dir / "model.safetensors");
  Json config = Json::parse(std::ifstream(src / "config.json"));
  edit(config["quantization_config"]);
  std::ofstream(dir / "config.json") << config.dump(2);
  return dir;
}

TEST(ActivationEndToEnd, LoadErrors) {
  const ActScheme row = Row("int8-token");
  const Written w = WriteBundled("e2e_errors", "int8-channel-sym", io::CtArgsFromActScheme(row));
  auto expect_error = [](const fs::path& dir, std::string_view want) {
    const ScratchDir cleanup(dir);
    Result<model::Model> m = model::Model::Load(dir);
    ASSERT_FALSE(m.ok()) << want;
    EXPECT_NE(m.error().message().find(want), std::string::npos) << m.error().message();
  };
  // Static per-tensor args, but the folder has no input_scale tensors.
  expect_error(EditedCopy(w.dir, "e2e_no_scale",
                          [](Json& qc) {
                            Json& ia = qc["config_groups"]["group_0"]["input_activations"];
                            ia["strategy"] = "tensor";
                            ia["dynamic"] = false;
                          }),
               "input_scale', which is missing");
  expect_error(EditedCopy(w.dir, "e2e_output_acts",
                          [](Json& qc) {
                            Json& g = qc["config_groups"]["group_0"];
                            g["output_activations"] = g["input_activations"];
                          }),
               "output_activations quantization is not supported");
  expect_error(EditedCopy(w.dir, "e2e_asym_acts",
                          [](Json& qc) {
                            qc["config_groups"]["group_0"]["input_activations"]["symmetric"] =
                                false;
                          }),
               "asymmetric activations are not supported");
}

}  // namespace
}  // namespace qf
