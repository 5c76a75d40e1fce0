// qforge: quantize, run and evaluate LLMs. Subcommands register themselves on one CLI11 app.
#include <cstdio>

#include "common.h"

namespace qf::cli {
void RegisterImatrix(CLI::App& app, int* rc);  // cmd_imatrix.cc
void RegisterBench(CLI::App& app, int* rc);    // cmd_bench.cc
}

int main(int argc, char** argv) {
  CLI::App app{"qforge " QF_VERSION ": quantize, run and evaluate large language models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", QF_VERSION);
  int rc = 0;
  qf::cli::RegisterInfo(app, &rc);
  qf::cli::RegisterPpl(app, &rc);
  qf::cli::RegisterKld(app, &rc);
  qf::cli::RegisterGenerate(app, &rc);
  qf::cli::RegisterQuantize(app, &rc);
  qf::cli::RegisterConvert(app, &rc);
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
      return 2;
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
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "qforge: error: %s (see --help)\n", e.what());
    return e.get_exit_code() ? e.get_exit_code() : 2;
  }
  return rc;
}
