// Tokenizer tests: llama.cpp's tokenizer vectors (ggml-vocab-*.inp/.out) for sentencepiece and
// tokenizer.json, the bundled model's reference ids, .json == .model on wikitext, error paths.
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>

#include "test_util.h"
#include "text/tokenizer.h"
#include "text/unicode_util.h"

namespace qf::text {
namespace {

namespace fs = std::filesystem;
using qf::testing::BundledModel;
using qf::testing::SharedDir;

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const fs::path& p, std::string_view text) {
  std::ofstream out(p, std::ios::binary);
  out << text;
}

fs::path TokenizerData() { return SharedDir() / "data" / "tokenizers"; }

// Loads each tokenizer once per process (the big tokenizer.json files take a while to parse).
const Tokenizer& Cached(const fs::path& path) {
  static std::mutex mu;
  static std::map<fs::path, std::unique_ptr<Tokenizer>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[path];
  if (!slot) {
    auto t = LoadTokenizer(path);
    QF_CHECK(t.ok(), "{}", t.error().message());
    slot = std::move(t).value();
  }
  return *slot;
}

std::string Show(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += std::to_string(id) + " ";
  return s;
}

// llama.cpp's test-tokenizer-0 format: texts in .inp separated by "\n__ggml_vocab_test__\n"
// (so a text's trailing newline before the separator is not part of it); one line of expected
// ids per text in .out, space-separated, without BOS.
struct Vectors {
  std::vector<std::string> texts;
  std::vector<std::vector<int32_t>> ids;
};

Vectors ReadVectors(const fs::path& inp, const fs::path& out) {
  Vectors v;
  const std::string raw = ReadFile(inp);
  const std::string sep = "\n__ggml_vocab_test__\n";
  for (size_t pos = 0; pos < raw.size();) {
    const size_t next = raw.find(sep, pos);
    if (next == std::string::npos) {
      v.texts.push_back(raw.substr(pos));
      break;
    }
    v.texts.push_back(raw.substr(pos, next - pos));
    pos = next + sep.size();
  }
  std::ifstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream ss(line);
    std::vector<int32_t> ids;
    for (int32_t id; ss >> id;) ids.push_back(id);
    v.ids.push_back(std::move(ids));
  }
  return v;
}

struct VocabCase {
  const char* name;       // ggml-vocab-NAME.gguf.{inp,out}
  const char* tokenizer;  // file under data/tokenizers
  const char* kind;
};
void PrintTo(const VocabCase& c, std::ostream* os) { *os << c.name << " / " << c.tokenizer; }

class GgmlVocab : public ::testing::TestWithParam<VocabCase> {};

TEST_P(GgmlVocab, EncodesEveryVectorExactlyAndDecodesBack) {
  const VocabCase& c = GetParam();
  QF_NEED_SHARED(std::string("data/tokenizers/ggml-vocab/ggml-vocab-") + c.name + ".gguf.inp");
  QF_NEED_SHARED(std::string("data/tokenizers/") + c.tokenizer);
  const fs::path base = TokenizerData() / "ggml-vocab" / (std::string("ggml-vocab-") + c.name);
  const Vectors v = ReadVectors(base.string() + ".gguf.inp", base.string() + ".gguf.out");
  ASSERT_EQ(v.texts.size(), v.ids.size()) << base;
  ASSERT_GE(v.texts.size(), 40u) << base;
  const Tokenizer& tok = Cached(TokenizerData() / c.tokenizer);
  EXPECT_EQ(tok.kind(), c.kind);
  int passed = 0;
  for (size_t i = 0; i < v.texts.size(); ++i) {
    const std::vector<int32_t> got = tok.Encode(v.texts[i], /*add_bos=*/false);
    EXPECT_EQ(Show(got), Show(v.ids[i])) << c.name << " vector #" << i << " '" << v.texts[i] << "'";
    passed += got == v.ids[i];
    EXPECT_EQ(tok.Decode(got), v.texts[i]) << c.name << " vector #" << i;
    std::string streamed;
    for (int32_t id : got) streamed += tok.DecodeToken(id);
    // Streaming keeps sentencepiece's dummy-prefix space, which Decode drops.
    if (tok.kind() == "bpe-bytelevel") {
      EXPECT_EQ(streamed, v.texts[i]) << c.name << " #" << i;
    }
  }
  std::printf("[ vectors  ] %s: %d/%zu exact\n", c.name, passed, v.texts.size());
}

INSTANTIATE_TEST_SUITE_P(
    Text, GgmlVocab,
    ::testing::Values(VocabCase{"llama-spm", "llama2.tokenizer.model", "sentencepiece"},
                      VocabCase{"llama-bpe", "llama3.tokenizer.json", "bpe-bytelevel"},
                      VocabCase{"qwen2", "qwen3.tokenizer.json", "bpe-bytelevel"},
                      VocabCase{"gpt-2", "gpt2.tokenizer.json", "bpe-bytelevel"}),
    [](const auto& info) {
      std::string n = info.param.name;
      for (char& ch : n) ch = ch == '-' ? '_' : ch;
      return n;
    });

TEST(TextHf, SpecialTokensAndBosEos) {
  QF_NEED_SHARED("data/tokenizers");
  const Tokenizer& llama3 = Cached(TokenizerData() / "llama3.tokenizer.json");
  EXPECT_EQ(llama3.bos_id(), 128000);  // from llama3.tokenizer_config.json
  EXPECT_EQ(llama3.eos_id(), 128001);
  EXPECT_EQ(llama3.vocab_size(), 128256);
  EXPECT_EQ(llama3.Encode("Hello world", true), (std::vector<int32_t>{128000, 9906, 1917}));
  EXPECT_EQ(llama3.Encode("<|begin_of_text|>Hello", false), (std::vector<int32_t>{128000, 9906}));
  EXPECT_EQ(llama3.Decode({128000, 9906, 1917}), "Hello world");  // special tokens skipped

  const Tokenizer& qwen = Cached(TokenizerData() / "qwen3.tokenizer.json");
  EXPECT_EQ(qwen.bos_id(), -1);  // bos_token null in qwen3.tokenizer_config.json
  EXPECT_EQ(qwen.eos_id(), 151645);
  const std::vector<int32_t> chat = qwen.Encode("<|im_start|>user\nHi<|im_end|><think>", false);
  ASSERT_GE(chat.size(), 4u);
  EXPECT_EQ(chat.front(), 151644);
  EXPECT_EQ(chat[chat.size() - 2], 151645);
  EXPECT_EQ(chat.back(), 151667);  // <think>: added but not special
  EXPECT_EQ(qwen.DecodeToken(151667), "<think>");
  // NFC normalizer: a decomposed "é" encodes as the precomposed one.
  EXPECT_EQ(qwen.Encode("caf\x65\xCC\x81", false), qwen.Encode("caf\xC3\xA9", false));

  const Tokenizer& gpt2 = Cached(TokenizerData() / "gpt2.tokenizer.json");
  EXPECT_EQ(gpt2.bos_id(), -1);  // no tokenizer_config.json beside it
  EXPECT_EQ(gpt2.eos_id(), 50256);
  EXPECT_EQ(gpt2.Encode("a<|endoftext|>b", false), (std::vector<int32_t>{64, 50256, 65}));
  // Invalid UTF-8 survives byte-level BPE.
  const std::string bad = "x\xFF\xC3y";
  EXPECT_EQ(gpt2.Decode(gpt2.Encode(bad, false)), bad);
}

TEST(TextHf, LongRunsRoundTrip) {
  // One pre-token of 100k characters: the regex split and BPE stay fast and lossless.
  QF_NEED_SHARED("data/tokenizers");
  for (const char* file : {"llama3.tokenizer.json", "gpt2.tokenizer.json"}) {
    const Tokenizer& t = Cached(TokenizerData() / file);
    for (const std::string& s : {std::string(100000, ' ') + "x", std::string(100000, 'a'),
                                 std::string(100000, '!'), std::string(50000, '\n') + " \t "}) {
      const std::vector<int32_t> ids = t.Encode(s, false);
      EXPECT_LT(ids.size(), s.size() + 1) << file;
      EXPECT_EQ(t.Decode(ids), s) << file;
    }
  }
}

TEST(TextUnicode, NfcNormalize) {
  EXPECT_EQ(NfcNormalize("plain ascii"), "plain ascii");
  EXPECT_EQ(NfcNormalize("e\xCC\x81"), "\xC3\xA9");                     // e + U+0301 -> é
  EXPECT_EQ(NfcNormalize("e\xCC\xA3\xCC\x82"), "\xE1\xBB\x87");         // U+1EC7
  EXPECT_EQ(NfcNormalize("e\xCC\x82\xCC\xA3"), "\xE1\xBB\x87");         // reordered marks
  EXPECT_EQ(NfcNormalize("\xE2\x84\xAB"), "\xC3\x85");                  // U+212B -> U+00C5
  EXPECT_EQ(NfcNormalize("\xE0\xA5\x98"), "\xE0\xA4\x95\xE0\xA4\xBC");  // excluded U+0958
  EXPECT_EQ(NfcNormalize("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"), "\xEA\xB0\x81");  // jamo -> 각
  const std::string invalid_then_e_acute = std::string("\xFF") + "e\xCC\x81";
  EXPECT_EQ(NfcNormalize(invalid_then_e_acute), "\xFF\xC3\xA9");     // invalid byte kept
  EXPECT_EQ(NfcNormalize("a\xCC\x81\xCC\x81"), "\xC3\xA1\xCC\x81");  // second mark blocked
}

TEST(TextBundled, ReferencePromptsMatchForModelAndJson) {
  const auto ref = nlohmann::json::parse(ReadFile(BundledModel() / "reference" / "reference.json"));
  const Tokenizer& sp = Cached(BundledModel());  // the folder: tokenizer.model wins
  const Tokenizer& hf = Cached(BundledModel() / "tokenizer.json");
  EXPECT_EQ(sp.kind(), "sentencepiece");
  EXPECT_EQ(hf.kind(), "bpe-spm");
  EXPECT_EQ(sp.Encode("The quick brown fox", true),
            (std::vector<int32_t>{1, 355, 2225, 4761, 282, 2251}));
  ASSERT_GE(ref.at("prompts").size(), 3u);
  for (const auto& prompt : ref["prompts"]) {
    const std::string text = prompt.at("text").get<std::string>();
    const auto want = prompt.at("ids").get<std::vector<int32_t>>();
    EXPECT_EQ(sp.Encode(text, true), want) << text;
    EXPECT_EQ(hf.Encode(text, true), want) << text;
    EXPECT_EQ(sp.Decode(want), text);
    EXPECT_EQ(hf.Decode(want), text);
  }
  for (const Tokenizer* t : {&sp, &hf}) {
    EXPECT_EQ(t->bos_id(), 1);
    EXPECT_EQ(t->eos_id(), 2);
    EXPECT_EQ(t->vocab_size(), 8192);
    EXPECT_EQ(t->DecodeToken(3 + '\n'), "\n");  // <0x0A>
    EXPECT_EQ(t->DecodeToken(282), " f");       // "▁f"
    EXPECT_EQ(t->DecodeToken(2251), "ox");
    const std::string ascii = "Hello, World! 12 apples cost $3.50; x=y*2 (ok?) [done] {yes} ~end";
    EXPECT_EQ(t->Decode(t->Encode(ascii, true)), ascii);
    EXPECT_EQ(t->Decode(t->Encode(ascii, false)), ascii);
  }
}

TEST(TextBundled, JsonMatchesModelOnWikitext) {
  QF_NEED_SHARED("data/wikitext-2/wiki.test.raw");
  const fs::path wiki = SharedDir() / "data" / "wikitext-2" / "wiki.test.raw";
  const std::string text = ReadFile(wiki);
  ASSERT_GT(text.size(), 1000000u);
  const Tokenizer& sp = Cached(BundledModel() / "tokenizer.model");
  const Tokenizer& hf = Cached(BundledModel() / "tokenizer.json");
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  const std::vector<int32_t> want = sp.Encode(text, false);
  const auto t1 = Clock::now();
  const std::vector<int32_t> got = hf.Encode(text, false);
  const auto t2 = Clock::now();
  const auto secs = [](auto d) { return std::chrono::duration<double>(d).count(); };
  std::printf("[ wikitext ] %zu bytes: %zu tokens; sentencepiece %.2f s, tokenizer.json %.2f s\n",
              text.size(), want.size(), secs(t1 - t0), secs(t2 - t1));
  // reference.json: 734 full windows of 512 tokens.
  EXPECT_GE(want.size(), 734u * 512u);
  EXPECT_LT(want.size(), 735u * 512u);
  ASSERT_EQ(got.size(), want.size());
  size_t first_diff = 0;
  while (first_diff < got.size() && got[first_diff] == want[first_diff]) ++first_diff;
  EXPECT_EQ(first_diff, got.size()) << "first difference at token " << first_diff;
  EXPECT_LT(secs(t2 - t1), 20.0);
}

TEST(TextBundled, PrependReplaceNormalizerFormMatchesModel) {
  // The older conversion of the same vocabulary: normalizer Prepend("▁") + Replace(" ", "▁")
  // and no pre-tokenizer, as in Llama-2's tokenizer.json; no tokenizer_config.json beside it,
  // so bos comes from the post-processor template and eos from the name "</s>".
  auto j = nlohmann::json::parse(ReadFile(BundledModel() / "tokenizer.json"));
  j["pre_tokenizer"] = nullptr;
  j["normalizer"] = {
      {"type", "Sequence"},
      {"normalizers",
       {{{"type", "Prepend"}, {"prepend", "\u2581"}},
        {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}}}}};
  const fs::path file = qf::testing::TempDir() / "llama-old.tokenizer.json";
  WriteFile(file, j.dump());
  auto hf = LoadTokenizer(file);
  ASSERT_TRUE(hf.ok()) << hf.error().message();
  EXPECT_EQ((*hf)->kind(), "bpe-spm");
  EXPECT_EQ((*hf)->bos_id(), 1);
  EXPECT_EQ((*hf)->eos_id(), 2);
  const Tokenizer& sp = Cached(BundledModel() / "tokenizer.model");
  std::vector<std::string> texts = {"", " ", "  Hello  world ", "\n\n x",
                                    "caf\xC3\xA9 \xF0\x9F\xA6\x99"};
  const fs::path wiki = SharedDir() / "data" / "wikitext-2" / "wiki.test.raw";
  texts.push_back(ReadFile(qf::testing::LocalText()).substr(0, 100000));
  if (fs::exists(wiki)) texts.push_back(ReadFile(wiki).substr(0, 100000));
  for (const std::string& text : texts) {
    EXPECT_EQ((*hf)->Encode(text, true), sp.Encode(text, true)) << text.substr(0, 40);
  }
}

TEST(TextErrors, MissingAndCorruptFilesGiveErrors) {
  const fs::path dir = qf::testing::TempDir() / "text_errors";
  fs::create_directories(dir);
  auto expect_error = [](const fs::path& p, const std::string& needle) {
    auto t = LoadTokenizer(p);
    ASSERT_FALSE(t.ok()) << p;
    EXPECT_NE(t.error().message().find(needle), std::string::npos) << t.error().message();
    EXPECT_EQ(t.error().message().find('\n'), std::string::npos) << t.error().message();
  };
  expect_error(dir / "missing.json", "missing.json");
  expect_error(dir / "missing.model", "missing.model");
  expect_error(dir, "no tokenizer.model or tokenizer.json");
  WriteFile(dir / "vocab.txt", "x");
  expect_error(dir / "vocab.txt", "unknown tokenizer file type");
  WriteFile(dir / "broken.json", "{\"model\": {\"type\": \"BPE\", ");
  expect_error(dir / "broken.json", "broken.json: not valid JSON");
  WriteFile(dir / "wordpiece.json", R"({"model": {"type": "WordPiece", "vocab": {}}})");
  expect_error(dir / "wordpiece.json", "unsupported tokenizer model type 'WordPiece'");
  WriteFile(dir / "badmerge.json",
            R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]}})");
  expect_error(dir / "badmerge.json", "'ab' is not in the vocabulary");
  WriteFile(dir / "badtype.json", R"({"model": {"type": "BPE", "vocab": [1, 2], "merges": []}})");
  expect_error(dir / "badtype.json", "badtype.json: model.vocab is not an object");
  WriteFile(
      dir / "badnorm.json",
      R"({"normalizer": {"type": "NFKC"}, "model": {"type": "BPE", "vocab": {}, "merges": []}})");
  expect_error(dir / "badnorm.json", "unsupported normalizer 'NFKC'");
  WriteFile(dir / "corrupt.model", std::string("\x0a\xff\xff\xff\x0fgarbage", 12));
  expect_error(dir / "corrupt.model", "corrupt.model");
  const fs::path folder = dir / "model_folder";
  fs::create_directories(folder);
  WriteFile(folder / "tokenizer.json", "not json");
  expect_error(folder, "tokenizer.json: not valid JSON");
  // Ids must be JSON integers that fit: 1.5 was truncated to 1, 2.4e78 cast with undefined
  // behaviour (tokenizer_json_fuzz).
  WriteFile(dir / "floatid.json",
            R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1.5}, "merges": []}})");
  expect_error(dir / "floatid.json", "model.vocab id must be an integer");
  WriteFile(dir / "hugeid.json", R"({"added_tokens": [{"id": 2.4e78, "content": "<x>"}],
      "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})");
  expect_error(dir / "hugeid.json", "added token id must be an integer");
}

// libsentencepiece's trie builder throws on a zero-length piece; the load is an Error, not
// std::terminate (sentencepiece_fuzz; the model is kept in tests/data/fuzz_regressions).
TEST(TextErrors, SentencePieceModelWithEmptyPieceIsAnError) {
  const fs::path file =
      qf::testing::RepoDir() / "tests/data/fuzz_regressions/sentencepiece/zero_length_piece.model";
  const auto t = LoadTokenizer(file);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.error().message().find("not a valid SentencePiece model"), std::string::npos)
      << t.error().message();
}

TEST(TextHf, TinyByteLevelBpeMergesByRank) {
  // Ranks decide, not order of appearance: "b c" (rank 0) beats "a b" (rank 1) in "abc".
  const fs::path file = qf::testing::TempDir() / "tiny.tokenizer.json";
  WriteFile(file, R"({
    "added_tokens": [{"id": 6, "content": "<eos>", "special": true}],
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
    "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "bc": 3, "ab": 4, "abc": 5},
              "merges": [["b", "c"], "a b", "a bc"]}})");
  auto t = LoadTokenizer(file);
  ASSERT_TRUE(t.ok()) << t.error().message();
  EXPECT_EQ((*t)->kind(), "bpe-bytelevel");
  EXPECT_EQ((*t)->Encode("abc", false), (std::vector<int32_t>{5}));
  EXPECT_EQ((*t)->Encode("abab", false), (std::vector<int32_t>{4, 4}));
  EXPECT_EQ((*t)->Encode("cab<eos>", false), (std::vector<int32_t>{2, 4, 6}));
  EXPECT_EQ((*t)->eos_id(), 6);
  EXPECT_EQ((*t)->bos_id(), -1);
  EXPECT_EQ((*t)->vocab_size(), 7);
}

TEST(TextHf, TinyWhitespaceAndDigitsPreTokenizers) {
  // Words never merge across pre-token boundaries: "a b" stays two tokens, "12" is split.
  const fs::path file = qf::testing::TempDir() / "tiny_ws.tokenizer.json";
  WriteFile(file, R"({
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Whitespace"}, {"type": "Digits", "individual_digits": true}]},
    "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": true,
              "vocab": {"<unk>": 0, "a": 1, "b": 2, "1": 3, "2": 4, "ab": 5, "12": 6, "!": 7},
              "merges": ["a b", "1 2"]}})");
  auto t = LoadTokenizer(file);
  ASSERT_TRUE(t.ok()) << t.error().message();
  EXPECT_EQ((*t)->kind(), "bpe");
  EXPECT_EQ((*t)->Encode("ab  12!", false), (std::vector<int32_t>{5, 3, 4, 7}));
  EXPECT_EQ((*t)->Encode("a b", false), (std::vector<int32_t>{1, 2}));
  EXPECT_EQ((*t)->Encode("xyab", false), (std::vector<int32_t>{0, 5}));  // fused unknowns
}

}  // namespace
}  // namespace qf::text
