// Subcommands of cetus-cli. Each lives in its own cmd_<name>.cpp and registers
// itself on the CLI11 app; main() only sets up logging and dispatches.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

namespace cetus::cli {

void add_info_command(CLI::App& app);
void add_logits_command(CLI::App& app);
void add_selftest_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_history_command(CLI::App& app);
void add_chat_command(CLI::App& app);     // needs storage: CETUS_HAVE_STORAGE  // needs storage: CETUS_HAVE_STORAGE
void add_generate_command(CLI::App& app);
void add_cache_command(CLI::App& app);      // the prefix cache folder (cmd_cache.cpp)
void add_tokenize_commands(CLI::App& app);  // tokenize, detokenize (cmd_tokenize.cpp)
void add_serve_command(CLI::App& app);      // needs cpp-httplib: CETUS_HAVE_HTTPLIB

// `bench --tokenizer`: encode throughput of DIR's tokenizer on the bytes of text_file,
// printed as text or JSON; returns the exit code. Throws cetus::Error on bad input.
int run_tokenizer_bench(const std::string& model_dir, const std::string& text_file, bool json);

}  // namespace cetus::cli
