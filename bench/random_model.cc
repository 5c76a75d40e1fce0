// Writes a random-weight Llama checkpoint with a real model's block shapes, so that speed is
// measured where the weights do not fit in cache (models/llama-27m does). Made on demand, never
// stored in the repository. Weights are bf16, N(0, 0.02²)-like (a sum of uniforms, deterministic
// for a seed whatever the thread count), norms 1; the vocabulary is 8192 (models/llama-27m's
// tokenizer files are copied beside it, so quantize/ppl/generate also run on it).
// Usage: build/random_model SHAPE OUT_DIR [--layers N] [--seed S]
//   SHAPE: llama-3.2-1b (hidden 2048, intermediate 8192, 16 layers, 32/8 heads of 64)
//          llama-3.1-8b (hidden 4096, intermediate 14336, 32 layers, 32/8 heads of 128; pass
//                        --layers 4 for a few of its blocks)
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "io/safetensors_writer.h"

namespace {

struct Shape {
  const char* name;
  int64_t hidden, intermediate, layers, heads, kv_heads, head_dim;
};
constexpr Shape kShapes[] = {
    {"llama-3.2-1b", 2048, 8192, 16, 32, 8, 64},
    {"llama-3.1-8b", 4096, 14336, 32, 32, 8, 128},
};
constexpr int64_t kVocab = 8192;

uint64_t SplitMix(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// numel bf16 values: the sum of four uniforms on [-1, 1) (variance 4/3) scaled to std 0.02.
// Each 4096-value chunk has its own stream, so the bytes do not depend on the thread split.
std::vector<std::byte> RandomBf16(int64_t numel, uint64_t seed) {
  std::vector<std::byte> out(size_t(numel) * 2);
  constexpr int64_t kChunk = 4096;
  const float k = 0.02f / 1.1547005f / 2147483648.0f;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < numel; c += kChunk) {
    uint64_t s = seed * 0x100000001b3ull + uint64_t(c / kChunk);
    std::vector<float> v(size_t(std::min(kChunk, numel - c)));
    for (auto& f : v) {
      const uint64_t a = SplitMix(s), b = SplitMix(s);
      f = k * (float(int32_t(a)) + float(int32_t(a >> 32)) + float(int32_t(b)) +
               float(int32_t(b >> 32)));
    }
    qf::ConvertFromF32(qf::DType::kBF16, v.data(), v.size(), out.data() + c * 2);
  }
  return out;
}

int Fail(const std::string& msg) {
  std::fprintf(stderr, "random_model: %s\n", msg.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3)
    return Fail("usage: random_model llama-3.2-1b|llama-3.1-8b OUT_DIR [--layers N] [--seed S]");
  const Shape* shape = nullptr;
  for (const Shape& s : kShapes)
    if (std::strcmp(s.name, argv[1]) == 0) shape = &s;
  if (!shape) return Fail(std::string("unknown shape ") + argv[1]);
  Shape sh = *shape;
  uint64_t seed = 1;
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const long long v = std::atoll(argv[i + 1]);
    if (flag == "--layers" && v > 0 && v <= sh.layers)
      sh.layers = v;
    else if (flag == "--seed" && v >= 0)
      seed = uint64_t(v);
    else
      return Fail("bad flag " + flag + " " + argv[i + 1]);
  }
  const std::filesystem::path out = argv[2];
  std::error_code ec;
  std::filesystem::create_directories(out, ec);
  if (ec) return Fail("cannot create " + out.string() + ": " + ec.message());

  std::vector<std::vector<std::byte>> data;
  std::vector<qf::io::TensorToWrite> tensors;
  data.reserve(size_t(sh.layers) * 9 + 3);
  uint64_t tensor_seed = seed * 1000003;
  auto add = [&](std::string name, std::vector<int64_t> shp, bool ones) {
    int64_t n = 1;
    for (int64_t d : shp) n *= d;
    if (ones) {
      std::vector<float> v(size_t(n), 1.0f);
      data.emplace_back(size_t(n) * 2);
      qf::ConvertFromF32(qf::DType::kBF16, v.data(), v.size(), data.back().data());
    } else {
      data.push_back(RandomBf16(n, ++tensor_seed));
    }
    tensors.push_back({std::move(name), qf::DType::kBF16, std::move(shp), data.back()});
  };
  const int64_t H = sh.hidden, F = sh.intermediate, D = sh.head_dim;
  add("model.embed_tokens.weight", {kVocab, H}, false);
  for (int64_t l = 0; l < sh.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {H}, true);
    add(p + "self_attn.q_proj.weight", {sh.heads * D, H}, false);
    add(p + "self_attn.k_proj.weight", {sh.kv_heads * D, H}, false);
    add(p + "self_attn.v_proj.weight", {sh.kv_heads * D, H}, false);
    add(p + "self_attn.o_proj.weight", {H, sh.heads * D}, false);
    add(p + "post_attention_layernorm.weight", {H}, true);
    add(p + "mlp.gate_proj.weight", {F, H}, false);
    add(p + "mlp.up_proj.weight", {F, H}, false);
    add(p + "mlp.down_proj.weight", {H, F}, false);
  }
  add("model.norm.weight", {H}, true);
  add("lm_head.weight", {kVocab, H}, false);
  if (auto st = qf::io::WriteSafetensors(out / "model.safetensors", tensors); !st.ok())
    return Fail(st.error().message());

  std::ofstream cfg(out / "config.json");
  cfg << "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"model_type\": \"llama\",\n"
      << "  \"vocab_size\": " << kVocab << ",\n  \"hidden_size\": " << H
      << ",\n  \"intermediate_size\": " << F << ",\n  \"num_hidden_layers\": " << sh.layers
      << ",\n  \"num_attention_heads\": " << sh.heads
      << ",\n  \"num_key_value_heads\": " << sh.kv_heads << ",\n  \"head_dim\": " << D
      << ",\n  \"hidden_act\": \"silu\",\n  \"max_position_embeddings\": 4096,\n"
      << "  \"rms_norm_eps\": 1e-05,\n  \"rope_theta\": 500000.0,\n"
      << "  \"tie_word_embeddings\": false,\n  \"bos_token_id\": 1,\n  \"eos_token_id\": 2,\n"
      << "  \"torch_dtype\": \"bfloat16\"\n}\n";
  if (!cfg) return Fail("cannot write " + (out / "config.json").string());
  const std::filesystem::path tok = std::filesystem::path(QF_SOURCE_DIR) / "models/llama-27m";
  for (const char* f :
       {"tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"})
    if (std::filesystem::exists(tok / f))
      std::filesystem::copy_file(tok / f, out / f,
                                 std::filesystem::copy_options::overwrite_existing, ec);
  int64_t bytes = 0;
  for (const auto& t : tensors) bytes += int64_t(t.data.size());
  std::printf("%s: %s, %lld layers, %.2f GiB bf16\n", out.c_str(), sh.name,
              static_cast<long long>(sh.layers), double(bytes) / (1 << 30));
  return 0;
}
