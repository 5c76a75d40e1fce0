// safetensors reader tests: hand-written files read back byte-exactly, shards, the bundled model,
// and one test per malformed-header rule (each must be an Error naming the file and the problem).
#include "io/safetensors.h"
#include "io/safetensors_writer.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "test_util.h"

namespace qf::io {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

constexpr char kName[] = "t.safetensors";

struct TestTensor {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;  // raw little-endian data
};

template <class T>
std::string Bytes(std::initializer_list<T> values) {
  std::string out(values.size() * sizeof(T), '\0');
  std::memcpy(out.data(), std::data(values), out.size());
  return out;
}

std::string LengthPrefix(uint64_t n) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = char((n >> (8 * i)) & 0xff);
  return out;
}

// A file from raw header text and data, exactly as given (for corruption tests).
std::string RawFile(const std::string& header, const std::string& data = "") {
  return LengthPrefix(header.size()) + header + data;
}

// A well-formed file: tensors laid out back to back in the given order.
std::string BuildFile(const std::vector<TestTensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {}) {
  Json header = Json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string data;
  for (const auto& t : tensors) {
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
    data += t.bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // pad like the reference writer
  return RawFile(text, data);
}

std::span<const std::byte> AsBytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

// The result points into `file`, so a temporary would leave dangling spans.
Result<SafetensorsHeader> Parse(const std::string& file) {
  return ParseSafetensors(AsBytes(file), kName);
}
Result<SafetensorsHeader> Parse(std::string&& file) = delete;

std::string AsString(std::span<const std::byte> s) {
  return {reinterpret_cast<const char*>(s.data()), s.size()};
}

void WriteFile(const fs::path& path, const std::string& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

fs::path FreshDir(const std::string& name) {
  const fs::path dir = testing::TempDir() / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// Asserts the parse failed with a one-line message naming the file and containing `what`.
void ExpectError(const std::string& file, const std::string& what) {
  const auto r = Parse(file);
  ASSERT_FALSE(r.ok()) << "expected an error about: " << what;
  const std::string& msg = r.error().message();
  EXPECT_NE(msg.find(kName), std::string::npos) << msg;
  EXPECT_NE(msg.find(what), std::string::npos) << "message: " << msg << "\nwanted: " << what;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
}

const TestTensor kF32{"a.f32", "F32", {2, 3}, Bytes<float>({1.5f, -2, 0, 3.25f, 1e-30f, -0.0f})};

// ---- Valid files ----------------------------------------------------------------------------

TEST(Safetensors, ReadsEveryDTypeBackExactly) {
  const std::vector<TestTensor> tensors = {
      kF32,
      {"b.bf16", "BF16", {3}, Bytes<uint16_t>({0x3f80, 0xc000, 0x7f80})},  // 1, -2, inf
      {"c.f16", "F16", {2, 1}, Bytes<uint16_t>({0x3c00, 0x0001})},         // 1, 2^-24
      {"d.i8", "I8", {4}, Bytes<int8_t>({-128, -1, 0, 127})},
      {"e.i32", "I32", {2}, Bytes<int32_t>({-7, 1 << 30})},
      {"f.u8", "U8", {1, 3}, Bytes<uint8_t>({0, 128, 255})},
      {"g.f8", "F8_E4M3", {2}, Bytes<uint8_t>({0x7e, 0x38})},  // 448, 1
      {"h.f64", "F64", {1}, Bytes<double>({3.0})},
      {"i.i16", "I16", {1}, Bytes<int16_t>({-300})},
      {"j.i64", "I64", {1}, Bytes<int64_t>({int64_t(1) << 40})},
      {"k.e5m2", "F8_E5M2", {1}, Bytes<uint8_t>({0x3c})},  // 1
  };
  const std::string file = BuildFile(tensors);
  const auto r = Parse(file);
  ASSERT_TRUE(r.ok()) << r.error().message();
  ASSERT_EQ(r->tensors.size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorInfo& got = r->tensors[i];
    SCOPED_TRACE(tensors[i].name);
    EXPECT_EQ(got.name, tensors[i].name);
    EXPECT_EQ(Name(got.dtype), tensors[i].dtype);
    EXPECT_EQ(got.shape, tensors[i].shape);
    EXPECT_EQ(AsString(got.data), tensors[i].bytes);
    EXPECT_EQ(got.file, kName);
    EXPECT_EQ(size_t(got.numel()) * Info(got.dtype).bytes, got.data.size());
    // The span must point into the input, not a copy.
    EXPECT_GE(reinterpret_cast<const char*>(got.data.data()), file.data());
  }
  float f[6];
  ASSERT_TRUE(ConvertToF32(r->tensors[0].dtype, r->tensors[0].data.data(), 6, f));
  EXPECT_EQ(f[0], 1.5f);
  EXPECT_EQ(f[4], 1e-30f);
  EXPECT_TRUE(std::signbit(f[5]));
  float g[2];
  ASSERT_TRUE(ConvertToF32(DType::kF8E4M3, r->tensors[6].data.data(), 2, g));
  EXPECT_EQ(g[0], 448.0f);
  EXPECT_EQ(g[1], 1.0f);
  EXPECT_TRUE(r->metadata.empty());
}

TEST(Safetensors, ScalarAndZeroSizeTensors) {
  const std::string file = BuildFile({
      {"empty.first", "F32", {0}, ""},
      {"scalar", "F32", {}, Bytes<float>({42.0f})},
      {"empty.mid", "BF16", {3, 0, 5}, ""},
      {"vec", "I8", {2}, Bytes<int8_t>({5, 6})},
      {"empty.last", "U8", {0, 1}, ""},
  });
  const auto r = Parse(file);
  ASSERT_TRUE(r.ok()) << r.error().message();
  ASSERT_EQ(r->tensors.size(), 5u);
  std::map<std::string, const TensorInfo*> by_name;
  for (const auto& t : r->tensors) by_name[t.name] = &t;
  EXPECT_TRUE(by_name.at("scalar")->shape.empty());
  EXPECT_EQ(by_name.at("scalar")->numel(), 1);
  EXPECT_EQ(AsString(by_name.at("scalar")->data), Bytes<float>({42.0f}));
  EXPECT_EQ(by_name.at("empty.mid")->numel(), 0);
  EXPECT_EQ(by_name.at("empty.mid")->data.size(), 0u);
  EXPECT_EQ(by_name.at("empty.first")->data.size(), 0u);
  EXPECT_EQ(by_name.at("empty.last")->data.size(), 0u);
  EXPECT_EQ(AsString(by_name.at("vec")->data), Bytes<int8_t>({5, 6}));
}

TEST(Safetensors, EmptyHeaderAndMetadata) {
  const std::string empty_file = RawFile("{}      ");
  const auto empty = Parse(empty_file);
  ASSERT_TRUE(empty.ok()) << empty.error().message();
  EXPECT_TRUE(empty->tensors.empty());

  const std::string file = BuildFile({kF32}, {{"format", "pt"}, {"note", "ünïcode ✓"}});
  const auto r = Parse(file);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->metadata.size(), 2u);
  EXPECT_EQ(r->metadata.at("format"), "pt");
  EXPECT_EQ(r->metadata.at("note"), "ünïcode ✓");

  // The reference crate reads "__metadata__": null as absent.
  const std::string null_meta_file = RawFile(R"({"__metadata__":null})");
  const auto null_meta = Parse(null_meta_file);
  ASSERT_TRUE(null_meta.ok()) << null_meta.error().message();
  EXPECT_TRUE(null_meta->metadata.empty());
}

TEST(Safetensors, TensorsSortedByDataOffset) {
  // Header lists z first, but its data comes second.
  const std::string header =
      R"({"z":{"dtype":"U8","shape":[2],"data_offsets":[2,4]},)"
      R"("a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"extra_field_ignored":)"
      R"({"dtype":"U8","shape":[1],"data_offsets":[4,5],"note":[1,{"x":2}]}})";
  const std::string file = RawFile(header, "ABCDE");
  const auto r = Parse(file);
  ASSERT_TRUE(r.ok()) << r.error().message();
  ASSERT_EQ(r->tensors.size(), 3u);
  EXPECT_EQ(r->tensors[0].name, "a");
  EXPECT_EQ(AsString(r->tensors[0].data), "AB");
  EXPECT_EQ(r->tensors[1].name, "z");
  EXPECT_EQ(AsString(r->tensors[1].data), "CD");
  EXPECT_EQ(r->tensors[2].name, "extra_field_ignored");
}

// ---- Malformed files: one test per rule -----------------------------------------------------

TEST(SafetensorsCorrupt, FileShorterThanLengthPrefix) {
  ExpectError("", "shorter than the 8-byte header length");
  ExpectError(std::string("\x02\0\0\0\0\0\0", 7), "file is 7 bytes");
}

TEST(SafetensorsCorrupt, HeaderLengthPastEndOfFile) {
  ExpectError(LengthPrefix(100) + "{}",
              "header length 100 runs past the end of the file (10 bytes)");
}

TEST(SafetensorsCorrupt, HeaderLengthAbsurd) {
  ExpectError(LengthPrefix(100'000'001) + "{}", "exceeds the 100000000-byte limit");
  ExpectError(LengthPrefix(~uint64_t(0)) + "{}", "header length 18446744073709551615 exceeds");
}

TEST(SafetensorsCorrupt, HeaderNotJson) {
  ExpectError(RawFile("{\"a\": nope}"), "header is not valid JSON");
  ExpectError(RawFile(""), "header is not valid JSON");
  ExpectError(RawFile("{\"bad\xff utf8\":1}"), "header is not valid JSON");
  // The length must cover exactly one JSON value (plus whitespace padding).
  ExpectError(RawFile("{} {}"), "header is not valid JSON");
  ExpectError(RawFile("{}x"), "header is not valid JSON");
  const std::string long_token_file = RawFile("{\"" + std::string(5000, 'n'));
  const auto long_token = Parse(long_token_file);
  ASSERT_FALSE(long_token.ok());
  EXPECT_LT(long_token.error().message().size(), 400u) << long_token.error().message();
}

TEST(SafetensorsCorrupt, HeaderNotObject) {
  ExpectError(RawFile("[1,2]"), "header is an array, not a JSON object");
  ExpectError(RawFile("\"str\""), "header is the string 'str', not a JSON object");
}

TEST(SafetensorsCorrupt, DuplicateKeys) {
  const std::string entry = R"({"dtype":"U8","shape":[1],"data_offsets":[0,1]})";
  ExpectError(RawFile(R"({"w":)" + entry + R"(,"w":)" + entry + "}", "x"), "duplicate key 'w'");
  ExpectError(RawFile(R"({"w":{"dtype":"U8","dtype":"I8","shape":[1],"data_offsets":[0,1]}})", "x"),
              "duplicate key 'dtype'");
  ExpectError(RawFile(R"({"__metadata__":{"k":"a","k":"b"}})"), "duplicate key 'k'");
}

TEST(SafetensorsCorrupt, NestingTooDeep) {
  ExpectError(RawFile(R"({"__metadata__":{"k":)" + std::string(10000, '[') +
                      std::string(10000, ']') + "}}"),
              "nesting deeper than");
}

TEST(SafetensorsCorrupt, EntryNotObject) {
  ExpectError(RawFile(R"({"w":[1,2]})"), "tensor 'w': entry is an array, not an object");
}

TEST(SafetensorsCorrupt, DType) {
  ExpectError(RawFile(R"({"w":{"dtype":"F12","shape":[1],"data_offsets":[0,1]}})", "x"),
              "tensor 'w': unknown dtype 'F12'");
  ExpectError(RawFile(R"({"w":{"dtype":"BOOL","shape":[1],"data_offsets":[0,1]}})", "x"),
              "unknown dtype 'BOOL'");
  ExpectError(RawFile(R"({"w":{"dtype":4,"shape":[1],"data_offsets":[0,1]}})", "x"),
              "tensor 'w': dtype is 4, not a string");
  ExpectError(RawFile(R"({"w":{"shape":[1],"data_offsets":[0,1]}})", "x"),
              "tensor 'w': missing \"dtype\"");
}

TEST(SafetensorsCorrupt, Shape) {
  auto file = [](const std::string& shape) {
    return RawFile(R"({"w":{"dtype":"F32","shape":)" + shape + R"(,"data_offsets":[0,4]}})",
                   "abcd");
  };
  ExpectError(file("4"), "tensor 'w': shape is 4, not an array");
  ExpectError(file("[1,-1]"), "shape[1] is -1, not a non-negative integer");
  ExpectError(file("[1.0]"), "shape[0] is 1.0, not a non-negative integer");
  ExpectError(file("[\"1\"]"), "shape[0] is the string '1', not a non-negative integer");
  ExpectError(file("[[1]]"), "shape[0] is an array");
  ExpectError(file("[18446744073709551615]"), "shape[0] is 18446744073709551615");
  ExpectError(file("[99999999999999999999999]"), "not a non-negative integer");
  // Each dimension fits int64, the product does not (4294967296^2 = 2^64).
  ExpectError(file("[4294967296,4294967296]"),
              "byte size of shape [4294967296, 4294967296] F32 overflows");
  // Numel fits, bytes do not.
  ExpectError(file("[4611686018427387904]"), "overflows int64");
  ExpectError(RawFile(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", "abcd"),
              "tensor 'w': missing \"shape\"");
}

TEST(SafetensorsCorrupt, DataOffsetsShape) {
  auto file = [](const std::string& offsets) {
    return RawFile(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":)" + offsets + "}}", "x");
  };
  for (const char* bad : {"[0]", "[0,1,2]", "[-1,0]", "[0,\"1\"]", "{\"a\":1}", "1", "[0,1.5]"}) {
    SCOPED_TRACE(bad);
    ExpectError(file(bad), "tensor 'w': data_offsets must be [begin, end]");
  }
  ExpectError(RawFile(R"({"w":{"dtype":"U8","shape":[1]}})", "x"),
              "tensor 'w': missing \"data_offsets\"");
}

TEST(SafetensorsCorrupt, BeginAfterEnd) {
  ExpectError(RawFile(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[2,1]}})", "xyz"),
              "tensor 'w': data_offsets [2, 1] has begin > end");
}

TEST(SafetensorsCorrupt, ByteCountDisagreesWithShape) {
  ExpectError(
      RawFile(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})", std::string(20, 'x')),
      "tensor 'w': expected 24 bytes for shape [2, 3] F32, header says 20");
  ExpectError(RawFile(R"({"s":{"dtype":"BF16","shape":[],"data_offsets":[0,0]}})"),
              "expected 2 bytes for shape [] BF16, header says 0");
}

TEST(SafetensorsCorrupt, OffsetsOutOfDataBuffer) {
  ExpectError(RawFile(R"({"w":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})", "abcd"),
              "tensor 'w': data_offsets [2, 6] out of the data buffer (4 bytes)");
  ExpectError(RawFile(R"({"w":{"dtype":"U8","shape":[0],)"
                      R"("data_offsets":[9223372036854775807,9223372036854775807]}})"),
              "out of the data buffer (0 bytes)");
}

TEST(SafetensorsCorrupt, OverlappingTensors) {
  ExpectError(RawFile(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                      R"("b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})",
                      "abcdef"),
              "tensors 'a' [0, 4] and 'b' [2, 6] overlap");
  // Same bytes claimed twice.
  ExpectError(RawFile(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                      R"("b":{"dtype":"I8","shape":[4],"data_offsets":[0,4]}})",
                      "abcd"),
              "overlap");
  // A zero-size tensor inside another one breaks the order as well.
  ExpectError(RawFile(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                      R"("z":{"dtype":"U8","shape":[0],"data_offsets":[2,2]}})",
                      "abcd"),
              "tensors 'a' [0, 4] and 'z' [2, 2] overlap");
}

TEST(SafetensorsCorrupt, HoleBetweenTensors) {
  ExpectError(RawFile(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                      R"("b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}})",
                      "abcdef"),
              "hole of 2 bytes before tensor 'b'");
  ExpectError(RawFile(R"({"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}})", "abc"),
              "hole of 1 bytes before tensor 'b'");
}

TEST(SafetensorsCorrupt, TrailingBytesAfterLastTensor) {
  // The reference crate requires the last tensor to end at the end of the file.
  ExpectError(RawFile(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", "abcd"),
              "2 trailing bytes after the last tensor (data buffer is 4 bytes, tensors cover 2)");
  ExpectError(RawFile("{}", "x"), "1 trailing bytes");
}

TEST(SafetensorsCorrupt, Metadata) {
  ExpectError(RawFile(R"({"__metadata__":{"format":"pt","n":3}})"),
              "__metadata__ value of 'n' is 3, not a string");
  ExpectError(RawFile(R"({"__metadata__":{"nested":{"a":"b"}}})"),
              "__metadata__ value of 'nested' is an object");
  ExpectError(RawFile(R"({"__metadata__":["a"]})"), "__metadata__ is an array, not an object");
}

TEST(SafetensorsCorrupt, MessagesStayOnOneLine) {
  const std::string file =
      RawFile(R"({"bad\nname\u0000":{"dtype":"X","shape":[],"data_offsets":[0,0]}})");
  const auto r = Parse(file);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("tensor 'bad\\x0aname\\x00'"), std::string::npos)
      << r.error().message();
  EXPECT_EQ(r.error().message().find('\n'), std::string::npos);
  const std::string long_file = RawFile("{\"" + std::string(5000, 'n') + "\":1}");
  const auto long_name = Parse(long_file);
  ASSERT_FALSE(long_name.ok());
  EXPECT_LT(long_name.error().message().size(), 400u);
}

// Every prefix and many single-byte corruptions of a valid file parse to ok or Error (no crash;
// run under ASan by scripts/fuzz.sh's build for a stronger check).
TEST(SafetensorsCorrupt, TruncationsAndByteFlipsNeverCrash) {
  const std::string file = BuildFile({kF32, {"s", "BF16", {}, Bytes<uint16_t>({1})}}, {{"k", "v"}});
  for (size_t n = 0; n < file.size(); ++n) {
    const std::string prefix = file.substr(0, n);
    EXPECT_FALSE(Parse(prefix).ok()) << "prefix " << n;
  }
  for (size_t i = 0; i < file.size(); ++i) {
    for (int flip : {0x01, 0x20, 0x80, 0xff}) {
      std::string bad = file;
      bad[i] = char(bad[i] ^ flip);
      const auto r = Parse(bad);
      if (r.ok()) {
        for (const auto& t : r->tensors) {
          EXPECT_EQ(uint64_t(t.numel()) * Info(t.dtype).bytes, t.data.size());
        }
      }
    }
  }
}

// ---- TensorStore ---------------------------------------------------------------------------

TEST(TensorStore, OpensFolderAndSingleFile) {
  const fs::path dir = FreshDir("single");
  const std::string file = BuildFile({kF32, {"b", "U8", {2}, "hi"}});
  WriteFile(dir / "model.safetensors", file);
  for (const fs::path& p : {dir, dir / "model.safetensors"}) {
    const auto store = TensorStore::Open(p);
    ASSERT_TRUE(store.ok()) << store.error().message();
    EXPECT_EQ(store->tensors().size(), 2u);
    ASSERT_EQ(store->files().size(), 1u);
    EXPECT_EQ(store->total_bytes(), 26u);
    const TensorInfo* b = store->Find("b");
    ASSERT_NE(b, nullptr);
    EXPECT_EQ(AsString(b->data), "hi");
    EXPECT_EQ(b->file, (dir / "model.safetensors").string());
    EXPECT_EQ(store->Find("nope"), nullptr);
  }
  // Any name works for a single file; errors name it.
  WriteFile(dir / "broken.safetensors", RawFile("[]"));
  const auto bad = TensorStore::Open(dir / "broken.safetensors");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("broken.safetensors: header is an array"), std::string::npos)
      << bad.error().message();
}

TEST(TensorStore, MissingFilesAreErrors) {
  const fs::path dir = FreshDir("missing");
  const auto empty = TensorStore::Open(dir);
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.error().message().find("neither model.safetensors nor"), std::string::npos)
      << empty.error().message();
  const auto nofile = TensorStore::Open(dir / "absent.safetensors");
  ASSERT_FALSE(nofile.ok());
  EXPECT_NE(nofile.error().message().find("absent.safetensors"), std::string::npos);
}

// Writes a two-shard model; `index` is the weight_map JSON text.
fs::path WriteShardedModel(const std::string& name, const std::string& weight_map) {
  const fs::path dir = FreshDir(name);
  WriteFile(dir / "model-00001-of-00002.safetensors",
            BuildFile({kF32, {"b", "U8", {2}, "hi"}}, {{"format", "pt"}}));
  WriteFile(dir / "model-00002-of-00002.safetensors",
            BuildFile({{"c", "BF16", {1, 2}, Bytes<uint16_t>({0x3f80, 0x4000})}}));
  WriteFile(dir / "model.safetensors.index.json",
            R"({"metadata":{"total_size":32},"weight_map":)" + weight_map + "}");
  return dir;
}

constexpr char kGoodMap[] =
    R"({"a.f32":"model-00001-of-00002.safetensors","b":"model-00001-of-00002.safetensors",)"
    R"("c":"model-00002-of-00002.safetensors"})";

TEST(TensorStore, ShardedFolderWithIndex) {
  const fs::path dir = WriteShardedModel("sharded", kGoodMap);
  for (const fs::path& p : {dir, dir / "model.safetensors.index.json"}) {
    const auto store = TensorStore::Open(p);
    ASSERT_TRUE(store.ok()) << store.error().message();
    EXPECT_EQ(store->files().size(), 2u);
    EXPECT_EQ(store->tensors().size(), 3u);
    EXPECT_EQ(store->total_bytes(), 24u + 2u + 4u);
    const TensorInfo* c = store->Find("c");
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(c->dtype, DType::kBF16);
    EXPECT_EQ(AsString(c->data), Bytes<uint16_t>({0x3f80, 0x4000}));
    EXPECT_NE(c->file.find("model-00002-of-00002.safetensors"), std::string::npos);
    ASSERT_NE(store->Find("a.f32"), nullptr);
    EXPECT_EQ(AsString(store->Find("a.f32")->data), kF32.bytes);
  }
}

// Opens a sharded model and expects an error containing every string in `what`.
void ExpectStoreError(const fs::path& path, std::initializer_list<std::string> what) {
  const auto store = TensorStore::Open(path);
  ASSERT_FALSE(store.ok());
  for (const auto& w : what) {
    EXPECT_NE(store.error().message().find(w), std::string::npos)
        << "message: " << store.error().message() << "\nwanted: " << w;
  }
}

TEST(TensorStore, IndexNamesTensorMissingFromItsShard) {
  const std::string map =
      std::string(kGoodMap).insert(1, R"("ghost":"model-00002-of-00002.safetensors",)");
  ExpectStoreError(WriteShardedModel("ghost", map),
                   {"model.safetensors.index.json", "index lists tensor 'ghost'",
                    "'model-00002-of-00002.safetensors'", "does not contain it"});
}

TEST(TensorStore, IndexPutsTensorInWrongShard) {
  const std::string map =
      R"({"a.f32":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors",)"
      R"("c":"model-00002-of-00002.safetensors"})";
  ExpectStoreError(WriteShardedModel("wrong", map),
                   {"tensor 'b' is in", "model-00001-of-00002.safetensors",
                    "but the index puts it in 'model-00002-of-00002.safetensors'"});
}

TEST(TensorStore, ShardTensorNotInIndex) {
  const std::string map =
      R"({"a.f32":"model-00001-of-00002.safetensors","c":"model-00002-of-00002.safetensors"})";
  ExpectStoreError(WriteShardedModel("unlisted", map),
                   {"model-00001-of-00002.safetensors: tensor 'b' is not listed in"});
}

TEST(TensorStore, TensorInTwoShards) {
  const fs::path dir = WriteShardedModel("dup", kGoodMap);
  WriteFile(dir / "model-00002-of-00002.safetensors",
            BuildFile({{"b", "U8", {1}, "x"}, {"c", "BF16", {1, 2}, Bytes<uint16_t>({1, 2})}}));
  ExpectStoreError(dir, {"tensor 'b' appears in both", "model-00001-of-00002.safetensors",
                         "model-00002-of-00002.safetensors"});
}

TEST(TensorStore, BadIndexFiles) {
  ExpectStoreError(WriteShardedModel("notjson", "{nope"),
                   {"model.safetensors.index.json", "not valid JSON"});
  ExpectStoreError(WriteShardedModel("nomap", "{}"), {"weight_map is empty"});
  ExpectStoreError(WriteShardedModel("mapnotobj", "[]"), {"weight_map is an array"});
  ExpectStoreError(WriteShardedModel("valnotstr", R"({"a.f32":1})"),
                   {"weight_map entry 'a.f32' is 1, not a file name"});
  ExpectStoreError(WriteShardedModel("escape", R"({"a.f32":"../x.safetensors"})"),
                   {"names '../x.safetensors', which is not a file inside the folder"});
  ExpectStoreError(WriteShardedModel("absolute", R"({"a.f32":"/etc/hostname"})"),
                   {"not a file inside the folder"});
  ExpectStoreError(WriteShardedModel("dupkey", R"({"c":"model-00002-of-00002.safetensors",)"
                                               R"("c":"model-00001-of-00002.safetensors"})"),
                   {"duplicate key 'c'"});
  ExpectStoreError(WriteShardedModel("absent", R"({"a.f32":"model-00009.safetensors"})"),
                   {"model-00009.safetensors", "cannot open"});
  const fs::path dir = WriteShardedModel("badshard", kGoodMap);
  WriteFile(dir / "model-00002-of-00002.safetensors", "short");
  ExpectStoreError(dir, {"model-00002-of-00002.safetensors: file is 5 bytes"});
}

TEST(TensorStore, BundledModel) {
  const auto store = TensorStore::Open(testing::BundledModel());
  ASSERT_TRUE(store.ok()) << store.error().message();
  EXPECT_EQ(store->files().size(), 1u);
  EXPECT_EQ(store->tensors().size(), 57u);  // embed + 6 x 9 per layer + norm + lm_head
  int64_t params = 0;
  for (const auto& t : store->tensors()) {
    EXPECT_EQ(t.dtype, DType::kBF16) << t.name;
    params += t.numel();
  }
  EXPECT_EQ(params, 27'269'632);
  EXPECT_EQ(store->total_bytes(), 2u * 27'269'632u);
  const TensorInfo* embed = store->Find("model.embed_tokens.weight");
  ASSERT_NE(embed, nullptr);
  EXPECT_EQ(embed->shape, (std::vector<int64_t>{8192, 512}));
  const TensorInfo* k = store->Find("model.layers.5.self_attn.k_proj.weight");
  ASSERT_NE(k, nullptr);
  EXPECT_EQ(k->shape, (std::vector<int64_t>{256, 512}));  // 4 kv heads x 64
}

// ---- writing: shards, shard sizes, the spill file ----------------------------------------------

// Tensors "t0".."t4" of 10, 20, 30, 40 and 50 bytes (u8), each byte its tensor's index + 1.
struct FiveTensors {
  std::vector<std::vector<std::byte>> data;
  std::vector<TensorToWrite> tensors;
  FiveTensors() {
    for (int i = 0; i < 5; ++i) data.emplace_back(size_t(10 * (i + 1)), std::byte(i + 1));
    for (int i = 4; i >= 0; --i)  // any order in: name order out
      tensors.push_back({"t" + std::to_string(i), DType::kU8, {10 * (i + 1)}, data[size_t(i)]});
  }
};

std::vector<std::string> FilesIn(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

TEST(SafetensorsShards, FillShardsInNameOrderAndIndexThem) {
  const FiveTensors five;
  const fs::path dir = FreshDir("shards");
  // 60 bytes: {t0 t1 t2} = 60, t3 (40 + 50 > 60), t4.
  const auto names = WriteSafetensorsShards(dir, five.tensors, {{"format", "pt"}}, 60);
  ASSERT_TRUE(names.ok()) << names.error().message();
  const std::vector<std::string> want = {
      "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
      "model-00003-of-00003.safetensors", "model.safetensors.index.json"};
  EXPECT_EQ(*names, want);
  EXPECT_EQ(FilesIn(dir), want);
  std::ifstream in(dir / "model.safetensors.index.json");
  const auto index = nlohmann::json::parse(in);
  EXPECT_EQ(index["metadata"]["total_size"], 150);
  EXPECT_EQ(index["weight_map"]["t2"], "model-00001-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["t3"], "model-00002-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["t4"], "model-00003-of-00003.safetensors");
  const auto store = TensorStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.error().message();
  ASSERT_EQ(store->tensors().size(), 5u);
  for (int i = 0; i < 5; ++i) {
    const TensorInfo* t = store->Find("t" + std::to_string(i));
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->shape, (std::vector<int64_t>{10 * (i + 1)}));
    ASSERT_EQ(t->data.size(), five.data[size_t(i)].size());
    EXPECT_EQ(std::memcmp(t->data.data(), five.data[size_t(i)].data(), t->data.size()), 0);
  }
}

TEST(SafetensorsShards, LargeTensorGetsItsOwnShardAndOneShardHasNoIndex) {
  const FiveTensors five;
  const fs::path dir = FreshDir("shards_big");
  // 25 bytes: t0 (10) + t1 (20) > 25, so each tensor is a shard; t2..t4 exceed it alone.
  const auto names = WriteSafetensorsShards(dir, five.tensors, {}, 25);
  ASSERT_TRUE(names.ok()) << names.error().message();
  EXPECT_EQ(names->size(), 6u);
  EXPECT_EQ(names->at(4), "model-00005-of-00005.safetensors");
  const fs::path one = FreshDir("shards_one");
  const auto single = WriteSafetensorsShards(one, five.tensors, {}, kDefaultMaxShardBytes);
  ASSERT_TRUE(single.ok()) << single.error().message();
  EXPECT_EQ(FilesIn(one), std::vector<std::string>{"model.safetensors"});
  // The same bytes as the one-file writer.
  ASSERT_TRUE(WriteSafetensors(one / "direct.safetensors", five.tensors).ok());
  std::ifstream a(one / "model.safetensors", std::ios::binary),
      b(one / "direct.safetensors", std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(a), {}),
            std::string(std::istreambuf_iterator<char>(b), {}));
  EXPECT_FALSE(WriteSafetensorsShards(FreshDir("shards_zero"), five.tensors, {}, 0).ok());
}

TEST(SafetensorsShards, ParsesShardSizesAsTransformersDoes) {
  EXPECT_EQ(*ParseShardSize("5GB"), 5'000'000'000u);
  EXPECT_EQ(*ParseShardSize("500MB"), 500'000'000u);
  EXPECT_EQ(*ParseShardSize("2GiB"), uint64_t{2} << 30);
  EXPECT_EQ(*ParseShardSize("64KiB"), uint64_t{64} << 10);
  EXPECT_EQ(*ParseShardSize("1000"), 1000u);
  for (const char* bad : {"", "0", "GB", "5XB", "-1", "5 GB", "1.5GB", "99999999999999999999GB"}) {
    const auto r = ParseShardSize(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.error().message().find("--max-shard-size"), std::string::npos);
  }
}

TEST(TensorSpill, HoldsTensorsOnDiskAndLeavesNoFile) {
  const FiveTensors five;
  const fs::path dir = FreshDir("spill");
  {
    auto spill = TensorSpill::Create(dir);
    ASSERT_TRUE(spill.ok()) << spill.error().message();
    for (const TensorToWrite& t : five.tensors)
      ASSERT_TRUE(spill->Add(t.name, t.dtype, t.shape, t.data).ok());
    EXPECT_EQ(spill->bytes(), 150u);
    EXPECT_TRUE(FilesIn(dir).empty());  // unlinked at once
    const auto back = spill->Tensors();
    ASSERT_TRUE(back.ok()) << back.error().message();
    ASSERT_EQ(back->size(), five.tensors.size());
    for (size_t i = 0; i < back->size(); ++i) {
      const TensorToWrite& t = (*back)[i];
      EXPECT_EQ(t.name, five.tensors[i].name);
      EXPECT_EQ(t.shape, five.tensors[i].shape);
      ASSERT_EQ(t.data.size(), five.tensors[i].data.size());
      EXPECT_EQ(std::memcmp(t.data.data(), five.tensors[i].data.data(), t.data.size()), 0);
    }
    EXPECT_FALSE(spill->Add("late", DType::kU8, {1}, five.data[0]).ok());
    ASSERT_TRUE(WriteSafetensorsShards(dir, *back, {}, 60).ok());
  }
  EXPECT_EQ(FilesIn(dir).size(), 4u);  // three shards and the index, no scratch file
  EXPECT_FALSE(TensorSpill::Create(dir / "missing").ok());
}

}  // namespace
}  // namespace qf::io
