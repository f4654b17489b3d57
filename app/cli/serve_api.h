// The OpenAI-compatible protocol of `cetus-cli serve`, without any networking:
// parsing a /v1/chat/completions body into an engine request (or an OpenAI-style
// error), and building the JSON the server sends back (whole completions,
// chat.completion.chunk objects, usage, the `cetus` extension, error objects).
#pragma once

#include "cetus/generate.h"
#include "cli_util.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace cetus::cli::serve {

// An error as OpenAI reports it: HTTP status and {"error": {message, type, param, code}}.
struct ApiError {
    int status = 400;
    std::string message;
    std::string type = "invalid_request_error";
    std::string param;  // empty: null
    std::string code;   // empty: null
};
nlohmann::json error_json(const ApiError& e);

// What a chat completion request asks for, checked and ready for the engine.
struct ChatRequest {
    GenerateRequest gen;  // messages, sampling, stop, max_new_tokens (cancel set by the server)
    bool max_tokens_given = false;
    bool stream = false;
    bool include_usage = false;          // stream_options.include_usage
    bool cetus_routing = false;          // "cetus": {"routing": true}
    bool cetus_stats = false;            // "cetus": {"stats": true}
    // /v1/completions (text completion): the prompt as it is, no chat template. Either
    // prompt_text (tokenized by the server) or gen.prompt_ids.
    bool completion = false;
    std::optional<std::string> prompt_text;
    std::optional<std::string> suffix;  // fill in the middle: the text after the gap
    bool echo = false;                  // the answer's text starts with the prompt's
};

// Parses and validates a request body for the model `model_id`. Returns the request or
// the error to send (400 malformed JSON or fields, 404 unknown model).
struct ParseResult {
    std::optional<ChatRequest> request;
    ApiError error;
};
ParseResult parse_chat_request(const std::string& body, const std::string& model_id, uint64_t random_seed);
// The same for a /v1/completions body (prompt, suffix, echo, logprobs as a number).
ParseResult parse_completion_request(const std::string& body, const std::string& model_id, uint64_t random_seed);

// "stop" for Eos/Stop, "length" for Length/ContextFull, "cancelled" otherwise.
const char* openai_finish_reason(FinishReason r) noexcept;

nlohmann::json usage_json(const GenerationStats& s);
// routing [n_moe_layers][top_k] expert ids and weights of one token event.
nlohmann::json routing_ids_json(int32_t n_layers, int32_t top_k, const std::vector<int32_t>& ids);
nlohmann::json routing_weights_json(int32_t n_layers, int32_t top_k, const std::vector<float>& weights);

// The fixed part of every response object of one request.
struct ResponseHeader {
    std::string id;       // chatcmpl-...
    int64_t created = 0;  // unix seconds
    std::string model;
};
// A chat.completion.chunk with one choice; delta and finish_reason as given (null when empty).
nlohmann::json chunk_json(const ResponseHeader& h, nlohmann::json delta, const char* finish_reason);
// The usage-only final chunk (choices empty).
nlohmann::json usage_chunk_json(const ResponseHeader& h, const GenerationStats& s);
// A whole chat.completion.
nlohmann::json completion_json(const ResponseHeader& h, const std::string& text, FinishReason finish,
                               const GenerationStats& s);
// Text completions (object "text_completion"): a chunk with one choice's text, the
// usage-only final chunk, and a whole completion.
nlohmann::json text_chunk_json(const ResponseHeader& h, const std::string& text, const char* finish_reason,
                               nlohmann::json logprobs = nullptr);
nlohmann::json text_usage_chunk_json(const ResponseHeader& h, const GenerationStats& s);
nlohmann::json text_completion_json(const ResponseHeader& h, const std::string& text, FinishReason finish,
                                    const GenerationStats& s, nlohmann::json logprobs = nullptr);
// The legacy API's logprobs object ({tokens, token_logprobs, top_logprobs, text_offset})
// from chat-style entries ({token, logprob, bytes, top_logprobs}); text_offset counts
// characters from `offset`, which is moved past the entries' text.
nlohmann::json legacy_logprobs_json(const nlohmann::json& entries, int64_t& offset);
// context_length: the tokens a request's prompt and answer may take together
// (`max_model_len`, as vLLM reports it).
nlohmann::json models_json(const std::string& model_id, int64_t created, int64_t context_length);
nlohmann::json model_json(const std::string& model_id, int64_t created, int64_t context_length);

// JSON text for the wire: invalid UTF-8 replaced, never throws.
std::string dump(const nlohmann::json& j);

}  // namespace cetus::cli::serve
