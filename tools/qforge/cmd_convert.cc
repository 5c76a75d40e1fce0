// `qforge convert MODEL -o OUT.gguf`: a Hugging Face folder to a GGUF file llama.cpp loads;
// and `qforge info FILE.gguf` (RunGgufInfo): header, metadata and tensors of a GGUF file.
#include <cstdio>
#include <memory>
#include <variant>

#include "common.h"
#include "core/progress.h"
#include "io/gguf.h"
#include "pipeline/gguf_convert.h"

namespace qf::cli {
namespace {

struct ConvertArgs {
  std::string model, out, outtype = "auto", name;
  CommonOptions common;
};

int RunConvert(const ConvertArgs& a) {
  pipeline::GgufConvertOptions opt;
  if (a.outtype != "auto") {
    const io::GgmlTypeInfo* t = io::FindGgmlType(a.outtype);
    opt.outtype = t->type;  // the --outtype validator checked the name
  }
  opt.name = a.name;
  std::error_code ec;
  if (std::filesystem::is_directory(a.out, ec))
    return Fail(Err("{}: is a folder; -o takes the path of the .gguf file to write", a.out));
  std::unique_ptr<ProgressBar> bar;
  if (ShowProgress(a.common)) {
    opt.progress = [&bar](size_t done, size_t total) {
      if (!bar) bar = std::make_unique<ProgressBar>("convert", int64_t(total), true);
      bar->Update(int64_t(done));
    };
  }
  auto report = pipeline::ConvertHfToGguf(a.model, a.out, opt);
  if (bar) bar->Finish();
  if (!report.ok()) return Fail(report.error());
  const pipeline::GgufConvertReport& r = *report;
  for (const std::string& note : r.notes) std::fprintf(stderr, "qforge: note: %s\n", note.c_str());
  if (a.common.json) {
    PrintJson({{"output", a.out},
               {"architecture", r.architecture},
               {"outtype", std::string(io::Info(r.outtype).name)},
               {"tensors", r.tensors},
               {"bytes", r.file_bytes},
               {"tokenizer",
                {{"model", r.vocab.model},
                 {"pre", r.vocab.pre},
                 {"tokens", r.vocab.tokens},
                 {"merges", r.vocab.merges},
                 {"bos", r.vocab.bos},
                 {"eos", r.vocab.eos}}},
               {"notes", r.notes}});
    return 0;
  }
  std::printf("wrote %s: arch %s, %s, %zu tensors, %.2f MiB; tokenizer %s (pre %s), %lld tokens",
              a.out.c_str(), r.architecture.c_str(), std::string(io::Info(r.outtype).name).c_str(),
              r.tensors, double(r.file_bytes) / (1 << 20), r.vocab.model.c_str(),
              r.vocab.pre.c_str(), (long long)r.vocab.tokens);
  if (r.vocab.merges > 0) std::printf(", %lld merges", (long long)r.vocab.merges);
  std::printf("\n");
  return 0;
}

// A metadata value as JSON; long arrays are summarised (type and count) rather than listed.
nlohmann::json ValueJson(const io::GgufValue& v) {
  constexpr size_t kMaxListed = 64;
  if (v.is_array() && v.array_size() > kMaxListed) {
    return {{"type", std::string(io::GgufTypeName(v.element_type()))}, {"count", v.array_size()}};
  }
  return std::visit(
      [](const auto& x) -> nlohmann::json {
        using X = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<X, std::vector<bool>>) {
          nlohmann::json a = nlohmann::json::array();
          for (bool b : x) a.push_back(b);
          return a;
        } else {  // strings need not be UTF-8: the caller dumps with invalid bytes replaced
          return nlohmann::json(x);
        }
      },
      v.storage());
}

}  // namespace

int RunGgufInfo(const std::string& path, bool json) {
  auto file = io::GgufFile::Open(path);
  if (!file.ok()) return Fail(file.error());
  const io::GgufFile& f = *file;
  int64_t params = 0;
  for (const auto& t : f.tensors()) params += t.numel();
  const io::GgufValue* arch = f.Find("general.architecture");
  const std::string arch_name =
      arch && arch->get<std::string>() ? *arch->get<std::string>() : std::string("?");
  if (json) {
    nlohmann::json meta = nlohmann::json::object();
    for (const auto& kv : f.metadata()) meta[kv.key] = ValueJson(kv.value);
    nlohmann::json tensors = nlohmann::json::array();
    for (const auto& t : f.tensors()) {
      tensors.push_back({{"name", t.name},
                         {"type", std::string(io::Info(t.type).name)},
                         {"shape", t.shape},
                         {"offset", t.offset},
                         {"bytes", t.data.size()}});
    }
    nlohmann::json j = {{"path", path},
                        {"format", "gguf"},
                        {"version", f.version()},
                        {"alignment", f.alignment()},
                        {"architecture", arch_name},
                        {"parameters", params},
                        {"bytes", f.file_size()},
                        {"metadata", meta},
                        {"tensors", tensors}};
    std::printf("%s\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return 0;
  }
  std::printf("model:        %s\n", path.c_str());
  std::printf("format:       GGUF v%u, alignment %u, %llu bytes (%.2f MiB)\n", f.version(),
              f.alignment(), (unsigned long long)f.file_size(), double(f.file_size()) / (1 << 20));
  std::printf("architecture: %s\n", arch_name.c_str());
  std::printf("metadata:     %zu keys\n", f.metadata().size());
  for (const auto& kv : f.metadata()) {
    std::printf("  %-44s %-4s %s\n", kv.key.c_str(),
                std::string(io::GgufTypeName(kv.value.type())).c_str(),
                kv.value.ToString().c_str());
  }
  std::printf("tensors:      %zu\n", f.tensors().size());
  for (const auto& t : f.tensors()) {
    std::printf("  %-44s %-8s %s\n", t.name.c_str(), std::string(io::Info(t.type).name).c_str(),
                io::ShapeString(t.shape).c_str());
  }
  std::printf("parameters:   %lld (%.2fM)\n", (long long)params, double(params) / 1e6);
  return 0;
}

void RegisterConvert(CLI::App& app, int* rc) {
  auto a = std::make_shared<ConvertArgs>();
  CLI::App* cmd =
      app.add_subcommand("convert", "convert a Hugging Face model folder to GGUF (llama.cpp)");
  cmd->add_option("model", a->model, "model folder")->required();
  cmd->add_option("-o,--output", a->out, "GGUF file to write")->required();
  cmd->add_option("--outtype", a->outtype,
                  "type of the 2-D weights: auto (the weights' bf16/f16, else f16), f32, f16, "
                  "bf16; norms and biases stay f32")
      ->capture_default_str()
      ->check(OneOf({"auto", "f32", "f16", "bf16"}));
  cmd->add_option("--name", a->name, "general.name (default: the folder's name)");
  // No --threads: conversion is a single pass over the bytes, bound by I/O.
  cmd->add_flag("-q,--quiet", a->common.quiet, "no progress bar");
  cmd->add_flag("--json", a->common.json, "print one JSON object on stdout");
  cmd->callback([a, rc] { *rc = RunConvert(*a); });
}

}  // namespace qf::cli
