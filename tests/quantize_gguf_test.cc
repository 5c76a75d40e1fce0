// `qforge quantize --scheme <llama.cpp type> -o FILE.gguf`: each tensor gets the mix's type, its
// blocks decode to the (q/k-permuted) source weights within the type's error, the metadata says
// what llama.cpp needs, dry runs predict the size exactly, output is deterministic, bad flags
// are one-line errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>
#include <nlohmann/json.hpp>

#include "core/mmap.h"
#include "formats/ggml_blocks.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "test_util.h"

namespace qf {
namespace {

namespace fs = std::filesystem;
using qf::testing::Bundled;
using qf::testing::Q;
using qf::testing::RunCommand;

nlohmann::json Json(const std::string& s) { return nlohmann::json::parse(s.substr(s.find('{'))); }

// Mean KLD of model m against the bundled model over the first 16 windows of 256 tokens of
// WikiText-2 (held-out text).
double Kld16(const fs::path& m) {
  const std::string text = (qf::testing::SharedDir() / "data/wikitext-2/wiki.test.raw").string();
  std::string out;
  EXPECT_EQ(RunCommand(Q() + " kld " + Bundled() + " " + m.string() + " --text " + text +
                           " --ctx 256 --max-windows 16 --json -q",
                       &out),
            0)
      << out;
  return Json(out)["kld_mean"].get<double>();
}

// Rows of a llama q/k weight in GGUF order: within each head, rotate-half pairs interleaved.
std::vector<float> PermuteRows(const std::vector<float>& w, int64_t rows, int64_t cols,
                               int64_t heads) {
  std::vector<float> out(w.size());
  const int64_t hd = rows / heads;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < hd / 2; ++i)
      for (int64_t half = 0; half < 2; ++half) {
        const int64_t src = h * hd + half * (hd / 2) + i, dst = h * hd + 2 * i + half;
        std::copy_n(w.data() + src * cols, cols, out.data() + dst * cols);
      }
  return out;
}

TEST(QuantizeGguf, Q4KMFileHasTheMixTypesAndDecodesToTheWeights) {
  const fs::path out = qf::testing::TempDir() / "q4km.gguf",
                 again = qf::testing::TempDir() / "q4km_b.gguf";
  std::string log;
  ASSERT_EQ(
      RunCommand(Q() + " quantize " + Bundled() + " --scheme Q4_K_M --dry-run --json -q", &log), 0)
      << log;
  const auto dry = Json(log);
  EXPECT_FALSE(fs::exists(out));
  ASSERT_EQ(RunCommand(Q() + " quantize " + Bundled() + " -o " + out.string() +
                           " --scheme q4_k_m --json -q",
                       &log),
            0)
      << log;
  const auto rep = Json(log);
  EXPECT_EQ(rep["output_bytes"], dry["output_bytes"]);
  EXPECT_EQ(fs::file_size(out), rep["output_bytes"].get<uint64_t>());
  ASSERT_EQ(RunCommand(Q() + " quantize " + Bundled() + " -o " + again.string() +
                           " --scheme Q4_K_M -t 1 -q",
                       &log),
            0)
      << log;
  EXPECT_TRUE(*ReadTextFile(out) == *ReadTextFile(again)) << "GGUF output differs between runs";

  auto f = io::GgufFile::Open(out);
  ASSERT_TRUE(f.ok()) << f.error().message();
  EXPECT_EQ(*f->GetInt("general.file_type"), 15);  // LLAMA_FTYPE_MOSTLY_Q4_K_M
  EXPECT_EQ(*f->GetInt("general.quantization_version"), 2);
  {  // llama-quantize's tensor order: non-block tensors, then block by block, by name in each
    std::vector<std::pair<int, std::string>> order;
    for (const auto& t : f->tensors()) {
      int layer = -1;
      std::sscanf(t.name.c_str(), "blk.%d.", &layer);
      order.emplace_back(layer, t.name);
    }
    EXPECT_TRUE(std::is_sorted(order.begin(), order.end()));
    EXPECT_EQ(order.front().second, "output.weight");
  }
  {  // llama-quantize's key order: the two quantization keys last, after tokenizer.*
    const auto& md = f->metadata();
    ASSERT_GE(md.size(), 2u);
    EXPECT_EQ(md[md.size() - 2].key, "general.quantization_version");
    EXPECT_EQ(md[md.size() - 1].key, "general.file_type");
  }
  EXPECT_EQ(*f->GetString("general.architecture"), "llama");
  auto type_of = [&](const std::string& n) {
    return std::string(io::Info(f->FindTensor(n)->type).name);
  };
  EXPECT_EQ(type_of("blk.0.attn_q.weight"), "q4_K");
  EXPECT_EQ(type_of("blk.2.attn_v.weight"), "q6_K");
  EXPECT_EQ(type_of("blk.5.ffn_down.weight"), "q6_K");
  EXPECT_EQ(type_of("output.weight"), "q6_K");
  EXPECT_EQ(type_of("blk.0.attn_norm.weight"), "f32");

  // Decoded blocks against the source weights (q rows permuted as llama.cpp expects).
  auto store = io::TensorStore::Open(qf::testing::BundledModel());
  ASSERT_TRUE(store.ok());
  struct Check {
    std::string gguf, hf;
    int64_t heads;  // > 0: q/k permutation
    double max_rel_rmse;
  };
  for (const Check& c :
       {Check{"blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight", 8, 0.08},
        Check{"blk.1.attn_k.weight", "model.layers.1.self_attn.k_proj.weight", 4, 0.08},
        Check{"blk.2.attn_v.weight", "model.layers.2.self_attn.v_proj.weight", 0, 0.02},
        Check{"blk.3.ffn_up.weight", "model.layers.3.mlp.up_proj.weight", 0, 0.08}}) {
    SCOPED_TRACE(c.gguf);
    const io::GgufTensorInfo* t = f->FindTensor(c.gguf);
    ASSERT_NE(t, nullptr);
    const int64_t rows = t->shape[0], cols = t->shape[1];
    auto src = model::ReadTensorF32(*store, c.hf, {rows, cols});
    ASSERT_TRUE(src.ok());
    std::vector<float> w = c.heads ? PermuteRows(*src, rows, cols, c.heads) : *src;
    const GgmlBlockType* bt = FindGgmlBlockType(io::Info(t->type).name);
    ASSERT_NE(bt, nullptr);
    std::vector<float> dec(w.size());
    ASSERT_TRUE(DequantizeRowsGgml(*bt, t->data.data(), rows, cols, dec.data()).ok());
    double err = 0, ref = 0;
    for (size_t i = 0; i < w.size(); ++i)
      err += (dec[i] - w[i]) * double(dec[i] - w[i]), ref += double(w[i]) * w[i];
    EXPECT_LT(std::sqrt(err / ref), c.max_rel_rmse);
    // Without the permutation the q rows would not match.
    if (c.heads) {
      double bad = 0;
      for (size_t i = 0; i < w.size(); ++i)
        bad += (dec[i] - (*src)[i]) * double(dec[i] - (*src)[i]);
      EXPECT_GT(bad, 10 * err);
    }
  }
}

TEST(QuantizeGguf, OverridesAndPure) {
  std::string log;
  ASSERT_EQ(
      RunCommand(Q() + " quantize " + Bundled() + " --scheme Q4_K_M --dry-run --pure --json -q",
                 &log),
      0)
      << log;
  for (const auto& t : Json(log)["tensors"]) {
    const std::string n = t["name"];
    if (n.find("norm") == std::string::npos) {
      EXPECT_EQ(t["type"], "Q4_K") << n;
    }
  }
  ASSERT_EQ(RunCommand(Q() + " quantize " + Bundled() +
                           " --scheme Q4_0 --dry-run --tensor-type 'ffn_down=q8_0' "
                           "--output-tensor-type f16 --token-embedding-type q8_0 --json -q",
                       &log),
            0)
      << log;
  for (const auto& t : Json(log)["tensors"]) {
    const std::string n = t["name"];
    if (n.find("ffn_down") != std::string::npos) {
      EXPECT_EQ(t["type"], "Q8_0") << n;
    }
    if (n == "output.weight") {
      EXPECT_EQ(t["type"], "F16");
    }
    if (n == "token_embd.weight") {
      EXPECT_EQ(t["type"], "Q8_0");
    }
    if (n.find("attn_q") != std::string::npos) {
      EXPECT_EQ(t["type"], "Q4_0") << n;
    }
  }
}

// --method gptq: the same types as the plain mix, every decoder linear and the output solved by
// GPTQ on the blocks (token_embd encoded plainly), deterministic whatever the thread count, and
// closer to the fp model than the plain encoder on held-out text (a small calibration set).
TEST(QuantizeGguf, GptqKQuantsKeepTheMixAndLowerTheKld) {
  QF_NEED_SHARED("data/calib.txt");
  QF_NEED_SHARED("data/wikitext-2/wiki.test.raw");
  const fs::path plain = qf::testing::TempDir() / "plain_q4km.gguf";
  const fs::path g1 = qf::testing::TempDir() / "gptq_q4km.gguf",
                 g2 = qf::testing::TempDir() / "gptq_q4km_b.gguf";
  const std::string calib = " --calib " + (qf::testing::SharedDir() / "data/calib.txt").string() +
                            " --nsamples 16 --seqlen 256";
  std::string log;
  ASSERT_EQ(RunCommand(Q() + " quantize " + Bundled() + " -o " + plain.string() +
                           " --scheme Q4_K_M --json -q",
                       &log),
            0)
      << log;
  const auto rp = Json(log);
  ASSERT_EQ(RunCommand(Q() + " quantize " + Bundled() + " -o " + g1.string() +
                           " --scheme Q4_K_M --method gptq" + calib + " --json -q",
                       &log),
            0)
      << log;
  const auto rg = Json(log);
  ASSERT_EQ(RunCommand(Q() + " quantize " + Bundled() + " -o " + g2.string() +
                           " --scheme Q4_K_M --method gptq" + calib + " -t 1 -q",
                       &log),
            0)
      << log;
  EXPECT_TRUE(*ReadTextFile(g1) == *ReadTextFile(g2))
      << "GPTQ GGUF output differs between 2 threads and 1";
  EXPECT_EQ(rg["calib_samples"], 16);
  ASSERT_EQ(rg["tensors"].size(), rp["tensors"].size());
  int solved = 0;
  for (size_t i = 0; i < rg["tensors"].size(); ++i) {
    const auto& t = rg["tensors"][i];
    const std::string n = t["name"];
    EXPECT_EQ(t["type"], rp["tensors"][i]["type"]) << n;
    const bool want = n.rfind("blk.", 0) == 0 ? t["shape"].size() == 2 : n == "output.weight";
    EXPECT_EQ(t["gptq"].get<bool>(), want) << n;
    if (want) {
      ++solved;
      EXPECT_GT(t["rel_mse"].get<double>(), 0.0) << n;
      EXPECT_LT(t["rel_mse"].get<double>(), 0.05) << n;
    }
  }
  EXPECT_EQ(solved, 6 * 7 + 1);
  auto f = io::GgufFile::Open(g1);
  ASSERT_TRUE(f.ok()) << f.error().message();
  EXPECT_EQ(*f->GetString("quantize.qforge.method"), "gptq");
  EXPECT_EQ(*f->GetInt("quantize.qforge.samples"), 16);
  const double k_plain = Kld16(plain), k_gptq = Kld16(g1);
  EXPECT_LT(k_gptq, 0.9 * k_plain) << "plain " << k_plain << " gptq " << k_gptq;
}

// The plain file of GGUF type `type` and a QAT one (`flags` after --scheme type, calibrated on
// 8 x 128 tokens of calib.txt), the QAT one twice: on 2 threads and on 1, whose bytes must agree;
// the two --json reports.
struct QatRun {
  fs::path plain, qat;
  nlohmann::json plain_report, report;
  std::string common;  // the QAT run's flags after the model and -o (--scheme on)
};
void RunQat(const std::string& type, const std::string& flags, const std::string& tag,
            QatRun* out) {
  out->plain = qf::testing::TempDir() / ("plain_" + tag + ".gguf");
  out->qat = qf::testing::TempDir() / ("qat_" + tag + ".gguf");
  const fs::path again = qf::testing::TempDir() / ("qat_" + tag + "_1t.gguf");
  out->common = " --scheme " + type + " " + flags + " --calib " +
                (qf::testing::SharedDir() / "data/calib.txt").string() +
                " --nsamples 8 --seqlen 128 -q";
  const std::string& common = out->common;
  std::string log;
  const std::string quantize = Q() + " quantize " + Bundled() + " -o ";
  ASSERT_EQ(RunCommand(quantize + out->plain.string() + " --scheme " + type + " --json -q", &log),
            0)
      << log;
  out->plain_report = Json(log);
  ASSERT_EQ(RunCommand(quantize + out->qat.string() + common + " --json", &log), 0) << log;
  out->report = Json(log);
  ASSERT_EQ(RunCommand(quantize + again.string() + common + " -t 1", &log), 0) << log;
  EXPECT_TRUE(*ReadTextFile(out->qat) == *ReadTextFile(again))
      << type << " QAT output differs (2 threads vs 1)";
  ASSERT_EQ(out->report["qat"].size(), 6u);
}

// QAT into GGUF Q4_0 blocks: the decoder linears are trained from the type's
// own rounding, the rest of the file is the plain Q4_0 mix's, every block's output error and the
// next-token loss end at or below their starts, the bytes are the same on 1 and 2 threads, and
// the file is closer to the fp model than the rounding it started from.
TEST(QuantizeGguf, QatTrainsQ4_0BlocksAndBeatsItsStart) {
  QF_NEED_SHARED("data/calib.txt");
  QF_NEED_SHARED("data/wikitext-2/wiki.test.raw");
  QatRun run;
  ASSERT_NO_FATAL_FAILURE(RunQat("Q4_0", "--method qat --epochs 1 --e2e-epochs 1", "q40", &run));
  const fs::path &plain = run.plain, &a = run.qat;
  const auto &rp = run.plain_report, &ra = run.report;
  const std::string& common = run.common;
  std::string log;
  for (const auto& blk : ra["qat"]) {
    EXPECT_EQ(blk["steps"], 7);  // 7 training windows (one held out), one epoch
    EXPECT_LE(blk["loss_end"].get<double>(), blk["loss_start"].get<double>());
  }
  ASSERT_TRUE(ra["qat_e2e"].is_object());
  EXPECT_LE(ra["qat_e2e"]["loss_end"].get<double>(), ra["qat_e2e"]["loss_start"].get<double>());
  ASSERT_EQ(ra["tensors"].size(), rp["tensors"].size());
  int trained = 0;
  for (size_t i = 0; i < ra["tensors"].size(); ++i) {
    const auto& t = ra["tensors"][i];
    const std::string n = t["name"];
    EXPECT_EQ(t["type"], rp["tensors"][i]["type"]) << n;
    const bool want = n.rfind("blk.", 0) == 0 && t["shape"].size() == 2;
    EXPECT_EQ(t["qat"].get<bool>(), want) << n;
    EXPECT_FALSE(t["gptq"].get<bool>()) << n;
    trained += want;
  }
  EXPECT_EQ(trained, 6 * 7);
  auto f = io::GgufFile::Open(a);
  ASSERT_TRUE(f.ok()) << f.error().message();
  EXPECT_EQ(*f->GetString("quantize.qforge.method"), "qat");
  EXPECT_EQ(*f->GetInt("quantize.qforge.qat_epochs"), 1);
  EXPECT_EQ(*f->GetInt("quantize.qforge.e2e_epochs"), 1);
  const double k_plain = Kld16(plain), k_qat = Kld16(a);
  std::printf("Q4_0 mean KLD over 16 windows: QAT %.5f, its plain start %.5f\n", k_qat, k_plain);
  EXPECT_LT(k_qat, 0.95 * k_plain);  // measured 0.89x (0.024 vs 0.027)

  // Trained norms go into the GGUF file in place of the source's (F32, as every norm there);
  // a rate at which their steps show after rounding to the source's bf16.
  const fs::path n = qf::testing::TempDir() / "qat_q40_norms.gguf";
  ASSERT_EQ(RunCommand(Q() + " quantize " + Bundled() + " -o " + n.string() + common +
                           " --block-norms --e2e-norms --e2e-final-norm --lr-q 0.01 --json",
                       &log),
            0)
      << log;
  const auto rn = Json(log);
  ASSERT_TRUE(rn["qat_e2e"]["final_norm"].get<bool>());
  ASSERT_FALSE(rn["qat_e2e"]["reverted"].get<bool>()) << "nothing trained to compare";
  auto fn = io::GgufFile::Open(n);
  ASSERT_TRUE(fn.ok()) << fn.error().message();
  int norms = 0, moved = 0;
  for (const io::GgufTensorInfo& t : fn->tensors()) {
    const io::GgufTensorInfo* before = f->FindTensor(t.name);
    ASSERT_NE(before, nullptr) << t.name;
    EXPECT_EQ(t.type, before->type) << t.name;
    const bool norm = t.name.find("norm") != std::string::npos;
    const bool same =
        std::equal(t.data.begin(), t.data.end(), before->data.begin(), before->data.end());
    norms += norm;
    moved += norm && !same;
  }
  EXPECT_EQ(norms, 2 * 6 + 1);
  EXPECT_EQ(moved, norms) << "every block's two norms and output_norm are the trained ones";
}

// QAT into k-quant blocks (methods::GgmlQatLinear: the blocks' fp16 d and dmin and the latent
// weights train, the sub-block scales and mins stay the start's): Q2_K from the type's own
// rounding; every block's output error ends at or below its start, the tensor types are the
// plain mix's (Q2_K with Q3_K / Q4_K / Q6_K rows), the bytes are the same on 1 and 2 threads, and
// the file is closer to the fp model than its start.
TEST(QuantizeGguf, QatTrainsKQuantBlocksAndBeatsItsStart) {
  QF_NEED_SHARED("data/calib.txt");
  QF_NEED_SHARED("data/wikitext-2/wiki.test.raw");
  QatRun run;
  ASSERT_NO_FATAL_FAILURE(RunQat("Q2_K", "--method qat", "q2k", &run));
  const fs::path &plain = run.plain, &a = run.qat;
  const auto &rp = run.plain_report, &ra = run.report;
  const std::string& common = run.common;
  std::string log;
  int improved = 0;
  for (const auto& blk : ra["qat"]) {
    EXPECT_EQ(blk["steps"], 7);
    EXPECT_LE(blk["loss_end"].get<double>(), blk["loss_start"].get<double>());
    improved += blk["loss_end"].get<double>() < blk["loss_start"].get<double>();
  }
  EXPECT_GE(improved, 3) << "training moved few blocks";
  ASSERT_EQ(ra["tensors"].size(), rp["tensors"].size());
  std::set<std::string> types;
  for (size_t i = 0; i < ra["tensors"].size(); ++i) {
    const auto& t = ra["tensors"][i];
    const std::string n = t["name"];
    EXPECT_EQ(t["type"], rp["tensors"][i]["type"]) << n;
    const bool want = n.rfind("blk.", 0) == 0 && t["shape"].size() == 2;
    EXPECT_EQ(t["qat"].get<bool>(), want) << n;
    if (want) types.insert(t["type"].get<std::string>());
  }
  EXPECT_GE(types.size(), 2u) << "the mix trains more than one k-quant type";
  const double k_plain = Kld16(plain), k_qat = Kld16(a);
  std::printf("Q2_K mean KLD over 16 windows: QAT %.5f, its plain start %.5f\n", k_qat, k_plain);
  EXPECT_LT(k_qat, 0.95 * k_plain);

  // The end-to-end pass over the blocks' d (codes frozen): its loss ends at or below its start,
  // the tensor types stay, and only the trained linears' blocks change (their d).
  const fs::path e = qf::testing::TempDir() / "qat_q2k_e2e.gguf";
  ASSERT_EQ(RunCommand(Q() + " quantize " + Bundled() + " -o " + e.string() + common +
                           " --e2e-epochs 1 --lr-q 0.01 --json",
                       &log),
            0)
      << log;
  const auto re = Json(log);
  ASSERT_TRUE(re["qat_e2e"].is_object()) << log;
  EXPECT_LE(re["qat_e2e"]["loss_end"].get<double>(), re["qat_e2e"]["loss_start"].get<double>());
  ASSERT_FALSE(re["qat_e2e"]["reverted"].get<bool>()) << "nothing trained to compare";
  auto fa = io::GgufFile::Open(a);
  auto fe = io::GgufFile::Open(e);
  ASSERT_TRUE(fa.ok() && fe.ok());
  int changed = 0;
  for (const io::GgufTensorInfo& t : fe->tensors()) {
    const io::GgufTensorInfo* before = fa->FindTensor(t.name);
    ASSERT_NE(before, nullptr) << t.name;
    EXPECT_EQ(t.type, before->type) << t.name;
    const bool same =
        std::equal(t.data.begin(), t.data.end(), before->data.begin(), before->data.end());
    const bool trained = t.name.rfind("blk.", 0) == 0 && t.name.find("norm") == std::string::npos;
    if (!trained) EXPECT_TRUE(same) << t.name;
    changed += !same;
  }
  EXPECT_EQ(changed, 6 * 7) << "every trained linear's d moved";
}

// --rotate into GGUF: the rotated model quantized to Q8_0 is as close to the fp model as the
// plain Q8_0 file (a wrong fold or rotation would be far off), its bytes differ from the plain
// file's and repeat exactly, and the scratch folder beside the output is gone.
TEST(QuantizeGguf, RotatedQ8_0IsAsCloseAsThePlainFile) {
  QF_NEED_SHARED("data/wikitext-2/wiki.test.raw");
  const fs::path dir = qf::testing::TempDir() / "rotate_gguf";
  fs::create_directories(dir);
  const fs::path plain = dir / "plain.gguf", rot = dir / "rot.gguf", again = dir / "again.gguf";
  std::string log;
  ASSERT_EQ(
      RunCommand(Q() + " quantize " + Bundled() + " -o " + plain.string() + " --scheme Q8_0 -q",
                 &log),
      0)
      << log;
  for (const fs::path& out : {rot, again}) {
    ASSERT_EQ(RunCommand(Q() + " quantize " + Bundled() + " -o " + out.string() +
                             " --scheme Q8_0 --rotate hadamard --json -q",
                         &log),
              0)
        << log;
    EXPECT_GT(Json(log)["seconds_rotate"].get<double>(), 0.0);
  }
  const auto a = ReadTextFile(rot), b = ReadTextFile(again), p = ReadTextFile(plain);
  ASSERT_TRUE(a.ok() && b.ok() && p.ok());
  EXPECT_TRUE(*a == *b);
  EXPECT_EQ(a->size(), p->size());
  EXPECT_FALSE(*a == *p);
  const double k_plain = Kld16(plain), k_rot = Kld16(rot);
  std::printf("Q8_0 mean KLD: plain %.6f, rotated %.6f\n", k_plain, k_rot);
  EXPECT_LT(k_rot, 1.25 * k_plain);
  for (const auto& e : fs::directory_iterator(dir))
    EXPECT_EQ(e.path().filename().string().find(".rotated-"), std::string::npos) << e.path();
}

TEST(QuantizeGguf, FallsBackOnStories260k) {
  QF_NEED_SHARED("models/stories260k");
  const std::string src = (qf::testing::SharedDir() / "models/stories260k").string();
  std::string log;
  ASSERT_EQ(RunCommand(Q() + " quantize " + src + " --scheme Q4_K_M --dry-run --json", &log), 0)
      << log;
  EXPECT_NE(log.find("not a multiple of 256"), std::string::npos) << log;
}

// A .gguf source, as llama-quantize takes it: `convert` then `quantize` of the .gguf writes the
// very bytes `quantize` writes from the folder (metadata copied in order, file type re-set at
// the end, tensors in the same order), with and without an importance matrix computed from the
// .gguf itself (the same as from the folder). Quantized sources need --allow-requantize;
// compressed-tensors schemes and GPTQ need the folder.
TEST(QuantizeGguf, GgufSourceWritesWhatTheFolderWrites) {
  const fs::path dir = qf::testing::TempDir();
  const std::string f32 = (dir / "src-f32.gguf").string();
  std::string log;
  ASSERT_EQ(RunCommand(Q() + " convert " + Bundled() + " -o " + f32 + " --outtype f32 -q", &log), 0)
      << log;
  const std::string text = (dir / "calib.txt").string();
  {  // any text will do: the check is folder vs .gguf
    std::ifstream in(qf::testing::LocalText());
    std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ASSERT_GT(all.size(), 20000u);
    std::ofstream(text) << all.substr(0, 20000);
  }
  const std::string im_dir = (dir / "im-dir.gguf").string(),
                    im_gguf = (dir / "im-gguf.gguf").string();
  for (const auto& [src, im] : {std::pair{Bundled(), im_dir}, std::pair{f32, im_gguf}})
    ASSERT_EQ(RunCommand(Q() + " imatrix " + src + " --calib " + text + " -o " + im +
                             " --ctx 128 --chunks 3 -q",
                         &log),
              0)
        << log;
  auto bytes = [](const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  EXPECT_EQ(bytes(im_dir), bytes(im_gguf));  // both record `text` as their dataset
  for (const std::string& extra : {std::string(), " --imatrix " + im_dir}) {
    SCOPED_TRACE(extra);
    const std::string a = (dir / "from-dir.gguf").string(), b = (dir / "from-gguf.gguf").string();
    ASSERT_EQ(
        RunCommand(Q() + " quantize " + Bundled() + " --scheme Q4_K_M -o " + a + extra + " -q",
                   &log),
        0)
        << log;
    ASSERT_EQ(
        RunCommand(Q() + " quantize " + f32 + " --scheme Q4_K_M -o " + b + extra + " -q", &log), 0)
        << log;
    const std::string ba = bytes(a);
    EXPECT_GT(ba.size(), 1000000u);
    EXPECT_TRUE(ba == bytes(b));
  }
  // A quantized source: refused, then decoded and quantized again on request.
  const std::string q40 = (dir / "q40.gguf").string(), re = (dir / "re.gguf").string();
  ASSERT_EQ(RunCommand(Q() + " quantize " + f32 + " --scheme Q4_0 -o " + q40 + " -q", &log), 0)
      << log;
  EXPECT_NE(RunCommand(Q() + " quantize " + q40 + " --scheme Q4_K_M -o " + re, &log), 0);
  EXPECT_NE(log.find("--allow-requantize"), std::string::npos) << log;
  EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 1) << log;
  EXPECT_FALSE(fs::exists(re));
  ASSERT_EQ(
      RunCommand(Q() + " quantize " + q40 + " --scheme Q4_K_M -o " + re + " --allow-requantize -q",
                 &log),
      0)
      << log;
  auto f = io::GgufFile::Open(re);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(*f->GetInt("general.file_type"), 15);  // LLAMA_FTYPE_MOSTLY_Q4_K_M
  EXPECT_EQ(f->FindTensor("blk.0.attn_q.weight")->type, io::GgmlType::kQ4_K);
  for (const std::string& args :
       {" --scheme W4A16 -o " + (dir / "ct").string(), " --scheme Q4_K_M --method gptq -o " + re}) {
    EXPECT_NE(RunCommand(Q() + " quantize " + f32 + args, &log), 0) << args;
    EXPECT_NE(log.find("needs the model folder"), std::string::npos) << log;
    EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 1) << log;
  }
}

TEST(QuantizeGguf, BadFlagsGiveOneLineErrors) {
  const std::string out = (qf::testing::TempDir() / "bad.gguf").string();
  struct Case {
    std::string args, want;
  };
  for (const Case& c :
       {Case{"--scheme Q4_K_M -o " + out + " --tensor-type attn_q", "REGEX=TYPE"},
        Case{"--scheme Q4_K_M -o " + out + " --tensor-type 'attn_q=Q9_K'", "unknown type"},
        Case{"--scheme Q4_K_M -o " + out + " --output-tensor-type q7", "--output-tensor-type"},
        Case{"--scheme Q4_K_M -o " + out + ".dir", "must end in .gguf"},
        Case{"--scheme Q4_K_M -o " + out + " --group 64", "compressed-tensors schemes"},
        Case{"--scheme W4A16 -o " + out + " --pure", "apply to GGUF types"},
        Case{"--scheme Q4_K_M", "-o OUTPUT is required"},
        Case{"--scheme Q4_K_M -o " + out + " --method awq", "does not apply to GGUF types"},
        Case{"--scheme Q4_K_M -o " + out + " --calib x.txt", "needs no calibration data"},
        Case{"--scheme Q4_K_M -o " + out + " --method gptq --imatrix x.dat",
             "--imatrix does not apply"},
        Case{"--scheme Q4_0 -o " + out + " --method gptq+qat --imatrix x.dat",
             "--imatrix does not apply"},
        Case{"--scheme Q4_0 -o " + out + " --epochs 2", "apply to --method qat"},
        Case{"--scheme Q4_0 -o " + out + " --method qat --batch 0", "--batch"},
        Case{"--scheme Q4_K_M -o " + out + " --method qat --tensor-type blk=F16 --calib x.txt",
             "no quantized type"}}) {
    std::string log;
    const int rc = RunCommand(Q() + " quantize " + Bundled() + " " + c.args, &log);
    EXPECT_NE(rc, 0) << c.args;
    EXPECT_LT(rc, 128) << c.args;
    EXPECT_NE(log.find(c.want), std::string::npos) << c.args << ": " << log;
    EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 1) << log;
    EXPECT_FALSE(fs::exists(out));
  }
}

}  // namespace
}  // namespace qf
