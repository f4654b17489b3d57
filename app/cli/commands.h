// Subcommands of cetus-cli. Each lives in its own cmd_<name>.cpp and registers
// itself on the CLI11 app; main() only sets up logging and dispatches.
#pragma once

#include <CLI/CLI.hpp>

namespace cetus::cli {

void add_info_command(CLI::App& app);
void add_logits_command(CLI::App& app);
void add_selftest_command(CLI::App& app);
void add_bench_command(CLI::App& app);

}  // namespace cetus::cli
