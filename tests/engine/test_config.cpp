// config.json parsing: the published DeepSeek-V3 and V2-Lite configs (values
// from the architecture doc, section 1.2) read with the right fields, and each
// inconsistent, out-of-range or malformed variant rejected with the right code
// and a message naming the key.
#include "cetus/error.h"
#include "config.h"

#include <nlohmann/json.hpp>

#include <QtTest>

#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>

using cetus::ErrorCode;
using nlohmann::json;

namespace {

// DeepSeek-V3's config.json as released (FP8, MTP, YaRN).
json v3_config() {
    return json::parse(R"({
      "architectures": ["DeepseekV3ForCausalLM"], "attention_bias": false,
      "attention_dropout": 0.0, "aux_loss_alpha": 0.001, "bos_token_id": 0, "eos_token_id": 1,
      "ep_size": 1, "first_k_dense_replace": 3, "hidden_act": "silu", "hidden_size": 7168,
      "initializer_range": 0.02, "intermediate_size": 18432, "kv_lora_rank": 512,
      "max_position_embeddings": 163840, "model_type": "deepseek_v3",
      "moe_intermediate_size": 2048, "moe_layer_freq": 1, "n_group": 8, "n_routed_experts": 256,
      "n_shared_experts": 1, "norm_topk_prob": true, "num_attention_heads": 128,
      "num_experts_per_tok": 8, "num_hidden_layers": 61, "num_key_value_heads": 128,
      "num_nextn_predict_layers": 1, "pretraining_tp": 1, "q_lora_rank": 1536,
      "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
      "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3",
                              "quant_method": "fp8", "weight_block_size": [128, 128]},
      "rms_norm_eps": 1e-06,
      "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0,
                       "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096,
                       "type": "yarn"},
      "rope_theta": 10000, "routed_scaling_factor": 2.5, "scoring_func": "sigmoid",
      "seq_aux": true, "tie_word_embeddings": false, "topk_group": 4, "topk_method": "noaux_tc",
      "torch_dtype": "bfloat16", "transformers_version": "4.33.1", "use_cache": true,
      "v_head_dim": 128, "vocab_size": 129280})");
}

// DeepSeek-V2-Lite: no q-LoRA (null), softmax/greedy routing, no MTP.
json v2_lite_config() {
    return json::parse(R"({
      "architectures": ["DeepseekV2ForCausalLM"], "attention_bias": false,
      "attention_dropout": 0.0, "aux_loss_alpha": 0.001, "bos_token_id": 100000,
      "eos_token_id": 100001, "first_k_dense_replace": 1, "hidden_act": "silu",
      "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 10944,
      "kv_lora_rank": 512, "max_position_embeddings": 163840, "model_type": "deepseek_v2",
      "moe_intermediate_size": 1408, "moe_layer_freq": 1, "n_group": 1, "n_routed_experts": 64,
      "n_shared_experts": 2, "norm_topk_prob": false, "num_attention_heads": 16,
      "num_experts_per_tok": 6, "num_hidden_layers": 27, "num_key_value_heads": 16,
      "pretraining_tp": 1, "q_lora_rank": null, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
      "rms_norm_eps": 1e-06,
      "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 0.707,
                       "mscale_all_dim": 0.707, "original_max_position_embeddings": 4096,
                       "type": "yarn"},
      "rope_theta": 10000, "routed_scaling_factor": 1.0, "scoring_func": "softmax",
      "seq_aux": true, "tie_word_embeddings": false, "topk_group": 1, "topk_method": "greedy",
      "torch_dtype": "bfloat16", "transformers_version": "4.33.1", "use_cache": true,
      "v_head_dim": 128, "vocab_size": 102400})");
}

QByteArray v3_with(const std::function<void(json&)>& edit) {
    json j = v3_config();
    edit(j);
    return QByteArray::fromStdString(j.dump());
}
QByteArray v3_set(const char* key, const json& value) {
    return v3_with([&](json& j) { j[key] = value; });
}
QByteArray v3_without(const char* key) {
    return v3_with([&](json& j) { j.erase(key); });
}
QByteArray v2_set(const char* key, const json& value) {
    json j = v2_lite_config();
    j[key] = value;
    return QByteArray::fromStdString(j.dump());
}

// Text nlohmann would never write (1e999, NaN, a repeated key): edit a field
// to the marker, then splice the raw text in its place.
const char* const k_raw = "@@RAW@@";
QByteArray spliced(QByteArray text, const char* raw) {
    return text.replace("\"@@RAW@@\"", raw);
}
QByteArray v3_raw(const char* key, const char* raw) {
    return spliced(v3_set(key, k_raw), raw);
}

struct Outcome {
    std::optional<cetus::ModelConfig> config;
    ErrorCode code = ErrorCode::Io;
    std::string message;
    std::string foreign;
};

Outcome parse(const QByteArray& text) {
    Outcome o;
    try {
        o.config = cetus::parse_config(text.toStdString(), "model/config.json");
    } catch (const cetus::Error& e) {
        o.code = e.code();
        o.message = e.what();
    } catch (const std::exception& e) {
        o.foreign = e.what();
    }
    return o;
}

} // namespace

class TestConfig : public QObject {
    Q_OBJECT
  private slots:
    void v3() {
        const auto c = cetus::parse_config(v3_config().dump(), "v3");
        QCOMPARE(c.model_type, std::string("deepseek_v3"));
        QCOMPARE(c.vocab_size, int64_t(129280));
        QCOMPARE(c.hidden_size, int64_t(7168));
        QCOMPARE(c.intermediate_size, int64_t(18432));
        QCOMPARE(c.moe_intermediate_size, int64_t(2048));
        QCOMPARE(c.num_hidden_layers, int64_t(61));
        QCOMPARE(c.num_attention_heads, int64_t(128));
        QCOMPARE(c.q_lora_rank, int64_t(1536));
        QCOMPARE(c.kv_lora_rank, int64_t(512));
        QCOMPARE(c.qk_nope_head_dim, int64_t(128));
        QCOMPARE(c.qk_rope_head_dim, int64_t(64));
        QCOMPARE(c.qk_head_dim(), int64_t(192));
        QCOMPARE(c.v_head_dim, int64_t(128));
        QCOMPARE(c.n_routed_experts, int64_t(256));
        QCOMPARE(c.n_shared_experts, int64_t(1));
        QCOMPARE(c.num_experts_per_tok, int64_t(8));
        QCOMPARE(c.n_group, int64_t(8));
        QCOMPARE(c.topk_group, int64_t(4));
        QVERIFY(c.topk_method == cetus::TopkMethod::NoauxTc);
        QVERIFY(c.scoring_func == cetus::ScoringFunc::Sigmoid);
        QVERIFY(c.norm_topk_prob);
        QCOMPARE(c.routed_scaling_factor, 2.5);
        QCOMPARE(c.first_k_dense_replace, int64_t(3));
        QCOMPARE(c.moe_layer_freq, int64_t(1));
        QCOMPARE(c.num_nextn_predict_layers, int64_t(1));
        QCOMPARE(c.n_moe_layers(), int64_t(58));
        QVERIFY(!c.is_moe_layer(2));
        QVERIFY(c.is_moe_layer(3));
        QCOMPARE(c.rope_theta, 10000.0);
        QVERIFY(c.rope_scaling.yarn);
        QCOMPARE(c.rope_scaling.factor, 40.0);
        QCOMPARE(c.rope_scaling.original_max_position_embeddings, int64_t(4096));
        QCOMPARE(c.rope_scaling.beta_fast, 32.0);
        QCOMPARE(c.rope_scaling.beta_slow, 1.0);
        QCOMPARE(c.rope_scaling.mscale, 1.0);
        QCOMPARE(c.rope_scaling.mscale_all_dim, 1.0);
        QVERIFY(!c.rope_scaling.attention_factor);
        QCOMPARE(c.rms_norm_eps, 1e-6);
        QCOMPARE(c.max_position_embeddings, int64_t(163840));
        QVERIFY(!c.tie_word_embeddings);
        QCOMPARE(c.bos_token_id, int64_t(0));
        QCOMPARE(c.eos_token_id, int64_t(1));
        QVERIFY(c.fp8_block_quantised);
    }

    void v2Lite() {
        const auto c = cetus::parse_config(v2_lite_config().dump(), "v2-lite");
        QCOMPARE(c.model_type, std::string("deepseek_v2"));
        QCOMPARE(c.q_lora_rank, int64_t(0)); // null: queries through q_proj
        QCOMPARE(c.hidden_size, int64_t(2048));
        QCOMPARE(c.intermediate_size, int64_t(10944));
        QCOMPARE(c.moe_intermediate_size, int64_t(1408));
        QCOMPARE(c.num_hidden_layers, int64_t(27));
        QCOMPARE(c.num_attention_heads, int64_t(16));
        QCOMPARE(c.n_routed_experts, int64_t(64));
        QCOMPARE(c.n_shared_experts, int64_t(2));
        QCOMPARE(c.num_experts_per_tok, int64_t(6));
        QCOMPARE(c.n_group, int64_t(1));
        QCOMPARE(c.topk_group, int64_t(1));
        QVERIFY(c.topk_method == cetus::TopkMethod::Greedy);
        QVERIFY(c.scoring_func == cetus::ScoringFunc::Softmax);
        QVERIFY(!c.norm_topk_prob);
        QCOMPARE(c.routed_scaling_factor, 1.0);
        QCOMPARE(c.first_k_dense_replace, int64_t(1));
        QCOMPARE(c.num_nextn_predict_layers, int64_t(0));
        QCOMPARE(c.n_moe_layers(), int64_t(26));
        QCOMPARE(c.rope_scaling.mscale, 0.707);
        QCOMPARE(c.rope_scaling.mscale_all_dim, 0.707);
        QCOMPARE(c.bos_token_id, int64_t(100000));
        QCOMPARE(c.eos_token_id, int64_t(100001));
        QVERIFY(!c.fp8_block_quantised);
    }

    // Newer transformers write rope_parameters (rope_theta inside) instead of
    // rope_scaling + rope_theta.
    void ropeParametersSpelling() {
        json j = v2_lite_config();
        j.erase("rope_scaling");
        j.erase("rope_theta");
        j["rope_parameters"] =
            json::parse(R"({"rope_type": "yarn", "rope_theta": 50000.0, "factor": 40.0,
            "original_max_position_embeddings": 4096, "beta_fast": 32.0, "beta_slow": 1.0,
            "mscale": 0.707, "mscale_all_dim": 0.707})");
        auto c = cetus::parse_config(j.dump(), "rope_parameters");
        QVERIFY(c.rope_scaling.yarn);
        QCOMPARE(c.rope_theta, 50000.0);
        QCOMPARE(c.rope_scaling.factor, 40.0);
        QCOMPARE(c.rope_scaling.original_max_position_embeddings, int64_t(4096));
        QCOMPARE(c.rope_scaling.mscale_all_dim, 0.707);

        // Plain RoPE in the new spelling (Moonlight-like): theta only.
        j["rope_parameters"] = json::parse(R"({"rope_type": "default", "rope_theta": 50000.0})");
        c = cetus::parse_config(j.dump(), "rope_parameters");
        QVERIFY(!c.rope_scaling.yarn);
        QCOMPARE(c.rope_theta, 50000.0);

        // rope_scaling: null means plain RoPE.
        j = v2_lite_config();
        j["rope_scaling"] = nullptr;
        c = cetus::parse_config(j.dump(), "null rope_scaling");
        QVERIFY(!c.rope_scaling.yarn);
        QCOMPARE(c.rope_theta, 10000.0);
    }

    void eosAsList() {
        auto c = cetus::parse_config(v3_set("eos_token_id", {1, 128001}).toStdString(), "eos list");
        QCOMPARE(c.eos_token_id, int64_t(1));
    }

    void optionalFieldsDefault() {
        // V2-Lite without the optional fields: q_lora_rank absent, no MTP,
        // scoring and topk method from the model_type's defaults.
        json j = v2_lite_config();
        for (const char* k :
             {"q_lora_rank", "scoring_func", "topk_method", "n_group", "topk_group",
              "num_key_value_heads", "moe_layer_freq", "bos_token_id", "eos_token_id"})
            j.erase(k);
        auto c = cetus::parse_config(j.dump(), "defaults");
        QCOMPARE(c.q_lora_rank, int64_t(0));
        QVERIFY(c.topk_method == cetus::TopkMethod::Greedy);
        QVERIFY(c.scoring_func == cetus::ScoringFunc::Softmax);
        QCOMPARE(c.n_group, int64_t(1));
        QCOMPARE(c.bos_token_id, int64_t(-1));
        QCOMPARE(c.eos_token_id, int64_t(-1));

        json k = v3_config();
        for (const char* key : {"scoring_func", "topk_method"}) k.erase(key);
        c = cetus::parse_config(k.dump(), "v3 defaults");
        QVERIFY(c.topk_method == cetus::TopkMethod::NoauxTc);
        QVERIFY(c.scoring_func == cetus::ScoringFunc::Sigmoid);
    }

    // The layer bound is inclusive; the MTP layers count against it.
    void layerCountAtTheMaximum() {
        auto c = cetus::parse_config(v3_with([](json& j) {
                                         j["num_hidden_layers"] = 512;
                                         j["num_nextn_predict_layers"] = 0;
                                     }).toStdString(),
                                     "512 layers");
        QCOMPARE(c.num_hidden_layers, int64_t(512));
    }

    void rejects_data() {
        QTest::addColumn<QByteArray>("text");
        QTest::addColumn<QString>("code");
        QTest::addColumn<QString>("keyword");

        // Experts and routing.
        QTest::newRow("top_k_above_experts") << v3_set("num_experts_per_tok", 257) << "bad_config"
                                             << "num_experts_per_tok";
        QTest::newRow("top_k_zero") << v3_set("num_experts_per_tok", 0) << "bad_config"
                                    << "num_experts_per_tok";
        QTest::newRow("top_k_beyond_kept_groups") << v3_with([](json& j) {
            j["topk_group"] = 1;
            j["num_experts_per_tok"] = 40;
        }) << "bad_config"
                                                  << "num_experts_per_tok";
        QTest::newRow("n_group_not_dividing") << v3_set("n_group", 7) << "bad_config"
                                              << "n_group";
        QTest::newRow("n_group_zero") << v3_set("n_group", 0) << "bad_config"
                                      << "n_group";
        QTest::newRow("noaux_one_expert_per_group") << v3_with([](json& j) {
            j["n_group"] = 256;
            j["topk_group"] = 8;
        }) << "bad_config"
                                                    << "n_group";
        QTest::newRow("topk_group_above_n_group") << v3_set("topk_group", 9) << "bad_config"
                                                  << "topk_group";
        QTest::newRow("sigmoid_with_greedy") << v3_set("topk_method", "greedy") << "unsupported"
                                             << "scoring_func";
        QTest::newRow("softmax_with_noaux_tc") << v2_set("topk_method", "noaux_tc") << "unsupported"
                                               << "topk_method";
        QTest::newRow("unknown_topk_method") << v3_set("topk_method", "random") << "unsupported"
                                             << "random";
        QTest::newRow("moe_layer_freq_2") << v3_set("moe_layer_freq", 2) << "unsupported"
                                          << "moe_layer_freq";
        QTest::newRow("moe_layer_freq_0") << v3_set("moe_layer_freq", 0) << "bad_config"
                                          << "moe_layer_freq";
        QTest::newRow("experts_negative") << v3_set("n_routed_experts", -1) << "bad_config"
                                          << "n_routed_experts";
        QTest::newRow("experts_huge") << v3_set("n_routed_experts", 1 << 20) << "bad_config"
                                      << "n_routed_experts";
        QTest::newRow("moe_width_missing") << v3_without("moe_intermediate_size") << "bad_config"
                                           << "moe_intermediate_size";
        QTest::newRow("dense_width_missing") << v3_without("intermediate_size") << "bad_config"
                                             << "intermediate_size";
        QTest::newRow("shared_experts_huge") << v3_set("n_shared_experts", 100000) << "bad_config"
                                             << "n_shared_experts";

        // Layers and shapes.
        QTest::newRow("layers_above_max") << v3_set("num_hidden_layers", 513) << "bad_config"
                                          << "num_hidden_layers";
        QTest::newRow("layers_plus_mtp_above_max")
            << v3_set("num_hidden_layers", 512) << "bad_config"
            << "num_nextn_predict_layers";
        QTest::newRow("layers_huge")
            << v3_set("num_hidden_layers", int64_t(1) << 40) << "bad_config"
            << "num_hidden_layers";
        QTest::newRow("layers_zero") << v3_set("num_hidden_layers", 0) << "bad_config"
                                     << "num_hidden_layers";
        QTest::newRow("mtp_layers_negative")
            << v3_set("num_nextn_predict_layers", -1) << "bad_config"
            << "num_nextn_predict_layers";
        QTest::newRow("odd_rope_dim") << v3_set("qk_rope_head_dim", 63) << "bad_config"
                                      << "qk_rope_head_dim";
        QTest::newRow("rope_dim_zero") << v3_set("qk_rope_head_dim", 0) << "bad_config"
                                       << "qk_rope_head_dim";
        QTest::newRow("hidden_negative") << v3_set("hidden_size", -7168) << "bad_config"
                                         << "hidden_size";
        QTest::newRow("hidden_huge") << v3_set("hidden_size", int64_t(1) << 40) << "bad_config"
                                     << "hidden_size";
        QTest::newRow("vocab_zero") << v3_set("vocab_size", 0) << "bad_config"
                                    << "vocab_size";
        QTest::newRow("vocab_huge") << v3_set("vocab_size", int64_t(1) << 33) << "bad_config"
                                    << "vocab_size";
        QTest::newRow("heads_huge") << v3_set("num_attention_heads", 1 << 20) << "bad_config"
                                    << "num_attention_heads";
        QTest::newRow("kv_lora_rank_zero") << v3_set("kv_lora_rank", 0) << "bad_config"
                                           << "kv_lora_rank";
        QTest::newRow("q_lora_rank_negative") << v3_set("q_lora_rank", -1) << "bad_config"
                                              << "q_lora_rank";
        QTest::newRow("positions_huge")
            << v3_set("max_position_embeddings", int64_t(1) << 40) << "bad_config"
            << "max_position_embeddings";

        // Types.
        QTest::newRow("string_for_int") << v3_set("hidden_size", "7168") << "bad_config"
                                        << "hidden_size";
        QTest::newRow("fraction_for_int") << v3_set("num_attention_heads", 1.5) << "bad_config"
                                          << "num_attention_heads";
        QTest::newRow("bool_for_int") << v3_set("vocab_size", true) << "bad_config"
                                      << "vocab_size";
        QTest::newRow("list_for_int") << v3_set("kv_lora_rank", {512}) << "bad_config"
                                      << "kv_lora_rank";
        QTest::newRow("null_for_required_int") << v3_set("kv_lora_rank", nullptr) << "bad_config"
                                               << "kv_lora_rank";
        QTest::newRow("u64_max_for_int") << v3_set("vocab_size", ~uint64_t(0)) << "bad_config"
                                         << "vocab_size";
        QTest::newRow("string_for_bool") << v3_set("norm_topk_prob", "yes") << "bad_config"
                                         << "norm_topk_prob";
        QTest::newRow("string_for_number") << v3_set("rms_norm_eps", "1e-6") << "bad_config"
                                           << "rms_norm_eps";
        QTest::newRow("int_for_string") << v3_set("scoring_func", 1) << "bad_config"
                                        << "scoring_func";
        QTest::newRow("rope_scaling_number") << v3_set("rope_scaling", 40) << "bad_config"
                                             << "rope_scaling";
        QTest::newRow("quantization_config_string")
            << v3_set("quantization_config", "fp8") << "bad_config"
            << "quantization_config";
        QTest::newRow("eos_empty_list") << v3_set("eos_token_id", json::array()) << "bad_config"
                                        << "eos_token_id";
        QTest::newRow("eos_list_of_strings") << v3_set("eos_token_id", {"1"}) << "bad_config"
                                             << "eos_token_id";
        QTest::newRow("eos_past_vocab") << v3_set("eos_token_id", 129280) << "bad_config"
                                        << "eos_token_id";
        QTest::newRow("bos_negative") << v3_set("bos_token_id", -2) << "bad_config"
                                      << "bos_token_id";

        // Missing required fields.
        for (const char* key : {"vocab_size", "hidden_size", "num_hidden_layers",
                                "num_attention_heads", "kv_lora_rank", "qk_nope_head_dim",
                                "qk_rope_head_dim", "v_head_dim", "num_experts_per_tok"})
            QTest::newRow(qPrintable(QString("missing_%1").arg(key)))
                << v3_without(key) << "bad_config" << QString("\"%1\" is missing").arg(key);
        QTest::newRow("yarn_without_original_positions")
            << v3_with([](json& j) { j["rope_scaling"].erase("original_max_position_embeddings"); })
            << "bad_config"
            << "original_max_position_embeddings";

        // Architecture and features.
        QTest::newRow("unknown_model_type") << v3_set("model_type", "llama") << "unsupported"
                                            << "model_type";
        QTest::newRow("missing_model_type") << v3_without("model_type") << "unsupported"
                                            << "model_type";
        QTest::newRow("model_type_not_string") << v3_set("model_type", 3) << "bad_config"
                                               << "model_type";
        QTest::newRow("hidden_act_gelu") << v3_set("hidden_act", "gelu") << "unsupported"
                                         << "hidden_act";
        QTest::newRow("rope_linear")
            << v3_with([](json& j) { j["rope_scaling"]["type"] = "linear"; }) << "unsupported"
            << "linear";
        QTest::newRow("fp8_64_blocks") << v3_with([](json& j) {
            j["quantization_config"]["weight_block_size"] = {64, 64};
        }) << "unsupported"
                                       << "128x128";
        QTest::newRow("fp8_128_by_64_blocks") << v3_with([](json& j) {
            j["quantization_config"]["weight_block_size"] = {128, 64};
        }) << "unsupported"
                                              << "128x128";
        QTest::newRow("fp8_one_block_dim")
            << v3_with([](json& j) { j["quantization_config"]["weight_block_size"] = {128}; })
            << "unsupported"
            << "128x128";
        QTest::newRow("fp8_blocks_as_string")
            << v3_with([](json& j) { j["quantization_config"]["weight_block_size"] = "128x128"; })
            << "unsupported"
            << "128x128";
        QTest::newRow("fp8_e5m2") << v3_with([](json& j) {
            j["quantization_config"]["fmt"] = "e5m2";
        }) << "unsupported"
                                  << "e5m2";
        QTest::newRow("quant_gptq")
            << v3_with([](json& j) { j["quantization_config"]["quant_method"] = "gptq"; })
            << "unsupported"
            << "gptq";

        // Real numbers out of range. JSON has no NaN or infinity; nlohmann
        // refuses literals such as NaN and numbers such as 1e999 (which strtod
        // would turn into infinity), so non-finite values end as BadFormat.
        QTest::newRow("eps_negative") << v3_set("rms_norm_eps", -1e-6) << "bad_config"
                                      << "rms_norm_eps";
        QTest::newRow("eps_huge") << v3_set("rms_norm_eps", 1e300) << "bad_config"
                                  << "rms_norm_eps";
        QTest::newRow("scaling_factor_huge")
            << v3_set("routed_scaling_factor", -1e300) << "bad_config"
            << "routed_scaling_factor";
        QTest::newRow("rope_theta_huge") << v3_set("rope_theta", 1e300) << "bad_config"
                                         << "rope_theta";
        QTest::newRow("rope_theta_zero") << v3_set("rope_theta", 0) << "bad_config"
                                         << "rope_theta";
        // log(1) = 0 in the YaRN correction range: every frequency would be NaN.
        QTest::newRow("rope_theta_one") << v3_set("rope_theta", 1.0) << "bad_config"
                                        << "rope_theta";
        QTest::newRow("rope_theta_below_one") << v3_set("rope_theta", 0.5) << "bad_config"
                                              << "rope_theta";
        QTest::newRow("rope_parameters_theta_one") << v3_with([](json& j) {
            j["rope_parameters"] = j["rope_scaling"];
            j["rope_parameters"]["rope_theta"] = 1.0;
            j.erase("rope_scaling");
        }) << "bad_config"
                                                   << "rope_theta";
        QTest::newRow("hidden_huge_float") << v3_set("hidden_size", 1e300) << "bad_config"
                                           << "hidden_size";
        QTest::newRow("layers_huge_float") << v3_raw("num_hidden_layers", "1e300") << "bad_config"
                                           << "num_hidden_layers";
        QTest::newRow("eps_infinite") << v3_raw("rms_norm_eps", "1e999") << "bad_format"
                                      << "1e999";
        QTest::newRow("scaling_factor_infinite")
            << v3_raw("routed_scaling_factor", "-1e999") << "bad_format"
            << "-1e999";
        QTest::newRow("hidden_infinite") << v3_raw("hidden_size", "1e999") << "bad_format"
                                         << "1e999";
        QTest::newRow("yarn_factor_below_one")
            << v3_with([](json& j) { j["rope_scaling"]["factor"] = 0.5; }) << "bad_config"
            << "factor";
        QTest::newRow("yarn_factor_infinite")
            << spliced(v3_with([](json& j) { j["rope_scaling"]["factor"] = k_raw; }), "1e999")
            << "bad_format"
            << "1e999";
        QTest::newRow("nan_literal") << v3_raw("rope_theta", "NaN") << "bad_format"
                                     << "invalid JSON";
        QTest::newRow("infinity_literal") << v3_raw("rope_theta", "Infinity") << "bad_format"
                                          << "invalid JSON";

        // Malformed JSON.
        QTest::newRow("duplicate_key")
            << v3_raw("num_hidden_layers", "61,\"num_hidden_layers\":1") << "bad_format"
            << "duplicate key \"num_hidden_layers\"";
        QTest::newRow("duplicate_nested_key")
            << spliced(v3_with([](json& j) { j["rope_scaling"]["factor"] = k_raw; }),
                       "40,\"factor\":1")
            << "bad_format"
            << "duplicate key \"factor\"";
        QTest::newRow("invalid_json")
            << QByteArray("{\"model_type\": \"deepseek_v3\",") << "bad_format"
            << "invalid JSON";
        QTest::newRow("empty_text") << QByteArray() << "bad_format"
                                    << "invalid JSON";
        QTest::newRow("invalid_utf8")
            << v3_set("model_type", "deepseek_v3").replace("deepseek_v3", "deepseek\xff")
            << "bad_format"
            << "UTF-8";
        QTest::newRow("nul_then_garbage") << QByteArray("{}\0{", 3) << "bad_format"
                                          << "NUL";
        QTest::newRow("top_level_array") << QByteArray("[]") << "bad_config"
                                         << "object";
        QTest::newRow("top_level_string") << QByteArray("\"deepseek_v3\"") << "bad_config"
                                          << "object";
    }
    void rejects() {
        QFETCH(QByteArray, text);
        QFETCH(QString, code);
        QFETCH(QString, keyword);
        const Outcome o = parse(text);
        QVERIFY2(o.foreign.empty(), o.foreign.c_str());
        QVERIFY2(!o.config, "accepted");
        const QString msg = QString::fromStdString(o.message);
        QVERIFY2(code == cetus::error_code_name(o.code),
                 qPrintable(QString("code %1: %2").arg(cetus::error_code_name(o.code), msg)));
        QVERIFY2(msg.contains("model/config.json"),
                 qPrintable("message does not name the file: " + msg));
        QVERIFY2(msg.contains(keyword), qPrintable("message lacks \"" + keyword + "\": " + msg));
    }

    void loadFromFolder() {
        QTemporaryDir dir;
        QVERIFY(dir.isValid());
        const std::filesystem::path p = dir.path().toStdString();
        try {
            cetus::load_config(p);
            QFAIL("folder without config.json accepted");
        } catch (const cetus::Error& e) {
            QCOMPARE(e.code(), ErrorCode::Io);
            QVERIFY2(QString(e.what()).contains("config.json"), e.what());
        }
        std::ofstream(p / "config.json") << v3_config().dump(2);
        QCOMPARE(cetus::load_config(p).num_hidden_layers, int64_t(61));

        // A hostile config.json far larger than any real one is refused unread.
        {
            std::ofstream big(p / "config.json", std::ios::binary | std::ios::trunc);
            const std::string chunk(1 << 20, ' ');
            for (int i = 0; i < 17; ++i) big << chunk;
            big << v3_config().dump();
        }
        try {
            cetus::load_config(p);
            QFAIL("17 MB config accepted");
        } catch (const cetus::Error& e) {
            QCOMPARE(e.code(), ErrorCode::BadFormat);
            QVERIFY2(QString(e.what()).contains("too large"), e.what());
        }
    }
};

QTEST_GUILESS_MAIN(TestConfig)
#include "test_config.moc"
