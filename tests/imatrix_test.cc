// Importance matrices: llama.cpp's GGUF and legacy .dat layouts round-trip byte for byte, bad
// files are one-line errors, Importance is llama-quantize's sum/count, the collected sums equal a
// direct computation on the model, and `qforge imatrix` + `qforge quantize --imatrix` work
// end to end.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/mmap.h"
#include "formats/ggml_blocks.h"
#include "io/gguf.h"
#include "pipeline/gguf_convert.h"
#include "io/imatrix.h"
#include "io/safetensors.h"
#include "kernels/ops.h"
#include "pipeline/imatrix.h"
#include "model/model.h"
#include "test_util.h"
#include "text/tokenizer.h"

namespace qf {
namespace {

namespace fs = std::filesystem;
using qf::testing::Bundled;
using qf::testing::Q;
using qf::testing::RunCommand;

io::Imatrix Sample() {
  io::Imatrix m;
  m.datasets = {"calib.txt", "more.txt"};
  m.chunk_count = 3;
  m.chunk_size = 512;
  m.entries["blk.0.attn_q.weight"] = {{1.5f, 0.0f, 2048.25f, 7.0f}, 1536};
  m.entries["blk.0.ffn_down.weight"] = {{3.0f, 1e-7f, 9.5f}, 1500};
  m.entries["blk.10.attn_k.weight"] = {{0.5f, 0.25f}, 0};
  return m;
}

void ExpectSame(const io::Imatrix& a, const io::Imatrix& b) {
  EXPECT_EQ(a.datasets, b.datasets);
  EXPECT_EQ(a.chunk_count, b.chunk_count);
  EXPECT_EQ(a.chunk_size, b.chunk_size);
  ASSERT_EQ(a.entries.size(), b.entries.size());
  for (const auto& [name, e] : a.entries) {
    ASSERT_TRUE(b.entries.count(name)) << name;
    EXPECT_EQ(e.sum2, b.entries.at(name).sum2) << name;
    EXPECT_EQ(e.count, b.entries.at(name).count) << name;
  }
}

std::span<const std::byte> Span(const std::vector<std::byte>& v) { return v; }

void ExpectOneLineError(const Result<io::Imatrix>& r, const std::string& what) {
  ASSERT_FALSE(r.ok()) << what;
  EXPECT_EQ(r.error().message().find('\n'), std::string::npos) << r.error().message();
  EXPECT_FALSE(r.error().message().empty());
}

TEST(Imatrix, GgufRoundTripHasLlamaCppLayout) {
  const io::Imatrix m = Sample();
  auto bytes = io::ImatrixGgufBytes(m);
  ASSERT_TRUE(bytes.ok()) << bytes.error().message();
  auto back = io::ParseImatrix(*bytes, "x.gguf");
  ASSERT_TRUE(back.ok()) << back.error().message();
  EXPECT_FALSE(back->legacy);
  ExpectSame(m, *back);

  // The layout llama-imatrix's save_imatrix writes.
  auto g = io::ParseGguf(*bytes, "x.gguf");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(*g->Find("general.type")->get<std::string>(), "imatrix");
  EXPECT_EQ(*g->Find("imatrix.datasets")->get<std::vector<std::string>>(), m.datasets);
  EXPECT_EQ(*g->Find("imatrix.chunk_count")->get<uint32_t>(), 3u);
  EXPECT_EQ(*g->Find("imatrix.chunk_size")->get<uint32_t>(), 512u);
  const std::vector<std::string> names = {
      "blk.0.attn_q.weight.in_sum2",   "blk.0.attn_q.weight.counts",
      "blk.0.ffn_down.weight.in_sum2", "blk.0.ffn_down.weight.counts",
      "blk.10.attn_k.weight.in_sum2",  "blk.10.attn_k.weight.counts"};
  ASSERT_EQ(g->tensors.size(), names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    EXPECT_EQ(g->tensors[i].name, names[i]);
    EXPECT_EQ(g->tensors[i].type, io::GgmlType::kF32);
    ASSERT_EQ(g->tensors[i].shape.size(), 1u);
  }
  EXPECT_EQ(g->tensors[0].shape[0], 4);
  EXPECT_EQ(g->tensors[1].shape[0], 1);
  float count;
  std::memcpy(&count, g->tensors[1].data.data(), 4);
  EXPECT_EQ(count, 1536.0f);

  // Files: atomic write, same bytes, read back.
  const fs::path p = qf::testing::TempDir() / "rt.imatrix.gguf";
  ASSERT_TRUE(io::WriteImatrixGguf(m, p).ok());
  auto r = io::ReadImatrix(p);
  ASSERT_TRUE(r.ok()) << r.error().message();
  ExpectSame(m, *r);
  auto again = io::ImatrixGgufBytes(*r);
  EXPECT_TRUE(*again == *bytes);
}

TEST(Imatrix, LegacyRoundTripAndLayout) {
  io::Imatrix m = Sample();
  m.entries.erase("blk.10.attn_k.weight");  // count 0: llama.cpp skips such entries
  auto bytes = io::ImatrixLegacyBytes(m);
  ASSERT_TRUE(bytes.ok()) << bytes.error().message();
  // Hand-decoded: n_entries, then (len, name, ncall, nval, values) in name order, chunks, dataset.
  const std::byte* b = bytes->data();
  auto i32 = [&](size_t off) {
    int32_t v;
    std::memcpy(&v, b + off, 4);
    return v;
  };
  EXPECT_EQ(i32(0), 2);
  EXPECT_EQ(i32(4), 19);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(b + 8), 19), "blk.0.attn_q.weight");
  EXPECT_EQ(i32(27), 3);  // ncall = ceil(1536 / 512)
  EXPECT_EQ(i32(31), 4);
  float v0;
  std::memcpy(&v0, b + 35, 4);
  EXPECT_EQ(v0, (1.5f / 1536.0f) * 3.0f);
  const size_t tail = bytes->size() - 4 - 8 - 4;  // chunk count, dataset length, "more.txt"
  EXPECT_EQ(i32(tail), 3);
  EXPECT_EQ(i32(tail + 4), 8);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(b + tail + 8), 8), "more.txt");

  auto back = io::ParseImatrix(*bytes, "x.dat");
  ASSERT_TRUE(back.ok()) << back.error().message();
  EXPECT_TRUE(back->legacy);
  EXPECT_EQ(back->chunk_count, 3);
  EXPECT_EQ(back->datasets, std::vector<std::string>{"more.txt"});
  EXPECT_EQ(back->entries.at("blk.0.attn_q.weight").count, 3);
  EXPECT_EQ(back->entries.at("blk.0.ffn_down.weight").count, 3);  // ceil(1500 / 512)
  for (const auto& [name, e] : m.entries) {
    const auto want = io::Importance(e), got = io::Importance(back->entries.at(name));
    ASSERT_EQ(want.size(), got.size());
    for (size_t j = 0; j < want.size(); ++j)
      EXPECT_NEAR(got[j], want[j], 1e-6 * want[j] + 1e-30) << name;
  }
  // A legacy imatrix is written back as it was read.
  auto again = io::ImatrixLegacyBytes(*back);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(*again == *bytes);
  // The trailer is optional (older files).
  std::vector<std::byte> no_trailer(bytes->begin(), bytes->begin() + long(tail));
  auto nt = io::ParseImatrix(no_trailer, "old.dat");
  ASSERT_TRUE(nt.ok()) << nt.error().message();
  EXPECT_EQ(nt->chunk_count, 0);
  EXPECT_TRUE(nt->datasets.empty());

  const fs::path p = qf::testing::TempDir() / "rt.dat";
  ASSERT_TRUE(io::WriteImatrixLegacy(m, p).ok());
  EXPECT_EQ(*ReadTextFile(p),
            std::string(reinterpret_cast<const char*>(bytes->data()), bytes->size()));
  io::Imatrix no_size = m;
  no_size.chunk_size = 0;
  EXPECT_FALSE(io::ImatrixLegacyBytes(no_size).ok());
}

TEST(Imatrix, ImportanceIsSumOverCount) {
  EXPECT_EQ(io::Importance({{3.0f, 0.0f, 1.0f}, 4}), (std::vector<float>{0.75f, 0.0f, 0.25f}));
  EXPECT_EQ(io::Importance({{3.0f, 5.0f}, 0}), (std::vector<float>{1.0f, 1.0f}));
}

TEST(Imatrix, CorruptAndTruncatedFilesAreOneLineErrors) {
  const io::Imatrix m = Sample();
  const auto gguf = *io::ImatrixGgufBytes(m);
  const auto layout = *io::ParseGguf(gguf, "t.gguf");
  const size_t last_byte =
      layout.data_offset + layout.tensors.back().offset + 3;  // the rest is padding
  for (size_t n :
       {size_t(0), size_t(3), size_t(4), size_t(20), size_t(100), gguf.size() / 2, last_byte})
    ExpectOneLineError(io::ParseImatrix(Span(gguf).first(n), "t.gguf"),
                       "gguf truncated at " + std::to_string(n));

  io::Imatrix legacy_src = m;
  legacy_src.entries.erase("blk.10.attn_k.weight");
  const auto dat = *io::ImatrixLegacyBytes(legacy_src);
  const size_t entries_end = dat.size() - 16;  // a file may end right after its entries
  for (size_t n = 0; n < dat.size(); ++n) {
    if (n == entries_end) continue;
    ExpectOneLineError(io::ParseImatrix(Span(dat).first(n), "t.dat"),
                       "dat truncated at " + std::to_string(n));
  }
  std::vector<std::byte> extra = dat;
  extra.push_back(std::byte{0});
  ExpectOneLineError(io::ParseImatrix(extra, "t.dat"), "trailing byte");
  std::vector<std::byte> huge = dat;
  const int32_t big = 1 << 30;
  std::memcpy(huge.data() + 31, &big, 4);  // nval of the first entry
  ExpectOneLineError(io::ParseImatrix(huge, "t.dat"), "nval beyond the file");
  std::vector<std::byte> neg = dat;
  const float minus = -1.0f;
  std::memcpy(neg.data() + 35, &minus, 4);
  ExpectOneLineError(io::ParseImatrix(neg, "t.dat"), "negative value");

  auto with = [](auto edit) {
    io::GgufWriter w;
    edit(w);
    return *w.WriteToBytes();
  };
  const std::vector<float> sums = {1.0f, 2.0f}, one = {1.0f}, two = {1.0f, 1.0f}, nan = {NAN, 1.0f};
  auto meta = [](io::GgufWriter& w) {
    (void)w.Set("imatrix.datasets", io::GgufValue(std::vector<std::string>{"d"}));
    (void)w.Set("imatrix.chunk_count", io::GgufValue(uint32_t(1)));
    (void)w.Set("imatrix.chunk_size", io::GgufValue(uint32_t(512)));
  };
  auto tensor = [](io::GgufWriter& w, const std::string& n, const std::vector<float>& v) {
    (void)w.AddTensor(n, io::GgmlType::kF32, {int64_t(v.size())}, std::as_bytes(std::span(v)));
  };
  ExpectOneLineError(io::ParseImatrix(with([&](io::GgufWriter& w) {
                                        tensor(w, "a.in_sum2", sums);
                                        tensor(w, "a.counts", one);
                                      }),
                                      "m.gguf"),
                     "no metadata");
  ExpectOneLineError(io::ParseImatrix(with([&](io::GgufWriter& w) {
                                        meta(w);
                                        tensor(w, "a.in_sum2", sums);
                                      }),
                                      "m.gguf"),
                     "sums without counts");
  ExpectOneLineError(io::ParseImatrix(with([&](io::GgufWriter& w) {
                                        meta(w);
                                        tensor(w, "a.counts", one);
                                      }),
                                      "m.gguf"),
                     "counts without sums");
  ExpectOneLineError(io::ParseImatrix(with([&](io::GgufWriter& w) { meta(w); }), "m.gguf"),
                     "no entries");
  ExpectOneLineError(io::ParseImatrix(with([&](io::GgufWriter& w) {
                                        meta(w);
                                        tensor(w, "a.in_sum2", sums);
                                        tensor(w, "a.counts", two);
                                      }),
                                      "m.gguf"),
                     "per-expert counts");
  ExpectOneLineError(io::ParseImatrix(with([&](io::GgufWriter& w) {
                                        meta(w);
                                        tensor(w, "a.in_sum2", nan);
                                        tensor(w, "a.counts", one);
                                      }),
                                      "m.gguf"),
                     "NaN sum");
  ExpectOneLineError(io::ParseImatrix(with([&](io::GgufWriter& w) {
                                        (void)w.Set("general.type", io::GgufValue("model"));
                                        meta(w);
                                        tensor(w, "a.in_sum2", sums);
                                        tensor(w, "a.counts", one);
                                      }),
                                      "m.gguf"),
                     "a model file");
  auto ok = io::ParseImatrix(with([&](io::GgufWriter& w) {
                               meta(w);
                               tensor(w, "a.in_sum2", sums);
                               tensor(w, "a.counts", one);
                             }),
                             "m.gguf");
  ASSERT_TRUE(ok.ok()) << ok.error().message();
  EXPECT_EQ(ok->entries.at("a").count, 1);
  auto missing = io::ReadImatrix(qf::testing::TempDir() / "does-not-exist.gguf");
  ExpectOneLineError(missing, "missing file");
}

// A small calibration text: the start of the local text (the tests hold for any text).
fs::path SmallText(size_t bytes) {
  const fs::path p = qf::testing::TempDir() / ("calib_" + std::to_string(bytes) + ".txt");
  if (!fs::exists(p)) {
    const std::string all = *ReadTextFile(qf::testing::LocalText());
    std::ofstream(p) << all.substr(0, bytes);
  }
  return p;
}

TEST(Imatrix, ChunksFollowLlamaImatrix) {
  const std::vector<int32_t> t = {1, 10, 11, 12, 13, 14, 15, 16, 17};
  auto c = pipeline::ImatrixChunks(t, 4, -1, 1);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c, (std::vector<std::vector<int32_t>>{{1, 10, 11, 12}, {1, 14, 15, 16}}));
  c = pipeline::ImatrixChunks(t, 3, 2, -1);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c, (std::vector<std::vector<int32_t>>{{1, 10, 11}, {12, 13, 14}}));
  EXPECT_FALSE(pipeline::ImatrixChunks(t, 5, -1, 1).ok());  // fewer than 2·ctx tokens
  auto bos = pipeline::LlamaCppVocabBos(qf::testing::BundledModel());
  ASSERT_TRUE(bos.ok()) << bos.error().message();
  EXPECT_TRUE(bos->add);
  EXPECT_EQ(bos->bos, 1);
}

TEST(Imatrix, SumsEqualADirectComputation) {
  const fs::path text = SmallText(6000);
  pipeline::ImatrixOptions opt;
  opt.text_path = text.string();
  opt.ctx = 64;
  opt.chunks = 3;
  opt.process_output = true;
  pipeline::ImatrixReport rep;
  kernels::SetThreads(2);
  auto m = pipeline::ComputeImatrix(qf::testing::BundledModel(), opt, &rep);
  ASSERT_TRUE(m.ok()) << m.error().message();
  EXPECT_EQ(rep.chunks, 3);
  EXPECT_TRUE(rep.add_bos);
  EXPECT_EQ(m->chunk_count, 3);
  EXPECT_EQ(m->chunk_size, 64);
  EXPECT_EQ(m->datasets, std::vector<std::string>{text.string()});
  EXPECT_EQ(m->entries.size(), 6u * 7u + 1u);  // every linear of the 6 blocks, and output.weight
  for (const auto& [name, e] : m->entries) {
    EXPECT_EQ(e.count, 3 * 64) << name;
    EXPECT_EQ(int64_t(e.sum2.size()), name.find("ffn_down") != std::string::npos ? 1536 : 512)
        << name;
  }
  EXPECT_EQ(m->entries.at("blk.3.attn_q.weight").sum2, m->entries.at("blk.3.attn_v.weight").sum2);
  EXPECT_EQ(m->entries.at("blk.3.ffn_gate.weight").sum2, m->entries.at("blk.3.ffn_up.weight").sum2);

  // blk.0.attn_q's input: RMSNorm of the token embeddings times input_layernorm, over the chunks
  // [BOS, tokens...] of the text tokenized with BOS.
  auto tok = text::LoadTokenizer(qf::testing::BundledModel());
  ASSERT_TRUE(tok.ok());
  std::vector<int32_t> ids = (*tok)->Encode(*ReadTextFile(text), /*add_bos=*/true);
  ASSERT_EQ(ids[0], 1);
  auto store = io::TensorStore::Open(qf::testing::BundledModel());
  ASSERT_TRUE(store.ok());
  auto embed = model::ReadTensorF32(*store, "model.embed_tokens.weight", {8192, 512});
  auto norm = model::ReadTensorF32(*store, "model.layers.0.input_layernorm.weight", {512});
  ASSERT_TRUE(embed.ok() && norm.ok());
  std::vector<double> want(512, 0.0);
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < 64; ++i) {
      const int32_t id = i == 0 ? 1 : ids[size_t(c * 64 + i)];
      const float* e = embed->data() + int64_t(id) * 512;
      double ss = 0;
      for (int j = 0; j < 512; ++j) ss += double(e[j]) * e[j];
      const double r = 1.0 / std::sqrt(ss / 512 + 1e-5);
      for (int j = 0; j < 512; ++j) {
        const double x = double(e[j]) * r * (*norm)[size_t(j)];
        want[size_t(j)] += x * x;
      }
    }
  const auto& got = m->entries.at("blk.0.attn_q.weight").sum2;
  for (int j = 0; j < 512; ++j)
    EXPECT_NEAR(got[size_t(j)], want[size_t(j)], 2e-5 * want[size_t(j)] + 1e-6) << j;

  // Thread count does not change a bit; without process_output there is no output.weight.
  kernels::SetThreads(1);
  opt.process_output = false;
  auto m1 = pipeline::ComputeImatrix(qf::testing::BundledModel(), opt, nullptr);
  ASSERT_TRUE(m1.ok());
  EXPECT_EQ(m1->entries.size(), 6u * 7u);
  for (const auto& [name, e] : m1->entries) EXPECT_EQ(e.sum2, m->entries.at(name).sum2) << name;
  kernels::SetThreads(2);
}

// Files llama-imatrix wrote (tests/data/imatrix/README.md): read and written back byte for byte.
TEST(Imatrix, LlamaCppWrittenFilesRoundTrip) {
  const fs::path dir = qf::testing::RepoDir() / "tests/data/imatrix";
  auto g = io::ReadImatrix(dir / "stories260k.imatrix.gguf");
  auto d = io::ReadImatrix(dir / "stories260k.imatrix.dat");
  ASSERT_TRUE(g.ok()) << g.error().message();
  ASSERT_TRUE(d.ok()) << d.error().message();
  const std::string gb = *ReadTextFile(dir / "stories260k.imatrix.gguf"),
                    db = *ReadTextFile(dir / "stories260k.imatrix.dat");
  auto gw = io::ImatrixGgufBytes(*g);
  auto dw = io::ImatrixLegacyBytes(*d);
  ASSERT_TRUE(gw.ok() && dw.ok());
  EXPECT_TRUE(std::string(reinterpret_cast<const char*>(gw->data()), gw->size()) == gb);
  EXPECT_TRUE(std::string(reinterpret_cast<const char*>(dw->data()), dw->size()) == db);
  EXPECT_EQ(g->datasets, std::vector<std::string>{"st.txt"});
  EXPECT_EQ(d->datasets, std::vector<std::string>{"st.txt"});
  EXPECT_EQ(g->chunk_count, 4);
  EXPECT_EQ(g->chunk_size, 128);
  EXPECT_EQ(d->chunk_count, 4);
}

// The same files equal what qforge collects on their model, text and chunks (stories260k and
// the start of its TinyStories text; blk.0's q/k/v input within fp32 rounding, later inputs
// within llama.cpp's f16 KV cache).
TEST(Imatrix, LlamaCppWrittenFilesMatch) {
  QF_NEED_SHARED("models/stories260k");
  QF_NEED_SHARED("data/tinystories/validation_head.txt");
  const fs::path dir = qf::testing::RepoDir() / "tests/data/imatrix";
  auto g = io::ReadImatrix(dir / "stories260k.imatrix.gguf");
  auto d = io::ReadImatrix(dir / "stories260k.imatrix.dat");
  ASSERT_TRUE(g.ok()) << g.error().message();
  ASSERT_TRUE(d.ok()) << d.error().message();
  const fs::path text = qf::testing::TempDir() / "st.txt";
  std::ofstream(text) << ReadTextFile(qf::testing::SharedDir() /
                                      "data/tinystories/validation_head.txt")
                             ->substr(0, 8000);
  pipeline::ImatrixOptions opt;
  opt.text_path = text.string();
  opt.ctx = 128;
  opt.chunks = 4;
  auto m = pipeline::ComputeImatrix(qf::testing::SharedDir() / "models/stories260k", opt, nullptr);
  ASSERT_TRUE(m.ok()) << m.error().message();
  ASSERT_EQ(m->entries.size(), g->entries.size());
  EXPECT_EQ(m->entries.size(), 5u * 7u);
  for (const auto& [name, e] : g->entries) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(m->entries.count(name));
    const io::ImatrixEntry& ours = m->entries.at(name);
    EXPECT_EQ(ours.count, e.count);
    EXPECT_EQ(d->entries.at(name).count, 4);  // ncall = 512 tokens / 128
    const auto want = io::Importance(e), got = io::Importance(ours),
               dat = io::Importance(d->entries.at(name));
    ASSERT_EQ(got.size(), want.size());
    const bool first = name.rfind("blk.0.attn_", 0) == 0 && name != "blk.0.attn_output.weight";
    for (size_t j = 0; j < want.size(); ++j) {
      EXPECT_NEAR(got[j], want[j], (first ? 1e-5 : 5e-3) * want[j] + 1e-7) << j;
      EXPECT_NEAR(dat[j], want[j], 1e-6 * want[j]) << j;
    }
  }
}

nlohmann::json Json(const std::string& s) { return nlohmann::json::parse(s.substr(s.find('{'))); }

TEST(Imatrix, CliImatrixThenQuantizeQ4KM) {
  const std::string text = SmallText(12000).string();
  const fs::path dir = qf::testing::TempDir();
  const std::string im = (dir / "im.gguf").string(), dat = (dir / "im.dat").string();
  std::string log;
  ASSERT_EQ(RunCommand(Q() + " imatrix " + Bundled() + " --calib " + text + " -o " + im +
                           " --ctx 128 --chunks 4 -q --json",
                       &log),
            0)
      << log;
  auto j = Json(log);
  EXPECT_EQ(j["entries"], 42);
  EXPECT_EQ(j["chunks"], 4);
  ASSERT_EQ(RunCommand(Q() + " imatrix " + Bundled() + " --calib " + text + " -o " + dat +
                           " --ctx 128 --chunks 4 --legacy -q",
                       &log),
            0)
      << log;
  auto g = io::ReadImatrix(im);
  auto d = io::ReadImatrix(dat);
  ASSERT_TRUE(g.ok() && d.ok());
  EXPECT_FALSE(g->legacy);
  EXPECT_TRUE(d->legacy);
  EXPECT_EQ(d->chunk_count, 4);
  for (const auto& [name, e] : g->entries) {
    const auto a = io::Importance(e), b = io::Importance(d->entries.at(name));
    for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 1e-6 * a[i]) << name;
  }

  const std::string out = (dir / "imat_q4km.gguf").string();
  ASSERT_EQ(RunCommand(Q() + " quantize " + Bundled() + " --scheme Q4_K_M --imatrix " + im +
                           " -o " + out + " -q --json",
                       &log),
            0)
      << log;
  j = Json(log);
  int used = 0;
  for (const auto& t : j["tensors"]) used += t["imatrix"].get<bool>();
  EXPECT_EQ(used, 42);
  auto f = io::GgufFile::Open(out);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(*f->GetString("quantize.imatrix.file"), im);
  EXPECT_EQ(*f->GetString("quantize.imatrix.dataset"), text);
  EXPECT_EQ(*f->GetInt("quantize.imatrix.entries_count"), 42);
  EXPECT_EQ(*f->GetInt("quantize.imatrix.chunks_count"), 4);
  // ffn_gate (not permuted) holds exactly ggml's Q4_K blocks of the weights with the imatrix's
  // importance, and differs from the blocks without one.
  auto store = io::TensorStore::Open(qf::testing::BundledModel());
  ASSERT_TRUE(store.ok());
  auto w = model::ReadTensorF32(*store, "model.layers.1.mlp.gate_proj.weight", {1536, 512});
  ASSERT_TRUE(w.ok());
  const io::GgufTensorInfo* t = f->FindTensor("blk.1.ffn_gate.weight");
  ASSERT_NE(t, nullptr);
  const GgmlBlockType* q4k = FindGgmlBlockType("Q4_K");
  ASSERT_NE(q4k, nullptr);
  std::vector<std::byte> with(t->data.size()), without(t->data.size());
  const auto imp = io::Importance(g->entries.at("blk.1.ffn_gate.weight"));
  ASSERT_TRUE(QuantizeRowsGgml(*q4k, w->data(), 1536, 512, imp.data(), with.data()).ok());
  ASSERT_TRUE(QuantizeRowsGgml(*q4k, w->data(), 1536, 512, nullptr, without.data()).ok());
  EXPECT_TRUE(std::equal(with.begin(), with.end(), t->data.begin()));
  EXPECT_FALSE(std::equal(without.begin(), without.end(), t->data.begin()));
  // The legacy file is accepted too.
  ASSERT_EQ(RunCommand(Q() + " quantize " + Bundled() + " --scheme Q4_K_M --imatrix " + dat +
                           " --dry-run --json -q",
                       &log),
            0)
      << log;
  j = Json(log);
  used = 0;
  for (const auto& tt : j["tensors"]) used += tt["imatrix"].get<bool>();
  EXPECT_EQ(used, 42);

  // Errors: one line, non-zero.
  const std::string bad = (dir / "bad.dat").string();
  std::ofstream(bad) << "not an imatrix";
  EXPECT_EQ(RunCommand(Q() + " quantize " + Bundled() + " --scheme Q4_K_M --imatrix " + bad +
                           " -o " + (dir / "x.gguf").string() + " -q",
                       &log),
            1)
      << log;
  EXPECT_EQ(log.rfind("qforge: error: ", 0), 0u) << log;
  EXPECT_EQ(log.find('\n'), log.size() - 1) << log;
  EXPECT_NE(RunCommand(Q() + " quantize " + Bundled() + " --scheme W4A16 --imatrix " + im + " -o " +
                           (dir / "ct").string() + " -q",
                       &log),
            0)
      << log;
  EXPECT_NE(log.find("--imatrix"), std::string::npos) << log;
  EXPECT_EQ(RunCommand(Q() + " imatrix " + Bundled() + " --calib " + SmallText(1500).string() +
                           " -o " + (dir / "y.gguf").string() + " -q",
                       &log),
            1)
      << log;
  EXPECT_NE(log.find("needs at least 1024"), std::string::npos) << log;
}

}  // namespace
}  // namespace qf
