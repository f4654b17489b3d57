// Small helpers shared by cetus-cli subcommands: device names, id lists,
// engine loading with progress on stderr, and peak-memory readings.
#pragma once

#include "cetus/engine.h"

#include <CLI/CLI.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace cetus::cli {

Device parse_device(const std::string& name);  // auto | cpu | cuda
std::vector<int32_t> parse_ids(const std::string& text);  // "1,2,3" (spaces allowed)
std::unique_ptr<Engine> load_engine(const std::string& model_dir, const std::string& device, int threads,
                                    int64_t max_context, bool fp8_on_load = false);
// --fp8: EngineOptions::fp8_on_load for the commands that load a checkpoint.
void add_fp8_flag(CLI::App* cmd, bool& fp8);
uint64_t peak_rss_bytes();  // VmHWM of this process
std::string default_fixtures_dir();
// `given` when not empty, else the bundled demo model (app/common/model_paths.h); throws when there is none.
std::string model_or_bundled(const std::string& given);

// A generation's statistics as JSON (serve's "stats" object, generate's and chat's
// summaries): tokens, speeds, MTP drafts and acceptance, cache bytes.
nlohmann::json stats_json(const GenerationStats& s);

}  // namespace cetus::cli
