// GGUF tests: the ggml type table, write -> read round trips of every metadata type and several
// tensor types (alignment, determinism), llama.cpp's own vocab GGUF files, one test per
// malformed-file rule plus truncations and byte flips, and `qforge convert` on the bundled model
// (every tensor against the safetensors source with the q/k permutation undone, metadata,
// tokenizer) and on small synthetic Qwen2 / Qwen3 / Llama-3 / GPT-2-tokenizer checkpoints.
#include "io/gguf.h"

#include <gtest/gtest.h>
#include <sentencepiece_processor.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numbers>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "pipeline/gguf_convert.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "test_util.h"
#include "text/tokenizer.h"

namespace qf::io {
namespace {

namespace fs = std::filesystem;
using qf::testing::Bundled;
using qf::testing::Q;
using qf::testing::RunCommand;

constexpr char kName[] = "t.gguf";

std::span<const std::byte> AsBytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

Result<GgufContents> Parse(const std::string& bytes) { return ParseGguf(AsBytes(bytes), kName); }

// Little-endian byte builder for hand-made (and broken) files.
struct Raw {
  std::string b;
  template <class T>
  Raw& put(T v) {
    b.append(reinterpret_cast<const char*>(&v), sizeof(T));
    return *this;
  }
  Raw& u32(uint32_t v) { return put(v); }
  Raw& u64(uint64_t v) { return put(v); }
  Raw& i64(int64_t v) { return put(v); }
  Raw& str(std::string_view s) {
    u64(s.size());
    b.append(s);
    return *this;
  }
  Raw& pad(size_t alignment = 32) {
    b.resize((b.size() + alignment - 1) / alignment * alignment, '\0');
    return *this;
  }
  Raw& zeros(size_t n) {
    b.append(n, '\0');
    return *this;
  }
};

Raw Header(int64_t n_tensors, int64_t n_kv, uint32_t version = 3) {
  Raw r;
  r.b = "GGUF";
  return r.u32(version).i64(n_tensors).i64(n_kv);
}

// Tensor info: name, ggml ne (fastest first), type id, offset.
Raw& AddInfo(Raw& r, std::string_view name, std::vector<int64_t> ne, uint32_t type,
             uint64_t offset) {
  r.str(name).u32(uint32_t(ne.size()));
  for (int64_t d : ne) r.i64(d);
  return r.u32(type).u64(offset);
}

void ExpectError(const std::string& bytes, const std::string& want) {
  const auto r = Parse(bytes);
  ASSERT_FALSE(r.ok()) << "expected an error containing: " << want;
  const std::string& m = r.error().message();
  EXPECT_NE(m.find(want), std::string::npos) << m;
  EXPECT_EQ(m.rfind(std::string(kName) + ": ", 0), 0u) << m;
  EXPECT_EQ(m.find('\n'), std::string::npos) << m;
}

// ---- ggml type table -------------------------------------------------------------------

TEST(GgmlTypes, TableMatchesGgml) {
  struct Row {
    uint32_t id;
    const char* name;
    int64_t block;
    size_t size;
  };
  // ggml.h ids; sizes from ggml-common.h block structs.
  const Row rows[] = {{0, "f32", 1, 4},         {1, "f16", 1, 2},       {2, "q4_0", 32, 18},
                      {3, "q4_1", 32, 20},      {6, "q5_0", 32, 22},    {7, "q5_1", 32, 24},
                      {8, "q8_0", 32, 34},      {9, "q8_1", 32, 36},    {10, "q2_K", 256, 84},
                      {11, "q3_K", 256, 110},   {12, "q4_K", 256, 144}, {13, "q5_K", 256, 176},
                      {14, "q6_K", 256, 210},   {15, "q8_K", 256, 292}, {20, "iq4_nl", 32, 18},
                      {23, "iq4_xs", 256, 136}, {30, "bf16", 1, 2},     {16, "iq2_xxs", 256, 66},
                      {19, "iq1_s", 256, 50},   {29, "iq1_m", 256, 56}, {24, "i8", 1, 1},
                      {28, "f64", 1, 8}};
  for (const Row& r : rows) {
    const GgmlTypeInfo* t = FindGgmlType(r.id);
    ASSERT_NE(t, nullptr) << r.name;
    EXPECT_EQ(t->name, r.name);
    EXPECT_EQ(t->block_size, r.block) << r.name;
    EXPECT_EQ(t->type_size, r.size) << r.name;
    EXPECT_EQ(FindGgmlType(r.name), t);
  }
  EXPECT_EQ(FindGgmlType("Q4_K"), FindGgmlType(12));
  EXPECT_EQ(FindGgmlType("BF16"), FindGgmlType(30));
  for (uint32_t removed : {4u, 5u, 31u, 32u, 33u, 36u, 37u, 38u, 43u, 1000u})
    EXPECT_EQ(FindGgmlType(removed), nullptr) << removed;
  uint32_t prev = 0;
  for (size_t i = 0; i < GgmlTypes().size(); ++i) {
    if (i > 0) {
      EXPECT_GT(uint32_t(GgmlTypes()[i].type), prev);
    }
    prev = uint32_t(GgmlTypes()[i].type);
  }
  EXPECT_EQ(*GgmlTensorBytes(GgmlType::kQ4_K, {3, 512}), 3u * 2 * 144);
  EXPECT_EQ(*GgmlTensorBytes(GgmlType::kF32, {}), 4u);
  EXPECT_FALSE(GgmlTensorBytes(GgmlType::kQ8_0, {2, 48}).ok());
  EXPECT_FALSE(GgmlTensorBytes(GgmlType::kF32, {2, -1}).ok());
  EXPECT_FALSE(GgmlTensorBytes(GgmlType::kF32, {int64_t(1) << 40, int64_t(1) << 40}).ok());
}

// ---- write -> read ---------------------------------------------------------------------

std::vector<GgufKv> EveryValueType() {
  return {
      {"u8", GgufValue(uint8_t{200})},
      {"i8", GgufValue(int8_t{-100})},
      {"u16", GgufValue(uint16_t{60000})},
      {"i16", GgufValue(int16_t{-30000})},
      {"u32", GgufValue(uint32_t{4000000000u})},
      {"i32", GgufValue(int32_t{-2000000000})},
      {"f32", GgufValue(1.5f)},
      {"bool", GgufValue(true)},
      {"str", GgufValue("h\xC3\xA9llo")},
      {"empty_str", GgufValue("")},
      {"u64", GgufValue(uint64_t{18000000000000000000ull})},
      {"i64", GgufValue(int64_t{-9000000000000000000ll})},
      {"f64", GgufValue(-2.25e300)},
      {"a.u8", GgufValue(std::vector<uint8_t>{0, 1, 255})},
      {"a.i8", GgufValue(std::vector<int8_t>{-128, 127})},
      {"a.u16", GgufValue(std::vector<uint16_t>{1, 65535})},
      {"a.i16", GgufValue(std::vector<int16_t>{-1, 2})},
      {"a.u32", GgufValue(std::vector<uint32_t>{7})},
      {"a.i32", GgufValue(std::vector<int32_t>{1, -2, 3})},
      {"a.f32", GgufValue(std::vector<float>{0.5f, -0.0f, 1e30f})},
      {"a.bool", GgufValue(std::vector<bool>{true, false, true})},
      {"a.str", GgufValue(std::vector<std::string>{"a", "", "long string \x01 with bytes"})},
      {"a.u64", GgufValue(std::vector<uint64_t>{1, ~uint64_t{0}})},
      {"a.i64", GgufValue(std::vector<int64_t>{-5})},
      {"a.f64", GgufValue(std::vector<double>{3.25, -1e-300})},
      {"a.empty", GgufValue(std::vector<int32_t>{})},
  };
}

struct TestTensor {
  std::string name;
  GgmlType type;
  std::vector<int64_t> shape;
  std::vector<std::byte> bytes;
};

std::vector<TestTensor> SomeTensors() {
  std::mt19937 rng(7);
  auto make = [&](std::string name, GgmlType type, std::vector<int64_t> shape) {
    std::vector<std::byte> b(static_cast<size_t>(*GgmlTensorBytes(type, shape)));
    for (auto& x : b) x = std::byte(rng() & 0xff);
    return TestTensor{std::move(name), type, std::move(shape), std::move(b)};
  };
  return {make("f32", GgmlType::kF32, {3, 5}),      make("f16.1d", GgmlType::kF16, {7}),
          make("bf16", GgmlType::kBF16, {2, 3, 4}), make("q8_0", GgmlType::kQ8_0, {3, 64}),
          make("q4_k", GgmlType::kQ4_K, {2, 256}),  make("iq4_nl", GgmlType::kIQ4_NL, {1, 32}),
          make("empty", GgmlType::kF32, {0, 4}),    make("i32.4d", GgmlType::kI32, {1, 2, 1, 3})};
}

GgufWriter MakeWriter(const std::vector<TestTensor>& tensors, uint32_t alignment) {
  GgufWriter w;
  if (alignment != kGgufDefaultAlignment) {
    EXPECT_TRUE(w.Set("general.alignment", GgufValue(alignment)).ok());
  }
  for (auto& kv : EveryValueType()) EXPECT_TRUE(w.Set(kv.key, kv.value).ok()) << kv.key;
  for (const auto& t : tensors) {
    const auto st = w.AddTensor(t.name, t.type, t.shape, t.bytes);
    EXPECT_TRUE(st.ok()) << st.error().message();
  }
  return w;
}

TEST(Gguf, RoundTripsEveryValueTypeAndTensorType) {
  const auto tensors = SomeTensors();
  for (uint32_t alignment : {32u, 64u, 1u}) {
    SCOPED_TRACE(alignment);
    GgufWriter w = MakeWriter(tensors, alignment);
    auto bytes = w.WriteToBytes();
    ASSERT_TRUE(bytes.ok());
    EXPECT_EQ(bytes->size(), w.FileSize());
    const std::string file(reinterpret_cast<const char*>(bytes->data()), bytes->size());
    const auto r = Parse(file);
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(r->version, 3u);
    EXPECT_EQ(r->alignment, alignment);
    EXPECT_EQ(r->data_offset % alignment, 0u);
    const auto want = EveryValueType();
    const size_t extra = alignment != kGgufDefaultAlignment ? 1 : 0;  // general.alignment
    ASSERT_EQ(r->metadata.size(), want.size() + extra);
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(r->metadata[i + extra].key, want[i].key);
      EXPECT_TRUE(r->metadata[i + extra].value == want[i].value)
          << want[i].key << ": " << r->metadata[i + extra].value.ToString();
      EXPECT_EQ(r->metadata[i + extra].value.type(), want[i].value.type());
    }
    ASSERT_EQ(r->tensors.size(), tensors.size());
    uint64_t prev_end = 0;
    for (size_t i = 0; i < tensors.size(); ++i) {
      const GgufTensorInfo& t = r->tensors[i];
      EXPECT_EQ(t.name, tensors[i].name);
      EXPECT_EQ(t.type, tensors[i].type);
      EXPECT_EQ(t.shape, tensors[i].shape);
      EXPECT_EQ(t.offset % alignment, 0u);
      EXPECT_GE(t.offset, prev_end);  // insertion order
      prev_end = t.offset + t.data.size();
      ASSERT_EQ(t.data.size(), tensors[i].bytes.size());
      EXPECT_EQ(std::memcmp(t.data.data(), tensors[i].bytes.data(), t.data.size()), 0) << t.name;
      EXPECT_EQ(size_t(t.data.data() - AsBytes(file).data()), r->data_offset + t.offset);
    }
  }
}

TEST(Gguf, FilesAreDeterministicAndMatchTheBuffer) {
  const auto tensors = SomeTensors();
  const fs::path a = testing::TempDir() / "det_a.gguf", b = testing::TempDir() / "det_b.gguf";
  ASSERT_TRUE(MakeWriter(tensors, 32).Write(a).ok());
  ASSERT_TRUE(MakeWriter(tensors, 32).Write(b).ok());
  const std::string fa = ReadFile(a);
  EXPECT_EQ(fa, ReadFile(b));
  auto buf = MakeWriter(tensors, 32).WriteToBytes();
  ASSERT_TRUE(buf.ok());
  EXPECT_EQ(fa, std::string(reinterpret_cast<const char*>(buf->data()), buf->size()));
  EXPECT_EQ(fa.size() % 32, 0u);  // the last tensor is padded too, like llama.cpp's writer
  auto f = GgufFile::Open(a);
  ASSERT_TRUE(f.ok()) << f.error().message();
  EXPECT_EQ(*f->GetInt("u32"), 4000000000);
  EXPECT_EQ(*f->GetInt("i8"), -100);
  EXPECT_EQ(*f->GetString("str"), "h\xC3\xA9llo");
  EXPECT_EQ(*f->GetFloat("f32"), 1.5);
  EXPECT_TRUE(*f->GetBool("bool"));
  EXPECT_FALSE(f->GetInt("u64").ok());  // above INT64_MAX
  EXPECT_FALSE(f->GetString("u8").ok());
  const auto missing = f->GetInt("nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message().find("missing key 'nope'"), std::string::npos);
  ASSERT_NE(f->FindTensor("q4_k"), nullptr);
  EXPECT_EQ(f->FindTensor("q4_k")->numel(), 512);
}

TEST(Gguf, FillCallbackWritesAtWriteTime) {
  GgufWriter w;
  int calls = 0;
  ASSERT_TRUE(w.AddTensor("x", GgmlType::kF32, {2}, [&](std::span<std::byte> out) {
                 ++calls;
                 const float v[2] = {1.0f, 2.0f};
                 std::memcpy(out.data(), v, 8);
                 return Status::Ok();
               }).ok());
  EXPECT_EQ(calls, 0);
  ASSERT_TRUE(w.AddTensor("bad", GgmlType::kF32, {1}, [](std::span<std::byte>) -> Status {
                 return Err("source unreadable");
               }).ok());
  const fs::path out = testing::TempDir() / "fill_fail.gguf";
  const auto st = w.Write(out);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("tensor 'bad': source unreadable"), std::string::npos);
  EXPECT_FALSE(fs::exists(out));  // no half-written file
  EXPECT_EQ(calls, 1);
}

TEST(Gguf, WriterRejectsBadInput) {
  GgufWriter w;
  ASSERT_TRUE(w.Set("k", GgufValue(uint32_t{1})).ok());
  EXPECT_FALSE(w.Set("k", GgufValue(uint32_t{2})).ok());
  EXPECT_FALSE(w.Set("", GgufValue(uint32_t{2})).ok());
  EXPECT_FALSE(w.Set("general.alignment", GgufValue(uint32_t{48})).ok());
  EXPECT_FALSE(w.Set("general.alignment", GgufValue(uint64_t{64})).ok());
  const std::vector<std::byte> b8(8);
  ASSERT_TRUE(w.AddTensor("t", GgmlType::kF32, {2}, b8).ok());
  EXPECT_FALSE(w.AddTensor("t", GgmlType::kF32, {2}, b8).ok());              // duplicate
  EXPECT_FALSE(w.AddTensor("u", GgmlType::kF32, {3}, b8).ok());              // wrong size
  EXPECT_FALSE(w.AddTensor("v", GgmlType::kQ8_0, {1, 16}, b8).ok());         // partial block
  EXPECT_FALSE(w.AddTensor("w", GgmlType::kF32, {1, 1, 1, 1, 2}, b8).ok());  // 5 dims
  EXPECT_FALSE(w.AddTensor(std::string(64, 'n'), GgmlType::kF32, {2}, b8).ok());
  EXPECT_TRUE(w.AddTensor(std::string(63, 'n'), GgmlType::kF32, {2}, b8).ok());
  EXPECT_FALSE(w.AddTensor("", GgmlType::kF32, {2}, b8).ok());
}

// llama.cpp's vocab-only GGUF files. The copies in ../shared are damaged (bytes that are not
// UTF-8, such as those of f32 values, were replaced by U+FFFD when they were stored as text):
// such a file must give a clean one-line error; an intact one must parse with its tokens.
TEST(Gguf, ReadsLlamaCppVocabFiles) {
  QF_NEED_SHARED("data/tokenizers/ggml-vocab");
  const fs::path dir = testing::SharedDir() / "data/tokenizers/ggml-vocab";
  struct Want {
    const char* file;
    const char* model;
    size_t tokens;
  };
  for (const Want& want : {Want{"ggml-vocab-gpt-2.gguf", "gpt2", 50257},
                           Want{"ggml-vocab-llama-spm.gguf", "llama", 32000},
                           Want{"ggml-vocab-phi-3.gguf", "llama", 32064}}) {
    auto f = GgufFile::Open(dir / want.file);
    if (!f.ok() && ReadFile(dir / want.file).find("\xEF\xBF\xBD") != std::string::npos) {
      EXPECT_EQ(f.error().message().find('\n'), std::string::npos);
      EXPECT_NE(f.error().message().find("truncated"), std::string::npos) << f.error().message();
      continue;
    }
    ASSERT_TRUE(f.ok()) << f.error().message();
    EXPECT_EQ(*f->GetString("tokenizer.ggml.model"), want.model) << want.file;
    const GgufValue* tokens = f->Find("tokenizer.ggml.tokens");
    ASSERT_NE(tokens, nullptr);
    ASSERT_NE(tokens->get<std::vector<std::string>>(), nullptr);
    EXPECT_EQ(tokens->array_size(), want.tokens) << want.file;
    EXPECT_TRUE(f->tensors().empty());
  }
}

// ---- malformed files -------------------------------------------------------------------

// A valid file: one KV, one f32 [2] tensor.
std::string SmallFile() {
  Raw r = Header(1, 1);
  r.str("general.name").u32(8).str("x");
  AddInfo(r, "w", {2}, 0, 0).pad();
  return r.put(1.0f).put(2.0f).b;
}

TEST(GgufCorrupt, HandMadeFileParses) {
  const auto r = Parse(SmallFile());
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->tensors[0].shape, std::vector<int64_t>{2});
  EXPECT_EQ(r->data_offset % 32, 0u);
}

TEST(GgufCorrupt, MagicAndVersion) {
  std::string bad = SmallFile();
  bad[3] = 'L';
  ExpectError(bad, "bad magic 'GGUL'");
  ExpectError("GG", "too short");
  ExpectError(Header(0, 0, 1).b, "version 1 is not supported");
  ExpectError(Header(0, 0, 4).b, "unsupported GGUF version 4");
  ExpectError(Header(0, 0, 0x03000000).b, "big-endian");
  EXPECT_TRUE(Parse(Header(0, 0, 2).b).ok());  // v2 has the same layout
  EXPECT_TRUE(Parse(Header(0, 0, 3).b).ok());
}

TEST(GgufCorrupt, Counts) {
  ExpectError(Header(-1, 0).b, "tensor count -1");
  ExpectError(Header(1000, 0).zeros(100).b, "tensor count 1000 is impossible");
  ExpectError(Header(0, int64_t(1) << 60).b, "metadata count");
  ExpectError(Header(0, 1).b, "metadata count 1 is impossible for the 0 bytes");
  ExpectError(Header(0, 1).u64(100).zeros(5).b, "truncated: key #0 needs 100 bytes at offset 32");
}

TEST(GgufCorrupt, MetadataValues) {
  ExpectError(Header(0, 1).str("k").u32(13).zeros(8).b, "key 'k': unknown value type id 13");
  ExpectError(Header(0, 1).str("k").u32(9).u32(9).u64(1).zeros(8).b, "nested arrays");
  ExpectError(Header(0, 1).str("k").u32(9).u32(77).u64(1).zeros(8).b,
              "unknown array element type id 77");
  ExpectError(Header(0, 1).str("k").u32(9).u32(5).u64(1000).zeros(16).b,
              "array of 1000 i32 elements cannot fit");
  ExpectError(Header(0, 1).str("k").u32(9).u32(8).u64(3).str("a").b,
              "array of 3 str elements cannot fit");
  ExpectError(Header(0, 1).str("k").u32(9).u32(8).u64(2).str("a").u64(50).b,
              "truncated: value of key 'k' needs 50 bytes");
  ExpectError(Header(0, 2).str("k").u32(4).u32(1).str("k").u32(4).u32(1).b, "duplicate key 'k'");
  ExpectError(Header(0, 1).str("").u32(4).u32(1).b, "key #0 is empty");
  ExpectError(Header(0, 1).str("k").u32(7).put(uint8_t{2}).b, "bool has value 2");
  ExpectError(Header(0, 1).str("k").u32(8).u64(uint64_t(1) << 62).b, "truncated: value of key 'k'");
  ExpectError(Header(0, 1).str("k\n\x01").u32(13).zeros(8).b, "key 'k\\x0a\\x01'");
}

TEST(GgufCorrupt, Alignment) {
  ExpectError(Header(0, 1).str("general.alignment").u32(10).u64(64).b,
              "general.alignment has type u64 (expected u32)");
  ExpectError(Header(0, 1).str("general.alignment").u32(4).u32(48).b, "not a power of two");
  ExpectError(Header(0, 1).str("general.alignment").u32(4).u32(0).b, "not a power of two");
  // With alignment 64, an offset of 32 is misaligned.
  Raw r = Header(1, 1);
  r.str("general.alignment").u32(4).u32(64);
  AddInfo(r, "w", {2}, 0, 32).pad(64).zeros(128);
  ExpectError(r.b, "tensor 'w': data offset 32 is not a multiple of the alignment 64");
}

TEST(GgufCorrupt, TensorInfos) {
  auto one = [](std::string_view name, std::vector<int64_t> ne, uint32_t type, uint64_t offset,
                size_t data = 64) {
    Raw r = Header(1, 0);
    AddInfo(r, name, std::move(ne), type, offset).pad().zeros(data);
    return r.b;
  };
  ExpectError(one("w", {2}, 99, 0), "tensor 'w': unknown ggml type id 99");
  ExpectError(one("w", {2}, 31, 0), "ggml type id 31 (Q4_0_4_4) was removed");
  ExpectError(one("w", {1, 1, 1, 1, 1}, 0, 0), "tensor 'w': 5 dimensions");
  ExpectError(one("w", {-2}, 0, 0), "dimension 0 is negative");
  ExpectError(one("w", {33}, 8, 0, 64), "not a whole number of q8_0 blocks of 32");
  ExpectError(one("w", {int64_t(1) << 40, int64_t(1) << 40}, 0, 0), "too many elements");
  ExpectError(one("w", {2}, 0, 4), "data offset 4 is not a multiple of the alignment 32");
  ExpectError(one("w", {20}, 0, 32, 64), "data [32, 112) lies beyond the end of the file");
  ExpectError(one("w", {2}, 0, uint64_t(1) << 63), "beyond the end");
  ExpectError(one("", {2}, 0, 0), "tensor #0 has an empty name");
  ExpectError(one(std::string(64, 'n'), {2}, 0, 0), "name is 64 bytes (at most 63)");
  ExpectError(one("w", {2}, 0, 0, 0),
              "data [0, 8) lies beyond the end of the file (data section has 0 bytes)");

  Raw two = Header(2, 0);
  AddInfo(two, "a", {16}, 0, 0);
  AddInfo(two, "b", {16}, 0, 64).pad().zeros(128);
  EXPECT_TRUE(Parse(two.b).ok());
  Raw overlap = Header(2, 0);
  AddInfo(overlap, "a", {16}, 0, 0);
  AddInfo(overlap, "b", {8}, 0, 32).pad().zeros(128);
  ExpectError(overlap.b, "tensors 'a' and 'b' overlap");
  Raw dup = Header(2, 0);
  AddInfo(dup, "a", {4}, 0, 0);
  AddInfo(dup, "a", {4}, 0, 32).pad().zeros(128);
  ExpectError(dup.b, "duplicate tensor name 'a'");
  // The data section itself must exist when there are tensors.
  Raw cut = Header(1, 0);
  AddInfo(cut, "w", {0}, 0, 0);
  ExpectError(cut.b, "the data section starts at offset");
}

// Every prefix of a real file fails exactly until the last tensor's bytes are in; byte flips
// anywhere in the header give ok or an Error, and on ok every span lies inside the input.
TEST(GgufCorrupt, TruncationsAndByteFlipsNeverCrash) {
  auto tensors = SomeTensors();
  tensors.resize(4);
  GgufWriter w;
  ASSERT_TRUE(w.Set("general.name", GgufValue("n")).ok());
  ASSERT_TRUE(w.Set("a.str", GgufValue(std::vector<std::string>{"x", "yz"})).ok());
  ASSERT_TRUE(w.Set("a.f32", GgufValue(std::vector<float>{1, 2})).ok());
  for (const auto& t : tensors) ASSERT_TRUE(w.AddTensor(t.name, t.type, t.shape, t.bytes).ok());
  auto bytes = w.WriteToBytes();
  ASSERT_TRUE(bytes.ok());
  const std::string file(reinterpret_cast<const char*>(bytes->data()), bytes->size());
  const auto full = Parse(file);
  ASSERT_TRUE(full.ok());
  uint64_t needed = 0;
  for (const auto& t : full->tensors)
    needed = std::max<uint64_t>(needed, full->data_offset + t.offset + t.data.size());
  for (size_t n = 0; n < file.size(); ++n) {
    const auto r = Parse(file.substr(0, n));
    EXPECT_EQ(r.ok(), n >= needed) << "prefix " << n;
    if (!r.ok()) {
      EXPECT_EQ(r.error().message().find('\n'), std::string::npos);
    }
  }
  for (size_t i = 0; i < full->data_offset; ++i) {
    for (int flip : {0x01, 0x10, 0x80, 0xff}) {
      std::string bad = file;
      bad[i] = char(bad[i] ^ flip);
      const auto r = Parse(bad);
      if (!r.ok()) continue;
      for (const auto& t : r->tensors) {
        EXPECT_GE(t.data.data(), AsBytes(bad).data());
        EXPECT_LE(t.data.data() + t.data.size(), AsBytes(bad).data() + bad.size());
        EXPECT_EQ(t.data.size(), *GgmlTensorBytes(t.type, t.shape));
      }
    }
  }
}

TEST(GgufCorrupt, FuzzCorpusSeeds) {
  const fs::path dir = testing::RepoDir() / "fuzz/corpus/gguf";
  size_t valid = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const auto r = ParseGguf(AsBytes(ReadFile(entry.path())), entry.path().string());
    if (r.ok()) {
      ++valid;
    } else {
      EXPECT_FALSE(r.error().message().empty());
    }
  }
  EXPECT_GT(valid, 0u);
}

// ---- qforge convert --------------------------------------------------------------------

fs::path Convert(const std::string& model, const std::string& out_name, const std::string& flags) {
  const fs::path out = testing::TempDir() / out_name;
  std::string log;
  const int rc = RunCommand(Q() + " convert " + model + " -o " + out.string() + " " + flags, &log);
  EXPECT_EQ(rc, 0) << log;
  return out;
}

// Row of the Hugging Face q/k weight that ggml's interleaved-RoPE row `r` holds: per head,
// rows (h, half j, i) become (h, i, j) (convert_hf_to_gguf.py LlamaModel.permute).
int64_t HfRowOf(int64_t r, int64_t n_head, int64_t rows) {
  const int64_t hd = rows / n_head;
  for (int64_t h = 0; h < n_head; ++h)
    for (int64_t i = 0; i < hd / 2; ++i)
      for (int64_t j = 0; j < 2; ++j)
        if (h * hd + i * 2 + j == r) return h * hd + j * (hd / 2) + i;
  return -1;
}

std::vector<float> ToF32(std::span<const std::byte> data, DType dt) {
  const size_t n = data.size() / Info(dt).bytes;
  std::vector<float> v(n);
  EXPECT_TRUE(ConvertToF32(dt, data.data(), n, v.data()));
  return v;
}

std::vector<float> GgufToF32(const GgufTensorInfo& t) {
  const DType dt = t.type == GgmlType::kF32   ? DType::kF32
                   : t.type == GgmlType::kF16 ? DType::kF16
                                              : DType::kBF16;
  return ToF32(t.data, dt);
}

std::string HfName(const std::string& gguf) {
  static const std::pair<const char*, const char*> kMap[] = {
      {"attn_norm.weight", "input_layernorm.weight"},
      {"attn_q.weight", "self_attn.q_proj.weight"},
      {"attn_k.weight", "self_attn.k_proj.weight"},
      {"attn_v.weight", "self_attn.v_proj.weight"},
      {"attn_output.weight", "self_attn.o_proj.weight"},
      {"attn_q.bias", "self_attn.q_proj.bias"},
      {"attn_k.bias", "self_attn.k_proj.bias"},
      {"attn_v.bias", "self_attn.v_proj.bias"},
      {"attn_q_norm.weight", "self_attn.q_norm.weight"},
      {"attn_k_norm.weight", "self_attn.k_norm.weight"},
      {"ffn_norm.weight", "post_attention_layernorm.weight"},
      {"ffn_gate.weight", "mlp.gate_proj.weight"},
      {"ffn_up.weight", "mlp.up_proj.weight"},
      {"ffn_down.weight", "mlp.down_proj.weight"}};
  if (gguf == "token_embd.weight") return "model.embed_tokens.weight";
  if (gguf == "output_norm.weight") return "model.norm.weight";
  if (gguf == "output.weight") return "lm_head.weight";
  const size_t dot = gguf.find('.', 4);  // "blk.N."
  for (const auto& [g, h] : kMap) {
    if (gguf.substr(dot + 1) == g) return "model.layers." + gguf.substr(4, dot - 4) + "." + h;
  }
  return "?";
}

// Every GGUF tensor against its source: same values (exactly, after `encode`), q/k rows (and
// biases) permuted for arch llama only.
void ExpectTensorsMatch(const GgufFile& f, const TensorStore& st, bool permuted, int64_t heads,
                        int64_t kv_heads, GgmlType weight_type) {
  size_t seen = 0;
  for (const GgufTensorInfo& t : f.tensors()) {
    if (t.name == "rope_freqs.weight") continue;
    const std::string hf = HfName(t.name);
    const TensorInfo* src = st.Find(hf);
    ASSERT_NE(src, nullptr) << t.name << " -> " << hf;
    ++seen;
    EXPECT_EQ(t.shape, src->shape) << t.name;
    EXPECT_EQ(t.type, src->shape.size() == 1 ? GgmlType::kF32 : weight_type) << t.name;
    const std::vector<float> got = GgufToF32(t), want = ToF32(src->data, src->dtype);
    ASSERT_EQ(got.size(), want.size()) << t.name;
    const bool is_q = t.name.find("attn_q.") != std::string::npos;
    const bool is_k = t.name.find("attn_k.") != std::string::npos;
    const int64_t cols = t.shape.size() == 2 ? t.shape[1] : 1;
    const int64_t rows = int64_t(got.size()) / cols;
    size_t bad = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t s = permuted && is_q   ? HfRowOf(r, heads, rows)
                        : permuted && is_k ? HfRowOf(r, kv_heads, rows)
                                           : r;
      for (int64_t c = 0; c < cols; ++c) {
        float w = want[size_t(s * cols + c)];
        if (t.type == GgmlType::kF16) w = F16ToF32(F16BitsRne(w));
        if (t.type == GgmlType::kBF16) w = BF16ToF32(Bf16BitsRne(w));
        if (BitsFromF32(got[size_t(r * cols + c)]) != BitsFromF32(w)) ++bad;
      }
    }
    EXPECT_EQ(bad, 0u) << t.name;
  }
  EXPECT_EQ(seen, st.tensors().size());
}

TEST(GgufConvert, BundledModelF32MatchesSafetensors) {
  const fs::path out = Convert(Bundled(), "l27_f32.gguf", "--outtype f32");
  auto f = GgufFile::Open(out);
  ASSERT_TRUE(f.ok()) << f.error().message();
  auto st = TensorStore::Open(Bundled());
  ASSERT_TRUE(st.ok());
  ASSERT_EQ(f->tensors().size(), 57u);
  ExpectTensorsMatch(*f, *st, /*permuted=*/true, 8, 4, GgmlType::kF32);

  EXPECT_EQ(*f->GetString("general.architecture"), "llama");
  EXPECT_EQ(*f->GetString("general.name"), "llama-27m");
  EXPECT_EQ(*f->GetInt("llama.block_count"), 6);
  EXPECT_EQ(*f->GetInt("llama.context_length"), 512);
  EXPECT_EQ(*f->GetInt("llama.embedding_length"), 512);
  EXPECT_EQ(*f->GetInt("llama.feed_forward_length"), 1536);
  EXPECT_EQ(*f->GetInt("llama.attention.head_count"), 8);
  EXPECT_EQ(*f->GetInt("llama.attention.head_count_kv"), 4);
  EXPECT_EQ(*f->GetInt("llama.rope.dimension_count"), 64);
  EXPECT_EQ(*f->GetInt("llama.vocab_size"), 8192);
  EXPECT_EQ(*f->GetFloat("llama.rope.freq_base"), 10000.0);
  EXPECT_EQ(*f->GetFloat("llama.attention.layer_norm_rms_epsilon"), double(1e-5f));
  EXPECT_EQ(f->Find("llama.attention.key_length"), nullptr);  // 512 / 8 = head_dim
  EXPECT_EQ(f->Find("llama.context_length")->type(), GgufType::kU32);
  EXPECT_EQ(f->Find("llama.rope.freq_base")->type(), GgufType::kF32);
  EXPECT_EQ(*f->GetInt("general.file_type"), 0);
  EXPECT_EQ(*f->GetInt("general.quantization_version"), 2);
  EXPECT_EQ(f->FindTensor("output.weight")->shape, (std::vector<int64_t>{8192, 512}));

  // Tokenizer: every piece, score and type as sentencepiece has them.
  EXPECT_EQ(*f->GetString("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(*f->GetString("tokenizer.ggml.pre"), "default");
  EXPECT_EQ(*f->GetInt("tokenizer.ggml.bos_token_id"), 1);
  EXPECT_EQ(*f->GetInt("tokenizer.ggml.eos_token_id"), 2);
  EXPECT_EQ(*f->GetInt("tokenizer.ggml.unknown_token_id"), 0);
  EXPECT_TRUE(*f->GetBool("tokenizer.ggml.add_bos_token"));
  EXPECT_FALSE(*f->GetBool("tokenizer.ggml.add_eos_token"));
  const auto* tokens = f->Find("tokenizer.ggml.tokens")->get<std::vector<std::string>>();
  const auto* scores = f->Find("tokenizer.ggml.scores")->get<std::vector<float>>();
  const auto* types = f->Find("tokenizer.ggml.token_type")->get<std::vector<int32_t>>();
  ASSERT_TRUE(tokens && scores && types);
  sentencepiece::SentencePieceProcessor sp;
  ASSERT_TRUE(sp.Load((fs::path(Bundled()) / "tokenizer.model").string()).ok());
  ASSERT_EQ(tokens->size(), 8192u);
  ASSERT_EQ(sp.GetPieceSize(), 8192);
  for (int i = 0; i < 8192; ++i) {
    EXPECT_EQ((*tokens)[size_t(i)], sp.IdToPiece(i));
    EXPECT_EQ((*scores)[size_t(i)], sp.GetScore(i));
  }
  EXPECT_EQ((*types)[0], 2);     // <unk>: UNKNOWN
  EXPECT_EQ((*types)[1], 3);     // <s>: CONTROL
  EXPECT_EQ((*types)[3], 6);     // <0x00>: BYTE
  EXPECT_EQ((*types)[1000], 1);  // NORMAL
}

TEST(GgufConvert, HalfTypesSizesAndDeterminism) {
  auto st = TensorStore::Open(Bundled());
  ASSERT_TRUE(st.ok());
  uint64_t weights = 0, vectors = 0;  // elements of 2-D and 1-D tensors
  for (const auto& t : st->tensors()) (t.shape.size() == 2 ? weights : vectors) += t.numel();
  for (const char* type : {"f16", "bf16"}) {
    SCOPED_TRACE(type);
    const fs::path out =
        Convert(Bundled(), std::string("l27_") + type + ".gguf", std::string("--outtype ") + type);
    auto f = GgufFile::Open(out);
    ASSERT_TRUE(f.ok()) << f.error().message();
    uint64_t data = 0;
    for (const auto& t : f->tensors()) data += t.data.size();
    EXPECT_EQ(data, 2 * weights + 4 * vectors);
    EXPECT_LT(f->file_size() - data, 400'000u);  // header + tokenizer + padding
    const GgmlType want = type[0] == 'f' ? GgmlType::kF16 : GgmlType::kBF16;
    EXPECT_EQ(*f->GetInt("general.file_type"), type[0] == 'f' ? 1 : 32);
    ExpectTensorsMatch(*f, *st, true, 8, 4, want);
  }
  // auto = the checkpoint's bf16, and the same bytes on every run.
  const fs::path a = Convert(Bundled(), "l27_auto.gguf", "");
  EXPECT_EQ(ReadFile(a), ReadFile(testing::TempDir() / "l27_bf16.gguf"));
}

TEST(GgufConvert, InfoReadsGguf) {
  const fs::path out = Convert(Bundled(), "l27_info.gguf", "--outtype f16 --name Tiny");
  std::string log;
  ASSERT_EQ(RunCommand(Q() + " info " + out.string() + " --json", &log), 0) << log;
  const auto j = nlohmann::json::parse(log);
  EXPECT_EQ(j["format"], "gguf");
  EXPECT_EQ(j["architecture"], "llama");
  EXPECT_EQ(j["parameters"], 27269632);
  EXPECT_EQ(j["tensors"].size(), 57u);
  EXPECT_EQ(j["metadata"]["general.name"], "Tiny");
  EXPECT_EQ(j["metadata"]["tokenizer.ggml.tokens"]["count"], 8192);
  ASSERT_EQ(RunCommand(Q() + " info " + out.string(), &log), 0) << log;
  EXPECT_NE(log.find("blk.5.ffn_down.weight"), std::string::npos) << log;
}

void ExpectOneLineError(const std::string& cmd, const std::string& want) {
  std::string out;
  const int rc = RunCommand(cmd, &out);
  EXPECT_NE(rc, 0) << cmd << "\n" << out;
  EXPECT_LT(rc, 128) << "crashed: " << cmd << "\n" << out;
  EXPECT_NE(out.find(want), std::string::npos) << cmd << "\n" << out;
  EXPECT_EQ(out.find("qforge: error:"), 0u) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
}

TEST(GgufConvert, ErrorsAreOneLineAndLeaveNoFile) {
  const fs::path tmp = testing::TempDir();
  ExpectOneLineError(
      Q() + " convert " + (tmp / "nope").string() + " -o " + (tmp / "x.gguf").string(),
      "expected a model folder");
  ExpectOneLineError(Q() + " convert " + Bundled() + " -o " + (tmp / "no/such/dir.gguf").string(),
                     "cannot create");
  ExpectOneLineError(Q() + " convert " + Bundled() + " -o " + tmp.string(), "is a folder");
  ExpectOneLineError(Q() + " convert " + Bundled() + " -o x.gguf --outtype q4", "outtype");

  // Shapes are checked against config.json (the bundled weights, linked).
  const fs::path bundled = Bundled();
  const fs::path shape = tmp / "bad_shape";
  fs::create_directories(shape);
  fs::copy_file(bundled / "tokenizer.model", shape / "tokenizer.model",
                fs::copy_options::overwrite_existing);
  fs::remove(shape / "model.safetensors");
  fs::create_symlink(fs::absolute(bundled / "model.safetensors"), shape / "model.safetensors");
  std::string cfg = ReadFile(bundled / "config.json");
  cfg.replace(cfg.find("\"intermediate_size\": 1536"), 25, "\"intermediate_size\": 1540");
  std::ofstream(shape / "config.json") << cfg;
  ExpectOneLineError(
      Q() + " convert " + shape.string() + " -o " + (tmp / "s.gguf").string(),
      "model.layers.0.mlp.gate_proj.weight' has shape [1536, 512], expected [1540, 512]");

  // A folder without a tokenizer: an error, and no output (nor temporary) left behind.
  const fs::path dir = tmp / "no_tokenizer";
  fs::create_directories(dir);
  fs::copy_file(fs::path(Bundled()) / "config.json", dir / "config.json",
                fs::copy_options::overwrite_existing);
  fs::create_symlink(fs::absolute(fs::path(Bundled()) / "model.safetensors"),
                     dir / "model.safetensors");
  const fs::path target = tmp / "no_tokenizer.gguf";
  ExpectOneLineError(Q() + " convert " + dir.string() + " -o " + target.string(),
                     "no tokenizer.model or tokenizer.json");
  EXPECT_FALSE(fs::exists(target));
  for (const auto& e : fs::directory_iterator(tmp))
    EXPECT_EQ(e.path().filename().string().find("no_tokenizer.gguf.tmp"), std::string::npos);

  ExpectOneLineError(Q() + " info " + (fs::path(Bundled()) / "tokenizer.model").string() + ".gguf",
                     "cannot open");

  // A quantized (compressed-tensors) checkpoint is refused by name.
  const fs::path quant = tmp / "quantized";
  fs::create_directories(quant);
  std::string qcfg = ReadFile(bundled / "config.json");
  qcfg.insert(qcfg.rfind('}'),
              R"(, "quantization_config": {"quant_method": "compressed-tensors"})");
  std::ofstream(quant / "config.json") << qcfg;
  ExpectOneLineError(Q() + " convert " + quant.string() + " -o " + (tmp / "q.gguf").string(),
                     "a quantized checkpoint (quant_method 'compressed-tensors')");
}

// stories260k: tied embeddings (no output.weight), head_dim derived, fp32 source -> auto f16.
TEST(GgufConvert, Stories260kTiedFp32) {
  QF_NEED_SHARED("models/stories260k");
  const fs::path model = testing::SharedDir() / "models/stories260k";
  const fs::path out = Convert(model.string(), "stories.gguf", "");
  auto f = GgufFile::Open(out);
  ASSERT_TRUE(f.ok()) << f.error().message();
  EXPECT_EQ(f->FindTensor("output.weight"), nullptr);
  EXPECT_EQ(*f->GetInt("general.file_type"), 1);  // fp32 weights: auto gives f16
  EXPECT_EQ(*f->GetInt("llama.rope.dimension_count"), 8);
  auto st = TensorStore::Open(model);
  ASSERT_TRUE(st.ok());
  ExpectTensorsMatch(*f, *st, true, 8, 4, GgmlType::kF16);
}

// ---- synthetic Qwen2 / Qwen3 / Llama-3 checkpoints with real tokenizers -------------------

struct Synthetic {
  std::string arch;
  int64_t vocab, hidden = 16, inter = 24, heads = 4, kv_heads = 2, head_dim = 4;
  bool bias = false, qk_norm = false, tied = false, llama3_rope = false;
  std::string tokenizer;  // file under shared/data/tokenizers, copied as tokenizer.json
};

fs::path WriteSynthetic(const Synthetic& s, const std::string& name) {
  const fs::path dir = testing::TempDir() / name;
  fs::create_directories(dir);
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes = {
      {"model.embed_tokens.weight", {s.vocab, s.hidden}}, {"model.norm.weight", {s.hidden}}};
  if (!s.tied) shapes.push_back({"lm_head.weight", {s.vocab, s.hidden}});
  const int64_t q = s.heads * s.head_dim, kv = s.kv_heads * s.head_dim;
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    for (auto& [n, sh] : std::vector<std::pair<std::string, std::vector<int64_t>>>{
             {"input_layernorm.weight", {s.hidden}},
             {"post_attention_layernorm.weight", {s.hidden}},
             {"self_attn.q_proj.weight", {q, s.hidden}},
             {"self_attn.k_proj.weight", {kv, s.hidden}},
             {"self_attn.v_proj.weight", {kv, s.hidden}},
             {"self_attn.o_proj.weight", {s.hidden, q}},
             {"mlp.gate_proj.weight", {s.inter, s.hidden}},
             {"mlp.up_proj.weight", {s.inter, s.hidden}},
             {"mlp.down_proj.weight", {s.hidden, s.inter}}})
      shapes.push_back({p + n, sh});
    if (s.bias) {
      shapes.push_back({p + "self_attn.q_proj.bias", {q}});
      shapes.push_back({p + "self_attn.k_proj.bias", {kv}});
      shapes.push_back({p + "self_attn.v_proj.bias", {kv}});
    }
    if (s.qk_norm) {
      shapes.push_back({p + "self_attn.q_norm.weight", {s.head_dim}});
      shapes.push_back({p + "self_attn.k_norm.weight", {s.head_dim}});
    }
  }
  std::vector<std::vector<float>> data;
  std::vector<TensorToWrite> tensors;
  data.reserve(shapes.size());
  for (const auto& [n, sh] : shapes) {
    int64_t numel = 1;
    for (int64_t d : sh) numel *= d;
    std::vector<float> v(static_cast<size_t>(numel));
    for (float& x : v) x = nd(rng);
    data.push_back(std::move(v));
    tensors.push_back({n, DType::kF32, sh, std::as_bytes(std::span(data.back()))});
  }
  EXPECT_TRUE(WriteSafetensors(dir / "model.safetensors", tensors).ok());
  nlohmann::json cfg = {{"architectures", {s.arch}},
                        {"vocab_size", s.vocab},
                        {"hidden_size", s.hidden},
                        {"intermediate_size", s.inter},
                        {"num_hidden_layers", 2},
                        {"num_attention_heads", s.heads},
                        {"num_key_value_heads", s.kv_heads},
                        {"head_dim", s.head_dim},
                        {"max_position_embeddings", 4096},
                        {"rms_norm_eps", 1e-6},
                        {"rope_theta", 1000000.0},
                        {"tie_word_embeddings", s.tied},
                        {"sliding_window", 1024}};
  if (s.llama3_rope)
    cfg["rope_scaling"] = {{"rope_type", "llama3"},
                           {"factor", 8.0},
                           {"low_freq_factor", 1.0},
                           {"high_freq_factor", 4.0},
                           {"original_max_position_embeddings", 512}};
  std::ofstream(dir / "config.json") << cfg.dump(2);
  const fs::path tok = testing::SharedDir() / "data/tokenizers";
  fs::copy_file(tok / (s.tokenizer + ".tokenizer.json"), dir / "tokenizer.json",
                fs::copy_options::overwrite_existing);
  if (fs::exists(tok / (s.tokenizer + ".tokenizer_config.json"))) {
    fs::copy_file(tok / (s.tokenizer + ".tokenizer_config.json"), dir / "tokenizer_config.json",
                  fs::copy_options::overwrite_existing);
  }
  return dir;
}

// Id of `content` in a GGUF token list.
int64_t TokenId(const GgufFile& f, const std::string& content) {
  const auto& tokens = *f.Find("tokenizer.ggml.tokens")->get<std::vector<std::string>>();
  const auto it = std::find(tokens.begin(), tokens.end(), content);
  return it == tokens.end() ? -1 : int64_t(it - tokens.begin());
}

TEST(GgufConvert, Qwen2BiasesAndQwenTokenizer) {
  QF_NEED_SHARED("data/tokenizers");
  Synthetic s{.arch = "Qwen2ForCausalLM",
              .vocab = 151936,
              .bias = true,
              .tied = true,
              .tokenizer = "qwen3"};
  const fs::path dir = WriteSynthetic(s, "qwen2");
  auto st = TensorStore::Open(dir);
  ASSERT_TRUE(st.ok());
  std::string log;
  ASSERT_EQ(RunCommand(Q() + " convert " + dir.string() + " -o " + (dir / "m.gguf").string() +
                           " --outtype f32",
                       &log),
            0)
      << log;
  EXPECT_EQ(log.find("note:"), std::string::npos) << log;  // no use_sliding_window: full attention
  auto f = GgufFile::Open(dir / "m.gguf");
  ASSERT_TRUE(f.ok()) << f.error().message();
  EXPECT_EQ(*f->GetString("general.architecture"), "qwen2");
  EXPECT_EQ(f->Find("qwen2.attention.key_length"), nullptr);  // head_dim = 16 / 4
  ExpectTensorsMatch(*f, *st, /*permuted=*/false, 4, 2, GgmlType::kF32);
  EXPECT_NE(f->FindTensor("blk.1.attn_k.bias"), nullptr);
  EXPECT_EQ(f->FindTensor("output.weight"), nullptr);
  EXPECT_EQ(f->Find("qwen2.vocab_size"), nullptr);  // only LlamaModel writes it
  EXPECT_EQ(*f->GetString("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(*f->GetString("tokenizer.ggml.pre"), "qwen2");
  const auto& tokens = *f->Find("tokenizer.ggml.tokens")->get<std::vector<std::string>>();
  const auto& types = *f->Find("tokenizer.ggml.token_type")->get<std::vector<int32_t>>();
  ASSERT_EQ(tokens.size(), 151936u);
  EXPECT_EQ(tokens[151643], "<|endoftext|>");
  EXPECT_EQ(types[151643], 3);  // CONTROL
  EXPECT_EQ(tokens[151935], "[PAD151935]");
  EXPECT_EQ(types[151935], 5);  // UNUSED
  EXPECT_EQ(tokens[0], "!");
  EXPECT_EQ(types[0], 1);
  EXPECT_EQ(*f->GetInt("tokenizer.ggml.eos_token_id"), 151645);      // <|im_end|>
  EXPECT_EQ(*f->GetInt("tokenizer.ggml.padding_token_id"), 151643);  // <|endoftext|>
  EXPECT_EQ(f->Find("tokenizer.ggml.bos_token_id"), nullptr);
  EXPECT_FALSE(*f->GetBool("tokenizer.ggml.add_bos_token"));
  EXPECT_NE(f->Find("tokenizer.chat_template"), nullptr);
  const auto& merges = *f->Find("tokenizer.ggml.merges")->get<std::vector<std::string>>();
  EXPECT_EQ(merges.size(), 151387u);
  EXPECT_EQ(merges[0], "\xC4\xA0 \xC4\xA0");  // "Ġ Ġ": list-form merges joined with a space
}

TEST(GgufConvert, Qwen3QkNormAndKeyLength) {
  QF_NEED_SHARED("data/tokenizers");
  Synthetic s{.arch = "Qwen3ForCausalLM",
              .vocab = 151936,
              .head_dim = 8,
              .qk_norm = true,
              .tokenizer = "qwen3"};
  const fs::path dir = WriteSynthetic(s, "qwen3");
  const fs::path out = Convert(dir.string(), "qwen3.gguf", "--outtype bf16");
  auto f = GgufFile::Open(out);
  ASSERT_TRUE(f.ok()) << f.error().message();
  EXPECT_EQ(*f->GetString("general.architecture"), "qwen3");
  EXPECT_EQ(*f->GetInt("qwen3.attention.key_length"), 8);  // != 16 / 4
  EXPECT_EQ(*f->GetInt("qwen3.attention.value_length"), 8);
  EXPECT_EQ(f->FindTensor("blk.0.attn_q_norm.weight")->type, GgmlType::kF32);
  auto st = TensorStore::Open(dir);
  ASSERT_TRUE(st.ok());
  ExpectTensorsMatch(*f, *st, false, 4, 2, GgmlType::kBF16);
}

TEST(GgufConvert, Llama3TokenizerAndRopeFreqs) {
  QF_NEED_SHARED("data/tokenizers");
  Synthetic s{.arch = "LlamaForCausalLM",
              .vocab = 128256,
              .head_dim = 8,
              .llama3_rope = true,
              .tokenizer = "llama3"};
  const fs::path dir = WriteSynthetic(s, "llama3");
  const fs::path out = Convert(dir.string(), "llama3.gguf", "--outtype f32");
  auto f = GgufFile::Open(out);
  ASSERT_TRUE(f.ok()) << f.error().message();
  EXPECT_EQ(*f->GetString("tokenizer.ggml.pre"), "llama-bpe");
  EXPECT_EQ(*f->GetInt("tokenizer.ggml.bos_token_id"), 128000);
  EXPECT_EQ(*f->GetInt("tokenizer.ggml.eos_token_id"), 128001);
  EXPECT_EQ(TokenId(*f, "<|begin_of_text|>"), 128000);
  auto st = TensorStore::Open(dir);
  ASSERT_TRUE(st.ok());
  ExpectTensorsMatch(*f, *st, /*permuted=*/true, 4, 2, GgmlType::kF32);
  // rope_freqs: theta 1e6, head_dim 8 -> wavelengths 2π·{1, 31.6, 1000, 31623} = {6.3, 199,
  // 6283, 198692}. Original context 512, low/high factors 1/4: below 512/4 = 128 the factor is
  // 1, above 512 it is 8, and 199 is smoothed: 1 / ((1 - s) / 8 + s), s = (512/199 - 1) / 3.
  const GgufTensorInfo* rf = f->FindTensor("rope_freqs.weight");
  ASSERT_NE(rf, nullptr);
  EXPECT_EQ(rf->type, GgmlType::kF32);
  ASSERT_EQ(rf->shape, std::vector<int64_t>{4});
  const std::vector<float> v = GgufToF32(*rf);
  const double wavelen = 2 * std::numbers::pi * std::pow(1e6, 0.25);
  const double smooth = (512 / wavelen - 1) / 3;
  EXPECT_EQ(v[0], 1.0f);
  EXPECT_NEAR(v[1], 1 / ((1 - smooth) / 8 + smooth), 1e-5);
  EXPECT_EQ(v[2], 8.0f);
  EXPECT_EQ(v[3], 8.0f);
}

// Mistral converts as arch llama (permuted q/k); its sliding window is noted, not stored.
TEST(GgufConvert, MistralGpt2TokenizerAndUnknownTensor) {
  QF_NEED_SHARED("data/tokenizers");
  Synthetic s{.arch = "MistralForCausalLM", .vocab = 50257, .tokenizer = "gpt2"};
  const fs::path dir = WriteSynthetic(s, "gpt2tok");
  const fs::path out = testing::TempDir() / "gpt2tok.gguf";
  std::string log;
  ASSERT_EQ(
      RunCommand(Q() + " convert " + dir.string() + " -o " + out.string() + " --outtype f16", &log),
      0)
      << log;
  EXPECT_NE(log.find("qforge: note: sliding_window 1024 is not stored"), std::string::npos) << log;
  auto f = GgufFile::Open(out);
  ASSERT_TRUE(f.ok()) << f.error().message();
  EXPECT_EQ(*f->GetString("general.architecture"), "llama");
  EXPECT_EQ(*f->GetString("tokenizer.ggml.pre"), "gpt-2");
  EXPECT_EQ(f->Find("tokenizer.ggml.merges")->array_size(), 50000u);
  // No tokenizer_config.json, no ids in config.json, a ByteLevel post-processor: like gguf-py,
  // no special-token ids are written.
  EXPECT_EQ(f->Find("tokenizer.ggml.eos_token_id"), nullptr);
  auto st = TensorStore::Open(dir);
  ASSERT_TRUE(st.ok());
  ExpectTensorsMatch(*f, *st, /*permuted=*/true, 4, 2, GgmlType::kF16);

  // An extra tensor llama.cpp would not know is an error naming it.
  const fs::path bad = testing::TempDir() / "extra_tensor";
  fs::create_directories(bad);
  for (const char* file : {"config.json", "tokenizer.json"})
    fs::copy_file(dir / file, bad / file, fs::copy_options::overwrite_existing);
  auto src = TensorStore::Open(dir);
  ASSERT_TRUE(src.ok());
  std::vector<TensorToWrite> tensors;
  for (const auto& t : src->tensors()) tensors.push_back({t.name, t.dtype, t.shape, t.data});
  const float extra[2] = {1, 2};
  tensors.push_back(
      {"model.layers.0.mlp.gate_proj.bias", DType::kF32, {2}, std::as_bytes(std::span(extra))});
  ASSERT_TRUE(WriteSafetensors(bad / "model.safetensors", tensors).ok());
  ExpectOneLineError(Q() + " convert " + bad.string() + " -o " + (bad / "o.gguf").string(),
                     "tensor 'model.layers.0.mlp.gate_proj.bias' has no counterpart");
}

}  // namespace
}  // namespace qf::io

namespace qf::io {
namespace {

// The one add-BOS policy (text::LlamaCppAddsBos) on the tokenizer.ggml.* keys of a GGUF file, as
// llama-vocab.cpp decides: the key wins; without it SentencePiece and the Llama-3 group of BPE
// pre-tokenizers add BOS, other BPE vocabularies do not.
TEST(VocabBos, GgufKeysDecideAsLlamaCpp) {
  struct Row {
    const char* model;
    const char* pre;
    std::optional<bool> key;
    bool add;
  };
  const Row rows[] = {
      {"llama", "default", std::nullopt, true},  {"llama", "default", false, false},
      {"gpt2", "llama-bpe", std::nullopt, true}, {"gpt2", "llama-bpe", false, false},
      {"gpt2", "qwen2", std::nullopt, false},    {"gpt2", "qwen2", true, true}};
  int i = 0;
  for (const Row& r : rows) {
    GgufWriter w;
    ASSERT_TRUE(w.Set("tokenizer.ggml.model", GgufValue(std::string(r.model))).ok());
    ASSERT_TRUE(w.Set("tokenizer.ggml.pre", GgufValue(std::string(r.pre))).ok());
    ASSERT_TRUE(w.Set("tokenizer.ggml.bos_token_id", GgufValue(uint32_t(7))).ok());
    if (r.key) {
      ASSERT_TRUE(w.Set("tokenizer.ggml.add_bos_token", GgufValue(*r.key)).ok());
    }
    const fs::path f = testing::TempDir() / ("vocab_bos_" + std::to_string(i++) + ".gguf");
    ASSERT_TRUE(w.Write(f).ok());
    auto v = pipeline::LlamaCppVocabBos(f);
    ASSERT_TRUE(v.ok()) << v.error().message();
    EXPECT_EQ(v->add, r.add) << r.model << " " << r.pre;
    EXPECT_EQ(v->bos, 7);
    EXPECT_EQ(text::LlamaCppAddsBos(r.model, r.pre, r.key), r.add);
  }
  // The bundled folder: tokenizer_config.json's add_bos_token (true), BOS id 1.
  auto folder = pipeline::LlamaCppVocabBos(testing::BundledModel());
  ASSERT_TRUE(folder.ok()) << folder.error().message();
  EXPECT_TRUE(folder->add);
  EXPECT_EQ(folder->bos, 1);
}

}  // namespace
}  // namespace qf::io
