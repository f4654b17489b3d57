// Loading whole model folders through Engine::load. The test-side writer in
// model_writer.h (its own safetensors code, independent of the engine) makes a
// tiny DeepSeek-V3 folder: one dense layer, one MoE layer and one MTP layer, F32
// weights. The folder loads and runs; every broken variant (tensors, config,
// shards, files, requests) fails with the right code and a message naming the
// tensor or file.
#include "cetus/engine.h"
#include "cetus/error.h"
#include "model_writer.h"

#include <nlohmann/json.hpp>

#include <QtTest>

#include <cstring>
#include <limits>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <vector>

using cetus::ErrorCode;
using nlohmann::json;
namespace fs = std::filesystem;
using namespace model_writer;

namespace {

// ---- loading and checking -------------------------------------------------

struct Outcome {
    std::unique_ptr<cetus::Engine> engine;
    ErrorCode code = ErrorCode::Io;
    std::string message;
    std::string foreign;
};

Outcome load(const fs::path& dir, int64_t max_context = 4096, bool fp8_on_load = false) {
    Outcome o;
    try {
        cetus::EngineOptions opt;
        opt.model_dir = dir;
        opt.device = cetus::Device::Cpu;
        opt.max_context = max_context;
        opt.fp8_on_load = fp8_on_load;
        o.engine = cetus::Engine::load(opt);
    } catch (const cetus::Error& e) {
        o.code = e.code();
        o.message = e.what();
    } catch (const std::exception& e) {
        o.foreign = e.what();
    }
    return o;
}

std::optional<QString> failure_problem(const Outcome& o, ErrorCode code,
                                       const QStringList& keywords) {
    if (!o.foreign.empty()) return "non-cetus exception: " + QString::fromStdString(o.foreign);
    if (o.engine) return QString("loaded");
    const QString msg = QString::fromStdString(o.message);
    if (o.code != code)
        return QString("code %1, expected %2: %3")
            .arg(cetus::error_code_name(o.code), cetus::error_code_name(code), msg);
    for (const auto& k : keywords)
        if (!msg.contains(k)) return "message lacks \"" + k + "\": " + msg;
    return std::nullopt;
}

#define EXPECT_FAILURE(outcome, code, ...)                                                         \
    do {                                                                                           \
        auto problem_ = failure_problem((outcome), (code), QStringList{__VA_ARGS__});              \
        QVERIFY2(!problem_, qPrintable(problem_.value_or(QString())));                             \
    } while (0)

template <typename F> std::optional<std::string> call_error(F&& f, ErrorCode* code) {
    try {
        f();
    } catch (const cetus::Error& e) {
        *code = e.code();
        return std::string(e.what());
    }
    return std::nullopt;
}

bool all_finite(const std::vector<float>& v) {
    for (float x : v)
        if (!std::isfinite(x)) return false;
    return true;
}

// ---- broken variants of the tiny folder ------------------------------------

struct Variant {
    const char* name;
    std::function<void(json& config, Tensors& ts)> edit;
    ErrorCode code;
    QStringList keywords;
};

const std::vector<Variant>& variants() {
    const std::string L0 = layer(0), L1 = layer(1), L2 = layer(2);
    auto erase = [](std::string name) {
        return [name](json&, Tensors& ts) { QVERIFY(ts.erase(name) == 1); };
    };
    auto set = [](const char* key, json value) {
        return [key, value](json& c, Tensors&) { c[key] = value; };
    };
    // The config edit applies after the tensors were made for the original config.
    static const std::vector<Variant> v = {
        // Missing tensors.
        {"missing_embedding",
         erase("model.embed_tokens.weight"),
         ErrorCode::MissingTensor,
         {"\"model.embed_tokens.weight\""}},
        {"missing_lm_head",
         erase("lm_head.weight"),
         ErrorCode::MissingTensor,
         {"\"lm_head.weight\""}},
        {"missing_kv_b_proj",
         erase(L1 + "self_attn.kv_b_proj.weight"),
         ErrorCode::MissingTensor,
         {"model.layers.1.self_attn.kv_b_proj.weight"}},
        {"missing_expert",
         erase(L1 + "mlp.experts.3.down_proj.weight"),
         ErrorCode::MissingTensor,
         {"model.layers.1.mlp.experts.3.down_proj.weight"}},
        {"missing_shared_expert",
         erase(L1 + "mlp.shared_experts.up_proj.weight"),
         ErrorCode::MissingTensor,
         {"model.layers.1.mlp.shared_experts.up_proj.weight"}},
        {"missing_correction_bias",
         erase(L1 + "mlp.gate.e_score_correction_bias"),
         ErrorCode::MissingTensor,
         {"model.layers.1.mlp.gate.e_score_correction_bias"}},
        {"missing_mtp_eh_proj",
         erase(L2 + "eh_proj.weight"),
         ErrorCode::MissingTensor,
         {"model.layers.2.eh_proj.weight"}},
        {"missing_mtp_block_tensor",
         erase(L2 + "self_attn.o_proj.weight"),
         ErrorCode::MissingTensor,
         {"model.layers.2.self_attn.o_proj.weight"}},

        // Wrong shapes: the message has the expected and the actual shape.
        {"wrong_shape_o_proj",
         [L0](json&, Tensors& ts) {
             reshape(ts[L0 + "self_attn.o_proj.weight"], {16, 9});
         },
         ErrorCode::BadTensor,
         {"model.layers.0.self_attn.o_proj.weight", "expected [16, 8]", "file has [16, 9]"}},
        {"transposed_down_proj",
         [L0](json&, Tensors& ts) {
             reshape(ts[L0 + "mlp.down_proj.weight"], {32, 16});
         },
         ErrorCode::BadTensor,
         {"model.layers.0.mlp.down_proj.weight", "expected [16, 32]", "file has [32, 16]"}},
        {"matrix_with_extra_dim",
         [L0](json&, Tensors& ts) {
             reshape(ts[L0 + "self_attn.q_a_proj.weight"], {8, 16, 1});
         },
         ErrorCode::BadTensor,
         {"model.layers.0.self_attn.q_a_proj.weight", "expected [8, 16]", "file has [8, 16, 1]"}},
        {"wrong_shape_norm",
         [](json&, Tensors& ts) { reshape(ts["model.norm.weight"], {17}); },
         ErrorCode::BadTensor,
         {"model.norm.weight", "expected [16]", "file has [17]"}},
        {"wrong_shape_mtp_eh_proj",
         [L2](json&, Tensors& ts) {
             reshape(ts[L2 + "eh_proj.weight"], {16, 16});
         },
         ErrorCode::BadTensor,
         {"model.layers.2.eh_proj.weight", "expected [16, 32]", "file has [16, 16]"}},
        {"wrong_shape_expert",
         [L1](json&, Tensors& ts) {
             reshape(ts[L1 + "mlp.experts.2.up_proj.weight"], {9, 16});
         },
         ErrorCode::BadTensor,
         {"model.layers.1.mlp.experts.2.up_proj.weight", "expected [8, 16]", "file has [9, 16]"}},

        // Dtypes.
        {"i32_weight",
         [L0](json&, Tensors& ts) { retype(ts[L0 + "mlp.gate_proj.weight"], "I32"); },
         ErrorCode::BadTensor,
         {"model.layers.0.mlp.gate_proj.weight", "I32"}},
        {"i32_norm",
         [L0](json&, Tensors& ts) { retype(ts[L0 + "input_layernorm.weight"], "I32"); },
         ErrorCode::BadTensor,
         {"model.layers.0.input_layernorm.weight", "I32"}},
        {"f64_weight",
         [L1](json&, Tensors& ts) { retype(ts[L1 + "self_attn.o_proj.weight"], "F64"); },
         ErrorCode::BadTensor,
         {"model.layers.1.self_attn.o_proj.weight", "F64"}},
        {"e5m2_weight",
         [L1](json&, Tensors& ts) { retype(ts[L1 + "self_attn.o_proj.weight"], "F8_E5M2"); },
         ErrorCode::BadTensor,
         {"model.layers.1.self_attn.o_proj.weight", "F8_E5M2"}},
        {"fp8_norm",
         [L0](json&, Tensors& ts) {
             retype(ts[L0 + "post_attention_layernorm.weight"], "F8_E4M3");
         },
         ErrorCode::BadTensor,
         {"model.layers.0.post_attention_layernorm.weight", "F8_E4M3"}},

        // FP8 block scales.
        {"fp8_without_scale",
         [L0](json&, Tensors& ts) {
             Rng rng(3);
             to_fp8(ts[L0 + "mlp.up_proj.weight"], rng);
         },
         ErrorCode::MissingTensor,
         {"model.layers.0.mlp.up_proj.weight_scale_inv"}},
        {"fp8_scale_misshaped",
         [L0](json&, Tensors& ts) {
             Rng rng(3);
             Tensor s = to_fp8(ts[L0 + "mlp.up_proj.weight"], rng);
             reshape(s, {2, 1});
             ts[L0 + "mlp.up_proj.weight_scale_inv"] = s;
         },
         ErrorCode::BadTensor,
         {"model.layers.0.mlp.up_proj.weight_scale_inv", "expected [1, 1]", "file has [2, 1]"}},
        {"fp8_scale_one_dim",
         [L0](json&, Tensors& ts) {
             Rng rng(3);
             Tensor s = to_fp8(ts[L0 + "mlp.up_proj.weight"], rng);
             reshape(s, {1});
             ts[L0 + "mlp.up_proj.weight_scale_inv"] = s;
         },
         ErrorCode::BadTensor,
         {"model.layers.0.mlp.up_proj.weight_scale_inv", "file has [1]"}},
        {"fp8_scale_i32",
         [L0](json&, Tensors& ts) {
             Rng rng(3);
             Tensor s = to_fp8(ts[L0 + "mlp.up_proj.weight"], rng);
             retype(s, "I32");
             ts[L0 + "mlp.up_proj.weight_scale_inv"] = s;
         },
         ErrorCode::BadTensor,
         {"model.layers.0.mlp.up_proj.weight_scale_inv", "I32"}},
        {"fp8_fused_experts",
         [L1](json&, Tensors& ts) {
             fuse_experts(ts, 1, 4, 8, 16);
             retype(ts[L1 + "mlp.experts.gate_up_proj"], "F8_E4M3");
         },
         ErrorCode::BadTensor,
         {"model.layers.1.mlp.experts.gate_up_proj", "expected [4, 16, 16] and [4, 16, 8]",
          "file has [4, 16, 16] F8_E4M3 and [4, 16, 8] F32"}},

        // MLA ranks and head dims in the config disagree with the tensors.
        {"kv_lora_rank_inconsistent",
         set("kv_lora_rank", 12),
         ErrorCode::BadTensor,
         {"model.layers.0.self_attn.kv_a_proj_with_mqa.weight", "expected [16, 16]",
          "file has [12, 16]"}},
        {"q_lora_rank_inconsistent",
         set("q_lora_rank", 12),
         ErrorCode::BadTensor,
         {"model.layers.0.self_attn.q_a_proj.weight", "expected [12, 16]", "file has [8, 16]"}},
        {"q_lora_rank_null_with_lora_tensors",
         set("q_lora_rank", nullptr),
         ErrorCode::MissingTensor,
         {"model.layers.0.self_attn.q_proj.weight"}},
        {"qk_nope_head_dim_inconsistent",
         set("qk_nope_head_dim", 6),
         ErrorCode::BadTensor,
         {"model.layers.0.self_attn.q_b_proj.weight", "expected [20, 8]", "file has [16, 8]"}},
        {"v_head_dim_inconsistent",
         set("v_head_dim", 8),
         ErrorCode::BadTensor,
         {"model.layers.0.self_attn.kv_b_proj.weight", "expected [24, 8]", "file has [16, 8]"}},
        {"heads_inconsistent",
         set("num_attention_heads", 4),
         ErrorCode::BadTensor,
         {"model.layers.0.self_attn.q_b_proj.weight", "expected [32, 8]"}},

        // Experts in the config disagree with the tensors.
        {"more_experts_in_config",
         set("n_routed_experts", 8),
         ErrorCode::BadTensor,
         {"model.layers.1.mlp.gate.weight", "expected [8, 16]", "file has [4, 16]"}},
        {"fewer_experts_in_config",
         [](json& c, Tensors&) {
             c["n_routed_experts"] = 2;
             c["n_group"] = 1;
             c["topk_group"] = 1;
         },
         ErrorCode::BadTensor,
         {"model.layers.1.mlp.gate.weight", "expected [2, 16]", "file has [4, 16]"}},
        {"top_k_above_experts",
         set("num_experts_per_tok", 5),
         ErrorCode::BadConfig,
         {"num_experts_per_tok"}},
        {"expert_width_inconsistent",
         set("moe_intermediate_size", 6),
         ErrorCode::BadTensor,
         {"model.layers.1.mlp.experts.0.gate_proj.weight", "expected [6, 16]", "file has [8, 16]"}},
        {"shared_experts_inconsistent",
         set("n_shared_experts", 2),
         ErrorCode::BadTensor,
         {"model.layers.1.mlp.shared_experts.gate_proj.weight", "expected [16, 16]",
          "file has [8, 16]"}},
        {"first_dense_inconsistent",
         set("first_k_dense_replace", 0),
         ErrorCode::MissingTensor,
         {"model.layers.0.mlp.gate.weight"}},
        {"fused_experts_misshaped",
         [L1](json&, Tensors& ts) {
             fuse_experts(ts, 1, 4, 8, 16);
             reshape(ts[L1 + "mlp.experts.down_proj"], {4, 16, 9});
         },
         ErrorCode::BadTensor,
         {"model.layers.1.mlp.experts.down_proj", "expected [4, 16, 16] and [4, 16, 8]",
          "file has [4, 16, 16] F32 and [4, 16, 9] F32"}},

        // Other dimensions.
        {"mtp_layers_inconsistent",
         set("num_nextn_predict_layers", 2),
         ErrorCode::MissingTensor,
         {"model.layers.3."}},
        {"vocab_inconsistent",
         set("vocab_size", 40),
         ErrorCode::BadTensor,
         {"model.embed_tokens.weight", "expected [40, 16]", "file has [32, 16]"}},
        {"hidden_inconsistent",
         set("hidden_size", 12),
         ErrorCode::BadTensor,
         {"model.embed_tokens.weight", "expected [32, 12]", "file has [32, 16]"}},
        {"intermediate_inconsistent",
         set("intermediate_size", 30),
         ErrorCode::BadTensor,
         {"model.layers.0.mlp.gate_proj.weight", "expected [30, 16]", "file has [32, 16]"}},
        {"tied_but_lm_head_misshaped",
         [](json& c, Tensors& ts) {
             c["tie_word_embeddings"] = true;
             reshape(ts["lm_head.weight"], {16, 32});
         },
         ErrorCode::BadTensor,
         {"lm_head.weight", "expected [32, 16]"}},
    };
    return v;
}

} // namespace

class TestModelLoad : public QObject {
    Q_OBJECT

    QTemporaryDir m_tmp;
    int m_n = 0;

    fs::path fresh_dir() {
        return fs::path(m_tmp.path().toStdString()) / ("m" + std::to_string(m_n++));
    }

    std::vector<float> reference_logits() {
        static std::vector<float> logits;
        if (logits.empty()) {
            const fs::path dir = fresh_dir();
            write_model(dir, tiny_config(), tiny_tensors(tiny_config()));
            Outcome o = load(dir);
            if (o.engine) logits = o.engine->logits(k_ids);
        }
        return logits;
    }

    static constexpr int32_t k_ids_data[5] = {0, 5, 7, 31, 2};
    const std::span<const int32_t> k_ids{k_ids_data, 5};

  private slots:
    void initTestCase() { QVERIFY(m_tmp.isValid()); }

    void loadsAndRuns() {
        const fs::path dir = fresh_dir();
        write_model(dir, tiny_config(), tiny_tensors(tiny_config()));
        Outcome o = load(dir);
        QVERIFY2(o.engine, o.message.c_str());
        const cetus::ModelInfo& info = o.engine->info();
        QCOMPARE(info.model_type, std::string("deepseek_v3"));
        QCOMPARE(info.n_layers, int64_t(2));
        QCOMPARE(info.n_moe_layers, int64_t(1));
        QCOMPARE(info.n_mtp_layers, int64_t(1));
        QCOMPARE(info.vocab_size, int64_t(32));
        QCOMPARE(info.n_routed_experts, int64_t(4));
        QCOMPARE(info.context_length, int64_t(64)); // capped by max_position_embeddings

        const std::vector<float> logits = o.engine->logits(k_ids);
        QCOMPARE(logits.size(), size_t(5 * 32));
        QVERIFY(all_finite(logits));
        // Not degenerate: each row varies, and rows differ between positions.
        for (int t = 0; t < 5; ++t) {
            const auto row = logits.begin() + t * 32;
            QVERIFY(*std::max_element(row, row + 32) > *std::min_element(row, row + 32));
        }
        QVERIFY(!std::equal(logits.begin(), logits.begin() + 32, logits.begin() + 32));
        // Logits start from an empty cache each call: the same answer twice.
        QCOMPARE(o.engine->logits(k_ids), logits);
        QCOMPARE(reference_logits(), logits);
    }

    // The same weights laid out differently load to the same numbers.
    void shardedFolderLoads() {
        const fs::path dir = fresh_dir();
        write_sharded(dir, tiny_config(), tiny_tensors(tiny_config()), 3);
        QVERIFY(!fs::exists(dir / "model.safetensors"));
        Outcome o = load(dir);
        QVERIFY2(o.engine, o.message.c_str());
        QCOMPARE(o.engine->logits(k_ids), reference_logits());
    }

    void otherSafetensorsNameLoads() {
        const fs::path dir = fresh_dir();
        write_model(dir, tiny_config(), tiny_tensors(tiny_config()));
        fs::rename(dir / "model.safetensors", dir / "weights.safetensors");
        Outcome o = load(dir);
        QVERIFY2(o.engine, o.message.c_str());
        QCOMPARE(o.engine->logits(k_ids), reference_logits());
    }

    void misalignedDataLoads() {
        const fs::path dir = fresh_dir();
        fs::create_directories(dir);
        write_file(dir / "config.json", tiny_config().dump());
        write_file(dir / "model.safetensors",
                   safetensors_image(tiny_tensors(tiny_config()), /*aligned=*/false));
        Outcome o = load(dir);
        QVERIFY2(o.engine, o.message.c_str());
        QCOMPARE(o.engine->logits(k_ids), reference_logits());
    }

    void fusedExpertsLoad() {
        const fs::path dir = fresh_dir();
        Tensors ts = tiny_tensors(tiny_config());
        fuse_experts(ts, 1, 4, 8, 16);
        write_model(dir, tiny_config(), ts);
        Outcome o = load(dir);
        QVERIFY2(o.engine, o.message.c_str());
        QCOMPARE(o.engine->logits(k_ids), reference_logits());
    }

    // FP8 on load quantises fused experts per expert, as the per-expert layout: the same
    // logits from both layouts (F32 weights here; torch's reference: test_fp8_on_load).
    void fp8OnLoadFusedExperts() {
        const fs::path plain = fresh_dir(), fused = fresh_dir();
        Tensors ts = tiny_tensors(tiny_config());
        write_model(plain, tiny_config(), ts);
        fuse_experts(ts, 1, 4, 8, 16);
        write_model(fused, tiny_config(), ts);
        Outcome a = load(plain, 4096, true), b = load(fused, 4096, true);
        QVERIFY2(a.engine, a.message.c_str());
        QVERIFY2(b.engine, b.message.c_str());
        QVERIFY(QString::fromStdString(b.engine->info().weight_dtype).contains("FP8 quantised on load"));
        QCOMPARE(b.engine->info().weight_bytes, a.engine->info().weight_bytes);
        const std::vector<float> la = a.engine->logits(k_ids);
        QCOMPARE(b.engine->logits(k_ids), la);
        QVERIFY(la != reference_logits());
    }

    // A weight FP8 cannot hold: a clear error naming the tensor, not NaN logits.
    void fp8OnLoadRejectsInfinity() {
        const fs::path dir = fresh_dir();
        Tensors ts = tiny_tensors(tiny_config());
        const std::string name = layer(1) + "self_attn.o_proj.weight";
        const float inf = std::numeric_limits<float>::infinity();
        std::memcpy(ts[name].bytes.data() + 4 * 5, &inf, 4);
        write_model(dir, tiny_config(), ts);
        EXPECT_FAILURE(load(dir, 4096, true), ErrorCode::BadTensor, QString::fromStdString(name), "infinite");
    }

    void fp8WeightsLoad() {
        const fs::path dir = fresh_dir();
        json c = tiny_config();
        c["quantization_config"] = {
            {"quant_method", "fp8"}, {"fmt", "e4m3"}, {"weight_block_size", {128, 128}}};
        Tensors ts = tiny_tensors(c);
        Rng rng(11);
        for (const std::string& name :
             {layer(0) + "mlp.up_proj.weight", layer(1) + "self_attn.q_b_proj.weight",
              layer(1) + "mlp.experts.1.down_proj.weight", layer(2) + "eh_proj.weight"})
            ts[name + "_scale_inv"] = to_fp8(ts[name], rng);
        write_model(dir, c, ts);
        Outcome o = load(dir);
        QVERIFY2(o.engine, o.message.c_str());
        QVERIFY(QString::fromStdString(o.engine->info().weight_dtype).contains("FP8"));
        const std::vector<float> logits = o.engine->logits(k_ids);
        QCOMPARE(logits.size(), size_t(5 * 32));
        QVERIFY(all_finite(logits));
    }

    void brokenVariant_data() {
        QTest::addColumn<int>("index");
        for (size_t i = 0; i < variants().size(); ++i) QTest::newRow(variants()[i].name) << int(i);
    }
    void brokenVariant() {
        QFETCH(int, index);
        const Variant& v = variants()[size_t(index)];
        json c = tiny_config();
        Tensors ts = tiny_tensors(c);
        v.edit(c, ts);
        const fs::path dir = fresh_dir();
        write_model(dir, c, ts);
        EXPECT_FAILURE(load(dir), v.code, v.keywords);
    }

    // Shard names are plain file names: no path may lead out of the folder,
    // even when a loadable file waits there.
    void shardNamesStayInFolder_data() {
        QTest::addColumn<QString>("shard");
        QTest::newRow("parent") << "../model.safetensors";
        QTest::newRow("parent_of_subfolder") << "sub/../../model.safetensors";
        QTest::newRow("subfolder") << "sub/model.safetensors";
        QTest::newRow("absolute") << QString::fromStdString(
            (fs::path(m_tmp.path().toStdString()) / "outside" / "model.safetensors").string());
        QTest::newRow("dotdot") << "..";
        QTest::newRow("dot") << ".";
        QTest::newRow("empty") << "";
        QTest::newRow("backslash") << "..\\model.safetensors";
    }
    void shardNamesStayInFolder() {
        QFETCH(QString, shard);
        const fs::path root = fresh_dir();
        const fs::path outside = fs::path(m_tmp.path().toStdString()) / "outside";
        write_model(root, tiny_config(),
                    tiny_tensors(tiny_config())); // root/model.safetensors is loadable
        fs::create_directories(outside);
        fs::copy_file(root / "model.safetensors", outside / "model.safetensors",
                      fs::copy_options::skip_existing);
        const fs::path dir = root / "model";
        write_sharded(dir, tiny_config(), tiny_tensors(tiny_config()), 2);
        json index = json::parse(std::ifstream(dir / "model.safetensors.index.json"));
        index["weight_map"]["model.norm.weight"] = shard.toStdString();
        write_file(dir / "model.safetensors.index.json", index.dump());
        EXPECT_FAILURE(load(dir), ErrorCode::BadFormat, "model.safetensors.index.json",
                       "\"" + shard + "\" is not a plain file name");
    }

    void indexedTensorAbsentFromShard() {
        const fs::path dir = fresh_dir();
        write_sharded(dir, tiny_config(), tiny_tensors(tiny_config()), 2);
        json index = json::parse(std::ifstream(dir / "model.safetensors.index.json"));
        const std::string name = "model.norm.weight";
        const std::string home = index["weight_map"][name];
        const std::string other = home == "model-00001-of-00002.safetensors"
                                      ? "model-00002-of-00002.safetensors"
                                      : "model-00001-of-00002.safetensors";
        index["weight_map"][name] = other;
        write_file(dir / "model.safetensors.index.json", index.dump());
        EXPECT_FAILURE(load(dir), ErrorCode::MissingTensor, QString::fromStdString(name),
                       QString::fromStdString(other), "listed in the index");
    }

    void indexNamesMissingShard() {
        const fs::path dir = fresh_dir();
        write_sharded(dir, tiny_config(), tiny_tensors(tiny_config()), 2);
        fs::remove(dir / "model-00002-of-00002.safetensors");
        EXPECT_FAILURE(load(dir), ErrorCode::Io, "model-00002-of-00002.safetensors");
    }

    void indexMalformed_data() {
        QTest::addColumn<QByteArray>("index");
        QTest::addColumn<QString>("keyword");
        QTest::newRow("invalid_json") << QByteArray("{\"weight_map\": {") << "invalid JSON";
        QTest::newRow("no_weight_map") << QByteArray("{\"metadata\": {}}") << "weight_map";
        QTest::newRow("weight_map_list") << QByteArray("{\"weight_map\": []}") << "weight_map";
        QTest::newRow("weight_map_empty")
            << QByteArray("{\"weight_map\": {}}") << "weight_map is empty";
        QTest::newRow("file_name_number")
            << QByteArray("{\"weight_map\": {\"model.norm.weight\": 1}}") << "file names";
        QTest::newRow("duplicate_tensor")
            << QByteArray("{\"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\", "
                          "\"a\": \"model-00002-of-00002.safetensors\"}}")
            << "duplicate key \"a\"";
        QTest::newRow("top_level_list") << QByteArray("[]") << "weight_map";
    }
    void indexMalformed() {
        QFETCH(QByteArray, index);
        QFETCH(QString, keyword);
        const fs::path dir = fresh_dir();
        write_sharded(dir, tiny_config(), tiny_tensors(tiny_config()), 2);
        write_file(dir / "model.safetensors.index.json", index.toStdString());
        EXPECT_FAILURE(load(dir), ErrorCode::BadFormat, "model.safetensors.index.json", keyword);
    }

    // Without an index, two files holding the same tensor are ambiguous.
    void tensorInTwoFiles() {
        const fs::path dir = fresh_dir();
        Tensors ts = tiny_tensors(tiny_config());
        write_model(dir, tiny_config(), ts);
        fs::rename(dir / "model.safetensors", dir / "a.safetensors");
        write_file(dir / "b.safetensors",
                   safetensors_image(Tensors{{"model.norm.weight", ts["model.norm.weight"]}}));
        EXPECT_FAILURE(load(dir), ErrorCode::BadFormat, "b.safetensors", "model.norm.weight",
                       "more than one file");
    }

    void folderWithoutConfig() {
        const fs::path dir = fresh_dir();
        write_model(dir, tiny_config(), tiny_tensors(tiny_config()));
        fs::remove(dir / "config.json");
        EXPECT_FAILURE(load(dir), ErrorCode::Io,
                       QString::fromStdString((dir / "config.json").string()));
    }

    void notAModelFolder() {
        // No model files at all.
        fs::path dir = fresh_dir();
        fs::create_directories(dir);
        write_file(dir / "README.md", "# notes\n");
        EXPECT_FAILURE(load(dir), ErrorCode::Io, "config.json");
        // A folder that does not exist, and a file given as the folder.
        EXPECT_FAILURE(load(dir / "nowhere"), ErrorCode::Io, "config.json");
        EXPECT_FAILURE(load(dir / "README.md"), ErrorCode::Io, "config.json");
        // Another architecture's config.
        dir = fresh_dir();
        write_model(dir, json{{"model_type", "llama"}, {"vocab_size", 32}, {"hidden_size", 16}},
                    tiny_tensors(tiny_config()));
        EXPECT_FAILURE(load(dir), ErrorCode::Unsupported, "config.json", "llama");
        // A config without any weights.
        dir = fresh_dir();
        fs::create_directories(dir);
        write_file(dir / "config.json", tiny_config().dump());
        EXPECT_FAILURE(load(dir), ErrorCode::Io, "no model.safetensors");
        // config.json that is not JSON (e.g. a stray binary).
        dir = fresh_dir();
        write_model(dir, tiny_config(), tiny_tensors(tiny_config()));
        write_file(dir / "config.json", std::string("\x89PNG\r\n\x1a\n", 8));
        EXPECT_FAILURE(load(dir), ErrorCode::BadFormat, "config.json", "invalid JSON");
        // model.safetensors that is a folder.
        dir = fresh_dir();
        fs::create_directories(dir / "model.safetensors");
        write_file(dir / "config.json", tiny_config().dump());
        EXPECT_FAILURE(load(dir), ErrorCode::Io, "model.safetensors");
    }

    // The weights file cut short at the header boundaries and inside the data.
    void truncatedWeights() {
        const std::string full = safetensors_image(tiny_tensors(tiny_config()));
        uint64_t header = 0;
        for (int i = 7; i >= 0; --i) header = (header << 8) | uint8_t(full[size_t(i)]);
        const uint64_t data_start = 8 + header, data = full.size() - data_start;
        for (uint64_t cut :
             {uint64_t(0), uint64_t(1), uint64_t(7), uint64_t(8), 8 + header / 2, data_start - 1,
              data_start, data_start + 1, data_start + data / 2, uint64_t(full.size()) - 1}) {
            const fs::path dir = fresh_dir();
            fs::create_directories(dir);
            write_file(dir / "config.json", tiny_config().dump());
            write_file(dir / "model.safetensors", full.substr(0, cut));
            auto problem = failure_problem(load(dir), ErrorCode::BadFormat,
                                           {"model.safetensors", "truncated"});
            QVERIFY2(!problem, qPrintable(QString("cut at %1 of %2: %3")
                                              .arg(cut)
                                              .arg(full.size())
                                              .arg(problem.value_or(QString()))));
        }
    }

    void idsOutsideVocabulary() {
        const fs::path dir = fresh_dir();
        write_model(dir, tiny_config(), tiny_tensors(tiny_config()));
        Outcome o = load(dir);
        QVERIFY2(o.engine, o.message.c_str());
        for (int32_t bad : {-1, 32, 33, INT32_MAX, INT32_MIN}) {
            const std::vector<int32_t> ids = {0, 1, bad, 3};
            ErrorCode code{};
            auto msg = call_error([&] { o.engine->logits(ids); }, &code);
            QVERIFY2(msg, qPrintable(QString("id %1 accepted").arg(bad)));
            QCOMPARE(QString(cetus::error_code_name(code)), QString("bad_request"));
            QVERIFY2(QString::fromStdString(*msg).contains(
                         QString("token id %1 at position 2").arg(bad)),
                     msg->c_str());
        }
        ErrorCode code{};
        auto msg = call_error([&] { o.engine->logits({}); }, &code);
        QVERIFY(msg);
        QCOMPARE(QString(cetus::error_code_name(code)), QString("bad_request"));
        // The engine still works after rejected requests.
        QCOMPARE(o.engine->logits(k_ids), reference_logits());
    }

    void moreIdsThanContext() {
        const fs::path dir = fresh_dir();
        write_model(dir, tiny_config(), tiny_tensors(tiny_config()));
        Outcome o = load(dir, /*max_context=*/8);
        QVERIFY2(o.engine, o.message.c_str());
        QCOMPARE(o.engine->info().context_length, int64_t(8));
        QCOMPARE(o.engine->logits(std::vector<int32_t>(8, 3)).size(),
                 size_t(8 * 32)); // exactly full
        ErrorCode code{};
        auto msg = call_error([&] { o.engine->logits(std::vector<int32_t>(10, 3)); }, &code);
        QVERIFY2(msg, "10 ids in a context of 8 accepted");
        QCOMPARE(QString(cetus::error_code_name(code)), QString("context_overflow"));
        QVERIFY2(QString::fromStdString(*msg).contains("by 2"), msg->c_str());

        // The default context is capped by max_position_embeddings (64).
        Outcome big = load(dir);
        QVERIFY2(big.engine, big.message.c_str());
        msg = call_error([&] { big.engine->logits(std::vector<int32_t>(70, 3)); }, &code);
        QVERIFY2(msg, "70 ids in a context of 64 accepted");
        QCOMPARE(QString(cetus::error_code_name(code)), QString("context_overflow"));
        QVERIFY2(QString::fromStdString(*msg).contains("by 6"), msg->c_str());

        EXPECT_FAILURE(load(dir, 0), ErrorCode::BadRequest, "max_context");
    }

    // A context whose latent cache the machine cannot hold is refused at load with
    // the sizes (the cache's pages are only taken as rows are written, so without
    // the check the load would succeed and a long answer fail later). 9 layers of
    // 516 fp32 values for 2^24 positions: about 311 GB.
    void cacheBeyondMemoryIsRefused() {
        const fs::path dir = fresh_dir();
        json c = tiny_config();
        c["kv_lora_rank"] = 512;
        c["num_hidden_layers"] = 8;
        c["max_position_embeddings"] = int64_t(1) << 24;
        write_model(dir, c, tiny_tensors(c));
        EXPECT_FAILURE(load(dir, int64_t(1) << 24), ErrorCode::OutOfMemory, "latent cache", "16777216 tokens",
                       "MiB are available", "lower the context");
        // A context it can hold loads and runs; its pages come as rows are written.
        Outcome o = load(dir, int64_t(1) << 16);
        QVERIFY2(o.engine, o.message.c_str());
        QCOMPARE(o.engine->info().context_length, int64_t(1) << 16);
        QVERIFY(all_finite(o.engine->logits(k_ids)));
    }
};

QTEST_GUILESS_MAIN(TestModelLoad)
#include "test_model_load.moc"
