// Golden tests of the fp32 forward pass against PyTorch (reference/logits.safetensors), the
// KV cache (incremental decoding equals one full pass), and config/weight validation.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "kernels/ops.h"
#include "model/model.h"
#include "test_util.h"

namespace qf::model {
namespace {

using qf::testing::BundledModel;

struct Prompt {
  std::vector<int32_t> ids;
  int64_t argmax_last;
};

std::vector<Prompt> ReadPrompts(const std::filesystem::path& dir) {
  std::ifstream in(dir / "reference" / "reference.json");
  const auto j = nlohmann::json::parse(in);
  std::vector<Prompt> out;
  for (const auto& p : j["prompts"])
    out.push_back({p["ids"].get<std::vector<int32_t>>(), p["argmax_last"]});
  return out;
}

const Model& Bundled() {
  static Model* m = [] {
    kernels::SetThreads(2);
    auto r = Model::Load(BundledModel());
    if (!r.ok()) {
      ADD_FAILURE() << r.error().message();
      std::abort();
    }
    return new Model(std::move(r).value());
  }();
  return *m;
}

// Runs each reference prompt and compares every logit with PyTorch's fp32 output.
void ExpectMatchesReference(const Model& m, const std::filesystem::path& dir, double tol) {
  auto ref = io::TensorStore::Open(dir / "reference" / "logits.safetensors");
  ASSERT_TRUE(ref.ok()) << ref.error().message();
  const auto prompts = ReadPrompts(dir);
  const int64_t V = m.config().vocab_size;
  for (size_t p = 0; p < prompts.size(); ++p) {
    const auto& ids = prompts[p].ids;
    const io::TensorInfo* t = ref->Find("logits." + std::to_string(p));
    ASSERT_NE(t, nullptr);
    ASSERT_EQ(t->shape, (std::vector<int64_t>{int64_t(ids.size()), V}));
    std::vector<float> want(size_t(t->numel()));
    ASSERT_TRUE(ConvertToF32(t->dtype, t->data.data(), want.size(), want.data()));
    std::vector<float> got(want.size());
    KVCache cache = m.NewCache(int64_t(ids.size()));
    ASSERT_TRUE(m.Forward(ids, cache, got.data(), true).ok());
    double worst = 0;
    size_t worst_i = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      const double d = std::abs(double(got[i]) - want[i]);
      if (d > worst) worst = d, worst_i = i;
    }
    EXPECT_LT(worst, tol) << "prompt " << p << ": worst |diff| at row " << worst_i / size_t(V)
                          << " col " << worst_i % size_t(V) << " got " << got[worst_i] << " want "
                          << want[worst_i];
    const float* last = got.data() + (ids.size() - 1) * size_t(V);
    EXPECT_EQ(std::max_element(last, last + V) - last, prompts[p].argmax_last);
    std::printf("prompt %zu: max |logit diff| = %.3g\n", p, worst);
  }
}

TEST(ModelGolden, BundledLogitsMatchPyTorch) {
  ExpectMatchesReference(Bundled(), BundledModel(), 1e-3);
}

TEST(ModelGolden, Stories260kLogitsMatchPyTorch) {
  QF_NEED_SHARED("models/stories260k");
  const auto dir = qf::testing::SharedDir() / "models" / "stories260k";
  auto m = Model::Load(dir);
  ASSERT_TRUE(m.ok()) << m.error().message();
  EXPECT_EQ(m->config().head_dim, 8);  // derived: hidden 64 / 8 heads
  EXPECT_TRUE(m->config().tie_embeddings);
  ExpectMatchesReference(*m, dir, 1e-3);
}

// Every weight row the GEMVs stream starts on a cache line (memory.h: a 16-byte aligned row
// makes every vector load of it span two lines); large arrays on a huge-page boundary. Rows of 512
// floats here, so the row starts are aligned exactly when the storage is.
TEST(ModelWeights, StorageIsCacheLineAligned) {
  const Model& m = Bundled();
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % kCacheLine == 0; };
  EXPECT_TRUE(aligned(m.lm_head().weight.data()));
  for (const Layer& l : m.layers())
    for (LinearId id : kBlockLinears) {
      ASSERT_FALSE(l[id].weight.empty());
      EXPECT_TRUE(aligned(l[id].weight.data()));
    }
  kernels::QuantMatrix q;
  q.codes.resize(1000);
  EXPECT_TRUE(aligned(q.codes.data()));
  // 2 MiB and more start on a 2 MiB boundary, so transparent huge pages can back them whole
  // (memory.h); the lm_head here is 8192 x 512 floats = 16 MiB.
  EXPECT_EQ(reinterpret_cast<uintptr_t>(m.lm_head().weight.data()) % kHugePage, 0u);
  q.codes.resize(kHugePage + 1);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(q.codes.data()) % kHugePage, 0u);
}

TEST(ModelForward, IncrementalDecodeEqualsFullPass) {
  const Model& m = Bundled();
  const std::vector<int32_t> ids = {1, 355, 2225, 4761, 282, 2251, 263, 1809, 5350, 704};
  const int64_t V = m.config().vocab_size, n = int64_t(ids.size());
  std::vector<float> full(size_t(n * V)), step(static_cast<size_t>(V));
  KVCache c1 = m.NewCache(n);
  ASSERT_TRUE(m.Forward(ids, c1, full.data(), true).ok());
  KVCache c2 = m.NewCache(n);
  ASSERT_TRUE(m.Forward({ids.data(), 4}, c2, step.data(), false).ok());  // prefill 4, then 1 by 1
  for (int64_t i = 4; i < n; ++i) {
    ASSERT_TRUE(m.Forward({ids.data() + i, 1}, c2, step.data(), false).ok());
    double worst = 0;
    for (int64_t j = 0; j < V; ++j)
      worst = std::max(worst, double(std::abs(step[size_t(j)] - full[size_t(i * V + j)])));
    EXPECT_LT(worst, 1e-4) << "position " << i;
  }
}

TEST(ModelForward, BatchedStepEqualsSeparateSequences) {
  const Model& m = Bundled();
  const int64_t V = m.config().vocab_size;
  const std::vector<std::vector<int32_t>> seqs = {
      {1, 355, 2225, 4761}, {1, 528, 7842, 7876}, {1, 6750, 704, 261}};
  std::vector<KVCache> caches;
  for (size_t b = 0; b < seqs.size(); ++b) caches.push_back(m.NewCache(4));
  std::vector<float> batched(seqs.size() * size_t(V));
  for (size_t p = 0; p < 4; ++p) {
    std::vector<int32_t> step;
    for (const auto& s : seqs) step.push_back(s[p]);
    ASSERT_TRUE(m.ForwardBatchStep(step, caches, batched.data()).ok());
  }
  for (size_t b = 0; b < seqs.size(); ++b) {
    std::vector<float> single(static_cast<size_t>(V));
    KVCache c = m.NewCache(4);
    ASSERT_TRUE(m.Forward(seqs[b], c, single.data(), false).ok());
    double worst = 0;
    for (int64_t j = 0; j < V; ++j)
      worst =
          std::max(worst, double(std::abs(single[size_t(j)] - batched[b * size_t(V) + size_t(j)])));
    EXPECT_LT(worst, 1e-4) << "sequence " << b;
  }
}

TEST(ModelForward, RejectsOverflowAndBadTokens) {
  const Model& m = Bundled();
  std::vector<float> logits(size_t(m.config().vocab_size));
  KVCache c = m.NewCache(2);
  const std::vector<int32_t> three = {1, 2, 3};
  auto st = m.Forward(three, c, logits.data(), false);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("exceed the context"), std::string::npos);
  const std::vector<int32_t> bad = {int32_t(m.config().vocab_size)};
  st = m.Forward(bad, c, logits.data(), false);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("outside vocabulary"), std::string::npos);
}

TEST(HfConfig, ParsesFamiliesAndDerivedFields) {
  auto c = ParseHfConfig(R"({"architectures":["Qwen2ForCausalLM"],"vocab_size":100,"hidden_size":64,
    "intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
    "max_position_embeddings":256,"rope_theta":1000000.0,"tie_word_embeddings":true})",
                         "cfg");
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_EQ(c->family->name, "qwen2");
  EXPECT_TRUE(c->qkv_bias);
  EXPECT_EQ(c->head_dim, 16);
  EXPECT_EQ(c->kv_dim(), 32);
  EXPECT_TRUE(c->tie_embeddings);

  auto q3 =
      ParseHfConfig(R"({"architectures":["Qwen3ForCausalLM"],"vocab_size":100,"hidden_size":64,
    "intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"head_dim":32})",
                    "cfg");
  ASSERT_TRUE(q3.ok()) << q3.error().message();
  EXPECT_TRUE(q3->family->qk_norm);
  EXPECT_EQ(q3->head_dim, 32);  // explicit head_dim wins over hidden / heads
  EXPECT_EQ(q3->kv_heads, 4);   // defaults to heads

  auto l3 =
      ParseHfConfig(R"({"architectures":["LlamaForCausalLM"],"vocab_size":100,"hidden_size":64,
    "intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"eos_token_id":[7,9],
    "rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
    "original_max_position_embeddings":8192}})",
                    "cfg");
  ASSERT_TRUE(l3.ok()) << l3.error().message();
  EXPECT_EQ(l3->rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_EQ(l3->eos_id, 7);
}

TEST(HfConfig, RejectsBadConfigs) {
  struct Case {
    const char* json;
    const char* expect;
  };
  const Case cases[] = {
      {"{", "not valid JSON"},
      {R"({"architectures":["GPTNeoXForCausalLM"]})",
       "unsupported architecture 'GPTNeoXForCausalLM'"},
      {R"({"architectures":["LlamaForCausalLM"],"vocab_size":10})", "missing field 'hidden_size'"},
      {R"({"architectures":["LlamaForCausalLM"],"vocab_size":10,"hidden_size":64,"intermediate_size":8,
          "num_hidden_layers":1,"num_attention_heads":4,"num_key_value_heads":3})",
       "not a multiple"},
      {R"({"architectures":["LlamaForCausalLM"],"vocab_size":"x","hidden_size":64})",
       "must be an integer"},
      {R"({"architectures":["LlamaForCausalLM"],"vocab_size":10,"hidden_size":64,"intermediate_size":8,
          "num_hidden_layers":1,"num_attention_heads":4,"rope_scaling":{"type":"yarn","factor":4}})",
       "unsupported rope_scaling"},
      {R"({"architectures":["LlamaForCausalLM"],"vocab_size":10,"hidden_size":64,"intermediate_size":8,
          "num_hidden_layers":1,"num_attention_heads":4,"hidden_act":"gelu"})",
       "unsupported hidden_act"},
      {R"({"architectures":["LlamaForCausalLM"],"vocab_size":10,"hidden_size":64,"intermediate_size":8,
          "num_hidden_layers":1,"num_attention_heads":4,"use_sliding_window":3})",
       "cfg:"},
  };
  for (const auto& c : cases) {
    auto r = ParseHfConfig(c.json, "cfg");
    ASSERT_FALSE(r.ok()) << c.json;
    EXPECT_NE(r.error().message().find(c.expect), std::string::npos) << r.error().message();
  }
}

}  // namespace
}  // namespace qf::model
