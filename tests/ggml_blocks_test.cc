// ggml block formats: every table row against ggml itself (FNV-1a digests of the bytes
// ggml_quantize_chunk writes and of the floats ggml's dequantize_row_X reads back, with and
// without an importance vector), round-trip error bounds per type, hand-made blocks decoded by
// the layout of ggml-common.h, and bad sizes.
//
// The digests were produced by a small C program linked against ggml-base of
// ggerganov/llama.cpp c392e50 (built with GGML_NATIVE=OFF, -ffp-contract=off; another
// llama.cpp build, GGML_NATIVE=ON, gave the same digests), quantizing the tensors of MakeTensor
// below with ggml_quantize_chunk (Q8_1 / Q8_K: quantize_row_q8_1_ref / quantize_row_q8_K_ref) into
// a zeroed buffer and dequantizing with ggml_get_type_traits(type)->to_float (Q8_K:
// dequantize_row_q8_K; Q8_1, which ggml cannot dequantize: q * d). Only digests are kept.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "formats/ggml_blocks.h"
#include "formats/quantize.h"
#include "io/gguf.h"

// The generator must round as the C one did (no fused multiply-add, even under -march=native).
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace qf {
namespace {

// ---- the test tensors (the same formula as the ggml-side generator) --------------------------

struct Lcg {
  uint64_t state;
  float U() {  // [0, 1), 24 bits
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return float(uint32_t(state >> 40)) * (1.0f / 16777216.0f);
  }
  float N() {  // sum of three uniforms, centred: a bell on (-1.5, 1.5)
    const float a = U();
    const float b = U();
    const float c = U();
    return a + b + c - 1.5f;
  }
};

struct Tensor {
  std::string_view name;
  int64_t rows, cols;
  std::vector<float> x;           // [rows, cols]
  std::vector<float> importance;  // [cols]
};

// 0 "gauss": smooth weights, four row scales; 1 "outliers": 2% of weights x30; 2 "special": a
// zero row, constant rows, a leading zero run, all-positive / all-negative rows, values near
// fp16's subnormal scales (1e-6) and large ones (100) in alternate zero blocks; 3 "lattice":
// multiples of 1/8 in [-0.5, 0.5] (exact ties for every rounding).
Tensor MakeTensor(int t) {
  static constexpr std::string_view kNames[4] = {"gauss", "outliers", "special", "lattice"};
  static constexpr int64_t kRows[4] = {16, 8, 8, 4}, kCols[4] = {512, 256, 256, 256};
  Tensor out{kNames[t], kRows[t], kCols[t], {}, {}};
  out.x.resize(static_cast<size_t>(out.rows * out.cols));
  Lcg g{uint64_t(1000 + t)};
  for (int64_t r = 0; r < out.rows; ++r) {
    for (int64_t c = 0; c < out.cols; ++c) {
      const float v = g.N();
      const float u = g.U();
      float y = 0;
      if (t == 0) {
        y = v * (0.02f * float(1 + r % 4));
      } else if (t == 1) {
        y = v * 0.03f;
        if (u < 0.02f) y *= 30.0f;
      } else if (t == 2) {
        switch (r) {
          case 0:
            y = 0.0f;
            break;
          case 1:
            y = 0.25f;
            break;
          case 2:
            y = -0.0625f;
            break;
          case 3:
            y = c < 64 ? 0.0f : v * 0.05f;
            break;
          case 4:
            y = std::fabs(v) * 0.1f + 0.01f;
            break;
          case 5:
            y = -std::fabs(v) * 0.1f;
            break;
          case 6:
            y = v * 1e-6f;
            break;
          default:
            y = (c / 32) % 2 ? v * 100.0f : 0.0f;
            break;
        }
      } else {
        y = float(int(u * 9.0f) - 4) * 0.125f;
      }
      out.x[static_cast<size_t>(r * out.cols + c)] = y;
    }
  }
  Lcg gi{uint64_t(2000 + t)};
  out.importance.resize(static_cast<size_t>(out.cols));
  for (float& w : out.importance) {
    const float u = gi.U();
    w = 0.01f + 2.0f * u * u;
  }
  return out;
}

uint64_t Fnv1a(const void* p, size_t n) {
  const unsigned char* b = static_cast<const unsigned char*>(p);
  uint64_t h = 14695981039346656037ULL;
  for (size_t i = 0; i < n; ++i) {
    h ^= b[i];
    h *= 1099511628211ULL;
  }
  return h;
}

// ---- ggml's digests -----------------------------------------------------------------------

struct InputDigest {
  uint64_t x, importance;
};
constexpr InputDigest kInputs[4] = {
    {0xe55069e61a763453ull, 0x8c3d2be106c69218ull},
    {0xb17267035c1e1150ull, 0xe9e9bcd1704bf41bull},
    {0x5b31d01ec5f931efull, 0x476a701900f66fe7ull},
    {0x9804d43859cee70bull, 0x805e19bc5e20c258ull},
};

struct Expected {
  std::string_view tensor, type;
  uint64_t bytes, floats;          // without importance
  uint64_t bytes_imp, floats_imp;  // with the tensor's importance
  double werr, werr_imp;           // sum importance[c] * (x - ggml's decode)^2, for reference
};
constexpr Expected kExpected[] = {
    {"gauss", "Q4_0", 0xa86c584de001b32eull, 0xae5d447a3965d9b5ull, 0xdb27c6838451beabull,
     0xb7a1d1e2bb24015cull, 0.0264384655, 0.0214191847},
    {"gauss", "Q4_1", 0xa0ed8ed39417d622ull, 0xcfe4fee05f5d92bcull, 0x6269e08822667c4cull,
     0x361f0f5dab1e2163ull, 0.0230063171, 0.0160581686},
    {"gauss", "Q5_0", 0x8aa5bd07c3a628ffull, 0xc5b1a13b0f7bedbdull, 0x6db458e3fca9ecf2ull,
     0xba5f45c1d52fd9b0ull, 0.00648677191, 0.00540421174},
    {"gauss", "Q5_1", 0x0049f35b0d1284ffull, 0x967f131d5365ae13ull, 0x5b3fd2673796f8ebull,
     0x385b132999156c4bull, 0.00547379997, 0.00373272844},
    {"gauss", "Q8_0", 0x3ed77be6b3ba7de9ull, 0x65e145c5a683d5ddull, 0x3ed77be6b3ba7de9ull,
     0x65e145c5a683d5ddull, 0.000103381201, 0.000103381201},
    {"gauss", "Q8_1", 0x4ab7d7d597f50e94ull, 0x65e145c5a683d5ddull, 0x4ab7d7d597f50e94ull,
     0x65e145c5a683d5ddull, 0.000103381201, 0.000103381201},
    {"gauss", "Q2_K", 0x2ee444054886d95bull, 0x219a41e8a4cd7863ull, 0xc8d509ee660352e5ull,
     0xe442e4183b7ed456ull, 0.338893008, 0.227877056},
    {"gauss", "Q3_K", 0x2de8b644ae34b192ull, 0x4459a2fe0a733e4bull, 0x36c2e4a3525191c2ull,
     0x6311d6a19ae2525bull, 0.0879001756, 0.0729622155},
    {"gauss", "Q4_K", 0x9ad2b2183adfdef6ull, 0x54a03146bd2a59dfull, 0x0a1b012ab1d70b6aull,
     0xeb241ad0d60a0463ull, 0.0186561668, 0.0164983295},
    {"gauss", "Q5_K", 0xbb3ce622176de2c3ull, 0x1945e4f320a7f897ull, 0x6c4b54f4a067ad26ull,
     0x2dceb70b4909ff08ull, 0.0047806843, 0.00414004816},
    {"gauss", "Q6_K", 0x75f975c174f2f7c1ull, 0xdbab56f4da6d6428ull, 0x6f2ff1fba7f21c4dull,
     0xb4000c4557bdf56cull, 0.00117924488, 0.00100700003},
    {"gauss", "Q8_K", 0x7d9ab313ca9a5083ull, 0xcd0b41ffc6b36cf9ull, 0x7d9ab313ca9a5083ull,
     0xcd0b41ffc6b36cf9ull, 0.000148381227, 0.000148381227},
    {"gauss", "IQ4_NL", 0xb7bbe8e93f2a10d3ull, 0xb090be1f2068ecbaull, 0xfd88a634f848cb86ull,
     0xb8992704785c326eull, 0.0215614148, 0.0194378132},
    {"gauss", "IQ4_XS", 0xa21d8c2f412ac544ull, 0xaf2dd22ec9e8b0c1ull, 0x543f87234a141cb7ull,
     0x054738e09d180570ull, 0.0216806025, 0.0198227847},
    {"outliers", "Q4_0", 0xdf84656b68ed2bfaull, 0xde6e826cd2a1a1feull, 0xd771a67146a162eaull,
     0x6ddd14368903cd66ull, 0.0972197669, 0.0912481727},
    {"outliers", "Q4_1", 0x443109d8d863071full, 0x64d303fb668b1302ull, 0x908c32e3385cb097ull,
     0x08be1f5872a2a105ull, 0.0952301309, 0.0515625632},
    {"outliers", "Q5_0", 0xf409227fbf6f423cull, 0x41c1ffd1be3993ddull, 0x3457b10f2e54bd6aull,
     0x9ef805f9b8a6fc37ull, 0.0450722554, 0.0445174792},
    {"outliers", "Q5_1", 0x770926aac89be94aull, 0x778fed3dc5240ff5ull, 0xfdf1f951e29ce8e2ull,
     0x62159c1ed17fbf0aull, 0.0188316744, 0.0145512505},
    {"outliers", "Q8_0", 0x4f0bec2ea75d65dbull, 0x2a11c197afdce57full, 0x4f0bec2ea75d65dbull,
     0x2a11c197afdce57full, 0.000852122658, 0.000852122658},
    {"outliers", "Q8_1", 0x0fd24551ff034e4eull, 0x2a11c197afdce57full, 0x0fd24551ff034e4eull,
     0x2a11c197afdce57full, 0.000852122658, 0.000852122658},
    {"outliers", "Q2_K", 0xd27102706c9467a0ull, 0xc3c6ccf7bb0c203full, 0x524e99fbb7c0d9c3ull,
     0xfa8d12cf40e7d158ull, 0.332787331, 0.248579862},
    {"outliers", "Q3_K", 0x489b32db89db42aeull, 0x6f1e0a5062149623ull, 0xfcab8550344689d7ull,
     0xd61a00f065c39a3dull, 0.0766668515, 0.0744233726},
    {"outliers", "Q4_K", 0xbf79f515f5036459ull, 0x9db7e33d8d41bfe6ull, 0x9ff3a3a12a8ddd14ull,
     0x64c5718e50a52c7dull, 0.060471185, 0.0545980637},
    {"outliers", "Q5_K", 0x0f7914f2bf60ade7ull, 0x31a5ad14ec1d2377ull, 0x5d854fa5a0a25e3full,
     0x32a71c0c2f506c8full, 0.0189433234, 0.0170980453},
    {"outliers", "Q6_K", 0x35e833f9fde3bf1bull, 0x1ff7b6cbf1fd0ecfull, 0xf4cfb1ff5aa54b8bull,
     0x4f7b3d1cd29cc454ull, 0.00809027152, 0.00783641759},
    {"outliers", "Q8_K", 0xdefe636768898b2aull, 0x14ce8706bad96320ull, 0xdefe636768898b2aull,
     0x14ce8706bad96320ull, 0.00313709738, 0.00313709738},
    {"outliers", "IQ4_NL", 0xf833cdcc4b8d314cull, 0x5954ba4a758e791bull, 0x2e7b63e6003afed0ull,
     0xa1c09a28c0a961d1ull, 0.0770476991, 0.0710215387},
    {"outliers", "IQ4_XS", 0xa3acb120dbe016f5ull, 0xd6c66a871a3b337cull, 0x1a347e854b3fef49ull,
     0x9fb71e6a8a676beaull, 0.0787768769, 0.0725521446},
    {"special", "Q4_0", 0x0b6e5e291d45146full, 0xe0f2ff004eb542d0ull, 0xda04297ed50304e6ull,
     0xe962dd65a35e5563ull, 1349.43367, 1291.58288},
    {"special", "Q4_1", 0x225d73b63c555566ull, 0x7cb1ea7feaebcfb2ull, 0xf3790808669fcb2cull,
     0x4d7fa0f5e6fbd684ull, 1139.0003, 926.726023},
    {"special", "Q5_0", 0x830d84cef9efc8e7ull, 0x0a70eae417d87c58ull, 0x9dcbd66947112875ull,
     0x2739a78c159c6e42ull, 313.83928, 278.066888},
    {"special", "Q5_1", 0xb20b0f77a041a2afull, 0x063321235c3a5d2aull, 0x37471572b7e5b762ull,
     0xbe280691672b65eaull, 261.212666, 209.770255},
    {"special", "Q8_0", 0x3957593a6ed747f0ull, 0x9932d3b7c2f8c68dull, 0x3957593a6ed747f0ull,
     0x9932d3b7c2f8c68dull, 5.58857484, 5.58857484},
    {"special", "Q8_1", 0xb55cd5fd706690edull, 0x9932d3b7c2f8c68dull, 0xb55cd5fd706690edull,
     0x9932d3b7c2f8c68dull, 5.58857484, 5.58857484},
    {"special", "Q2_K", 0x45c370e2dcbb774cull, 0xaafb7bb96fc3fbb5ull, 0x4bf1e433964430caull,
     0xe99ddb7cc365fc42ull, 16950.3652, 9758.90117},
    {"special", "Q3_K", 0x8ad8270735f87318ull, 0x948229477dc79968ull, 0x5f5432a2e948579cull,
     0x22ee2134b502e99full, 3575.90956, 3083.17851},
    {"special", "Q4_K", 0xcc549d2f6a3cbae8ull, 0xf511c7c6ab16981full, 0xa74ccccb4caf2b7full,
     0x444cfcd1ab64b177ull, 980.123186, 937.129294},
    {"special", "Q5_K", 0xb1d78f57cd75b848ull, 0x62aa87d3ca958de7ull, 0xd17d1dc672991b1bull,
     0xba104b9e972ec01aull, 232.415647, 220.450771},
    {"special", "Q6_K", 0x959049a6359efcc3ull, 0xd35846e69912c23bull, 0x482559bb4fcc1974ull,
     0xc17dda8d20a22cecull, 78.4511035, 67.9643437},
    {"special", "Q8_K", 0x5613d1a88585c430ull, 0xc8e1a43a10110491ull, 0x5613d1a88585c430ull,
     0xc8e1a43a10110491ull, 8.80123663, 8.80123663},
    {"special", "IQ4_NL", 0xf62ef5acf66f20f3ull, 0x6f34af655a88ecd0ull, 0x30fbf15256075591ull,
     0xe92aea470d196ab2ull, 985.866971, 888.2407},
    {"special", "IQ4_XS", 0x35ecc514491af1c1ull, 0x0f653da2d033b7e1ull, 0x0372c3a11baaa357ull,
     0x1f63b0eaf232780bull, 1042.32703, 904.300115},
    {"lattice", "Q4_0", 0x7258bd3151709e94ull, 0x7039af53f7bc02cbull, 0x780a34fd199feb6full,
     0x932d784f13e9a126ull, 0.305424102, 0.183431327},
    {"lattice", "Q4_1", 0x8f3ce4adc87cef10ull, 0x518c55103bf3c7ceull, 0x8dcdc1c46057aa01ull,
     0xc8825d260beaa609ull, 0.249557812, 0.136605397},
    {"lattice", "Q5_0", 0xeb91bec85c33ea75ull, 0x38f6548fc410b16bull, 0xa2b57dfa3fa280f7ull,
     0x588c12a0130f93abull, 0.0763560256, 0.0428873716},
    {"lattice", "Q5_1", 0xc1310fbeb0f4c1ddull, 0xacb4b2ae3823fcbcull, 0x6d5b77538d93460full,
     0x19e8cde87d693e75ull, 0.0581050002, 0.0316145399},
    {"lattice", "Q8_0", 0x29b0f52dd927a6fbull, 0xd39cfdc947d3b21aull, 0x29b0f52dd927a6fbull,
     0xd39cfdc947d3b21aull, 0.00087791737, 0.00087791737},
    {"lattice", "Q8_1", 0xfcd198bb4474e870ull, 0xd39cfdc947d3b21aull, 0xfcd198bb4474e870ull,
     0xd39cfdc947d3b21aull, 0.00087791737, 0.00087791737},
    {"lattice", "Q2_K", 0x91ded1e4282980d8ull, 0x047417ccab609ee0ull, 0x1fd7e12feafadf36ull,
     0x98f0b96609f155d7ull, 4.05705613, 2.78335368},
    {"lattice", "Q3_K", 0x7a5a3989f43ba9b7ull, 0x8ff165fad00520aaull, 0xc393b246ec948822ull,
     0x99f7084fe1673147ull, 0.698882949, 0.492050301},
    {"lattice", "Q4_K", 0xc2a5206f6afee9b2ull, 0xa58216ce6f92b9baull, 0xddcfe11e585728fdull,
     0xa46d21bb69370b3eull, 0.18950919, 0.134440412},
    {"lattice", "Q5_K", 0x696cf363017d3512ull, 0xb1760aa28d9f2274ull, 0x6adc6183c32716e6ull,
     0x54fce5fb6c36c8b0ull, 0.0476395633, 0.0353515877},
    {"lattice", "Q6_K", 0x5a4268c7086fefefull, 0xe6e27d80a6ff6d7dull, 0xf421d91b78801d80ull,
     0xbf3311024fe43575ull, 0.0100741497, 0.00632764887},
    {"lattice", "Q8_K", 0xa6be94f9bcf35953ull, 0x7705b7018fe3b890ull, 0xa6be94f9bcf35953ull,
     0x7705b7018fe3b890ull, 0.000883656586, 0.000883656586},
    {"lattice", "IQ4_NL", 0x05d7aefad187e49aull, 0xea317708c1dc0ef3ull, 0x2b8a5e517e2c3d5cull,
     0x2ab331965c634ddcull, 0.331089065, 0.294566365},
    {"lattice", "IQ4_XS", 0xc674a771b2afbb92ull, 0x77774c9aae385d4eull, 0x3ac8ef56c0bf2f15ull,
     0x996e2888c164a7c8ull, 0.333052093, 0.299615522},
};

const Tensor& TestTensor(int t) {
  static const std::vector<Tensor> tensors = [] {
    std::vector<Tensor> v;
    for (int i = 0; i < 4; ++i) v.push_back(MakeTensor(i));
    return v;
  }();
  return tensors[static_cast<size_t>(t)];
}

int TensorIndex(std::string_view name) {
  for (int t = 0; t < 4; ++t) {
    if (TestTensor(t).name == name) return t;
  }
  return -1;
}

TEST(GgmlBlocks, GeneratorReproducesTheGgmlSideInputs) {
  for (int t = 0; t < 4; ++t) {
    const Tensor& x = TestTensor(t);
    EXPECT_EQ(Fnv1a(x.x.data(), x.x.size() * 4), kInputs[t].x) << x.name;
    EXPECT_EQ(Fnv1a(x.importance.data(), x.importance.size() * 4), kInputs[t].importance) << x.name;
  }
}

// Every type, every tensor, with and without importance: the bytes ggml writes and the floats
// ggml reads back.
TEST(GgmlBlocks, BitExactWithGgml) {
  int checked = 0;
  for (const Expected& e : kExpected) {
    const GgmlBlockType* t = FindGgmlBlockType(e.type);
    ASSERT_NE(t, nullptr) << e.type;
    const Tensor& x = TestTensor(TensorIndex(e.tensor));
    const uint64_t bytes = *GgmlRowsBytes(*t, x.rows, x.cols);
    for (int with_importance = 0; with_importance < 2; ++with_importance) {
      std::vector<std::byte> q(bytes);
      std::vector<float> y(x.x.size());
      const float* imp = with_importance ? x.importance.data() : nullptr;
      ASSERT_TRUE(QuantizeRowsGgml(*t, x.x.data(), x.rows, x.cols, imp, q.data()).ok());
      ASSERT_TRUE(DequantizeRowsGgml(*t, q.data(), x.rows, x.cols, y.data()).ok());
      EXPECT_EQ(Fnv1a(q.data(), q.size()), with_importance ? e.bytes_imp : e.bytes)
          << e.type << " " << e.tensor << (with_importance ? " with importance" : "");
      EXPECT_EQ(Fnv1a(y.data(), y.size() * 4), with_importance ? e.floats_imp : e.floats)
          << e.type << " " << e.tensor << (with_importance ? " with importance" : "");
      ++checked;
    }
  }
  EXPECT_EQ(checked, 2 * 4 * int(GgmlBlockTypes().size()));
}

double WeightedError(const Tensor& x, const std::vector<float>& y) {
  double e = 0;
  for (int64_t r = 0; r < x.rows; ++r) {
    for (int64_t c = 0; c < x.cols; ++c) {
      const size_t i = static_cast<size_t>(r * x.cols + c);
      const double d = double(x.x[i]) - double(y[i]);
      e += x.importance[static_cast<size_t>(c)] * d * d;
    }
  }
  return e;
}

// The importance paths exist to lower the importance-weighted error; on the smooth tensor they
// do for every weight type (ggml's own figures, kExpected.werr*, agree).
TEST(GgmlBlocks, ImportanceLowersWeightedError) {
  const Tensor& x = TestTensor(0);
  for (const GgmlBlockType& t : GgmlBlockTypes()) {
    std::vector<float> plain(x.x.size()), weighted(x.x.size());
    ASSERT_TRUE(QuantizeDequantizeGgml(t, x.x.data(), x.rows, x.cols, nullptr, plain.data()).ok());
    ASSERT_TRUE(
        QuantizeDequantizeGgml(t, x.x.data(), x.rows, x.cols, x.importance.data(), weighted.data())
            .ok());
    const double e_plain = WeightedError(x, plain), e_weighted = WeightedError(x, weighted);
    if (t.id == 8 || t.activation_only) {  // Q8_0, Q8_1, Q8_K ignore importance
      EXPECT_EQ(e_plain, e_weighted) << t.name;
    } else {
      EXPECT_LT(e_weighted, e_plain) << t.name;
    }
  }
}

// Relative RMS error ||x - y|| / ||x|| on the smooth tensor. Bounds: the measured value (in the
// comment) plus ~10%; they fall by about 2x per added bit, with the k-quants' finer
// sub-blocks and fitted scales ahead of the legacy formats of the same size.
TEST(GgmlBlocks, RoundTripErrorWithinEachTypesBound) {
  struct Bound {
    std::string_view type;
    double rel_rmse;
  };
  constexpr Bound kBounds[] = {
      // clang-format off
      {"Q4_0", 0.089},  // 0.0805
      {"Q4_1", 0.083},  // 0.0747
      {"Q5_0", 0.045},  // 0.0401
      {"Q5_1", 0.041},  // 0.0365
      {"Q8_0", 0.0056},  // 0.0050
      {"Q8_1", 0.0056},  // 0.0050
      {"Q2_K", 0.32},  // 0.2871
      {"Q3_K", 0.16},  // 0.1438
      {"Q4_K", 0.075},  // 0.0676
      {"Q5_K", 0.038},  // 0.0343
      {"Q6_K", 0.019},  // 0.0170
      {"Q8_K", 0.0066},  // 0.0060
      {"IQ4_NL", 0.081},  // 0.0732
      {"IQ4_XS", 0.081},  // 0.0736
      // clang-format on
  };
  const Tensor& x = TestTensor(0);
  for (const Bound& b : kBounds) {
    const GgmlBlockType* t = FindGgmlBlockType(b.type);
    ASSERT_NE(t, nullptr);
    std::vector<float> y(x.x.size());
    ASSERT_TRUE(QuantizeDequantizeGgml(*t, x.x.data(), x.rows, x.cols, nullptr, y.data()).ok());
    double num = 0, den = 0;
    for (size_t i = 0; i < y.size(); ++i) {
      num += (double(x.x[i]) - y[i]) * (double(x.x[i]) - y[i]);
      den += double(x.x[i]) * x.x[i];
    }
    EXPECT_LE(std::sqrt(num / den), b.rel_rmse) << b.type;
  }
}

// ---- the table ------------------------------------------------------------------------------

TEST(GgmlBlocks, TableRowsAndLookups) {
  ASSERT_EQ(GgmlBlockTypes().size(), 14u);
  int last_id = -1;
  for (const GgmlBlockType& t : GgmlBlockTypes()) {
    EXPECT_GT(t.id, last_id) << "ordered by id";
    last_id = t.id;
    EXPECT_EQ(FindGgmlBlockType(t.id), &t);
    EXPECT_EQ(FindGgmlBlockType(t.name), &t);
    // The GGUF reader's table (every ggml type) agrees on the block geometry.
    const io::GgmlTypeInfo* info = io::FindGgmlType(uint32_t(t.id));
    ASSERT_NE(info, nullptr) << t.name;
    EXPECT_EQ(info->block_size, t.block) << t.name;
    EXPECT_EQ(info->type_size, t.block_bytes) << t.name;
  }
  EXPECT_EQ(FindGgmlBlockType("q4_k"), FindGgmlBlockType(12));
  EXPECT_EQ(FindGgmlBlockType("iq4_xs")->id, 23);
  EXPECT_EQ(FindGgmlBlockType("Q4_2"), nullptr);
  EXPECT_EQ(FindGgmlBlockType("F16"), nullptr);
  EXPECT_EQ(FindGgmlBlockType(4), nullptr);
  EXPECT_EQ(FindGgmlBlockType(16), nullptr);  // IQ2_XXS: not in this table
  EXPECT_TRUE(FindGgmlBlockType("Q8_K")->activation_only);
  EXPECT_FALSE(FindGgmlBlockType("Q8_0")->activation_only);
  // Bits per weight (FORMATS.md).
  const std::pair<std::string_view, double> kBpw[] = {
      {"Q4_0", 4.5},    {"Q4_1", 5.0},   {"Q5_0", 5.5},    {"Q5_1", 6.0},   {"Q8_0", 8.5},
      {"Q8_1", 9.0},    {"Q2_K", 2.625}, {"Q3_K", 3.4375}, {"Q4_K", 4.5},   {"Q5_K", 5.5},
      {"Q6_K", 6.5625}, {"Q8_K", 9.125}, {"IQ4_NL", 4.5},  {"IQ4_XS", 4.25}};
  for (const auto& [name, bpw] : kBpw) EXPECT_EQ(FindGgmlBlockType(name)->bits_per_weight(), bpw);
}

TEST(GgmlBlocks, BadSizesAreErrors) {
  const GgmlBlockType& q4_0 = *FindGgmlBlockType("Q4_0");
  const GgmlBlockType& q4_k = *FindGgmlBlockType("Q4_K");
  std::vector<float> x(512, 0.5f), y(512);
  std::vector<std::byte> q(4096);
  EXPECT_EQ(*GgmlRowsBytes(q4_0, 2, 64), 2u * 2 * 18);
  EXPECT_EQ(*GgmlRowsBytes(q4_k, 0, 256), 0u);
  EXPECT_FALSE(GgmlRowsBytes(q4_0, 1, 48).ok());
  EXPECT_FALSE(GgmlRowsBytes(q4_0, 1, 0).ok());
  EXPECT_FALSE(GgmlRowsBytes(q4_0, -1, 32).ok());
  EXPECT_FALSE(GgmlRowsBytes(q4_0, INT64_MAX / 2, 1LL << 40).ok());
  const Status s = QuantizeRowsGgml(q4_k, x.data(), 2, 128, nullptr, q.data());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("Q4_K"), std::string::npos) << s.error().message();
  EXPECT_NE(s.error().message().find("256"), std::string::npos) << s.error().message();
  EXPECT_FALSE(DequantizeRowsGgml(q4_k, q.data(), 1, 100, y.data()).ok());
  EXPECT_FALSE(QuantizeDequantizeGgml(q4_0, x.data(), 1, 33, nullptr, y.data()).ok());
  EXPECT_TRUE(QuantizeRowsGgml(q4_0, x.data(), 0, 32, nullptr, q.data()).ok());
  // Importance must be finite and >= 0 (zeros allowed).
  std::vector<float> imp(256, 1.0f);
  imp[7] = 0.0f;
  EXPECT_TRUE(QuantizeRowsGgml(q4_k, x.data(), 2, 256, imp.data(), q.data()).ok());
  imp[9] = -1.0f;
  const Status neg = QuantizeRowsGgml(q4_k, x.data(), 2, 256, imp.data(), q.data());
  ASSERT_FALSE(neg.ok());
  EXPECT_NE(neg.error().message().find("column 9"), std::string::npos) << neg.error().message();
  imp[9] = NAN;
  EXPECT_FALSE(QuantizeDequantizeGgml(q4_k, x.data(), 2, 256, imp.data(), y.data()).ok());
}

// Rows run in parallel for large tensors; the bytes are those of one row at a time, and the
// fused helper (also in place) gives the floats of quantize + dequantize.
TEST(GgmlBlocks, ParallelRowsAndFusedHelperMatchRowByRow) {
  Lcg g{7};
  const int64_t rows = 96, cols = 1024;  // above the parallel threshold
  std::vector<float> x(static_cast<size_t>(rows * cols)), imp(static_cast<size_t>(cols));
  for (float& v : x) v = g.N() * 0.05f;
  for (float& v : imp) v = 0.1f + g.U();
  for (const char* name : {"Q4_0", "Q3_K", "IQ4_XS"}) {
    const GgmlBlockType& t = *FindGgmlBlockType(name);
    const uint64_t bytes = *GgmlRowsBytes(t, rows, cols);
    const size_t row_bytes = bytes / rows;
    std::vector<std::byte> all(bytes), one(row_bytes);
    ASSERT_TRUE(QuantizeRowsGgml(t, x.data(), rows, cols, imp.data(), all.data()).ok());
    for (int64_t r = 0; r < rows; ++r) {
      t.encode(x.data() + r * cols, cols, imp.data(), one.data());
      ASSERT_EQ(std::memcmp(one.data(), all.data() + r * row_bytes, row_bytes), 0) << name << r;
    }
    std::vector<float> y(x.size()), fused(x.size());
    ASSERT_TRUE(DequantizeRowsGgml(t, all.data(), rows, cols, y.data()).ok());
    ASSERT_TRUE(QuantizeDequantizeGgml(t, x.data(), rows, cols, imp.data(), fused.data()).ok());
    EXPECT_EQ(std::memcmp(y.data(), fused.data(), y.size() * 4), 0) << name;
    std::vector<float> in_place = x;
    ASSERT_TRUE(
        QuantizeDequantizeGgml(t, in_place.data(), rows, cols, imp.data(), in_place.data()).ok());
    EXPECT_EQ(std::memcmp(y.data(), in_place.data(), y.size() * 4), 0) << name;
  }
}

// ---- hand-made blocks, decoded by the layouts of ggml-common.h ------------------------------

std::vector<float> Decode(std::string_view type, const std::vector<uint8_t>& block) {
  const GgmlBlockType& t = *FindGgmlBlockType(type);
  EXPECT_EQ(block.size(), t.block_bytes) << type;
  std::vector<float> y(static_cast<size_t>(t.block));
  EXPECT_TRUE(
      DequantizeRowsGgml(t, reinterpret_cast<const std::byte*>(block.data()), 1, t.block, y.data())
          .ok());
  return y;
}
void PutHalf(std::vector<uint8_t>& b, size_t at, float v) {
  const uint16_t h = F16BitsRne(v);
  b[at] = uint8_t(h);
  b[at + 1] = uint8_t(h >> 8);
}

TEST(GgmlBlocks, HandMadeLegacyBlocks) {
  {  // Q4_0: byte j = code j (low) | code j + 16 (high); x = d (q - 8)
    std::vector<uint8_t> b(18, 0);
    PutHalf(b, 0, 0.5f);
    for (int j = 0; j < 16; ++j) b[2 + j] = uint8_t(j | ((15 - j) << 4));
    const std::vector<float> y = Decode("Q4_0", b);
    for (int j = 0; j < 16; ++j) {
      EXPECT_EQ(y[j], 0.5f * float(j - 8));
      EXPECT_EQ(y[j + 16], 0.5f * float(7 - j));
    }
  }
  {  // Q5_1: d, m, qh (bit j = fifth bit of code j), nibbles; x = d q + m
    std::vector<uint8_t> b(24, 0);
    PutHalf(b, 0, 0.25f);
    PutHalf(b, 2, -1.0f);
    b[4] = 0x01;       // code 0 gets +16
    b[7] = 0x80;       // code 31 gets +16
    b[8] = 0x3F;       // code 0 low 15, code 16 low 3
    b[8 + 15] = 0xA0;  // code 15 low 0, code 31 low 10
    const std::vector<float> y = Decode("Q5_1", b);
    EXPECT_EQ(y[0], 0.25f * 31 - 1.0f);
    EXPECT_EQ(y[16], 0.25f * 3 - 1.0f);
    EXPECT_EQ(y[15], -1.0f);
    EXPECT_EQ(y[31], 0.25f * 26 - 1.0f);
    EXPECT_EQ(y[1], -1.0f);
  }
  {  // Q8_0: int8 codes
    std::vector<uint8_t> b(34, 0);
    PutHalf(b, 0, 2.0f);
    b[2] = 0x80;  // -128
    b[3] = 0x7F;
    b[33] = 0xFF;  // -1
    const std::vector<float> y = Decode("Q8_0", b);
    EXPECT_EQ(y[0], -256.0f);
    EXPECT_EQ(y[1], 254.0f);
    EXPECT_EQ(y[31], -2.0f);
  }
  {  // IQ4_NL: codes index the fixed grid
    std::vector<uint8_t> b(18, 0);
    PutHalf(b, 0, 0.5f);
    b[2] = 0xF0;  // code 0 -> -127, code 16 -> 113
    b[3] = 0x78;  // code 1 -> 1 (index 8), code 17 -> -10 (index 7)
    const std::vector<float> y = Decode("IQ4_NL", b);
    EXPECT_EQ(y[0], -63.5f);
    EXPECT_EQ(y[16], 56.5f);
    EXPECT_EQ(y[1], 0.5f);
    EXPECT_EQ(y[17], -5.0f);
  }
}

TEST(GgmlBlocks, HandMadeKQuantBlocks) {
  {  // Q4_K: d, dmin, 12 scale bytes, qs; sub-block 5 uses the split 6-bit packing
    std::vector<uint8_t> b(144, 0);
    PutHalf(b, 0, 0.5f);
    PutHalf(b, 2, 0.25f);
    b[4 + 0] = 3;           // sub-block 0: scale 3
    b[4 + 4] = 2;           // sub-block 0: min 2
    b[4 + 9] = 0x21;        // sub-block 5: scale low 1, min low 2
    b[4 + 1] |= 0x40;       // sub-block 5: scale high bits 01 -> 17
    b[4 + 5] |= 0x80;       // sub-block 5: min high bits 10 -> 34
    b[16] = 0x9F;           // weight 0 code 15; weight 32 code 9
    b[16 + 64 + 5] = 0x70;  // sub-block 5 = weights 160..191: high nibble of byte 64 + l
    const std::vector<float> y = Decode("Q4_K", b);
    EXPECT_EQ(y[0], 0.5f * 3 * 15 - 0.25f * 2);
    EXPECT_EQ(y[32], 0.0f);  // sub-block 1: scale 0, min 0
    EXPECT_EQ(y[165], 0.5f * 17 * 7 - 0.25f * 34);
    EXPECT_EQ(y[160], -0.25f * 34);
  }
  {  // Q6_K: codes 0..63 split into ql nibbles and qh pairs, int8 scales per 16
    std::vector<uint8_t> b(210, 0);
    PutHalf(b, 208, 0.125f);
    b[192 + 0] = uint8_t(int8_t(-3));  // scale of weights 0..15
    b[192 + 4] = 5;                    // weights 64..79
    b[0] = 0xA5;                       // weight 0 low 5, weight 64 low 10
    b[128] = 0x32;                     // weight 0 high 2 (-> 37), weight 64 high 3 (-> 58)
    const std::vector<float> y = Decode("Q6_K", b);
    EXPECT_EQ(y[0], 0.125f * -3 * (37 - 32));
    EXPECT_EQ(y[64], 0.125f * 5 * (58 - 32));
    EXPECT_EQ(y[1], 0.125f * -3 * -32);
  }
  {  // Q3_K: hmask bit set means +0, clear means -4; scales stored + 32
    std::vector<uint8_t> b(110, 0);
    PutHalf(b, 108, 0.5f);
    b[96 + 0] = 0x2;  // scale 0 low nibble 2
    b[96 + 8] = 0x2;  // scale 0 high bits 10 -> 34 -> +2
    b[32] = 0x3;      // weight 0 low bits 3
    b[0] = 0x1;       // weight 0 high bit set -> q = 3
    const std::vector<float> y = Decode("Q3_K", b);
    EXPECT_EQ(y[0], 0.5f * 2 * 3);
    EXPECT_EQ(y[1], 0.5f * 2 * -4);
    EXPECT_EQ(y[16], 0.5f * -32 * -4);  // scale 1 stored 0 -> -32
  }
  {  // IQ4_XS: 6-bit signed sub-block scales (low nibbles in scales_l, 2 high bits in scales_h)
    std::vector<uint8_t> b(136, 0);
    PutHalf(b, 0, 0.5f);
    b[2] = 0x02;  // sub-block 0 high bits 10, sub-block 1 high bits 00
    b[4] = 0x31;  // sub-block 0 low 1 -> 33 -> +1; sub-block 1 low 3 -> 3 -> -29
    b[8] = 0x0F;  // weight 0 -> index 15 (113), weight 16 -> index 0 (-127)
    const std::vector<float> y = Decode("IQ4_XS", b);
    EXPECT_EQ(y[0], 0.5f * 1 * 113);
    EXPECT_EQ(y[16], 0.5f * 1 * -127);
    EXPECT_EQ(y[32], 0.5f * -29 * -127);
  }
  {  // Q8_K: f32 d, int8 codes, int16 sums of 16 written by the encoder
    std::vector<float> x(256);
    for (int j = 0; j < 256; ++j) x[static_cast<size_t>(j)] = float(j % 16) - 8.0f;
    std::vector<std::byte> q(292);
    ASSERT_TRUE(
        QuantizeRowsGgml(*FindGgmlBlockType("Q8_K"), x.data(), 1, 256, nullptr, q.data()).ok());
    float d;
    std::memcpy(&d, q.data(), 4);
    EXPECT_EQ(d, 1 / (-127.f / -8.0f));
    EXPECT_EQ(int8_t(q[4]), -127);  // -8 maps to -127
    int16_t bsum;
    std::memcpy(&bsum, q.data() + 260, 2);
    int expect = 0;
    for (int j = 0; j < 16; ++j) expect += int8_t(q[4 + static_cast<size_t>(j)]);
    EXPECT_EQ(bsum, expect);
  }
}

// Codes inside blocks (GgmlCodeFormat): for every model type and test tensor, with and without
// importance, the lattice and the codes read back reproduce the decoder float for float; writing
// the codes back gives the same bytes; any codes written into a fitted block decode to their
// lattice values; Nearest is the closest level.
TEST(GgmlBlocks, CodesAndLatticeMatchTheDecoder) {
  Lcg rng{12345};
  for (const GgmlBlockType& t : GgmlBlockTypes()) {
    SCOPED_TRACE(std::string(t.name));
    if (t.activation_only) {
      EXPECT_EQ(t.codes, nullptr);
      continue;
    }
    ASSERT_NE(t.codes, nullptr);
    const GgmlCodeFormat& f = *t.codes;
    const int levels = 1 << f.bits;
    const size_t B = static_cast<size_t>(t.block);
    for (int ti = 0; ti < 4; ++ti) {
      const Tensor& ten = TestTensor(ti);
      if (ten.cols % t.block != 0) continue;
      for (bool imp : {false, true}) {
        const int64_t blocks = ten.cols / t.block;
        std::vector<std::byte> q(static_cast<size_t>(blocks) * t.block_bytes);
        std::vector<float> dec(static_cast<size_t>(ten.cols)), lat_dec(B);
        std::vector<GgmlLattice> lat(B);
        std::vector<uint8_t> codes(B), codes2(B);
        for (int64_t r = 0; r < ten.rows; ++r) {
          t.encode(ten.x.data() + r * ten.cols, ten.cols, imp ? ten.importance.data() : nullptr,
                   q.data());
          t.decode(q.data(), ten.cols, dec.data());
          for (int64_t b = 0; b < blocks; ++b) {
            std::byte* blk = q.data() + b * t.block_bytes;
            f.lattice(blk, lat.data());
            GgmlGetCodes(t, blk, codes.data());
            for (size_t i = 0; i < B; ++i) {
              ASSERT_LT(codes[i], levels);
              const float want = dec[size_t(b) * B + i];
              const float got = f.Value(lat[i], codes[i]);
              if (!std::isnan(want) || !std::isnan(got)) {
                ASSERT_EQ(got, want) << "row " << r << " weight " << i;
              }
            }
            std::vector<std::byte> copy(blk, blk + t.block_bytes);
            std::vector<std::byte> wiped = copy;
            for (size_t i = 0; i < B; ++i) codes2[i] = uint8_t(levels - 1 - codes[i]);
            GgmlSetCodes(t, codes2.data(), wiped.data());  // other codes first, then back
            GgmlSetCodes(t, codes.data(), wiped.data());
            ASSERT_EQ(wiped, copy);
            // Random codes into the fitted block decode to their lattice values.
            for (size_t i = 0; i < B; ++i) codes2[i] = uint8_t(rng.U() * float(levels));
            GgmlSetCodes(t, codes2.data(), wiped.data());
            t.decode(wiped.data(), t.block, lat_dec.data());
            for (size_t i = 0; i < B; ++i) {
              const float got = f.Value(lat[i], codes2[i]);
              if (!std::isnan(lat_dec[i]) || !std::isnan(got)) {
                ASSERT_EQ(got, lat_dec[i]);
              }
            }
            // Nearest: no level is closer to the weight.
            for (size_t i = 0; i < B; ++i) {
              const float x = ten.x[size_t(r * ten.cols) + size_t(b) * B + i];
              if (!(lat[i].scale != 0.f) || !std::isfinite(lat[i].scale)) continue;
              const int c = f.Nearest(lat[i], x);
              const float e = std::fabs(f.Value(lat[i], c) - x);
              for (int o = 0; o < levels; ++o)
                ASSERT_LE(e, std::fabs(f.Value(lat[i], o) - x) * (1 + 1e-6f) + 1e-30f);
            }
          }
        }
      }
    }
  }
}

// Nearest on a look-up grid (IQ4_NL, IQ4_XS) is the first code of least distance, as a scan
// finds it, for values at and beside every level and midpoint, outside the grid and between.
TEST(GgmlCodes, LookupNearestIsTheFirstClosestLevel) {
  int checked = 0;
  for (const GgmlBlockType& t : GgmlBlockTypes()) {
    if (!t.codes || !t.codes->lut) continue;
    const GgmlCodeFormat& f = *t.codes;
    const int top = (1 << f.bits) - 1;
    std::vector<float> ts = {-1e6f, -200.f, 200.f, 1e6f, 0.f, -0.f};
    for (int c = 0; c <= top; ++c) {
      const float v = float(f.lut[c]);
      for (const float d : {-1.f, -0.5f, -1e-3f, 0.f, 1e-3f, 0.5f, 1.f}) ts.push_back(v + d);
      if (c < top) {
        const float mid = 0.5f * (v + float(f.lut[c + 1]));
        ts.push_back(mid);
        ts.push_back(std::nextafter(mid, -1e9f));
        ts.push_back(std::nextafter(mid, 1e9f));
      }
    }
    for (float x = -140.f; x <= 140.f; x += 0.37f) ts.push_back(x);
    for (const float x : ts) {
      int best = 0;
      for (int c = 1; c <= top; ++c)
        if (std::fabs(float(f.lut[c]) - x) < std::fabs(float(f.lut[best]) - x)) best = c;
      ASSERT_EQ(f.Nearest(GgmlLattice{1.f, 0.f}, x), best) << t.name << " at " << x;
      ++checked;
    }
  }
  EXPECT_GT(checked, 1000);
}

}  // namespace
}  // namespace qf
