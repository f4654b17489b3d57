// The conformance suite: the engine against the committed golden fixtures
// (transformers' logits, hidden states and routing; the MTP reference; greedy
// continuations), plus internal consistency (decode through the cache vs one
// prefill, absorbed vs naive attention). Qt-free, so both the Qt Test suite
// and `cetus-cli selftest` (also on the GPU machine) run it.
#pragma once

#include "cetus/engine.h"

#include <filesystem>
#include <string>
#include <vector>

namespace cetus {

struct CheckResult {
    std::string fixture;  // case folder name
    std::string check;    // e.g. "prompt 1 logits"
    bool passed = false;
    double error = 0.0;      // worst error found (meaning depends on the check)
    double tolerance = 0.0;
    std::string detail;      // where the worst error is, or why it failed
};

struct SelftestOptions {
    std::filesystem::path fixtures_dir;  // holds one folder per case
    Device device = Device::Cpu;
    std::string only;                    // run only this case (empty: all)
};

// Runs every case; never throws for a failed comparison (that is a failed
// check), but a fixture that cannot be read is reported as a failed check too.
std::vector<CheckResult> run_selftest(const SelftestOptions& options);

}  // namespace cetus
