// Rendering of `qforge compare` (compare.h).
#include "eval/compare.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace qf::eval {
namespace {

double Mib(double bytes) { return bytes / double(1 << 20); }

// A label safe inside a gnuplot double-quoted string.
std::string Quoted(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

}  // namespace

std::string CompareMarkdown(const std::vector<CompareRow>& rows) {
  const bool bench = std::any_of(rows.begin(), rows.end(), [](auto& r) { return r.benched; });
  std::string s = "| model | MiB | bits/weight | PPL | ΔPPL | mean KLD | top-1 |" +
                  std::string(bench ? " prefill t/s | decode t/s | decode bandwidth |" : "") +
                  " memory MiB |\n|---|--:|--:|--:|--:|--:|--:|" + (bench ? "--:|--:|--:|" : "") +
                  "--:|\n";
  const double base_ppl = rows.empty() ? 0.0 : rows[0].ppl.ppl;
  for (size_t i = 0; i < rows.size(); ++i) {
    const CompareRow& r = rows[i];
    s += fmt::format("| {} | {:.1f} | {:.3f} | {:.3f} ± {:.3f} | {} | {} | {} |", r.label,
                     Mib(double(r.file_bytes)), r.bits_per_weight, r.ppl.ppl, r.ppl.ppl_stderr,
                     i == 0 ? std::string("–")
                            : fmt::format("{:+.3f} ({:+.2f}%)", r.ppl.ppl - base_ppl,
                                          100.0 * (r.ppl.ppl / base_ppl - 1.0)),
                     i == 0 ? std::string("–") : fmt::format("{:.5f}", r.kld_mean),
                     i == 0 ? std::string("–") : fmt::format("{:.2f}%", 100.0 * r.top1));
    if (bench) {
      if (r.benched)
        s += fmt::format(" {:.2f} | {:.2f} | {:.0f}% |", r.bench.prefill.mean, r.bench.decode.mean,
                         100.0 * r.bench.decode_bandwidth_ratio);
      else
        s += " – | – | – |";
    }
    s += fmt::format(" {:.0f} |\n", Mib(double(r.memory_bytes)));
  }
  return s;
}

nlohmann::json CompareJson(const std::vector<CompareRow>& rows) {
  nlohmann::json out = nlohmann::json::array();
  for (size_t i = 0; i < rows.size(); ++i) {
    const CompareRow& r = rows[i];
    nlohmann::json j = {{"model", r.path},
                        {"label", r.label},
                        {"base", i == 0},
                        {"file_bytes", r.file_bytes},
                        {"parameters", r.params},
                        {"bits_per_weight", r.bits_per_weight},
                        {"ppl", r.ppl.ppl},
                        {"ppl_stderr", r.ppl.ppl_stderr},
                        {"scored_tokens", r.ppl.scored_tokens},
                        {"kld_mean", r.kld_mean},
                        {"kld_stderr", r.kld_stderr},
                        {"top1_agreement", r.top1},
                        {"memory_bytes", r.memory_bytes}};
    if (r.benched) {
      j["prefill_tokens_per_second"] = r.bench.prefill.mean;
      j["decode_tokens_per_second"] = r.bench.decode.mean;
      j["weight_bytes_per_token"] = r.bench.weight_bytes_per_token;
      j["decode_bandwidth_ratio"] = r.bench.decode_bandwidth_ratio;
    }
    out.push_back(std::move(j));
  }
  return out;
}

std::string CompareGnuplot(const std::vector<CompareRow>& rows, const std::string& quality_svg,
                           const std::string& speed_svg) {
  std::string s =
      "set terminal svg size 720,480 dynamic font 'sans,12'\n"
      "set grid\nset key top right\nset xlabel 'bits per weight (file size x 8 / parameters)'\n";
  // Quality: the quantized rows (the base has KLD 0, which a log axis cannot show).
  s += "$q << EOD\n";
  for (size_t i = 1; i < rows.size(); ++i)
    s += fmt::format("{:.4f} {:.6g} \"{}\"\n", rows[i].bits_per_weight,
                     std::max(rows[i].kld_mean, 1e-9), Quoted(rows[i].label));
  s += "EOD\n";
  s += fmt::format(
      "set output \"{}\"\nset logscale y\nset ylabel 'mean KL divergence to the base (nats)'\n"
      "set title 'Quality against size'\n"
      "plot $q using 1:2 with points pt 7 ps 1.2 title 'quantized', "
      "$q using 1:2:3 with labels offset 0,1 font ',10' notitle\nunset logscale y\n",
      Quoted(quality_svg));
  const bool bench = std::any_of(rows.begin(), rows.end(), [](auto& r) { return r.benched; });
  if (bench) {
    s += "$s << EOD\n";
    for (const CompareRow& r : rows)
      if (r.benched)
        s += fmt::format("{:.4f} {:.4f} {:.4f} \"{}\"\n", r.bits_per_weight, r.bench.prefill.mean,
                         r.bench.decode.mean, Quoted(r.label));
    s += "EOD\n";
    s += fmt::format(
        "set output \"{}\"\nset ylabel 'tokens/s'\nset title 'Speed against size'\n"
        "plot $s using 1:2 with points pt 7 ps 1.2 title 'prefill', "
        "$s using 1:3 with points pt 5 ps 1.2 title 'decode', "
        "$s using 1:2:4 with labels offset 0,1 font ',10' notitle, "
        "$s using 1:3:4 with labels offset 0,-1 font ',10' notitle\n",
        Quoted(speed_svg));
  }
  s += "set output\n";
  return s;
}

}  // namespace qf::eval
