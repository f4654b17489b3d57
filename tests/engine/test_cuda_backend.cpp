// Device selection and the CUDA plug-in. Without a GPU (development and CI
// machines) this checks that the plug-in, when built, loads and answers the
// probe with a reason, that --device cuda is a clear error and that auto falls
// back to the CPU. With a GPU it runs the conformance suite on the CUDA backend
// (fixtures in exact mode, CUDA against CPU on random models).
#include "backend.h"
#include "cetus/bench.h"
#include "cetus/engine.h"
#include "cetus/selftest.h"
#include "cuda_loader.h"
#include "dtype.h"
#include "model.h"
#include "random_draws.h"
#include "tune.h"

#include <QtTest>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <filesystem>

namespace cetus {
std::unique_ptr<Model> build_random_model(const RandomModelOptions& r, bool drawn);  // random_model.cpp
}

namespace {
std::filesystem::path fixture_model() { return std::filesystem::path(CETUS_TEST_DATA) / "golden" / "v3-noaux"; }

// splitmix64 as published (Steele, Lea and Flood; Vigna's C version): the state
// advances by the golden ratio's 64 bits, then is mixed.
struct SplitMix64 {
    uint64_t s;
    uint64_t next() {
        uint64_t z = (s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
};
}  // namespace

class TestCudaBackend : public QObject {
    Q_OBJECT
private slots:
    void pluginLoadsWhenBuilt() {
#ifdef CETUS_CUDA_PLUGIN_EXPECTED
        QVERIFY2(std::filesystem::exists(CETUS_CUDA_PLUGIN_EXPECTED), CETUS_CUDA_PLUGIN_EXPECTED);
        const cetus::CudaProbe p = cetus::probe_cuda();
        // Loaded (symbols and ABI version accepted) whether or not a GPU is present.
        QVERIFY2(!p.plugin.empty(), p.text.c_str());
        QVERIFY2(!p.text.empty(), "the probe must describe the device or say why there is none");
        qInfo("plug-in %s: %s", p.plugin.c_str(), p.text.c_str());
#else
        QSKIP("built without the CUDA toolkit (CETUS_CUDA=OFF or no nvcc): no plug-in to load");
#endif
    }

    void cudaWithoutGpuIsAClearError() {
        const cetus::CudaProbe p = cetus::probe_cuda();
        if (p.usable) QSKIP("a GPU is present");
        cetus::EngineOptions o;
        o.model_dir = fixture_model();
        o.device = cetus::Device::Cuda;
        try {
            cetus::Engine::load(o);
            QFAIL("--device cuda loaded without a usable GPU");
        } catch (const cetus::Error& e) {
            QCOMPARE(e.code(), cetus::ErrorCode::Device);
            QVERIFY2(QString(e.what()).startsWith("no usable GPU for the CUDA backend: "), e.what());
            QVERIFY2(QString(e.what()).contains(QString::fromStdString(p.text)), e.what());
        }
    }

    void autoTakesTheGpuOrFallsBack() {
        const bool gpu = cetus::probe_cuda().usable;
        cetus::EngineOptions o;
        o.model_dir = fixture_model();
        o.device = cetus::Device::Auto;
        o.max_context = 64;
        auto e = cetus::Engine::load(o);
        QCOMPARE(QString::fromStdString(e->info().backend), QString(gpu ? "cuda" : "cpu"));
        QVERIFY(!e->info().device.empty());
        // Either way the model answers.
        const std::vector<int32_t> ids = {1, 2, 3};
        QCOMPARE(e->logits(ids).size(), size_t(3 * e->info().vocab_size));
    }

    // The random models' counter-based draws (random_draws.h, which the host builder and
    // the device share): row r's k-th draw is the k-th output of a splitmix64 started at
    // seed + r * k_row_step (its published first outputs from 1234567 included), and the
    // values made from them are what they say.
    void randomDrawsAreSplitmixStreams() {
        namespace rd = cetus::random_draws;
        const uint64_t known[5] = {6457827717110365317ull, 3203168211198807973ull, 9817491932198370423ull,
                                   4593380528125082431ull, 16408922859458223821ull};
        for (int k = 0; k < 5; ++k) QCOMPARE(rd::draw(1234567, 0, k), known[k]);
        for (const uint64_t seed : {uint64_t(1), uint64_t(0xdeadbeef12345678ull)})
            for (const int64_t row : {int64_t(0), int64_t(1), int64_t(77), int64_t(102399)}) {
                SplitMix64 g{seed + uint64_t(row) * rd::k_row_step};
                for (int64_t k = 0; k < 300; ++k) QCOMPARE(rd::draw(seed, row, k), g.next());
            }
        SplitMix64 g{42};
        for (int i = 0; i < 2000; ++i) {
            const uint64_t bits = g.next();
            // BF16: (2u - 1) a with u the top 24 bits over 2^24, rounded as the engine rounds.
            const double u = double(bits >> 40) / 16777216.0;
            const float x = float((2.0 * u - 1.0) * 0.75);  // (2u - 1 is exact in float; one rounding)
            QCOMPARE(rd::bf16_value(bits, 0.75f), cetus::f32_to_bf16(x));
            // FP8: finite codes, 2^-3 <= |x| < 2^4.
            for (int k = 0; k < 8; ++k) {
                const float v = std::fabs(cetus::fp8_e4m3_to_f32(rd::fp8_code(bits, k)));
                QVERIFY2(std::isfinite(v) && v >= 0.125f && v < 16.0f, qPrintable(QString::number(v)));
            }
        }
    }

    // A random model built for the GPU holds recipes, not bytes: the CPU path refuses it
    // with a clear error, and an engine that falls back to the CPU builds the bytes on
    // the host (with CETUS_EMU_MEMORY_MIB=1, the ctest cuda_emulator_random_fallback, the
    // emulated GPU cannot take it; without a GPU auto takes the CPU from the start).
    void drawnWeightsStayOffTheCpu() {
        auto model = cetus::build_random_model({"tiny", "bf16", 0, 3}, true);
        QVERIFY(model->store().has_drawn());
        QVERIFY(model->embed().data == nullptr && model->embed().drawn != nullptr);
        cetus::CpuBackend cpu(*model, 16, cetus::KvCacheType::F32);
        const int32_t ids[2] = {1, 2};
        cetus::ForwardOptions fo;
        cetus::ForwardOutput out;
        try {
            cpu.forward(ids, 2, 0, fo, out);
            QFAIL("the CPU ran weights it does not hold");
        } catch (const cetus::Error& e) {
            QCOMPARE(e.code(), cetus::ErrorCode::Device);
            QVERIFY2(QString(e.what()).contains("drawn on the GPU"), e.what());
        }
    }
    void randomModelOnTheGpuOrTheHost() {
        const cetus::CudaProbe p = cetus::probe_cuda();
        cetus::EngineOptions o;
        o.device = cetus::Device::Auto;
        o.max_context = 64;
        o.prefix_store_bytes = 0;
        auto e = cetus::Engine::create_random({"tiny", "bf16", 0, 3}, o);
        const bool emu_full = p.usable && qEnvironmentVariableIntValue("CETUS_EMU_MEMORY_MIB") == 1;
        QCOMPARE(QString::fromStdString(e->info().backend), QString(p.usable && !emu_full ? "cuda" : "cpu"));
        QCOMPARE(e->model().store().has_drawn(), p.usable && !emu_full);
        qInfo("random tiny on %s (%s)", e->info().backend.c_str(), e->info().device.c_str());
        const std::vector<int32_t> ids = {1, 2, 3};
        const std::vector<float> a = e->logits(ids);
        o.device = cetus::Device::Cpu;
        auto cpu = cetus::Engine::create_random({"tiny", "bf16", 0, 3}, o);
        const std::vector<float> b = cpu->logits(ids);
        // The bench counts what a token reads alike whether the weights are drawn or
        // held (BF16: the GPU holds them as the host does): every projection counted.
        const cetus::TokenWeightCost tg = cetus::token_weight_cost(*e), tc = cetus::token_weight_cost(*cpu);
        QCOMPARE(tg.bytes, tc.bytes);
        QCOMPARE(tg.elements, tc.elements);
        const cetus::ModelConfig& c = cpu->model().config();
        const double H = double(c.hidden_size), n_h = double(c.num_attention_heads);
        const double attention = double(c.q_lora_rank) * H + double(c.q_lora_rank) * n_h * double(c.qk_head_dim()) +
                                 double(c.kv_lora_rank + c.qk_rope_head_dim) * H +
                                 n_h * double(c.qk_nope_head_dim + c.v_head_dim) * double(c.kv_lora_rank) +
                                 H * n_h * double(c.v_head_dim);
        QVERIFY2(tc.elements > double(c.num_hidden_layers) * attention, qPrintable(QString::number(tc.elements)));
        QCOMPARE(a.size(), b.size());
        float scale = 0.0f, err = 0.0f;
        for (size_t i = 0; i < a.size(); ++i) {
            scale = std::max(scale, std::fabs(b[i]));
            err = std::max(err, std::fabs(a[i] - b[i]));
        }
        // The same weights (the GPU's fast mode: its bf16 products; selftest.cpp's 3% bound).
        QVERIFY2(err <= 3e-2f * scale, qPrintable(QString("%1 of %2").arg(err).arg(scale)));
        if (e->info().backend == "cpu") QCOMPARE(a, b);
    }

    // The CUDA-vs-CPU harness with a second CPU backend standing in for the GPU: every
    // check must pass (a check that cannot pass would waste the scarce GPU runs).
    void comparisonHarnessPassesWithTheCpuStandingIn_data() {
        QTest::addColumn<bool>("bf16Cache");
        QTest::newRow("fp32 cache") << false;
        QTest::newRow("bf16 cache") << true;
    }
    void comparisonHarnessPassesWithTheCpuStandingIn() {
        QFETCH(bool, bf16Cache);
        qputenv("CETUS_SELFTEST_CUDA_STANDIN", "cpu");
        cetus::SelftestOptions o;
        o.fixtures_dir = std::string(CETUS_TEST_DATA) + "/golden";
        o.device = cetus::Device::Cuda;
        o.compare = "tiny";
        o.kv_cache = bf16Cache ? cetus::KvCacheType::BF16 : cetus::KvCacheType::F32;
        const auto results = cetus::run_selftest(o);
        qunsetenv("CETUS_SELFTEST_CUDA_STANDIN");
        QSet<QString> checks;
        int failed = 0;
        for (const auto& r : results) {
            checks.insert(QString::fromStdString(r.check));
            if (!r.passed) {
                ++failed;
                qWarning("%s / %s: %.3g > %.3g %s", r.fixture.c_str(), r.check.c_str(), r.error, r.tolerance,
                         r.detail.c_str());
            }
        }
        QCOMPARE(failed, 0);
        for (const char* c : {"exact: prefill logits", "fast: decode logits (8 steps)", "exact: MTP logits",
                              "exact: router expert ids", "exact: 300-token prompt, then decode",
                              "exact: CUDA graphs == direct launches (bit for bit)", "exact: greedy generation == CPU",
                              "exact: greedy MTP on == off", "exact: MTP module's router expert ids",
                              "fast: MTP module's router expert ids"})
            QVERIFY2(checks.contains(QString::fromLatin1(c)), c);
        // What each backend stored, compared row by row (a bf16 cache: bf16 values only).
        const char* rows = bf16Cache ? "exact: first layer's cache rows: bf16 values, within a step of the CPU's"
                                     : "exact: first layer's cache rows";
        QVERIFY2(checks.contains(QString::fromLatin1(rows)), rows);
        // Tiny in BF16 and FP8, the same checks; but FP8 with a bf16 cache leaves out the
        // 300-token prompt with the absorbed form, and FP8 with an fp32 cache the four
        // whole sampled generations (selftest.cpp says why).
        QCOMPARE(results.size(), size_t(2 * checks.size()) - (bf16Cache ? 1 : 4));
        if (!bf16Cache) {
            for (const char* c : {"exact: sampled generation with looked-up drafts, device == host choices (3 seeds)",
                                  "fast: greedy looked-up drafts on == off"})
                QVERIFY2(checks.contains(QString::fromLatin1(c)), c);
        }
    }

    // The step tuner on the GPU's switches (tune.cpp; its choices are tested in test_tune
    // with a clock of its own): each switch is offered where it applies, each setting
    // gives the built logits (the same bits where only the loads' order or a prefetch
    // changes, within the fast mode's rounding where sums are taken apart or in another
    // order), and the engine runs on with whatever was chosen.
    void stepTuningOnTheGpu_data() {
        QTest::addColumn<QString>("dtype");
        QTest::newRow("q4_k_m") << "q4_k_m";
        QTest::newRow("bf16") << "bf16";
    }
    void stepTuningOnTheGpu() {
        QFETCH(QString, dtype);
        const std::string dt = dtype.toStdString();
        const cetus::CudaProbe p = cetus::probe_cuda();
        if (!p.usable) QSKIP(qPrintable("no usable GPU: " + QString::fromStdString(p.text)));
        cetus::EngineOptions o;
        o.device = cetus::Device::Cuda;
        o.max_context = 64;
        o.prefix_store_bytes = 0;
        auto e = cetus::Engine::create_random({"tiny", dt, 0, 3}, o);
        cetus::Backend& b = e->backend();
        std::vector<std::string> names;
        for (const cetus::Backend::StepSwitch& w : b.step_switches()) {
            names.push_back(w.name);
            QCOMPARE(w.value, w.name == "fuse" ? 1 : 0);  // as built (no switch in the environment)
        }
        // (the emulator reports sm_90, and the plug-in has programmatic launch's code)
        for (const char* n : {"overlap", "prefetch_ahead", "pdl", "gguf_stage", "fuse", "l2_prefetch"})
            QCOMPARE(std::find(names.begin(), names.end(), n) != names.end(),
                     std::string(n) != "gguf_stage" || dt == "q4_k_m");  // (staging: GGUF blocks only)
        QVERIFY_THROWS_EXCEPTION(cetus::Error, b.set_step_switch("gguf_stage", 3));
        QVERIFY_THROWS_EXCEPTION(cetus::Error, b.set_step_switch("no such switch", 1));
        // Each switch's other values reach the backend (its description says what is on).
        const std::vector<std::tuple<std::string, int, std::string>> says = {
            {"overlap", 1, "shared experts on a second stream"},
            {"prefetch_ahead", 1, "L2 prefetch of the output projection"},
            {"pdl", 1, "programmatic dependent launch"},
            {"fuse", 0, "decode fusions off"},
            {"l2_prefetch", 1, "L2 prefetch of weight rows"},
            {"gguf_stage", 1, "GGUF decode rows staged"},
            {"gguf_stage", 2, "two tiles in flight"}};
        const std::string plain = b.description();
        for (const auto& [n, v, text] : says) {
            if (n == "gguf_stage" && dt != "q4_k_m") continue;
            QVERIFY2(plain.find(text) == std::string::npos, plain.c_str());
            b.set_step_switch(n, v);
            QVERIFY2(b.description().find(text) != std::string::npos, b.description().c_str());
            b.set_step_switch(n, n == "fuse" ? 1 : 0);
            QCOMPARE(b.description(), plain);
        }
        cetus::TuneOptions to;
        to.context = 8;
        to.rounds = 1;
        to.steps = 1;
        const cetus::StepTuning t = cetus::tune_steps(b, e->info().vocab_size, to);
        QVERIFY(t.ran);
        QCOMPARE(t.context, int64_t(8));
        QVERIFY(t.trials.size() >= (dt == "q4_k_m" ? 7u : 5u));
        for (const cetus::StepTrial& x : t.trials) {
            qInfo("%s: logits %.3g from as built, %.3f ms", x.setting.c_str(), x.logit_error, x.step_ms);
            QVERIFY2(x.valid && x.step_ms > 0.0, x.setting.c_str());
            // (the fusions' merge sums in another order; the shared experts' own sums on the second stream)
            if (x.setting.find("overlap") == std::string::npos && x.setting.find("fuse") == std::string::npos)
                QCOMPARE(x.logit_error, 0.0);
            else
                QVERIFY2(x.logit_error < 1e-4, x.setting.c_str());
        }
        QCOMPARE(b.n_tokens(), int64_t(0));
        qInfo("%s", t.note.c_str());
        // On with the chosen setting: the CPU's logits within the fast mode's bound.
        const std::vector<int32_t> ids = {1, 2, 3, 4};
        const std::vector<float> a = e->logits(ids);
        o.device = cetus::Device::Cpu;
        const std::vector<float> c = cetus::Engine::create_random({"tiny", dt, 0, 3}, o)->logits(ids);
        QCOMPARE(a.size(), c.size());
        float scale = 0.0f, err = 0.0f;
        for (size_t i = 0; i < a.size(); ++i) {
            scale = std::max(scale, std::fabs(c[i]));
            err = std::max(err, std::fabs(a[i] - c[i]));
        }
        QVERIFY2(err <= 0.05f * scale, qPrintable(QString("%1 of %2").arg(err).arg(scale)));
    }

    // A GGUF file's block-quantised matrices stay in their blocks on the GPU (the
    // router decoded to fp32 there, with the engine's decoders), their linear
    // layers with FP8 on load as FP8: in exact mode the GPU gives the logits of the CPU
    // reading the same file within the fixtures' fp32 bound, and its greedy tokens. In
    // the fast mode a 40-token prompt takes the prefill paths (the blocks expanded to
    // bf16 for cuBLAS, the routed experts on the fp32 kernel): its logits within 3% of
    // the largest, the selftest's fast-mode bound for BF16 weights (selftest.cpp:
    // bf16 operands of the products; measured on the emulator: 0.75%). On the CUDA
    // emulator: the ctest cuda_emulator_gguf.
    void ggufBlocksOnTheGpu_data() {
        QTest::addColumn<bool>("fp8");
        QTest::addColumn<bool>("exact");
        QTest::newRow("bf16") << false << true;
        QTest::newRow("fp8") << true << true;
        QTest::newRow("bf16 fast") << false << false;
    }
    void ggufBlocksOnTheGpu() {
        QFETCH(bool, fp8);
        QFETCH(bool, exact);
        const cetus::CudaProbe p = cetus::probe_cuda();
        if (!p.usable) QSKIP(qPrintable("no usable GPU: " + QString::fromStdString(p.text)));
        auto load = [fp8](cetus::Device device) {
            cetus::EngineOptions o;
            o.model_dir = std::filesystem::path(CETUS_TEST_DATA) / "gguf" / "v2-greedy-q.gguf";
            o.device = device;
            o.max_context = 64;
            o.prefix_store_bytes = 0;
            o.fp8_on_load = fp8;
            return cetus::Engine::load(o);
        };
        qputenv("CETUS_CUDA_EXACT", exact ? "1" : "0");
        auto gpu = load(cetus::Device::Cuda);
        qunsetenv("CETUS_CUDA_EXACT");
        auto cpu = load(cetus::Device::Cpu);
        QCOMPARE(QString::fromStdString(gpu->info().backend), QString("cuda"));
        QVERIFY2(QString::fromStdString(gpu->info().weight_dtype).startsWith("GGUF Q4_0/"), gpu->info().weight_dtype.c_str());
        QCOMPARE(QString::fromStdString(gpu->info().weight_dtype).contains("FP8"), fp8);
        std::vector<int32_t> ids = {0, 17, 230, 5, 99, 101, 64, 2, 380, 7};
        if (!exact)
            for (int32_t i = 0; i < 30; ++i) ids.push_back((i * 37 + 11) % 384);
        const std::vector<float> a = gpu->logits(ids), b = cpu->logits(ids);
        QCOMPARE(a.size(), b.size());
        float scale = 0.0f, err = 0.0f;
        for (size_t i = 0; i < a.size(); ++i) {
            scale = std::max(scale, std::fabs(b[i]));
            err = std::max(err, std::fabs(a[i] - b[i]));
        }
        if (!exact) {
            QVERIFY2(err <= 3e-2f * scale, qPrintable(QString("fast: %1 of %2").arg(err).arg(scale)));
            return;
        }
        QVERIFY2(err <= 1e-4f * scale, qPrintable(QString("%1 of %2").arg(err).arg(scale)));
        if (!fp8) {
            // The bytes a pass reads (the benchmarks' figures): blocks as the file holds
            // them, the router decoded to fp32 on the GPU; the CPU reads every matrix as
            // the file holds it.
            const cetus::Model& m = gpu->model();
            int blocks = 0, decoded = 0;
            for (const cetus::LayerWeights& l : m.layers()) {
                const cetus::Matrix& router = l.moe.gate;
                if (router.data && router.dtype == cetus::Dtype::Ggml) {
                    QCOMPARE(gpu->backend().weight_read_bytes(router), uint64_t(4 * router.n_elements()));
                    QCOMPARE(cpu->backend().weight_read_bytes(router), router.n_bytes());
                    ++decoded;
                }
                for (const cetus::Matrix* w : {&l.attn.o_proj, &l.attn.kv_b_proj}) {
                    if (w->dtype != cetus::Dtype::Ggml) continue;
                    QCOMPARE(gpu->backend().weight_read_bytes(*w), w->n_bytes());
                    ++blocks;
                }
            }
            QVERIFY(blocks > 0 && decoded > 0);
        }
        cetus::GenerateRequest r;
        r.prompt_ids = ids;
        r.max_new_tokens = 16;
        r.sampling.temperature = 0.0f;
        QCOMPARE(gpu->generate(r).ids, cpu->generate(r).ids);
    }

    void gpuConformance() {
        const cetus::CudaProbe p = cetus::probe_cuda();
        if (!p.usable) QSKIP(qPrintable("no usable GPU: " + QString::fromStdString(p.text)));
        cetus::SelftestOptions o;
        o.fixtures_dir = std::string(CETUS_TEST_DATA) + "/golden";
        o.device = cetus::Device::Cuda;
        o.compare = "small";
        int failed = 0;
        for (const auto& r : cetus::run_selftest(o))
            if (!r.passed) {
                ++failed;
                qWarning("%s / %s: error %.3g > tolerance %.3g %s", r.fixture.c_str(), r.check.c_str(), r.error,
                         r.tolerance, r.detail.c_str());
            }
        QCOMPARE(failed, 0);
    }
};

QTEST_GUILESS_MAIN(TestCudaBackend)
#include "test_cuda_backend.moc"
