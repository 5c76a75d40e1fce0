// qforge: quantize, run and evaluate LLMs. Subcommands register themselves on one CLI11 app;
// every flag error, CLI11's or a validator's, is one "qforge: error:" line and exit 2.
#include <cctype>
#include <cstdio>
#include <string>
#include <string_view>

#include "common.h"
#include "core/dist.h"

namespace qf::cli {
void RegisterImatrix(CLI::App& app, int* rc);  // cmd_imatrix.cc
void RegisterBench(CLI::App& app, int* rc);    // cmd_bench.cc
void RegisterRotate(CLI::App& app, int* rc);   // cmd_rotate.cc
}  // namespace qf::cli

namespace {

int Run(int argc, char** argv) {
  CLI::App app{"qforge " QF_VERSION ": quantize, run and evaluate large language models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", QF_VERSION);
  int rc = 0;
  qf::cli::RegisterInfo(app, &rc);
  qf::cli::RegisterPpl(app, &rc);
  qf::cli::RegisterKld(app, &rc);
  qf::cli::RegisterCompare(app, &rc);
  qf::cli::RegisterGenerate(app, &rc);
  qf::cli::RegisterQuantize(app, &rc);
  qf::cli::RegisterConvert(app, &rc);
  qf::cli::RegisterRotate(app, &rc);
  qf::cli::RegisterImatrix(app, &rc);
  qf::cli::RegisterBench(app, &rc);
  if (argc > 1 && argv[1][0] != '-') {  // name an unknown command instead of CLI11's generic text
    std::string names;
    bool known = false;
    for (const CLI::App* sub : app.get_subcommands({})) {
      names += (names.empty() ? "" : ", ") + sub->get_name();
      known = known || sub->check_name(argv[1]);
    }
    if (!known) {
      std::fprintf(stderr, "qforge: error: unknown command '%s' (commands: %s)\n", argv[1],
                   names.c_str());
      return qf::cli::kExitBadFlags;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ValidationError& e) {
    // A value refused by a check of common.h, already in qforge's words ("--ctx: 'abc' is not
    // an integer; allowed: ...").
    std::fprintf(stderr, "qforge: error: %s\n", e.what());
    return qf::cli::kExitBadFlags;
  } catch (const CLI::ExtrasError&) {
    // CLI11 lists the extras in reverse; name the first as typed, and the command's help.
    const std::vector<std::string> extra = app.remaining(/*recurse=*/true);
    const std::vector<CLI::App*> subs = app.get_subcommands();
    const std::string cmd = subs.empty() ? "" : subs.front()->get_name();
    const std::string first = extra.empty() ? "?" : extra.front();
    const bool flag = first.size() > 1 && first[0] == '-' && !std::isdigit((unsigned char)first[1]);
    std::fprintf(stderr, "qforge: error: %s%s %s (see qforge%s --help)\n",
                 cmd.empty() ? "" : (cmd + ": ").c_str(),
                 flag ? "unknown flag" : "unexpected argument", first.c_str(),
                 cmd.empty() ? "" : (" " + cmd).c_str());
    return qf::cli::kExitBadFlags;
  } catch (const CLI::ParseError& e) {
    // CLI11's own: a missing required flag, a wrong number of values.
    std::fprintf(stderr, "qforge: error: %s (see --help)\n", e.what());
    return qf::cli::kExitBadFlags;
  }
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  // Under mpirun (a build with Open MPI): one rank per process; calibration, imatrix chunks and
  // the scoring of ppl / kld spread their windows over them (core/dist.h). The other commands would
  // each run the whole job on every rank.
  qf::dist::Init(&argc, &argv);
  if (qf::dist::Size() > 1) {
    const std::string_view cmd = argc < 2 ? "" : argv[1];
    const bool info = cmd == "--help" || cmd == "-h" || cmd == "--version";
    if (!info && cmd != "quantize" && cmd != "imatrix" && cmd != "ppl" && cmd != "kld")
      qf::dist::Abort(
          "qforge: error: under mpirun only 'quantize', 'imatrix', 'ppl' and 'kld' run (" +
              std::to_string(qf::dist::Size()) + " ranks)",
          qf::cli::kExitBadFlags);
    // Rank 0 alone reports on stdout; every rank's errors reach stderr.
    if (!qf::dist::IsRoot() && !std::freopen("/dev/null", "w", stdout))
      qf::dist::Abort("qforge: error: cannot silence rank " + std::to_string(qf::dist::Rank()), 1);
  }
  const int rc = Run(argc, argv);
  // A failed rank ends the whole job: the others may be waiting for its part.
  if (rc != 0 && qf::dist::Size() > 1) qf::dist::Abort("", rc);
  qf::dist::Finalize();
  return rc;
}
