// The OpenAI chat completions protocol of `cetus-cli serve` (see serve_api.h).
#include "serve_api.h"

#include <cmath>

namespace cetus::cli::serve {

using nlohmann::json;

json error_json(const ApiError& e) {
    return {{"error",
             {{"message", e.message},
              {"type", e.type},
              {"param", e.param.empty() ? json(nullptr) : json(e.param)},
              {"code", e.code.empty() ? json(nullptr) : json(e.code)}}}};
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

namespace {

ApiError bad(const std::string& param, const std::string& message, const std::string& code = {}) {
    return ApiError{400, message, "invalid_request_error", param, code};
}

// A number field in [lo, hi] (null or absent: keep `out`).
std::optional<ApiError> number(const json& o, const char* key, double lo, double hi, double& out) {
    auto it = o.find(key);
    if (it == o.end() || it->is_null()) return std::nullopt;
    if (!it->is_number()) return bad(key, std::string("'") + key + "' must be a number");
    const double v = it->get<double>();
    if (!std::isfinite(v) || v < lo || v > hi)
        return bad(key, std::string("'") + key + "' must be between " + json(lo).dump() + " and " + json(hi).dump());
    out = v;
    return std::nullopt;
}

std::optional<ApiError> integer(const json& o, const char* key, int64_t lo, int64_t hi, int64_t& out, bool& given) {
    auto it = o.find(key);
    if (it == o.end() || it->is_null()) return std::nullopt;
    if (!it->is_number_integer()) return bad(key, std::string("'") + key + "' must be an integer");
    // Unsigned values past int64 arrive as number_unsigned; compare in the wider type.
    if (it->is_number_unsigned() && it->get<uint64_t>() > uint64_t(hi))
        return bad(key, std::string("'") + key + "' is too large");
    const int64_t v = it->get<int64_t>();
    if (v < lo || v > hi)
        return bad(key, std::string("'") + key + "' must be between " + std::to_string(lo) + " and " + std::to_string(hi));
    out = v;
    given = true;
    return std::nullopt;
}

std::optional<ApiError> boolean(const json& o, const char* key, bool& out, const std::string& param) {
    auto it = o.find(key);
    if (it == o.end() || it->is_null()) return std::nullopt;
    if (!it->is_boolean()) return bad(param, "'" + param + "' must be true or false");
    out = it->get<bool>();
    return std::nullopt;
}

// Message content: a string, null, or an array of {"type": "text", "text": ...} parts.
std::optional<ApiError> content_text(const json& c, size_t i, std::string& out) {
    const std::string param = "messages[" + std::to_string(i) + "].content";
    if (c.is_null()) return std::nullopt;
    if (c.is_string()) {
        out = c.get<std::string>();
        return std::nullopt;
    }
    if (!c.is_array()) return bad(param, "'" + param + "' must be a string or an array of text parts");
    for (const auto& part : c) {
        // Types checked before reading: nlohmann's value() throws when "type" is not a string.
        const auto is_string_field = [&](const char* key) { return part.contains(key) && part[key].is_string(); };
        if (!part.is_object() || !is_string_field("type") || part["type"].get<std::string>() != "text" ||
            !is_string_field("text"))
            return bad(param, "'" + param + "': only parts of type \"text\" are supported");
        out += part["text"].get<std::string>();
    }
    return std::nullopt;
}

}  // namespace

ParseResult parse_chat_request(const std::string& body, const std::string& model_id, uint64_t random_seed) {
    ParseResult res;
    json j = json::parse(body, nullptr, false);
    if (j.is_discarded()) {
        res.error = bad({}, "We could not parse the JSON body of your request: it is not valid JSON.", "invalid_json");
        return res;
    }
    if (!j.is_object()) {
        res.error = bad({}, "The request body must be a JSON object.", "invalid_json");
        return res;
    }
    auto fail = [&](ApiError e) {
        res.error = std::move(e);
        return res;
    };

    auto model = j.find("model");
    if (model == j.end() || !model->is_string()) return fail(bad("model", "'model' is required and must be a string"));
    if (model->get<std::string>() != model_id)
        return fail(ApiError{404, "The model '" + model->get<std::string>() + "' does not exist; this server serves '" +
                                      model_id + "'.",
                             "invalid_request_error", "model", "model_not_found"});

    ChatRequest r;
    auto messages = j.find("messages");
    if (messages == j.end() || !messages->is_array() || messages->empty())
        return fail(bad("messages", "'messages' is required and must be a non-empty array"));
    for (size_t i = 0; i < messages->size(); ++i) {
        const json& m = (*messages)[i];
        const std::string param = "messages[" + std::to_string(i) + "]";
        if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
            return fail(bad(param, "'" + param + "' must be an object with a string 'role'"));
        std::string role = m["role"].get<std::string>();
        if (role == "developer") role = "system";
        if (role != "system" && role != "user" && role != "assistant" && role != "tool")
            return fail(bad(param + ".role", "'" + param + ".role' must be system, developer, user, assistant or tool"));
        ChatMessage msg{role, {}};
        if (auto e = content_text(m.contains("content") ? m["content"] : json(nullptr), i, msg.content)) return fail(*e);
        r.gen.messages.push_back(std::move(msg));
    }

    SamplingParams& s = r.gen.sampling;
    s.seed = random_seed;
    double v = s.temperature;
    if (auto e = number(j, "temperature", 0.0, 2.0, v)) return fail(*e);
    s.temperature = float(v);
    v = s.top_p;
    if (auto e = number(j, "top_p", 0.0, 1.0, v)) return fail(*e);
    if (v <= 0.0) return fail(bad("top_p", "'top_p' must be greater than 0"));
    s.top_p = float(v);
    v = s.min_p;
    if (auto e = number(j, "min_p", 0.0, 1.0, v)) return fail(*e);
    s.min_p = float(v);
    v = s.repetition_penalty;
    if (auto e = number(j, "repetition_penalty", 0.01, 10.0, v)) return fail(*e);
    s.repetition_penalty = float(v);
    v = s.frequency_penalty;
    if (auto e = number(j, "frequency_penalty", -2.0, 2.0, v)) return fail(*e);
    s.frequency_penalty = float(v);
    v = s.presence_penalty;
    if (auto e = number(j, "presence_penalty", -2.0, 2.0, v)) return fail(*e);
    s.presence_penalty = float(v);
    int64_t n = s.top_k;
    bool given = false;
    if (auto e = integer(j, "top_k", -1, 1 << 20, n, given)) return fail(*e);
    s.top_k = int32_t(n < 0 ? 0 : n);  // vLLM's -1 = off
    n = 0;
    given = false;
    if (auto e = integer(j, "seed", INT64_MIN, INT64_MAX, n, given)) return fail(*e);
    if (given) s.seed = uint64_t(n);

    // max_completion_tokens (current OpenAI name) wins over max_tokens (deprecated name).
    n = 0;
    given = false;
    if (auto e = integer(j, "max_tokens", 1, INT32_MAX, n, given)) return fail(*e);
    if (auto e = integer(j, "max_completion_tokens", 1, INT32_MAX, n, given)) return fail(*e);
    if (given) {
        r.gen.max_new_tokens = int32_t(n);
        r.max_tokens_given = true;
    }
    n = 1;
    given = false;
    if (auto e = integer(j, "n", 1, 1, n, given)) return fail(bad("n", "only n = 1 is supported"));

    if (auto it = j.find("stop"); it != j.end() && !it->is_null()) {
        if (it->is_string()) {
            r.gen.stop.push_back(it->get<std::string>());
        } else if (it->is_array() && it->size() <= 16) {
            for (const auto& x : *it) {
                if (!x.is_string()) return fail(bad("stop", "'stop' must be a string or an array of strings"));
                r.gen.stop.push_back(x.get<std::string>());
            }
        } else {
            return fail(bad("stop", "'stop' must be a string or an array of at most 16 strings"));
        }
        for (const auto& x : r.gen.stop)
            if (x.empty()) return fail(bad("stop", "stop strings must not be empty"));
    }

    // OpenAI's JSON mode: {"type": "json_object"} keeps the answer one JSON object;
    // {"type": "text"} is the default. Schemas are not supported.
    if (auto it = j.find("response_format"); it != j.end() && !it->is_null()) {
        if (!it->is_object() || !it->contains("type") || !(*it)["type"].is_string())
            return fail(bad("response_format", "'response_format' must be an object with a string 'type'"));
        const std::string type = (*it)["type"].get<std::string>();
        if (type == "json_object") r.gen.response_format = ResponseFormat::JsonObject;
        else if (type == "json_schema")
            return fail(bad("response_format", "'response_format' type 'json_schema' is not supported; "
                                               "'json_object' keeps the answer one JSON object"));
        else if (type != "text")
            return fail(bad("response_format", "'response_format.type' must be 'text' or 'json_object'"));
    }

    // vLLM's extras: continue the final (assistant) message instead of answering it.
    bool add_generation_prompt = true;
    if (auto e = boolean(j, "add_generation_prompt", add_generation_prompt, "add_generation_prompt")) return fail(*e);
    if (auto e = boolean(j, "continue_final_message", r.gen.continue_final_message, "continue_final_message"))
        return fail(*e);
    if (r.gen.continue_final_message && add_generation_prompt && j.contains("add_generation_prompt"))
        return fail(bad("continue_final_message", "'continue_final_message' and 'add_generation_prompt' cannot both be true"));
    if (!r.gen.continue_final_message && !add_generation_prompt)
        return fail(bad("add_generation_prompt", "'add_generation_prompt' false is only supported with "
                                                 "'continue_final_message' true"));
    if (r.gen.continue_final_message && r.gen.messages.back().role != "assistant")
        return fail(bad("continue_final_message", "'continue_final_message' needs the last message to be the "
                                                  "assistant's (the answer to continue)"));

    // OpenAI's logprobs: true for each token's log-probability, top_logprobs (0..20) for
    // the most likely tokens of each step too (which needs logprobs true).
    bool logprobs = false;
    if (auto e = boolean(j, "logprobs", logprobs, "logprobs")) return fail(*e);
    n = 0;
    given = false;
    if (auto e = integer(j, "top_logprobs", 0, k_max_top_logprobs, n, given)) return fail(*e);
    if (given && !logprobs)
        return fail(bad("top_logprobs", "'top_logprobs' needs 'logprobs' to be true"));
    r.gen.logprobs = logprobs ? int32_t(n) : -1;

    if (auto e = boolean(j, "stream", r.stream, "stream")) return fail(*e);
    if (auto it = j.find("stream_options"); it != j.end() && !it->is_null()) {
        if (!it->is_object()) return fail(bad("stream_options", "'stream_options' must be an object"));
        if (auto e = boolean(*it, "include_usage", r.include_usage, "stream_options.include_usage")) return fail(*e);
    }
    if (auto it = j.find("cetus"); it != j.end() && !it->is_null()) {
        if (!it->is_object()) return fail(bad("cetus", "'cetus' must be an object"));
        if (auto e = boolean(*it, "routing", r.cetus_routing, "cetus.routing")) return fail(*e);
        if (auto e = boolean(*it, "stats", r.cetus_stats, "cetus.stats")) return fail(*e);
        if (auto e = boolean(*it, "mtp", r.gen.mtp, "cetus.mtp")) return fail(*e);
        int64_t d = r.gen.n_draft;
        bool g = false;
        if (auto e = integer(*it, "n_draft", 1, 8, d, g)) return fail(*e);
        r.gen.n_draft = int32_t(d);
    }
    res.request = std::move(r);
    return res;
}

const char* openai_finish_reason(FinishReason r) noexcept {
    switch (r) {
    case FinishReason::Eos:
    case FinishReason::Stop: return "stop";
    case FinishReason::Length:
    case FinishReason::ContextFull: return "length";
    case FinishReason::Cancelled: break;
    }
    return "cancelled";
}

json usage_json(const GenerationStats& s) {
    return {{"prompt_tokens", s.prompt_tokens},
            {"completion_tokens", s.generated_tokens},
            {"total_tokens", s.prompt_tokens + s.generated_tokens}};
}

json routing_ids_json(int32_t n_layers, int32_t top_k, const std::vector<int32_t>& ids) {
    json out = json::array();
    for (int32_t l = 0; l < n_layers && ids.size() >= size_t(n_layers) * size_t(top_k); ++l)
        out.push_back(std::vector<int32_t>(ids.begin() + l * top_k, ids.begin() + (l + 1) * top_k));
    return out;
}

json routing_weights_json(int32_t n_layers, int32_t top_k, const std::vector<float>& weights) {
    json out = json::array();
    for (int32_t l = 0; l < n_layers && weights.size() >= size_t(n_layers) * size_t(top_k); ++l)
        out.push_back(std::vector<float>(weights.begin() + l * top_k, weights.begin() + (l + 1) * top_k));
    return out;
}

namespace {
json base(const ResponseHeader& h, const char* object) {
    return {{"id", h.id},
            {"object", object},
            {"created", h.created},
            {"model", h.model},
            {"system_fingerprint", std::string("cetus-") + CETUS_VERSION}};
}
}  // namespace

json chunk_json(const ResponseHeader& h, json delta, const char* finish_reason) {
    json j = base(h, "chat.completion.chunk");
    j["choices"] = json::array({{{"index", 0},
                                 {"delta", std::move(delta)},
                                 {"logprobs", nullptr},
                                 {"finish_reason", finish_reason ? json(finish_reason) : json(nullptr)}}});
    return j;
}

json usage_chunk_json(const ResponseHeader& h, const GenerationStats& s) {
    json j = base(h, "chat.completion.chunk");
    j["choices"] = json::array();
    j["usage"] = usage_json(s);
    return j;
}

json completion_json(const ResponseHeader& h, const std::string& text, FinishReason finish, const GenerationStats& s) {
    json j = base(h, "chat.completion");
    j["choices"] = json::array({{{"index", 0},
                                 {"message", {{"role", "assistant"}, {"content", text}}},
                                 {"logprobs", nullptr},
                                 {"finish_reason", openai_finish_reason(finish)}}});
    j["usage"] = usage_json(s);
    return j;
}

json model_json(const std::string& model_id, int64_t created, int64_t context_length) {
    return {{"id", model_id}, {"object", "model"}, {"created", created}, {"owned_by", "cetus"},
            {"max_model_len", context_length}};
}

json models_json(const std::string& model_id, int64_t created, int64_t context_length) {
    return {{"object", "list"}, {"data", json::array({model_json(model_id, created, context_length)})}};
}

}  // namespace cetus::cli::serve
