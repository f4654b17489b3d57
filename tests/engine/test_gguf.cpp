// GGUF files (llama.cpp's format) against references made without Cetus code:
// tests/data/gguf/make_gguf.py writes them with llama.cpp's `gguf` package (the
// block formats dequantised by gguf.quants), from the golden fixtures whose logits
// come from transformers; bad files are built here byte by byte.
#include "cetus/engine.h"
#include "cetus/error.h"
#include "cetus/tokenizer.h"
#include "config.h"
#include "cpu/ggml_int8.h"
#include "cpu/ops.h"
#include "ggml_blocks.h"
#include "gguf.h"
#include "host_memory.h"
#include "safetensors.h"
#include "weights.h"

#include <QtTest>

#include <nlohmann/json.hpp>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <stdexcept>

namespace {

const std::string k_data = CETUS_TEST_DATA;
const std::string k_gguf = k_data + "/gguf";

std::unique_ptr<cetus::Engine> load(const std::filesystem::path& p, bool fp8 = false, bool int8 = false) {
    cetus::EngineOptions o;
    o.model_dir = p;
    o.device = cetus::Device::Cpu;
    o.max_context = 128;
    o.prefix_store_bytes = 0;
    o.fp8_on_load = fp8;
    o.int8_activations = int8;
    return cetus::Engine::load(o);
}

std::vector<int32_t> ids_of(const cetus::TensorInfo& t) {
    std::vector<int32_t> v(size_t(t.n_elements()));
    std::memcpy(v.data(), t.data, v.size() * 4);
    return v;
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
    float m = 0.0f;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
    return m;
}

std::string read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// v2-greedy-q.gguf with its output norm turned into n values of a ggml type (F32 or
// Q4_0) past the other tensors' data, written to `folder` as long-norm.gguf and
// extended to its whole size as a sparse file; empty where the file system has none
// of that size (the fixture not as expected throws). What the model's shapes then
// refuse, after the store has seen it.
std::filesystem::path long_norm_file(const std::filesystem::path& folder, uint32_t type, uint64_t n) {
    std::string bytes = read_bytes(k_gguf + "/v2-greedy-q.gguf");
    const cetus::GgufFile f(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size(), "q");
    const cetus::GgufTensor* norm = nullptr;
    uint64_t data_start = 0, data_end = 0;
    for (const auto& t : f.contents().tensors) {
        const uint64_t at = uint64_t(t.data - reinterpret_cast<const std::byte*>(bytes.data()));
        data_start = at - t.offset;
        data_end = std::max(data_end, t.offset + t.n_bytes);
        if (t.name == "output_norm.weight") norm = &t;
    }
    if (!norm || norm->type != 0 || norm->ne.size() != 1)  // F32 [hidden]
        throw std::runtime_error("v2-greedy-q.gguf: no F32 output norm");
    const uint64_t offset = (data_end + 31) / 32 * 32;
    std::string name_field(8, '\0');
    name_field[0] = char(norm->name.size());
    name_field += norm->name;
    const size_t at = bytes.find(name_field);
    if (at == std::string::npos) throw std::runtime_error("v2-greedy-q.gguf: the output norm's name not found");
    const size_t dims = at + name_field.size() + 4;  // after n_dims
    std::memcpy(&bytes[dims], &n, 8);               // ne[0]
    std::memcpy(&bytes[dims + 8], &type, 4);        // the type
    std::memcpy(&bytes[dims + 12], &offset, 8);     // the offset
    const std::filesystem::path path = folder / "long-norm.gguf";
    std::ofstream(path, std::ios::binary) << bytes;
    std::error_code ec;
    const uint64_t data_bytes = type == 0 ? n * 4 : n / 32 * 18;
    std::filesystem::resize_file(path, data_start + offset + data_bytes, ec);
    if (ec) {
        qWarning("no sparse file of that size here: %s", ec.message().c_str());
        return {};
    }
    return path;
}

// A GGUF image written field by field, for the bad-file cases.
struct Writer {
    std::string b;
    void u32(uint32_t v) { b.append(reinterpret_cast<const char*>(&v), 4); }
    void u64(uint64_t v) { b.append(reinterpret_cast<const char*>(&v), 8); }
    void str(const std::string& s) {
        u64(s.size());
        b += s;
    }
    void kv_string(const std::string& k, const std::string& v) {
        str(k);
        u32(8);
        str(v);
    }
    // "GGUF", version 3 and the two counts.
    static Writer header(uint64_t n_tensors, uint64_t n_kv) {
        Writer w;
        w.b = "GGUF";
        w.u32(3);
        w.u64(n_tensors);
        w.u64(n_kv);
        return w;
    }
    void pad(size_t a = 32) {
        while (b.size() % a) b.push_back('\0');
    }
};

struct Minimal {
    uint32_t version = 3, type = 0, n_dims = 1;
    uint64_t dim = 32, offset = 0, n_kv = 1, n_tensors = 1;
    size_t data_bytes = 128;
};

std::string minimal(const Minimal& m) {
    Writer w;
    w.b = "GGUF";
    w.u32(m.version);
    w.u64(m.n_tensors);
    w.u64(m.n_kv);
    w.kv_string("general.architecture", "deepseek2");
    w.str("t");
    w.u32(m.n_dims);
    for (uint32_t d = 0; d < m.n_dims; ++d) w.u64(m.dim);
    w.u32(m.type);
    w.u64(m.offset);
    w.pad();
    w.b.append(m.data_bytes, '\0');
    return w.b;
}

// The message of the Error that parsing `bytes` throws; fails the test if none is thrown.
QString parse_error(const std::string& bytes, cetus::ErrorCode* code = nullptr) {
    try {
        cetus::GgufFile f(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size(), "bad.gguf");
    } catch (const cetus::Error& e) {
        if (code) *code = e.code();
        return QString::fromStdString(e.what());
    }
    return {};
}

}  // namespace

class TestGguf : public QObject {
    Q_OBJECT
private slots:
    // Every readable block format gives gguf.quants.dequantize's floats.
    void dequantiseMatchesGgufPackage() {
        const cetus::GgufFile f(k_gguf + "/dequant.gguf");
        const cetus::SafetensorsFile expected(k_gguf + "/dequant.safetensors");
        QCOMPARE(f.contents().tensors.size(), expected.tensors().size());
        QCOMPARE(f.contents().tensors.size(), size_t(14));
        for (const auto& t : f.contents().tensors) {
            const cetus::TensorInfo* e = nullptr;
            for (const auto& x : expected.tensors())
                if (x.name == t.name) e = &x;
            QVERIFY2(e != nullptr, t.name.c_str());
            std::vector<float> got(size_t(t.n_elements)), want(size_t(t.n_elements));
            QCOMPARE(e->n_elements(), t.n_elements);
            std::memcpy(want.data(), e->data, want.size() * 4);
            cetus::ggml_dequantize(t.type, t.data, got.data(), t.n_elements);
            float scale = 0.0f;
            for (float v : want) scale = std::max(scale, std::fabs(v));
            const float err = max_abs_diff(got, want);
            QVERIFY2(scale > 0.0f, t.name.c_str());
            // One float rounding of the block's products at most.
            QVERIFY2(err <= scale * 2e-7f, qPrintable(QString("%1: error %2 of %3").arg(t.name.c_str()).arg(err).arg(scale)));
        }
    }

    // Block-quantised matrices are used in place (Dtype::Ggml, the file's bytes): their
    // rows decode to ggml_dequantize's values and their products equal, bit for bit, the
    // products over those values as an F32 matrix, for decode-sized batches and larger.
    // ggml_blocks.h's own table of block shapes (the CUDA backend sizes its upload by it)
    // against gguf.cpp's: every type with a decoder there, none readable without one.
    void blockShapesAgreeWithTheTypeTable() {
        int with_decoder = 0;
        for (uint32_t id = 0; id < 64; ++id) {
            int values = 0, bytes = 0;
            const bool shaped = cetus::ggml_blocks::block_shape(id, values, bytes);
            const bool decodes = cetus::ggml_blocks::with_block_decoder(id, [](auto) {});
            QCOMPARE(shaped, decodes);
            const cetus::GgmlTypeInfo* info = cetus::ggml_type_info(id);
            if (!shaped) {
                // Readable without a block decoder: only the plain float types.
                if (info) QVERIFY2(info->block == 1, info->name);
                continue;
            }
            ++with_decoder;
            QVERIFY2(info, qPrintable(QString("type %1").arg(id)));
            QCOMPARE(int64_t(values), info->block);
            QCOMPARE(int64_t(bytes), info->bytes);
        }
        QCOMPARE(with_decoder, 12);
    }

    void blockMatricesMultiplyInPlace() {
        cetus::WeightStore store(k_gguf + "/dequant.gguf");
        const cetus::GgufFile f(k_gguf + "/dequant.gguf");
        std::mt19937 rng(7);
        std::normal_distribution<float> nd;
        int checked = 0;
        for (const auto& t : f.contents().tensors) {
            if (t.type == 1 || t.type == 30) continue;  // F16, BF16: plain types
            const int64_t rows = t.ne[1], cols = t.ne[0];
            const cetus::Matrix m = store.matrix(t.name, rows, cols, true);
            QVERIFY2(m.dtype == cetus::Dtype::Ggml && m.ggml_type == t.type, t.name.c_str());
            QVERIFY2(m.data == store.tensor(t.name).data, t.name.c_str());  // in place, not a copy
            QCOMPARE(m.n_bytes(), t.n_bytes);
            std::vector<float> dense(size_t(rows * cols));
            cetus::ggml_dequantize(t.type, t.data, dense.data(), rows * cols);
            std::vector<float> row(static_cast<size_t>(cols));
            for (int64_t r = 0; r < rows; ++r) {
                m.row_to_f32(r, row.data());
                QVERIFY2(std::memcmp(row.data(), dense.data() + r * cols, size_t(cols) * 4) == 0, t.name.c_str());
            }
            const cetus::Matrix f32 = cetus::cpu::F32View{dense.data(), rows, cols}.matrix();
            for (int64_t T : {1, 3, 9}) {
                std::vector<float> x(size_t(T * cols)), a(size_t(T * rows)), b(size_t(T * rows));
                for (float& v : x) v = nd(rng);
                cetus::cpu::matmul(x.data(), T, m, a.data());
                cetus::cpu::matmul(x.data(), T, f32, b.data());
                QVERIFY2(a == b, qPrintable(QString("%1, %2 tokens").arg(t.name.c_str()).arg(T)));
            }
            ++checked;
        }
        QCOMPARE(checked, 12);
    }

    // The converter's layout (k_b / v_b halves, stacked experts, F32) gives transformers'
    // logits, bit for bit the logits of the checkpoint folder it came from.
    void convertedModelMatchesItsCheckpoint() {
        auto g = load(k_gguf + "/v2-greedy.gguf");
        auto hf = load(k_data + "/golden/v2-greedy");
        QCOMPARE(g->info().n_mtp_layers, int64_t(0));  // the converter drops the MTP layer
        const cetus::SafetensorsFile golden(k_data + "/golden/v2-greedy/golden.safetensors");
        int prompts = 0;
        for (const auto& t : golden.tensors()) {
            if (!t.name.ends_with(".ids")) continue;
            const std::string p = t.name.substr(0, t.name.size() - 4);
            const std::vector<int32_t> ids = ids_of(t);
            const std::vector<float> a = g->logits(ids), b = hf->logits(ids);
            QCOMPARE(a, b);
            for (const auto& l : golden.tensors())
                if (l.name == p + ".logits") {
                    std::vector<float> want(size_t(l.n_elements()));
                    std::memcpy(want.data(), l.data, want.size() * 4);
                    QCOMPARE(want.size(), a.size());
                    QVERIFY2(max_abs_diff(a, want) < 1e-4f, qPrintable(QString::number(max_abs_diff(a, want))));
                }
            ++prompts;
        }
        QVERIFY(prompts >= 3);
        // attn_kv_b kept beside its halves (ik_llama.cpp's files): the same model.
        auto both = load(k_gguf + "/v2-greedy-both.gguf");
        const std::vector<int32_t> ids = {0, 17, 230, 5, 99, 101, 64, 2, 380, 7};
        QCOMPARE(both->logits(ids), g->logits(ids));
    }

    // Older files' single attn_kv_b, sigmoid routing with groups and the correction bias,
    // and an MTP layer kept as blk.N.nextn.*: the same model as the folder, MTP included.
    void olderLayoutWithMtp() {
        // GGUF keeps one YaRN mscale: the twin folder says mscale = mscale_all_dim.
        const QTemporaryDir dir;
        const std::filesystem::path twin = dir.path().toStdString();
        std::filesystem::copy_file(k_data + "/golden/v3-noaux/model.safetensors", twin / "model.safetensors");
        auto config = nlohmann::json::parse(read_bytes(k_data + "/golden/v3-noaux/config.json"));
        config["rope_scaling"]["mscale"] = config["rope_scaling"]["mscale_all_dim"];
        std::ofstream(twin / "config.json") << config.dump();
        auto g = load(k_gguf + "/v3-noaux.gguf");
        auto hf = load(twin);
        QCOMPARE(g->info().n_mtp_layers, int64_t(1));
        const std::vector<int32_t> ids = {0, 5, 77, 300, 12, 9, 250, 41, 3, 3, 17};
        QCOMPARE(g->logits(ids), hf->logits(ids));
        cetus::GenerateRequest r;
        r.prompt_ids = ids;
        r.max_new_tokens = 24;
        r.sampling.temperature = 0.0f;
        r.mtp = true;
        const auto a = g->generate(r), b = hf->generate(r);
        QCOMPARE(a.ids, b.ids);
        QVERIFY(a.mtp_used);
        QVERIFY(a.stats.drafts_proposed > 0);
        QCOMPARE(a.stats.drafts_accepted, b.stats.drafts_accepted);
    }

    // Block-quantised matrices are read in place with the values gguf.quants gives: the
    // model equals its twin folder (those values stored there as F32) bit for bit, and
    // differs from the unquantised one.
    void quantisedModelMatchesItsTwin() {
        {
            // Tensor by tensor: same names and shapes; the same bytes, or for blocks the
            // same values row by row.
            cetus::WeightStore gs(k_gguf + "/v2-greedy-q.gguf"), ts(k_gguf + "/v2-greedy-q-twin");
            QCOMPARE(gs.tensors().size(), ts.tensors().size());
            int blocks = 0;
            for (const auto& [name, t] : ts.tensors()) {
                QVERIFY2(gs.has(name), name.c_str());
                const cetus::TensorInfo& g = gs.tensor(name);
                QVERIFY2(g.shape == t.shape, name.c_str());
                if (t.shape.size() == 1) {
                    QVERIFY2(gs.vector(name, t.shape[0]) == ts.vector(name, t.shape[0]), name.c_str());
                    continue;
                }
                const int64_t cols = t.shape.back(), rows = t.n_elements() / cols;
                const cetus::Matrix a = gs.matrix(name, rows, cols), b = ts.matrix(name, rows, cols);
                if (a.dtype == cetus::Dtype::Ggml) {
                    ++blocks;
                    QCOMPARE(b.dtype, cetus::Dtype::F32);
                    std::vector<float> ra(static_cast<size_t>(cols)), rb(static_cast<size_t>(cols));
                    for (int64_t r = 0; r < rows; ++r) {
                        a.row_to_f32(r, ra.data());
                        b.row_to_f32(r, rb.data());
                        QVERIFY2(ra == rb, qPrintable(QString("%1 row %2").arg(name.c_str()).arg(r)));
                    }
                    continue;
                }
                QVERIFY2(a.dtype == b.dtype, qPrintable(QString("%1: %2 against %3").arg(name.c_str(),
                         cetus::dtype_name(a.dtype), cetus::dtype_name(b.dtype))));
                QVERIFY2(std::memcmp(a.data, b.data, size_t(a.n_bytes())) == 0, name.c_str());
            }
            QVERIFY(blocks > 10);
        }
        auto q = load(k_gguf + "/v2-greedy-q.gguf");
        auto twin = load(k_gguf + "/v2-greedy-q-twin");
        auto plain = load(k_gguf + "/v2-greedy.gguf");
        const std::vector<int32_t> ids = {0, 17, 230, 5, 99, 101, 64, 2, 380, 7};
        const auto a = q->logits(ids), b = twin->logits(ids), c = plain->logits(ids);
        QCOMPARE(QString::fromStdString(q->info().weight_dtype), QString("GGUF Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 + F32"));
        QCOMPARE(QString::fromStdString(plain->info().weight_dtype), QString("F32"));
        float scale = 0.0f;
        for (float v : b) scale = std::max(scale, std::fabs(v));
        QCOMPARE(a, b);
        QVERIFY(max_abs_diff(a, c) > 1e-3f * scale);
        // FP8 on load quantises the linear layers from the blocks' values as it does the
        // twin's F32 values: the same model. The embedding and the output head stay blocks.
        auto fp8 = load(k_gguf + "/v2-greedy-q.gguf", true);
        auto fp8_twin = load(k_gguf + "/v2-greedy-q-twin", true);
        QCOMPARE(QString::fromStdString(fp8->info().weight_dtype),
                 QString("GGUF Q4_0/Q8_0 + FP8 e4m3 (128x128 blocks) + F32, FP8 quantised on load"));
        const auto d = fp8->logits(ids);
        QCOMPARE(d, fp8_twin->logits(ids));
        QVERIFY(d != a);
        // With expand_gguf too, FP8 comes from the blocks' values, not their BF16 expansion.
        for (const char* name : {"model.layers.0.self_attn.o_proj.weight", "model.layers.1.mlp.experts.3.up_proj.weight"}) {
            cetus::WeightStore in_blocks(k_gguf + "/v2-greedy-q.gguf"), expanded(k_gguf + "/v2-greedy-q.gguf", true);
            in_blocks.set_fp8_on_load(true);
            expanded.set_fp8_on_load(true);
            const auto shape = in_blocks.tensor(name).shape;
            QCOMPARE(expanded.tensor(name).dtype, cetus::Dtype::BF16);  // before it is asked for
            const cetus::Matrix x = in_blocks.matrix(name, shape[0], shape[1], true);
            const cetus::Matrix y = expanded.matrix(name, shape[0], shape[1], true);
            QCOMPARE(x.dtype, cetus::Dtype::F8_E4M3);
            QCOMPARE(y.dtype, cetus::Dtype::F8_E4M3);
            QVERIFY2(std::memcmp(x.data, y.data, size_t(x.rows * x.cols)) == 0, name);
            QVERIFY2(std::memcmp(x.scale_inv, y.scale_inv, size_t((x.rows + 127) / 128 * x.scale_cols) * 4) == 0, name);
        }
    }

    // Int8 activations (EngineOptions::int8_activations) on the quantised model: the
    // CPU backend says so, and the logits move from the exact products' by less than a
    // quarter of what the blocks' own quantisation moves them from the F32 model's
    // (8-bit activations against 4- and 5-bit weights; 0.16 against 1.57 when written),
    // yet they do move. A model without blocks is
    // unaffected, bit for bit.
    void int8ActivationsStayNearExact() {
        if (!cetus::cpu::int8_product_available(cetus::ggml_blocks::k_type_q4_0))
            QSKIP("no integer products on this machine (they need AVX2 and FMA)");
        const std::vector<int32_t> ids = {0, 17, 230, 5, 99, 101, 64, 2, 380, 7};
        auto exact = load(k_gguf + "/v2-greedy-q.gguf");
        auto int8 = load(k_gguf + "/v2-greedy-q.gguf", false, true);
        auto plain = load(k_gguf + "/v2-greedy.gguf");
        QVERIFY(int8->info().device.find("int8 activations") != std::string::npos);
        QVERIFY(exact->info().device.find("int8") == std::string::npos);
        const auto a = exact->logits(ids), b = int8->logits(ids), c = plain->logits(ids);
        const float moved = max_abs_diff(a, b), weights = max_abs_diff(a, c);
        QVERIFY2(moved > 0.0f && moved < 0.25f * weights,
                 qPrintable(QString("int8 activations moved the logits by %1, the blocks by %2").arg(moved).arg(weights)));
        QCOMPARE(load(k_gguf + "/v2-greedy.gguf", false, true)->logits(ids), c);
        // A token alone gives the bits of its row in the batch.
        const auto first = int8->logits(std::span<const int32_t>(ids.data(), 1));
        QVERIFY(std::equal(first.begin(), first.end(), b.begin()));
    }

    // The same on a model large enough for a decode-sized MoE layer to hand whole
    // experts to the threads (medium-cpu's shapes in a Q4_K_M mix, two threads): every
    // thread takes the integer products, so a token alone still gives its row's bits.
    void int8ActivationsOnEveryThread() {
        if (!cetus::cpu::int8_product_available(cetus::ggml_blocks::k_type_q4_k))
            QSKIP("no integer products on this machine (they need AVX2 and FMA)");
        cetus::EngineOptions o;
        o.device = cetus::Device::Cpu;
        o.n_threads = 2;
        o.max_context = 64;
        o.prefix_store_bytes = 0;
        o.int8_activations = true;
        cetus::RandomModelOptions r;
        r.preset = "medium-cpu";
        r.dtype = "q4_k_m";
        r.n_layers = 2;
        auto e = cetus::Engine::create_random(r, o);
        QVERIFY(e->info().device.find("int8 activations") != std::string::npos);
        const std::vector<int32_t> ids = {5, 900, 31000, 17};
        const auto all = e->logits(ids), first = e->logits(std::span<const int32_t>(ids.data(), 1));
        QVERIFY(std::equal(first.begin(), first.end(), all.begin()));
    }

    // A model in parts (gguf-split's names and split.* keys): opened by its first part,
    // any other part or its folder; the same model as the whole file. A missing part
    // or a renamed one is refused by name.
    void splitModel() {
        const std::string dir = k_gguf + "/split", first = dir + "/v2-greedy-q-00001-of-00003.gguf";
        auto whole = load(k_gguf + "/v2-greedy-q.gguf");
        const std::vector<int32_t> ids = {0, 17, 230, 5, 99, 101, 64, 2, 380, 7};
        const auto want = whole->logits(ids);
        for (const std::string& p : {first, dir + "/v2-greedy-q-00003-of-00003.gguf", dir}) {
            auto e = load(p);
            QCOMPARE(e->logits(ids), want);
            QCOMPARE(QString::fromStdString(e->info().name), QString("v2-greedy-q"));
        }
        auto error_of = [](const std::filesystem::path& p) {
            try {
                load(p);
            } catch (const cetus::Error& e) {
                return QString(e.what());
            }
            return QString();
        };
        const QTemporaryDir tmp;
        const std::filesystem::path t = tmp.path().toStdString();
        std::filesystem::copy_file(first, t / "v2-greedy-q-00001-of-00003.gguf");
        std::filesystem::copy_file(dir + "/v2-greedy-q-00002-of-00003.gguf", t / "v2-greedy-q-00002-of-00003.gguf");
        QString m = error_of(t / "v2-greedy-q-00001-of-00003.gguf");
        QVERIFY2(m.contains("v2-greedy-q-00003-of-00003.gguf") && m.contains("part 3 of 3") && m.contains("missing"),
                 qPrintable(m));
        std::filesystem::copy_file(first, t / "renamed.gguf");
        m = error_of(t / "renamed.gguf");
        QVERIFY2(m.contains("renamed.gguf") && m.contains("one of 3 parts"), qPrintable(m));
        // Part 2 under part 3's name: its split.no says otherwise.
        std::filesystem::copy_file(dir + "/v2-greedy-q-00002-of-00003.gguf", t / "v2-greedy-q-00003-of-00003.gguf");
        m = error_of(t / "v2-greedy-q-00001-of-00003.gguf");
        QVERIFY2(m.contains("v2-greedy-q-00003-of-00003.gguf") && m.contains("part 3 of 3"), qPrintable(m));
    }

    // The vocabulary in the file's metadata tokenizes as tokenizer.json does.
    void tokenizerFromMetadata() {
        const auto g = cetus::Tokenizer::load(k_gguf + "/v3-tokenizer.gguf");
        const auto j = cetus::Tokenizer::load(k_data + "/tokenizer/deepseek-v3");
        QCOMPARE(g.bos_id(), j.bos_id());
        QCOMPARE(g.eos_id(), j.eos_id());
        QCOMPARE(g.add_bos_token(), j.add_bos_token());
        QCOMPARE(int(g.chat_template().family), int(j.chat_template().family));
        const auto cases = nlohmann::json::parse(read_bytes(k_data + "/tokenizer/golden_v3.json"))["cases"];
        QVERIFY(cases.size() > 400);
        for (const auto& c : cases) {
            const QByteArray text = QByteArray::fromBase64(QByteArray::fromStdString(c["bytes"].get<std::string>()));
            const std::string_view s(text.constData(), size_t(text.size()));
            const auto ids = g.encode(s, true);
            QCOMPARE(ids, c["ids"].get<std::vector<int32_t>>());
            QCOMPARE(g.encode(s, false), c["ids_plain"].get<std::vector<int32_t>>());
            QCOMPARE(g.decode(ids), j.decode(ids));
        }
        const std::vector<cetus::ChatMessage> chat = {
            {"system", "Be brief."}, {"user", "Hi <｜User｜> there"}, {"assistant", "Hello!"}, {"user", "2+2?"}};
        QCOMPARE(g.encode_chat(chat, true), j.encode_chat(chat, true));

        // A token that is not UTF-8 (found by fuzz_gguf): a clear error, not an escape.
        std::string bytes = read_bytes(k_gguf + "/v3-tokenizer.gguf");
        const std::string token = std::string("\x06\0\0\0\0\0\0\0", 8) + "Ġthe";  // "Ġthe", 6 bytes
        const size_t at = bytes.find(token);
        QVERIFY(at != std::string::npos);
        bytes[at + 8 + 2] = '\xff';
        const QTemporaryDir dir;
        const std::string path = dir.path().toStdString() + "/bad-token.gguf";
        std::ofstream(path, std::ios::binary) << bytes;
        try {
            cetus::Tokenizer::load(path);
            QFAIL("a vocabulary with a byte 0xFF loaded");
        } catch (const cetus::Error& e) {
            QVERIFY2(QString(e.what()).contains("bad-token.gguf") && QString(e.what()).contains("UTF-8"), e.what());
        }
    }

    void badFilesGetClearErrors() {
        QVERIFY(parse_error(minimal({})).isEmpty());  // the base case is valid
        cetus::ErrorCode code{};
        QVERIFY(parse_error("GGUX" + minimal({}).substr(4)).contains("not a GGUF file"));
        QVERIFY(parse_error(minimal({.version = 1}), &code).contains("version 1"));
        QCOMPARE(code, cetus::ErrorCode::Unsupported);
        QVERIFY(parse_error(minimal({.version = 0x03000000}), &code).contains("big-endian"));
        QVERIFY(parse_error(minimal({.version = 7})).contains("unknown GGUF version 7"));
        QVERIFY(parse_error(minimal({.n_kv = uint64_t(1) << 40})).contains("metadata entries"));
        QVERIFY(parse_error(minimal({.n_tensors = uint64_t(1) << 60})).contains("tensors, more than"));
        QVERIFY(parse_error(minimal({.n_dims = 5})).contains("5 dimensions"));
        QVERIFY(parse_error(minimal({.dim = 0})).contains("dimension 0 = 0"));
        QVERIFY(parse_error(minimal({.offset = 8})).contains("not aligned"));
        QVERIFY(parse_error(minimal({.offset = 1 << 20})).contains("ends past"));
        QVERIFY(parse_error(minimal({.data_bytes = 100})).contains("ends past"));
        QVERIFY(parse_error(minimal({.type = 16}), &code).contains("IQ2_XXS"));
        QCOMPARE(code, cetus::ErrorCode::Unsupported);
        QVERIFY(parse_error(minimal({.type = 200})).contains("type 200"));
        QVERIFY(parse_error(minimal({.type = 8, .dim = 48})).contains("whole Q8_0 blocks"));
        QVERIFY(parse_error(minimal({.n_dims = 4, .dim = uint64_t(1) << 20})).contains("too many elements"));
        // Lengths that claim more than the file holds.
        {
            Writer w = Writer::header(0, 1);
            w.u64(uint64_t(1) << 62);  // a key's length
            w.b.append(64, 'k');
            QVERIFY(parse_error(w.b).contains("more than a GGUF string may hold"));
        }
        {
            Writer w = Writer::header(0, 1);
            w.str("tokenizer.ggml.tokens");
            w.u32(9);  // array
            w.u32(8);  // of strings
            w.u64(uint64_t(1) << 59);
            w.b.append(64, 'k');
            QVERIFY(parse_error(w.b).contains("does not fit"));
        }
        {
            Writer w = Writer::header(0, 2);
            w.kv_string("a", "x");
            w.kv_string("a", "y");
            QVERIFY(parse_error(w.b).contains("appears twice"));
        }
        {
            Writer w = Writer::header(2, 0);  // two tensors over the same bytes
            for (const char* n : {"a", "b"}) {
                w.str(n);
                w.u32(1);
                w.u64(32);
                w.u32(0);
                w.u64(64);
            }
            w.pad();
            w.b.append(256, '\0');
            QVERIFY(parse_error(w.b).contains("overlap"));
        }
        {
            // A byte each in the file, eight in memory: arrays are capped.
            Writer w = Writer::header(0, 1);
            w.str("a");
            w.u32(9);  // array
            w.u32(0);  // of u8
            w.u64(cetus::k_gguf_max_array + 1);
            w.b.append(cetus::k_gguf_max_array + 1, '\1');
            QVERIFY(parse_error(w.b).contains("more than a model's metadata holds"));
        }
        {
            // A token type that is not an integer (NaN as f32): refused, not cast.
            Writer w = Writer::header(0, 4);
            w.kv_string("tokenizer.ggml.model", "gpt2");
            w.kv_string("tokenizer.ggml.pre", "deepseek-v3");
            w.str("tokenizer.ggml.tokens");
            w.u32(9);
            w.u32(8);
            w.u64(1);
            w.str("a");
            w.str("tokenizer.ggml.token_type");
            w.u32(9);
            w.u32(6);  // f32
            w.u64(1);
            w.u32(0x7fc00000u);  // NaN
            w.pad();
            const cetus::GgufFile f(reinterpret_cast<const std::byte*>(w.b.data()), w.b.size(), "nan-type.gguf");
            try {
                cetus::gguf_tokenizer_json(f);
                QFAIL("a NaN token type was accepted");
            } catch (const cetus::Error& e) {
                QVERIFY2(QString(e.what()).contains("nan-type.gguf: token 0 has no valid type"), e.what());
            }
        }
        // Every cut of a real file is refused, none crashes.
        const std::string whole = read_bytes(k_gguf + "/v2-greedy-q.gguf");
        QVERIFY(parse_error(whole).isEmpty());
        for (size_t cut = 0; cut < whole.size(); cut += cut < 8192 ? 1 : 4099)
            QVERIFY2(!parse_error(whole.substr(0, cut)).isEmpty(), qPrintable(QString::number(cut)));
        // Random bytes flipped in the header: an error or a valid file, never a crash.
        std::mt19937 rng(7);
        for (int i = 0; i < 3000; ++i) {
            std::string bad = whole.substr(0, 8192);
            for (int k = 0; k < 4; ++k) bad[rng() % bad.size()] = char(rng());
            parse_error(bad);
        }
    }

    // A file whose expanded tensors would not fit the host's memory is refused before
    // anything is expanded, with the sizes. Matrices stay in their blocks, so the file is
    // v2-greedy-q.gguf with its final norm made a Q4_0 vector (expanded to F32) longer
    // than 2.5 x the memory, placed past the data: sparse, so it costs no disk.
    void expansionPastMemoryIsRefusedFirst() {
        const uint64_t avail = cetus::host_available_bytes();
        if (avail == 0) QSKIP("MemAvailable is unknown here");
        const QTemporaryDir dir;
        const uint64_t n = (avail * 5 / 8 / 32 + 1) * 32;  // 2.5 x the memory as F32, whole Q4_0 blocks
        const std::filesystem::path path = long_norm_file(dir.path().toStdString(), 2, n);
        if (path.empty()) QSKIP("no sparse file of that size here");
        for (const bool fp8 : {false, true}) {
            try {
                load(path, fp8);
                QFAIL("a model larger than the memory loaded");
            } catch (const cetus::Error& e) {
                const QString m = e.what();
                QCOMPARE(e.code(), cetus::ErrorCode::OutOfMemory);
                QVERIFY2(m.contains("long-norm.gguf") && m.contains("are available") && m.contains("vectors"),
                         qPrintable(m));
            }
        }
    }

    // Weights larger than the memory available still load mapped, but the load says first
    // that every step will then read from the disk: an output norm of F32 values past
    // the memory (a sparse file), which nothing reads before the model's shapes refuse it.
    void weightsPastMemoryWarnFirst() {
        const uint64_t avail = cetus::host_available_bytes();
        if (avail == 0) QSKIP("MemAvailable is unknown here");
        const QTemporaryDir dir;
        const uint64_t n = (avail / 4 / 32 + 1) * 32 * 5 / 4;  // 1.25 x the memory
        const std::filesystem::path path = long_norm_file(dir.path().toStdString(), 0, n);
        if (path.empty()) QSKIP("no sparse file of that size here");
        spdlog::drop("engine");
        auto sink = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(50);
        auto logger = std::make_shared<spdlog::logger>("engine", sink);
        logger->set_level(spdlog::level::warn);
        spdlog::register_logger(logger);
        QString thrown;
        try {
            load(path);
        } catch (const cetus::Error& e) {
            thrown = e.what();
        }
        spdlog::drop("engine");
        QStringList lines;
        for (const auto& line : sink->last_formatted()) lines << QString::fromStdString(line);
        const QString log = lines.join('\n');
        // (The shape check names the file, the tensor and both shapes.)
        QVERIFY2(thrown.contains("long-norm.gguf") && thrown.contains("model.norm.weight") &&
                     thrown.contains(QString("[%1]").arg(n)),
                 qPrintable(thrown));
        QVERIFY2(log.contains("long-norm.gguf") && log.contains("exceed the memory available") &&
                     log.contains("from the disk"),
                 qPrintable(log));
        // The same file within the memory: no such warning (v2-greedy-q.gguf as it is).
        spdlog::register_logger(logger);
        sink = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(50);
        logger->sinks() = {sink};
        load(k_gguf + "/v2-greedy-q.gguf");
        spdlog::drop("engine");
        for (const auto& line : sink->last_formatted())
            QVERIFY2(!QString::fromStdString(line).contains("exceed the memory"), line.c_str());
    }

    // DeepSeek-V2's pre-tokenizer ("deepseek-llm") from metadata: V3's vocabulary in a file
    // that names it splits and merges the golden cases as HF tokenizers does with that
    // pre-tokenizer (golden_deepseek_llm.json), and differently from V3's on many.
    void deepseekLlmPreTokenizerFromMetadata() {
        std::string bytes = read_bytes(k_gguf + "/v3-tokenizer.gguf");
        const std::string from = std::string("\x0b\0\0\0\0\0\0\0", 8) + "deepseek-v3";
        const size_t at = bytes.find(from);
        QVERIFY(at != std::string::npos);
        bytes.replace(at, from.size(), std::string("\x0c\0\0\0\0\0\0\0", 8) + "deepseek-llm");  // no tensors follow
        const QTemporaryDir dir;
        const std::string path = dir.path().toStdString() + "/v2-pre.gguf";
        std::ofstream(path, std::ios::binary) << bytes;
        const auto v2 = cetus::Tokenizer::load(path);
        const auto v3 = cetus::Tokenizer::load(k_gguf + "/v3-tokenizer.gguf");
        const auto golden = nlohmann::json::parse(read_bytes(k_gguf + "/golden_deepseek_llm.json"));
        const auto v3_cases = nlohmann::json::parse(read_bytes(k_data + "/tokenizer/golden_v3.json"))["cases"];
        std::map<std::string, std::string> text_of;
        for (const auto& c : v3_cases)
            text_of[c["name"].get<std::string>()] =
                QByteArray::fromBase64(QByteArray::fromStdString(c["bytes"].get<std::string>())).toStdString();
        int checked = 0, differ = 0;
        for (const auto& c : golden["cases"]) {
            const std::string& text = text_of.at(c["name"].get<std::string>());
            const auto ids = v2.encode(text, true);  // added tokens in the text parsed, as tokenizers does
            QVERIFY2(ids == c["ids"].get<std::vector<int32_t>>(), c["name"].get<std::string>().c_str());
            differ += ids != v3.encode(text, true);
            ++checked;
        }
        QVERIFY(checked > 400);
        QVERIFY2(differ > 50, qPrintable(QString::number(differ)));
    }

    void modelLevelErrorsNameTheFile() {
        const QTemporaryDir dir;
        const std::string path = dir.path().toStdString() + "/llama.gguf";
        {
            Writer w = Writer::header(0, 1);
            w.kv_string("general.architecture", "llama");
            std::ofstream(path, std::ios::binary) << w.b;
        }
        try {
            cetus::load_config(path);
            QFAIL("a llama file loaded");
        } catch (const cetus::Error& e) {
            QVERIFY2(QString(e.what()).contains("llama.gguf") && QString(e.what()).contains("\"llama\""), e.what());
        }
        // Fused gate/up experts (a converter option) are named, not reported missing.
        {
            Writer w = Writer::header(1, 1);
            w.kv_string("general.architecture", "deepseek2");
            w.str("blk.1.ffn_gate_up_exps.weight");
            w.u32(1);
            w.u64(32);
            w.u32(0);
            w.u64(0);
            w.pad();
            w.b.append(128, '\0');
            const std::string fused = dir.path().toStdString() + "/fused.gguf";
            std::ofstream(fused, std::ios::binary) << w.b;
            try {
                cetus::WeightStore store(fused);
                QFAIL("fused experts loaded");
            } catch (const cetus::Error& e) {
                QCOMPARE(e.code(), cetus::ErrorCode::Unsupported);
                QVERIFY2(QString(e.what()).contains("fused.gguf") && QString(e.what()).contains("ffn_gate_up_exps"),
                         e.what());
            }
        }
        // A deepseek2 file without its head count.
        std::string bytes = read_bytes(k_gguf + "/v2-greedy.gguf");
        const std::string key = "deepseek2.attention.head_count";
        const size_t at = bytes.find(key + std::string("\x04\0\0\0", 4));
        QVERIFY(at != std::string::npos);
        bytes[at + key.size() - 1] = 'X';  // renamed: deepseek2.attention.head_counX
        const std::string renamed = dir.path().toStdString() + "/renamed.gguf";
        std::ofstream(renamed, std::ios::binary) << bytes;
        try {
            load(renamed);
            QFAIL("a file without its head count loaded");
        } catch (const cetus::Error& e) {
            QVERIFY2(QString(e.what()).contains("renamed.gguf") && QString(e.what()).contains(QString::fromStdString(key)),
                     e.what());
        }
        // A folder whose only model file is a GGUF file loads it.
        const QTemporaryDir folder;
        std::filesystem::copy_file(k_gguf + "/v2-greedy.gguf", folder.path().toStdString() + "/model-f32.gguf");
        auto e = load(folder.path().toStdString());
        QCOMPARE(QString::fromStdString(e->info().name), QString("model-f32"));
    }
};

QTEST_GUILESS_MAIN(TestGguf)
#include "test_gguf.moc"
