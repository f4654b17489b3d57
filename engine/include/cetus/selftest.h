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
    // Wall time since the case's previous check (or its start): what running up to
    // this check took, so a slow suite shows where its time goes.
    double seconds = 0.0;
};

struct SelftestOptions {
    std::filesystem::path fixtures_dir;  // holds one folder per case
    Device device = Device::Cpu;
    std::string only;                    // run only this case (empty: all)
    // With device Cuda: also compare the CUDA backend with the CPU backend on
    // random models. "tiny": the tiny preset in BF16 and FP8 (with a prompt longer
    // than one chunk); "small": also medium-cpu, two layers of DeepSeek-V2-Lite and
    // one V3 layer (FP8); "full" adds four V3 layers with their 256-expert MoE;
    // "medium-cpu", "v2-lite" or "v3-layer" runs that one shape of "small";
    // "none" skips the comparison. CETUS_SELFTEST_CUDA_STANDIN=cpu compares a second
    // CPU backend instead (no fixtures): the harness checking itself without a GPU.
    std::string compare = "small";
    bool compare_only = false;  // skip the fixtures (e.g. the comparison under compute-sanitizer)
    // The latent cache of both backends in the comparison (the fixtures always run
    // with an fp32 cache: their bounds are transformers' fp32 numbers).
    KvCacheType kv_cache = KvCacheType::F32;
    // The CUDA backend's modes the comparison runs: "exact" (fp32 products), "fast"
    // (the default mode's bf16 prefill products) or "both".
    std::string modes = "both";
    // Both backends' products of GGUF blocks with int8 activations (EngineOptions::
    // int8_activations; the CUDA backend's decode and verify products): the comparison's
    // models in GGUF blocks (tiny-gguf) so, within the same bounds.
    bool int8_activations = false;
};

// Checks and tolerances. Fixtures: logits, hidden states and router weights
// within `tolerance` of the largest reference value (1e-4 unless the case's
// manifest says otherwise), identical argmax, router ids and greedy
// continuations. The CUDA backend runs the fixtures in its exact mode
// (CETUS_CUDA_EXACT=1: every product in fp32), so the same bounds apply.
// CUDA vs CPU on random models: the exact mode within 1e-4 with identical
// router ids and greedy output (and MTP on == off); the default fast mode,
// whose prefill products round activations to bf16 (relative error up to
// 2^-9 per element), within 2e-2 with at most 1% of router choices differing.
//
// Runs every case; never throws for a failed comparison (that is a failed
// check), but a fixture that cannot be read is reported as a failed check too.
std::vector<CheckResult> run_selftest(const SelftestOptions& options);

}  // namespace cetus
