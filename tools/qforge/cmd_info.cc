// `qforge info MODEL`: architecture, dimensions, tensors (dtype, shape), parameters, bytes.
#include <cstdio>
#include <cstring>
#include <string_view>

#include "common.h"
#include "io/compressed_tensors.h"
#include "io/safetensors.h"
#include "model/config.h"

namespace qf::cli {
namespace {

struct InfoArgs {
  std::string model;
  CommonOptions common;
};

int RunInfo(const InfoArgs& a) {
  if (std::filesystem::path(a.model).extension() == ".gguf")
    return RunGgufInfo(a.model, a.common.json);
  if (!std::filesystem::is_directory(a.model))
    return Fail(Err("{}: expected a model folder (config.json + *.safetensors)", a.model));
  auto cfg = model::LoadHfConfig(a.model);
  if (!cfg.ok()) return Fail(cfg.error());
  auto store = io::TensorStore::Open(a.model);
  if (!store.ok()) return Fail(store.error());
  const model::ModelConfig& c = *cfg;
  auto qcfg = io::LoadQuantizationConfig(a.model);
  if (!qcfg.ok()) return Fail(qcfg.error());
  const int64_t params = io::LogicalParameterCount(*store);

  nlohmann::json j;
  j["path"] = a.model;
  j["architecture"] = std::string(c.family->architecture);
  j["family"] = std::string(c.family->name);
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden;
  j["intermediate_size"] = c.intermediate;
  j["layers"] = c.layers;
  j["heads"] = c.heads;
  j["kv_heads"] = c.kv_heads;
  j["head_dim"] = c.head_dim;
  j["context_length"] = c.max_position;
  j["rope_theta"] = c.rope_theta;
  j["rms_norm_eps"] = c.rms_eps;
  j["tie_word_embeddings"] = c.tie_embeddings;
  j["parameters"] = params;
  j["bytes"] = store->total_bytes();
  j["files"] = store->files().size();
  nlohmann::json tensors = nlohmann::json::array();
  for (const auto& t : store->tensors())
    tensors.push_back({{"name", t.name},
                       {"dtype", std::string(Name(t.dtype))},
                       {"shape", t.shape},
                       {"bytes", t.data.size()}});
  j["tensors"] = tensors;
  std::string quant = "none";
  if (*qcfg) {
    const io::CompressedTensorsConfig& q = **qcfg;
    quant = "compressed-tensors " + q.format;
    nlohmann::json groups = nlohmann::json::array();
    for (const auto& g : q.groups) {
      nlohmann::json gj = {{"name", g.name}, {"targets", g.targets}, {"format", g.format}};
      if (g.weights) gj["weights"] = g.weights->ToJson();
      if (g.input_activations) gj["input_activations"] = g.input_activations->ToJson();
      groups.push_back(gj);
      if (g.weights)
        quant += fmt::format("; {}: {}{} {}{}{}", g.name, g.weights->type, g.weights->num_bits,
                             g.weights->strategy,
                             g.weights->group_size && *g.weights->group_size > 0
                                 ? fmt::format(" g{}", *g.weights->group_size)
                                 : "",
                             g.weights->symmetric ? " sym" : " asym");
      if (g.input_activations)
        quant += fmt::format(", activations {}{} {} {}", g.input_activations->type,
                             g.input_activations->num_bits, g.input_activations->strategy,
                             g.input_activations->dynamic ? "dynamic" : "static");
    }
    j["quantization"] = {
        {"format", q.format}, {"groups", groups}, {"ignore", q.ignore}, {"qforge", q.qforge}};
  } else {
    j["quantization"] = nullptr;
  }
  if (a.common.json) {
    PrintJson(j);
    return 0;
  }
  std::printf("model:        %s\n", a.model.c_str());
  std::printf("architecture: %s (%s)\n", std::string(c.family->architecture).c_str(),
              std::string(c.family->name).c_str());
  std::printf(
      "dimensions:   hidden %lld, intermediate %lld, layers %lld, heads %lld/%lld kv, "
      "head_dim %lld, vocab %lld, context %lld\n",
      (long long)c.hidden, (long long)c.intermediate, (long long)c.layers, (long long)c.heads,
      (long long)c.kv_heads, (long long)c.head_dim, (long long)c.vocab_size,
      (long long)c.max_position);
  std::printf("rope:         theta %g%s; rms_norm_eps %g; tied embeddings %s\n", c.rope_theta,
              c.rope_scaling.type == model::RopeScaling::Type::kNone ? "" : " (scaled)", c.rms_eps,
              c.tie_embeddings ? "yes" : "no");
  std::printf("quantization: %s\n", quant.c_str());
  std::printf("tensors:      %zu in %zu file(s)\n", store->tensors().size(), store->files().size());
  for (const auto& t : store->tensors())
    std::printf("  %-52s %-8s %s\n", t.name.c_str(), std::string(Name(t.dtype)).c_str(),
                io::ShapeString(t.shape).c_str());
  std::printf("parameters:   %lld (%.2fM)\n", (long long)params, double(params) / 1e6);
  std::printf("bytes:        %llu (%.2f MiB)\n", (unsigned long long)store->total_bytes(),
              double(store->total_bytes()) / (1 << 20));
  return 0;
}

}  // namespace

void RegisterInfo(CLI::App& app, int* rc) {
  auto args = std::make_shared<InfoArgs>();
  CLI::App* cmd = app.add_subcommand("info", "show a model's architecture, tensors and size");
  cmd->add_option("model", args->model, "model folder or .gguf file")->required();
  cmd->add_flag("--json", args->common.json, "print one JSON object on stdout");
  cmd->callback([args, rc] { *rc = RunInfo(*args); });
}

}  // namespace qf::cli
