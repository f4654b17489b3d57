// FP8 on load (EngineOptions::fp8_on_load) against PyTorch (tests/golden/
// make_fp8_on_load.py): the e4m3 encoder against torch's float8_e4m3fn cast, matrices
// of many blocks, and the v3-bf16 golden checkpoint quantised by the engine against
// the same checkpoint quantised by torch (every tensor byte for byte; the logits then
// equal those of the torch-quantised checkpoint); an FP8 checkpoint stays as it is.
#include "cetus/engine.h"
#include "cetus/error.h"
#include "config.h"
#include "dtype.h"
#include "kv_cache.h"
#include "model.h"
#include "weights.h"

#include <QtTest>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

namespace fs = std::filesystem;

namespace {

const fs::path k_data = fs::path(CETUS_TEST_DATA);
const fs::path k_bf16 = k_data / "golden/v3-bf16";
const fs::path k_reference = k_data / "fp8-on-load/v3-bf16-fp8";
const std::vector<int32_t> k_ids = {3, 17, 42, 5, 99, 7, 64, 12};

std::unique_ptr<cetus::Engine> load(const fs::path& dir, bool fp8_on_load) {
    cetus::EngineOptions o;
    o.model_dir = dir;
    o.device = cetus::Device::Cpu;
    o.max_context = 64;
    o.fp8_on_load = fp8_on_load;
    return cetus::Engine::load(o);
}

std::unique_ptr<cetus::Model> model(const fs::path& dir, bool fp8_on_load) {
    auto store = std::make_unique<cetus::WeightStore>(dir);
    store->set_fp8_on_load(fp8_on_load);
    return std::make_unique<cetus::Model>(cetus::load_config(dir), std::move(store));
}

}  // namespace

class TestFp8OnLoad : public QObject {
    Q_OBJECT
private slots:
    void encoderMatchesTorch() {
        std::ifstream in(k_data / "fp8-on-load/e4m3_cases.json");
        QVERIFY(in.good());
        const nlohmann::json j = nlohmann::json::parse(in);
        const auto& cases = j.at("cases");
        QVERIFY(cases.size() > 1000);
        int wrong = 0;
        for (const auto& c : cases) {
            const uint32_t bits = c[0].get<uint32_t>();
            float x;
            std::memcpy(&x, &bits, 4);
            const uint8_t got = cetus::f32_to_fp8_e4m3(x), want = uint8_t(c[1].get<int>());
            if (got != want && ++wrong <= 5) qWarning("%.9g: got 0x%02x, torch 0x%02x", double(x), got, want);
        }
        QCOMPARE(wrong, 0);
        // Beyond torch's range (it gives NaN there): saturation, and NaN stays NaN.
        QCOMPARE(cetus::f32_to_fp8_e4m3(463.9f), uint8_t(0x7e));
        QCOMPARE(cetus::f32_to_fp8_e4m3(1e30f), uint8_t(0x7e));
        QCOMPARE(cetus::f32_to_fp8_e4m3(-1e30f), uint8_t(0xfe));
        QCOMPARE(cetus::f32_to_fp8_e4m3(std::nanf("")) & 0x7f, 0x7f);
    }

    // Matrices of many and partial blocks, an all-zero block and tiny values: codes and
    // scales exactly torch's.
    void matricesMatchTorch() {
        cetus::WeightStore store(k_data / "fp8-on-load/matrices");
        store.set_fp8_on_load(true);
        for (const std::string name : {"a", "b", "c", "d"}) {
            const cetus::TensorInfo& w = store.tensor(name);
            const int64_t rows = w.shape[0], cols = w.shape[1];
            const cetus::Matrix m = store.matrix(name, rows, cols, true);
            QCOMPARE(m.dtype, cetus::Dtype::F8_E4M3);
            const cetus::TensorInfo& q = store.tensor(name + ".q");
            const cetus::TensorInfo& sc = store.tensor(name + ".s");
            QVERIFY2(std::memcmp(m.data, q.data, size_t(rows * cols)) == 0, name.c_str());
            QCOMPARE(m.scale_cols, sc.shape[1]);
            QVERIFY2(std::memcmp(m.scale_inv, sc.data, sc.n_bytes) == 0, name.c_str());
        }
    }

    // Every tensor of the reference: FP8 ones byte for byte with their scales, the
    // rest in their own type; and nothing else quantised.
    void tensorsMatchTorch() {
        auto got = model(k_bf16, true);
        cetus::WeightStore want(k_reference);
        int fp8 = 0;
        for (const auto& [name, w] : want.tensors()) {
            QVERIFY2(got->store().has(name), name.c_str());
            const cetus::TensorInfo& g = got->store().tensor(name);
            QVERIFY2(g.dtype == w.dtype, name.c_str());
            QVERIFY2(g.shape == w.shape, name.c_str());
            if (w.dtype == cetus::Dtype::F8_E4M3 || name.ends_with("_scale_inv")) {
                QVERIFY2(g.n_bytes == w.n_bytes && std::memcmp(g.data, w.data, w.n_bytes) == 0, name.c_str());
                fp8 += w.dtype == cetus::Dtype::F8_E4M3;
            }
        }
        QCOMPARE(got->store().tensors().size(), want.tensors().size());
        QVERIFY(fp8 >= 20);
    }

    void logitsMatchTorchQuantised() {
        auto quantised = load(k_bf16, true);
        auto reference = load(k_reference, false);
        QVERIFY(QString::fromStdString(quantised->info().weight_dtype).contains("quantised on load"));
        QVERIFY(!QString::fromStdString(reference->info().weight_dtype).contains("quantised on load"));
        QVERIFY(quantised->info().weight_bytes < load(k_bf16, false)->info().weight_bytes * 3 / 4);
        const std::vector<float> a = quantised->logits(k_ids), b = reference->logits(k_ids);
        QCOMPARE(a, b);
        QVERIFY(a != load(k_bf16, false)->logits(k_ids));  // the weights did change
    }

    // Each dequantised weight (code times its block's scale_inv, as the kernels read it)
    // is the BF16 weight to within half a step of e4m3: 2^-4 of its magnitude, or half
    // the subnormal step 2^-9 times the scale.
    void weightsWithinHalfAStep() {
        const std::string name = "model.layers.2.mlp.experts.3.down_proj.weight";
        cetus::WeightStore qs(k_bf16), bs(k_bf16);
        qs.set_fp8_on_load(true);
        const cetus::TensorInfo& t = bs.tensor(name);
        const int64_t rows = t.shape[0], cols = t.shape[1];
        const cetus::Matrix mq = qs.matrix(name, rows, cols, true), mb = bs.matrix(name, rows, cols, true);
        QCOMPARE(mb.dtype, cetus::Dtype::BF16);  // the option is off in bs
        QCOMPARE(mq.dtype, cetus::Dtype::F8_E4M3);
        std::vector<float> rq(static_cast<size_t>(cols)), rb(static_cast<size_t>(cols));
        for (int64_t r = 0; r < rows; ++r) {
            mq.row_to_f32(r, rq.data());
            mb.row_to_f32(r, rb.data());
            for (int64_t c = 0; c < cols; ++c) {
                const float s = mq.scale_inv[(r / 128) * mq.scale_cols + c / 128];
                const float bound = std::max(std::fabs(rb[size_t(c)]) * 0.0625f, s * 0.0009765625f) * 1.0001f;
                QVERIFY2(std::fabs(rq[size_t(c)] - rb[size_t(c)]) <= bound, qPrintable(QString("(%1, %2)").arg(r).arg(c)));
            }
        }
    }

    // Quantising reports progress and can be cancelled between matrices.
    void progressAndCancel() {
        cetus::EngineOptions o;
        o.model_dir = k_bf16;
        o.device = cetus::Device::Cpu;
        o.max_context = 64;
        o.fp8_on_load = true;
        std::atomic<bool> cancel{false};
        std::vector<float> seen;
        cetus::LoadProgress p;
        p.cancel = &cancel;
        p.report = [&](float f, const std::string& stage) {
            if (stage != "quantising weights to FP8") return;
            seen.push_back(f);
            if (seen.size() == 3) cancel = true;
        };
        try {
            cetus::Engine::load(o, p);
            QFAIL("loading went on after the cancel");
        } catch (const cetus::Error& e) {
            QCOMPARE(e.code(), cetus::ErrorCode::Cancelled);
        }
        QCOMPARE(seen.size(), size_t(3));
        QVERIFY(seen[0] > 0.4f && seen[0] < seen[1] && seen[1] < seen[2] && seen[2] <= 0.85f);
    }

    // After a GPU upload the engine frees the host's quantised bytes: the CPU path then
    // refuses clearly; names, types and sizes stay.
    void releasedHostWeights() {
        auto m = model(k_bf16, true);
        const uint64_t bytes = m->weight_bytes();
        const size_t n_tensors = m->store().tensors().size();
        cetus::KvCache cache = m->make_cache(16);
        cetus::ForwardOptions fo;
        cetus::ForwardOutput out;
        m->forward(k_ids.data(), 4, 0, cache, fo, out);  // works before
        m->release_host_weights();
        QVERIFY(m->host_weights_released());
        QCOMPARE(m->weight_bytes(), bytes);
        QCOMPARE(m->store().tensors().size(), n_tensors);
        QCOMPARE(m->store().total_bytes(), bytes);
        const auto& t = m->store().tensor("model.layers.0.self_attn.o_proj.weight");
        QCOMPARE(t.dtype, cetus::Dtype::F8_E4M3);
        QVERIFY(t.data == nullptr);
        QVERIFY(m->store().tensor("model.embed_tokens.weight").data != nullptr);  // mapped, not owned
        try {
            m->forward(k_ids.data(), 4, 0, cache, fo, out);
            QFAIL("forward ran on freed weights");
        } catch (const cetus::Error& e) {
            QCOMPARE(e.code(), cetus::ErrorCode::Device);
            QVERIFY(QString(e.what()).contains("freed"));
        }
    }

    // An FP8 checkpoint is used as it is: the same tensors and logits with the option on.
    void fp8CheckpointUnchanged() {
        const fs::path dir = k_data / "golden/v3-fp8";
        auto on = load(dir, true), off = load(dir, false);
        QCOMPARE(on->logits(k_ids), off->logits(k_ids));
        QVERIFY(!QString::fromStdString(on->info().weight_dtype).contains("quantised on load"));
    }
};

QTEST_GUILESS_MAIN(TestFp8OnLoad)
#include "test_fp8_on_load.moc"
