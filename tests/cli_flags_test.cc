// Every numeric and enumerated flag of every qforge command, with bad values and refused
// combinations: one row per flag x value. Each must give exactly one line, "qforge: error:",
// naming the flag and the value, exit 2, and write nothing; all are caught before any model or
// text is read, so each row takes milliseconds.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <string>

#include "test_util.h"

namespace qf {
namespace {

namespace fs = std::filesystem;
using qf::testing::Bundled;
using qf::testing::Q;
using qf::testing::RunCommand;
using qf::testing::Wiki;

// args: the command line after `qforge`, with {model} (the bundled model), {text} (WikiText-2
// test) and {out} (a fresh path per row, which must not exist afterwards, nor anything that
// starts with it); want: a substring of the error line.
struct Row {
  const char* args;
  const char* want;
};

constexpr Row kRows[] = {
    // info takes no numeric or enumerated flag: an unknown one is a flag error too.
    {"info {model} --threads 2", "info: unknown flag --threads (see qforge info --help)"},

    // ppl: window flags, scoring, threads, a missing required flag.
    {"ppl {model} --text {text} --ctx 0",
     "--ctx: 0 is out of range; allowed: integers from 2 to 1048576"},
    {"ppl {model} --text {text} --ctx 1", "--ctx: 1 is out of range"},
    {"ppl {model} --text {text} --ctx -5", "--ctx: -5 is out of range"},
    {"ppl {model} --text {text} --ctx abc",
     "--ctx: 'abc' is not an integer; allowed: integers from 2"},
    {"ppl {model} --text {text} --ctx 1.5", "--ctx: '1.5' is not an integer"},
    {"ppl {model} --text {text} -c 0x10", "--ctx: '0x10' is not an integer"},
    {"ppl {model} --text {text} --ctx ''", "--ctx: '' is not an integer"},
    {"ppl {model} --text {text} --ctx 99999999", "--ctx: 99999999 is too large"},
    {"ppl {model} --text {text} --ctx 99999999999999999999",
     "--ctx: 99999999999999999999 is too large"},
    {"ppl {model} --text {text} --ctx -99999999999999999999",
     "--ctx: -99999999999999999999 is out of range"},
    {"ppl {model} --text {text} --scoring llama.cpp --ctx 2",
     "--ctx: 2 is out of range with --scoring llama.cpp"},
    {"ppl {model} --text {text} --max-windows -1",
     "--max-windows: -1 is out of range; allowed: integers >= 0 (0 = all)"},
    {"ppl {model} --text {text} --max-windows x", "--max-windows: 'x' is not an integer"},
    {"ppl {model} --text {text} --scoring foo",
     "--scoring: 'foo' is not allowed; allowed: qforge, llama.cpp"},
    {"ppl {model} --text {text} --scoring LLAMA.CPP", "--scoring: 'LLAMA.CPP' is not allowed"},
    {"ppl {model} --text {text} -t -1",
     "--threads: -1 is out of range; allowed: integers from 0 to 1024 (0 = all cores)"},
    {"ppl {model} --text {text} -t abc", "--threads: 'abc' is not an integer"},
    {"ppl {model} --text {text} -t 100000", "--threads: 100000 is too large"},
    {"ppl {model} --text {text} --bogus", "ppl: unknown flag --bogus"},
    {"ppl {model}", "--text is required"},

    // kld: the same window flags (nothing saved), and its flag combinations.
    {"kld {model} {model} --text {text} --ctx 0", "--ctx: 0 is out of range"},
    {"kld {model} --save-base-logits {out} --text {text} --ctx abc",
     "--ctx: 'abc' is not an integer"},
    {"kld {model} --save-base-logits {out} --text {text} --max-windows -2",
     "--max-windows: -2 is out of range"},
    {"kld {model} --save-base-logits {out} --text {text} --scoring foo",
     "--scoring: 'foo' is not allowed"},
    {"kld {model} --save-base-logits {out} --text {text} --scoring llama.cpp --ctx 2",
     "--ctx: 2 is out of range with --scoring llama.cpp"},
    {"kld {model} --save-base-logits {out} --text {text} -t -1", "--threads: -1 is out of range"},
    {"kld --base-logits {text} {model} --save-base-logits {out} --text {text}",
     "exclude each other"},
    {"kld --base-logits {text} {model} {model} --text {text}", "give only OTHER"},
    {"kld {model} --text {text}", "kld needs BASE and OTHER"},

    // generate: length, sampling, seed, threads.
    {"generate {model} -p hi -n -1",
     "--n-predict: -1 is out of range; allowed: integers from 0 to 1048576"},
    {"generate {model} -p hi -n abc", "--n-predict: 'abc' is not an integer"},
    {"generate {model} -p hi -n 99999999", "--n-predict: 99999999 is too large"},
    {"generate {model} -p hi --temp -0.5",
     "--temp: -0.5 is out of range; allowed: numbers from 0 to 100"},
    {"generate {model} -p hi --temp 101", "--temp: 101 is out of range"},
    {"generate {model} -p hi --temp abc", "--temp: 'abc' is not a number"},
    {"generate {model} -p hi --temp nan", "--temp: 'nan' is not a finite number"},
    {"generate {model} -p hi --temp 1e999", "--temp: 1e999 is out of range"},
    {"generate {model} -p hi --top-k -1",
     "--top-k: -1 is out of range; allowed: integers >= 0 (0 = all)"},
    {"generate {model} -p hi --top-k 2.5", "--top-k: '2.5' is not an integer"},
    {"generate {model} -p hi --top-p 1.5",
     "--top-p: 1.5 is out of range; allowed: numbers from 0 to 1"},
    {"generate {model} -p hi --top-p -0.1", "--top-p: -0.1 is out of range"},
    {"generate {model} -p hi --top-p x", "--top-p: 'x' is not a number"},
    {"generate {model} -p hi --seed -1", "--seed: -1 is out of range; allowed: integers >= 0"},
    {"generate {model} -p hi --seed abc", "--seed: 'abc' is not an integer"},
    {"generate {model} -p hi --seed 18446744073709551616",
     "--seed: 18446744073709551616 is too large"},
    {"generate {model} -p hi -t -1", "--threads: -1 is out of range"},

    // quantize, compressed-tensors schemes: every numeric flag.
    {"quantize {model} -o {out} --scheme W4A16 --group 0",
     "--group: 0 is not allowed; allowed: 32, 64, 128"},
    {"quantize {model} -o {out} --scheme W4A16 --group 48", "--group: 48 is not allowed"},
    {"quantize {model} -o {out} --scheme W4A16 --group -32", "--group: -32 is not allowed"},
    {"quantize {model} -o {out} --scheme W4A16 --group abc", "--group: 'abc' is not an integer"},
    {"quantize {model} -o {out} --scheme fp8 --group 64",
     "--group applies to integer schemes only"},
    {"quantize {model} -o {out} --nsamples 0",
     "--nsamples: 0 is out of range; allowed: integers >= 1"},
    {"quantize {model} -o {out} --nsamples -1", "--nsamples: -1 is out of range"},
    {"quantize {model} -o {out} --nsamples abc", "--nsamples: 'abc' is not an integer"},
    {"quantize {model} -o {out} --seqlen 1",
     "--seqlen: 1 is out of range; allowed: integers from 2 to 1048576"},
    {"quantize {model} -o {out} --seqlen 2097152", "--seqlen: 2097152 is too large"},
    {"quantize {model} -o {out} --seqlen x", "--seqlen: 'x' is not an integer"},
    {"quantize {model} -o {out} --method gptq --damp -0.1",
     "--damp: -0.1 is out of range; allowed: numbers from 0 to 10"},
    {"quantize {model} -o {out} --method gptq --damp 11", "--damp: 11 is out of range"},
    {"quantize {model} -o {out} --method gptq --damp abc", "--damp: 'abc' is not a number"},
    {"quantize {model} -o {out} --method smoothquant --alpha 1.5",
     "--alpha: 1.5 is out of range; allowed: numbers from 0 to 1"},
    {"quantize {model} -o {out} --method smoothquant --alpha -0.5",
     "--alpha: -0.5 is out of range"},
    {"quantize {model} -o {out} --method smoothquant --alpha abc",
     "--alpha: 'abc' is not a number"},
    {"quantize {model} -o {out} --seed -1", "--seed: -1 is out of range"},
    {"quantize {model} -o {out} --seed abc", "--seed: 'abc' is not an integer"},
    {"quantize {model} -o {out} -t -1", "--threads: -1 is out of range"},
    // ... enumerated flags ...
    {"quantize {model} -o {out} --scheme foo",
     "--scheme: 'foo' is not a scheme; allowed: a preset (W4A16"},
    {"quantize {model} -o {out} --scheme int5",
     "--scheme: scheme 'int5': int5 is not supported (bits must be 2, 3, 4 or 8)"},
    {"quantize {model} -o {out} --scheme int4-g48",
     "--scheme: scheme 'int4-g48': group size 48 is not supported"},
    {"quantize {model} -o {out} --scheme fp8-g64",
     "--scheme: scheme 'fp8-g64': fp8 takes a per-tensor or per-channel scale"},
    {"quantize {model} -o {out} --scheme int4-tensor-channel",
     "--scheme: scheme 'int4-tensor-channel': granularity given twice"},
    {"quantize {model} -o {out} --method foo", "--method foo: unknown (rtn, gptq, awq"},
    {"quantize {model} -o {out} --act int7-token",
     "--act: 'int7-token' is not an activation scheme; allowed: int8-token"},
    {"quantize {model} -o {out} --act foo", "--act: 'foo' is not an activation scheme"},
    {"quantize {model} -o {out} --ignore 're:(('", "--ignore: 're:((': bad regular expression"},
    // ... and combinations.
    {"quantize {model} -o {out} --clip --no-clip", "--clip and --no-clip are exclusive"},
    {"quantize {model} -o {out} --alpha 0.7", "--alpha applies to --method smoothquant"},
    {"quantize {model} -o {out} --act-order", "--act-order applies to GPTQ methods"},
    {"quantize {model} -o {out} --method awq --act-order", "--act-order applies to GPTQ methods"},
    {"quantize {model} -o {out} --calib {text}", "needs no calibration data"},
    {"quantize {model} -o {out} --scheme W8A8 --calib {text}", "needs no calibration data"},
    {"quantize {model} -o {out} --pure", "apply to GGUF types"},
    {"quantize {model} -o {out} --max-shard-size 0", "--max-shard-size 0: expected a positive"},
    {"quantize {model} -o {out} --dry-run", "apply to GGUF types"},
    {"quantize {model} -o {out} --allow-requantize", "apply to GGUF types"},
    {"quantize {model} -o {out} --imatrix {text}", "apply to GGUF types"},
    {"quantize {model} -o {out} --tensor-type attn_q=q8_0", "apply to GGUF types"},
    {"quantize {model} -o {out} --output-tensor-type f16", "apply to GGUF types"},
    {"quantize {model} -o {out} --token-embedding-type f16", "apply to GGUF types"},
    {"quantize {model} --scheme W4A16", "-o OUTPUT is required"},

    // quantize, GGUF types.
    {"quantize {model} -o {out}.gguf --scheme Q4_K_M --group 64",
     "apply to compressed-tensors schemes, not to Q4_K_M"},
    {"quantize {model} -o {out}.gguf --scheme Q4_K_M --act int8-token",
     "apply to compressed-tensors schemes"},
    {"quantize {model} -o {out}.gguf --scheme Q4_K_M --clip",
     "apply to compressed-tensors schemes"},
    {"quantize {model} -o {out}.gguf --scheme Q4_K_M --ignore lm_head",
     "apply to compressed-tensors schemes"},
    {"quantize {model} -o {out}.gguf --scheme Q4_K_M --max-shard-size 2GB",
     "--max-shard-size applies to compressed-tensors schemes (a GGUF is one file)"},
    {"quantize {model} -o {out}.gguf --scheme Q4_K_M --method awq",
     "--method awq does not apply to GGUF types"},
    {"quantize {model} -o {out}.gguf --scheme Q4_K_M --method foo",
     "--method foo does not apply to GGUF types"},
    {"quantize {model} -o {out}.gguf --scheme Q4_K_M --calib {text}", "needs no calibration data"},
    {"quantize {model} -o {out}.gguf --scheme Q4_K_M --method gptq --imatrix {text}",
     "--imatrix does not apply to --method gptq"},
    {"quantize {model} -o {out}.gguf --scheme Q4_K_M --method gptq --nsamples 0",
     "--nsamples: 0 is out of range"},
    {"quantize {model} -o {out}.gguf --scheme Q4_K_M --tensor-type attn_q",
     "--tensor-type 'attn_q': expected REGEX=TYPE"},
    {"quantize {model} -o {out}.gguf --scheme Q4_K_M --tensor-type attn_q=Q9_K",
     "unknown type 'Q9_K'"},
    {"quantize {model} -o {out}.gguf --scheme Q4_K_M --tensor-type '((=q8_0'",
     "bad regular expression"},
    {"quantize {model} -o {out}.gguf --scheme Q4_K_M --output-tensor-type q7",
     "--output-tensor-type: unknown type 'q7'"},
    {"quantize {model} -o {out}.gguf --scheme Q4_K_M --token-embedding-type zz",
     "--token-embedding-type: unknown type 'zz'"},
    {"quantize {model} -o {out}.gguf --scheme Q4_K_M --rotate hadamard --imatrix {text}",
     "--imatrix does not apply with --rotate"},
    {"quantize {model} -o {out} --rotate r3", "--rotate: r3 not in {hadamard,hadamard+heads}"},
    {"quantize {model} -o {out} --scheme Q4_K_M", "-o must end in .gguf"},
    {"quantize {model} --scheme Q4_K_M", "-o OUTPUT is required"},

    // convert: the output type; it takes no --threads.
    {"convert {model} -o {out}.gguf --outtype q4",
     "--outtype: 'q4' is not allowed; allowed: auto, f32, f16, bf16"},
    {"convert {model} -o {out}.gguf --outtype F16", "--outtype: 'F16' is not allowed"},
    {"convert {model} -o {out}.gguf -t 2", "convert: unknown flag -t"},

    // rotate: the mode, the seed; it takes no --threads.
    {"rotate {model} -o {out} --mode r3",
     "--mode: 'r3' is not allowed; allowed: hadamard, hadamard+heads"},
    {"rotate {model} -o {out} --seed -1", "--seed: -1 is out of range"},
    {"rotate {model} -o {out} -t 2", "rotate: unknown flag -t"},
    {"rotate {model}", "--output is required"},

    // imatrix: chunks, context, threads.
    {"imatrix {model} --calib {text} -o {out}.gguf --chunks 0",
     "--chunks: 0 is out of range; allowed: integers >= 1"},
    {"imatrix {model} --calib {text} -o {out}.gguf --chunks -3", "--chunks: -3 is out of range"},
    {"imatrix {model} --calib {text} -o {out}.gguf --chunks abc",
     "--chunks: 'abc' is not an integer"},
    {"imatrix {model} --calib {text} -o {out}.gguf --ctx 1",
     "--ctx: 1 is out of range; allowed: integers from 2 to 1048576"},
    {"imatrix {model} --calib {text} -o {out}.gguf --ctx abc", "--ctx: 'abc' is not an integer"},
    {"imatrix {model} --calib {text} -o {out}.gguf --ctx 4194304", "--ctx: 4194304 is too large"},
    {"imatrix {model} --calib {text} -o {out}.gguf -t -1", "--threads: -1 is out of range"},

    // bench: prompt, generation, repetitions, seed, threads.
    {"bench {model} -p -5",
     "--prompt: -5 is out of range; allowed: integers from 0 to 1048576 (0 = skip)"},
    {"bench {model} -p abc", "--prompt: 'abc' is not an integer"},
    {"bench {model} -n -1", "--gen: -1 is out of range"},
    {"bench {model} -n 99999999", "--gen: 99999999 is too large"},
    {"bench {model} -r 0", "--reps: 0 is out of range; allowed: integers from 1 to 100"},
    {"bench {model} -r 101", "--reps: 101 is too large"},
    {"bench {model} -r abc", "--reps: 'abc' is not an integer"},
    {"bench {model} --seed -1", "--seed: -1 is out of range"},
    {"bench {model} -t -1", "--threads: -1 is out of range"},
    {"bench {model} -t 1.5", "--threads: '1.5' is not an integer"},

    // compare: models, windows, bench flags.
    {"compare {model} --text {text}", "compare needs BASE and at least one MODEL"},
    {"compare {model} {model} --text {text} --ctx 1", "--ctx: 1 is out of range"},
    {"compare {model} {model} --text {text} -p -1", "--prompt: -1 is out of range"},
    {"compare {model} {model} --text {text} -r 0", "--reps: 0 is out of range"},
    {"compare {model} {model} --text {text} --max-windows x",
     "--max-windows: 'x' is not an integer"},
};

std::string Expand(std::string s, const std::string& out) {
  const std::pair<std::string, std::string> vars[] = {
      {"{model}", Bundled()}, {"{text}", Wiki()}, {"{out}", out}};
  for (const auto& [key, value] : vars)
    for (size_t at = s.find(key); at != std::string::npos; at = s.find(key, at + value.size()))
      s.replace(at, key.size(), value);
  return s;
}

TEST(CliFlags, EveryBadFlagIsOneLineExit2AndWritesNothing) {
  const auto t0 = std::chrono::steady_clock::now();
  int index = 0;
  for (const Row& row : kRows) {
    const std::string name = fmt::format("flag_row_{:03}", index++);
    const fs::path out = qf::testing::TempDir() / name;
    const std::string cmd = Q() + " " + Expand(row.args, out.string());
    SCOPED_TRACE(row.args);
    std::string log;
    const int rc = RunCommand(cmd, &log);
    EXPECT_EQ(rc, 2) << cmd << "\n" << log;
    EXPECT_EQ(log.rfind("qforge: error: ", 0), 0u) << log;
    EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 1) << log;
    EXPECT_NE(log.find(row.want), std::string::npos) << "want '" << row.want << "' in " << log;
    // CLI11's own wording for values must not leak through.
    for (const char* raw :
         {"Could not convert", "not in range", "is not an allowed value", "Value "})
      EXPECT_EQ(log.find(raw), std::string::npos) << log;
    for (const auto& e : fs::directory_iterator(qf::testing::TempDir()))
      EXPECT_NE(e.path().filename().string().rfind(name, 0), 0u) << "wrote " << e.path();
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%zu rows in %.2f s\n", std::size(kRows), seconds);
}

// The help of every command still prints, exit 0, with the validators' ranges.
TEST(CliFlags, HelpStillWorks) {
  for (const char* command : {"", " info", " ppl", " kld", " compare", " generate", " quantize",
                              " convert", " imatrix", " bench"}) {
    std::string log;
    EXPECT_EQ(RunCommand(Q() + command + " --help", &log), 0) << command << "\n" << log;
    EXPECT_NE(log.find("Usage:"), std::string::npos) << command << "\n" << log;
  }
  std::string log;
  ASSERT_EQ(RunCommand(Q() + " quantize --help", &log), 0) << log;
  EXPECT_NE(log.find("--group INT:{32,64,128}"), std::string::npos) << log;
  EXPECT_NE(log.find("--nsamples INT:>= 1"), std::string::npos) << log;
}

}  // namespace
}  // namespace qf
