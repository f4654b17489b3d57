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

// The body as a JSON object for the model `model_id`, or the error to send.
std::optional<json> parse_body(const std::string& body, const std::string& model_id, ApiError& error) {
    json j = json::parse(body, nullptr, false);
    if (j.is_discarded()) {
        error = bad({}, "We could not parse the JSON body of your request: it is not valid JSON.", "invalid_json");
        return std::nullopt;
    }
    if (!j.is_object()) {
        error = bad({}, "The request body must be a JSON object.", "invalid_json");
        return std::nullopt;
    }
    auto model = j.find("model");
    if (model == j.end() || !model->is_string()) {
        error = bad("model", "'model' is required and must be a string");
        return std::nullopt;
    }
    if (model->get<std::string>() != model_id) {
        error = ApiError{404, "The model '" + model->get<std::string>() + "' does not exist; this server serves '" +
                                  model_id + "'.",
                         "invalid_request_error", "model", "model_not_found"};
        return std::nullopt;
    }
    return j;
}

// What chat and text completions share: sampling, length, n, stop, response_format,
// streaming and the cetus extension.
std::optional<ApiError> parse_options(const json& j, ChatRequest& r, uint64_t random_seed) {
    SamplingParams& s = r.gen.sampling;
    s.seed = random_seed;
    double v = s.temperature;
    if (auto e = number(j, "temperature", 0.0, 2.0, v)) return *e;
    s.temperature = float(v);
    v = s.top_p;
    if (auto e = number(j, "top_p", 0.0, 1.0, v)) return *e;
    if (v <= 0.0) return bad("top_p", "'top_p' must be greater than 0");
    s.top_p = float(v);
    v = s.min_p;
    if (auto e = number(j, "min_p", 0.0, 1.0, v)) return *e;
    s.min_p = float(v);
    v = s.repetition_penalty;
    if (auto e = number(j, "repetition_penalty", 0.01, 10.0, v)) return *e;
    s.repetition_penalty = float(v);
    v = s.frequency_penalty;
    if (auto e = number(j, "frequency_penalty", -2.0, 2.0, v)) return *e;
    s.frequency_penalty = float(v);
    v = s.presence_penalty;
    if (auto e = number(j, "presence_penalty", -2.0, 2.0, v)) return *e;
    s.presence_penalty = float(v);
    int64_t n = s.top_k;
    bool given = false;
    if (auto e = integer(j, "top_k", -1, 1 << 20, n, given)) return *e;
    s.top_k = int32_t(n < 0 ? 0 : n);  // vLLM's -1 = off
    n = 0;
    given = false;
    if (auto e = integer(j, "seed", INT64_MIN, INT64_MAX, n, given)) return *e;
    if (given) s.seed = uint64_t(n);

    // max_completion_tokens (current OpenAI name) wins over max_tokens (deprecated name).
    n = 0;
    given = false;
    if (auto e = integer(j, "max_tokens", 1, INT32_MAX, n, given)) return *e;
    if (auto e = integer(j, "max_completion_tokens", 1, INT32_MAX, n, given)) return *e;
    if (given) {
        r.gen.max_new_tokens = int32_t(n);
        r.max_tokens_given = true;
    }
    n = 1;
    given = false;
    if (auto e = integer(j, "n", 1, 1, n, given)) return bad("n", "only n = 1 is supported");

    if (auto it = j.find("stop"); it != j.end() && !it->is_null()) {
        if (it->is_string()) {
            r.gen.stop.push_back(it->get<std::string>());
        } else if (it->is_array() && it->size() <= 16) {
            for (const auto& x : *it) {
                if (!x.is_string()) return bad("stop", "'stop' must be a string or an array of strings");
                r.gen.stop.push_back(x.get<std::string>());
            }
        } else {
            return bad("stop", "'stop' must be a string or an array of at most 16 strings");
        }
        for (const auto& x : r.gen.stop)
            if (x.empty()) return bad("stop", "stop strings must not be empty");
    }

    // OpenAI's JSON mode: {"type": "json_object"} keeps the answer one JSON object;
    // {"type": "text"} is the default. Schemas are not supported.
    if (auto it = j.find("response_format"); it != j.end() && !it->is_null()) {
        if (!it->is_object() || !it->contains("type") || !(*it)["type"].is_string())
            return bad("response_format", "'response_format' must be an object with a string 'type'");
        const std::string type = (*it)["type"].get<std::string>();
        if (type == "json_object") r.gen.response_format = ResponseFormat::JsonObject;
        else if (type == "json_schema")
            return bad("response_format", "'response_format' type 'json_schema' is not supported; "
                                          "'json_object' keeps the answer one JSON object");
        else if (type != "text")
            return bad("response_format", "'response_format.type' must be 'text' or 'json_object'");
    }

    if (auto e = boolean(j, "stream", r.stream, "stream")) return *e;
    if (auto it = j.find("stream_options"); it != j.end() && !it->is_null()) {
        if (!it->is_object()) return bad("stream_options", "'stream_options' must be an object");
        if (auto e = boolean(*it, "include_usage", r.include_usage, "stream_options.include_usage")) return *e;
    }
    if (auto it = j.find("cetus"); it != j.end() && !it->is_null()) {
        if (!it->is_object()) return bad("cetus", "'cetus' must be an object");
        if (auto e = boolean(*it, "routing", r.cetus_routing, "cetus.routing")) return *e;
        if (auto e = boolean(*it, "stats", r.cetus_stats, "cetus.stats")) return *e;
        if (auto e = boolean(*it, "mtp", r.gen.mtp, "cetus.mtp")) return *e;
        if (auto e = boolean(*it, "lookup", r.gen.lookup, "cetus.lookup")) return *e;
        int64_t d = r.gen.n_draft;
        bool g = false;
        if (auto e = integer(*it, "n_draft", 1, 8, d, g)) return *e;
        // Looked-up drafts: up to 4 a step unless the request says (the generator starts
        // at one and doubles while they are accepted).
        r.gen.n_draft = int32_t(!g && r.gen.lookup ? k_lookup_default_drafts : d);
    }
    return std::nullopt;
}

}  // namespace

ParseResult parse_chat_request(const std::string& body, const std::string& model_id, uint64_t random_seed) {
    ParseResult res;
    auto fail = [&](ApiError e) {
        res.error = std::move(e);
        return res;
    };
    const std::optional<json> parsed = parse_body(body, model_id, res.error);
    if (!parsed) return res;
    const json& j = *parsed;

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

    if (auto e = parse_options(j, r, random_seed)) return fail(*e);
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
    int64_t n = 0;
    bool given = false;
    if (auto e = integer(j, "top_logprobs", 0, k_max_top_logprobs, n, given)) return fail(*e);
    if (given && !logprobs)
        return fail(bad("top_logprobs", "'top_logprobs' needs 'logprobs' to be true"));
    r.gen.logprobs = logprobs ? int32_t(n) : -1;

    res.request = std::move(r);
    return res;
}

ParseResult parse_completion_request(const std::string& body, const std::string& model_id, uint64_t random_seed) {
    ParseResult res;
    auto fail = [&](ApiError e) {
        res.error = std::move(e);
        return res;
    };
    const std::optional<json> parsed = parse_body(body, model_id, res.error);
    if (!parsed) return res;
    const json& j = *parsed;

    ChatRequest r;
    r.completion = true;
    auto prompt = j.find("prompt");
    if (prompt == j.end() || prompt->is_null())
        return fail(bad("prompt", "'prompt' is required: a string, or an array of token ids"));
    const json* text = &*prompt;
    if (prompt->is_array() && prompt->size() == 1 && (*prompt)[0].is_string()) text = &(*prompt)[0];
    if (text->is_string()) {
        r.prompt_text = text->get<std::string>();
    } else if (prompt->is_array() && !prompt->empty()) {
        for (const auto& id : *prompt) {
            if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
                return fail(bad("prompt", "'prompt' must be a string, one string in an array, or an array of token "
                                          "ids (several prompts in one request are not supported)"));
            r.gen.prompt_ids.push_back(int32_t(id.get<int64_t>()));
        }
    } else {
        return fail(bad("prompt", "'prompt' must be a non-empty string or array"));
    }
    if (auto it = j.find("suffix"); it != j.end() && !it->is_null()) {
        if (!it->is_string()) return fail(bad("suffix", "'suffix' must be a string"));
        if (!r.prompt_text) return fail(bad("suffix", "'suffix' needs a text prompt"));
        r.suffix = it->get<std::string>();
    }
    if (auto e = boolean(j, "echo", r.echo, "echo")) return fail(*e);
    if (r.echo && r.suffix) return fail(bad("echo", "'echo' and 'suffix' cannot be used together"));
    if (auto e = parse_options(j, r, random_seed)) return fail(*e);
    // The legacy API's logprobs: the number of most likely tokens per step (each token's
    // own log-probability always comes with them).
    int64_t n = 0;
    bool given = false;
    if (auto e = integer(j, "logprobs", 0, k_max_top_logprobs, n, given)) return fail(*e);
    r.gen.logprobs = given ? int32_t(n) : -1;
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

json text_chunk_json(const ResponseHeader& h, const std::string& text, const char* finish_reason, json logprobs) {
    json j = base(h, "text_completion");
    j["choices"] = json::array({{{"text", text},
                                 {"index", 0},
                                 {"logprobs", std::move(logprobs)},
                                 {"finish_reason", finish_reason ? json(finish_reason) : json(nullptr)}}});
    return j;
}

json text_usage_chunk_json(const ResponseHeader& h, const GenerationStats& s) {
    json j = base(h, "text_completion");
    j["choices"] = json::array();
    j["usage"] = usage_json(s);
    return j;
}

json text_completion_json(const ResponseHeader& h, const std::string& text, FinishReason finish,
                          const GenerationStats& s, json logprobs) {
    json j = text_chunk_json(h, text, openai_finish_reason(finish), std::move(logprobs));
    j["usage"] = usage_json(s);
    return j;
}

json legacy_logprobs_json(const json& entries, int64_t& offset) {
    json tokens = json::array(), token_logprobs = json::array(), top = json::array(), offsets = json::array();
    for (const json& e : entries) {
        const std::string token = e.value("token", std::string());
        tokens.push_back(token);
        token_logprobs.push_back(e.value("logprob", 0.0));
        json alternatives = json::object();
        if (auto it = e.find("top_logprobs"); it != e.end())
            for (const json& t : *it) alternatives[t.value("token", std::string())] = t.value("logprob", 0.0);
        top.push_back(std::move(alternatives));
        offsets.push_back(offset);
        for (unsigned char c : token) offset += (c & 0xC0) != 0x80;  // characters, as Python counts them
    }
    return {{"tokens", tokens}, {"token_logprobs", token_logprobs}, {"top_logprobs", top}, {"text_offset", offsets}};
}

json model_json(const std::string& model_id, int64_t created, int64_t context_length) {
    return {{"id", model_id}, {"object", "model"}, {"created", created}, {"owned_by", "cetus"},
            {"max_model_len", context_length}};
}

json models_json(const std::string& model_id, int64_t created, int64_t context_length) {
    return {{"object", "list"}, {"data", json::array({model_json(model_id, created, context_length)})}};
}

}  // namespace cetus::cli::serve
