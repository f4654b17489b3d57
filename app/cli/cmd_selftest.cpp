// cetus-cli selftest: the conformance suite over the committed fixtures, for
// any backend. Exit code 1 when any check fails.
#include "cli_util.h"
#include "commands.h"

#include "cetus/selftest.h"

#include <nlohmann/json.hpp>

#include <cstdio>

namespace cetus::cli {

void add_selftest_command(CLI::App& app) {
    auto* cmd = app.add_subcommand("selftest", "Run the conformance suite over the golden fixtures");
    struct Opts {
        std::string device = "cpu", fixtures, only, compare = "small", kv_cache = "f32", modes = "both";
        bool json = false, compare_only = false, int8 = false;
    };
    auto o = std::make_shared<Opts>();
    cmd->add_option("--device", o->device, "cpu or cuda");
    cmd->add_option("--fixtures", o->fixtures, "Folder of fixture cases (default: tests/data/golden)");
    cmd->add_option("--case", o->only, "Run one case only");
    cmd->add_option("--compare", o->compare,
                    "With --device cuda: CUDA vs CPU on random models: none, tiny, small or full, or one shape of "
                    "small: tiny-gguf (GGUF blocks), medium-cpu, v2-lite or v3-layer")
        ->check(CLI::IsMember({"none", "tiny", "small", "full", "tiny-gguf", "medium-cpu", "v2-lite", "v3-layer"}))
        ->capture_default_str();
    cmd->add_flag("--compare-only", o->compare_only, "With --device cuda: the comparison only, no fixtures");
    cmd->add_option("--kv-cache", o->kv_cache, "Latent cache of both backends in the comparison: f32 or bf16")
        ->check(CLI::IsMember({"f32", "bf16"}))
        ->capture_default_str();
    cmd->add_option("--modes", o->modes,
                    "With --device cuda: the CUDA backend's modes compared: exact (fp32 products), fast (the "
                    "default mode) or both")
        ->check(CLI::IsMember({"exact", "fast", "both"}))
        ->capture_default_str();
    cmd->add_flag("--int8-activations", o->int8,
                  "With --device cuda: both backends' GGUF products with int8 activations in the comparison");
    cmd->add_flag("--json", o->json, "JSON output");
    cmd->callback([o] {
        SelftestOptions so;
        so.device = parse_device(o->device);
        so.fixtures_dir = o->fixtures.empty() ? default_fixtures_dir() : o->fixtures;
        so.only = o->only;
        so.compare = o->compare;
        so.compare_only = o->compare_only;
        so.kv_cache = kv_cache_type_from_name(o->kv_cache);
        so.modes = o->modes;
        so.int8_activations = o->int8;
        auto results = run_selftest(so);
        int failed = 0;
        nlohmann::json j = nlohmann::json::array();
        for (const auto& r : results) {
            failed += r.passed ? 0 : 1;
            if (o->json) {
                j.push_back({{"case", r.fixture}, {"check", r.check}, {"passed", r.passed}, {"error", r.error},
                             {"tolerance", r.tolerance}, {"detail", r.detail}, {"seconds", r.seconds}});
            } else {
                std::printf("%-4s %-16s %-52s err %.3g (tol %.3g) %s [%.1f s]\n", r.passed ? "ok" : "FAIL",
                            r.fixture.c_str(), r.check.c_str(), r.error, r.tolerance, r.detail.c_str(), r.seconds);
            }
        }
        if (o->json) std::printf("%s\n", j.dump(1).c_str());
        std::fprintf(stderr, "selftest (%s): %zu checks, %d failed\n", o->device.c_str(), results.size(), failed);
        if (failed) throw CLI::RuntimeError(1);
    });
}

}  // namespace cetus::cli
