// llama.cpp quantization mixes: the per-tensor types of each --scheme name. Checked against
// llama-quantize itself through the file sizes it produced for models/llama-27m
// (../shared/anchors/llamacpp_llama-27m.txt): two mixes' files differ only in tensor bytes, so
// the differences of our per-tensor byte counts must equal the differences of its sizes.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <sstream>

#include "formats/ggml_blocks.h"
#include "formats/gguf_mix.h"
#include "test_util.h"

namespace qf {
namespace {

struct T {
  std::string name;
  int64_t rows, cols;
  int dims;
  int64_t layer;
};

// llama-27m in GGUF naming and order: 6 layers, hidden 512, kv 256, ffn 1536, vocab 8192.
std::vector<T> Llama27m() {
  std::vector<T> t = {{"token_embd.weight", 8192, 512, 2, -1}};
  for (int l = 0; l < 6; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    t.push_back({p + "attn_norm.weight", 1, 512, 1, l});
    t.push_back({p + "attn_q.weight", 512, 512, 2, l});
    t.push_back({p + "attn_k.weight", 256, 512, 2, l});
    t.push_back({p + "attn_v.weight", 256, 512, 2, l});
    t.push_back({p + "attn_output.weight", 512, 512, 2, l});
    t.push_back({p + "ffn_norm.weight", 1, 512, 1, l});
    t.push_back({p + "ffn_gate.weight", 1536, 512, 2, l});
    t.push_back({p + "ffn_up.weight", 1536, 512, 2, l});
    t.push_back({p + "ffn_down.weight", 512, 1536, 2, l});
  }
  t.push_back({"output_norm.weight", 1, 512, 1, -1});
  t.push_back({"output.weight", 8192, 512, 2, -1});
  return t;
}

int64_t TypeBytes(const std::string& type, int64_t rows, int64_t cols) {
  if (type == "F32") return rows * cols * 4;
  if (type == "F16" || type == "BF16") return rows * cols * 2;
  const GgmlBlockType* bt = FindGgmlBlockType(type);
  EXPECT_NE(bt, nullptr) << type;
  return rows * (cols / bt->block) * int64_t(bt->block_bytes);
}

int64_t TensorBytes(const GgufMix& mix, const MixContext& ctx,
                    std::map<std::string, std::string>* types = nullptr) {
  int64_t total = 0;
  for (const T& t : Llama27m()) {
    auto c = ChooseGgufType(mix, t.name, t.dims, t.cols, t.layer, ctx);
    EXPECT_TRUE(c.ok()) << t.name;
    if (!c.ok()) continue;
    if (types) (*types)[t.name] = c->type;
    total += TypeBytes(c->type, t.rows, t.cols);
  }
  return total;
}

MixContext Ctx27m(bool imatrix = false) {
  MixContext ctx;
  ctx.layers = 6;
  ctx.gqa = 2;
  ctx.has_imatrix = imatrix;
  return ctx;
}

TEST(GgufMix, TensorBytesMatchLlamaQuantizeFileSizes) {
  QF_NEED_SHARED("anchors/llamacpp_llama-27m.txt");
  std::ifstream in(qf::testing::SharedDir() / "anchors/llamacpp_llama-27m.txt");
  ASSERT_TRUE(in) << "anchors missing";
  std::map<std::pair<std::string, std::string>, int64_t> size;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string type, imat;
    int64_t bytes = 0;
    if (ls >> type >> imat >> bytes && FindGgufMix(type)) size[{type, imat}] = bytes;
  }
  ASSERT_GE(size.size(), 10u);
  const GgufMix& ref = *FindGgufMix("Q8_0");
  for (const auto& [key, bytes] : size) {
    SCOPED_TRACE(key.first + " " + key.second);
    const bool imat = key.second == "imat";
    const int64_t ours =
        TensorBytes(*FindGgufMix(key.first), Ctx27m(imat)) - TensorBytes(ref, Ctx27m(imat));
    EXPECT_EQ(ours, bytes - size.at({"Q8_0", key.second}));
  }
}

TEST(GgufMix, DocumentedChoices) {
  std::map<std::string, std::string> t;
  TensorBytes(*FindGgufMix("Q4_K_M"), Ctx27m(), &t);
  // use_more_bits(i, 6): layers 2 and 5 get Q6_K for attn_v and ffn_down.
  EXPECT_EQ(t["blk.0.attn_v.weight"], "Q4_K");
  EXPECT_EQ(t["blk.2.attn_v.weight"], "Q6_K");
  EXPECT_EQ(t["blk.5.ffn_down.weight"], "Q6_K");
  EXPECT_EQ(t["blk.1.ffn_down.weight"], "Q4_K");
  EXPECT_EQ(t["output.weight"], "Q6_K");
  EXPECT_EQ(t["token_embd.weight"], "Q4_K");
  EXPECT_EQ(t["blk.0.attn_norm.weight"], "F32");
  TensorBytes(*FindGgufMix("Q3_K_M"), Ctx27m(), &t);
  EXPECT_EQ(t["blk.1.attn_v.weight"], "Q5_K");
  EXPECT_EQ(t["blk.2.attn_v.weight"], "Q4_K");
  EXPECT_EQ(t["blk.0.attn_output.weight"], "Q4_K");
  EXPECT_EQ(t["blk.0.ffn_down.weight"], "Q4_K");
  EXPECT_EQ(t["blk.0.ffn_up.weight"], "Q3_K");
  TensorBytes(*FindGgufMix("Q2_K"), Ctx27m(), &t);
  EXPECT_EQ(t["blk.0.attn_v.weight"], "Q3_K");  // gqa 2 < 4
  EXPECT_EQ(t["blk.0.ffn_down.weight"], "Q3_K");
  EXPECT_EQ(t["blk.0.attn_q.weight"], "Q2_K");
  // --pure, overrides, output / token-embedding types.
  MixContext ctx = Ctx27m();
  ctx.pure = true;
  TensorBytes(*FindGgufMix("Q4_K_M"), ctx, &t);
  EXPECT_EQ(t["blk.2.attn_v.weight"], "Q4_K");
  EXPECT_EQ(t["output.weight"], "Q4_K");  // --pure: every quantized tensor, output included
  ctx = Ctx27m();
  auto o = ParseTensorTypeOverride("attn_(q|k)=q8_0");
  ASSERT_TRUE(o.ok()) << o.error().message();
  ctx.overrides.push_back(*o);
  ctx.output_type = "Q8_0";
  ctx.token_embd_type = "F16";
  TensorBytes(*FindGgufMix("Q4_K_M"), ctx, &t);
  EXPECT_EQ(t["blk.3.attn_q.weight"], "Q8_0");
  EXPECT_EQ(t["blk.3.attn_k.weight"], "Q8_0");
  EXPECT_EQ(t["blk.2.attn_v.weight"], "Q6_K");
  EXPECT_EQ(t["output.weight"], "Q8_0");
  EXPECT_EQ(t["token_embd.weight"], "F16");
}

TEST(GgufMix, FallbacksAndErrors) {
  MixContext ctx = Ctx27m();
  // stories260k-like rows of 64 and 172 weights.
  auto c = ChooseGgufType(*FindGgufMix("Q4_K_M"), "blk.0.attn_q.weight", 2, 64, 0, ctx);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->type, "Q5_0");
  EXPECT_NE(c->fallback.find("not a multiple of 256"), std::string::npos);
  c = ChooseGgufType(*FindGgufMix("Q4_K_M"), "blk.0.ffn_down.weight", 2, 172, 0, ctx);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->type, "F16");
  c = ChooseGgufType(*FindGgufMix("Q2_K"), "blk.0.attn_q.weight", 2, 96, 0, ctx);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->type, "Q4_0");
  EXPECT_FALSE(ParseTensorTypeOverride("attn_q").ok());
  EXPECT_FALSE(ParseTensorTypeOverride("attn_q=Q9_K").ok());
  EXPECT_FALSE(ParseTensorTypeOverride("((=Q4_0").ok());
  EXPECT_EQ(FindGgufMix("q4-k-m"), FindGgufMix("Q4_K_M"));
  EXPECT_EQ(FindGgufMix("Q4_K"), nullptr);
}

}  // namespace
}  // namespace qf
