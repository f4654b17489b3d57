// libFuzzer target for the body of a POST /v1/chat/completions request
// (parse_chat_request, what `cetus-cli serve` runs on every request before the
// engine sees it), and of a POST /v1/completions one (parse_completion_request). Any body must give either a request whose every field is in
// the range the engine accepts, or an OpenAI-style 400/404 error with a message;
// an exception escaping the parser (the server would answer 500) or a sanitizer
// report is a finding.
#include "serve_api.h"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

namespace {

void require(bool ok) {
    if (!ok) __builtin_trap();
}

void check(const cetus::cli::serve::ParseResult& r, bool chat) {
    using namespace cetus::cli::serve;
    if (!r.request) {
        require(r.error.status == 400 || r.error.status == 404);
        require(!r.error.message.empty());
        require(!dump(error_json(r.error)).empty());  // names from the body may be invalid UTF-8
        return;
    }
    const ChatRequest& q = *r.request;
    const cetus::SamplingParams& s = q.gen.sampling;
    if (chat) {
        require(!q.completion && !q.gen.messages.empty());
        for (const auto& m : q.gen.messages)
            require(m.role == "system" || m.role == "user" || m.role == "assistant" || m.role == "tool");
    } else {
        // A text prompt or ids (in int32 range), a suffix only with text, never echo with it.
        require(q.completion && q.gen.messages.empty() && (q.prompt_text.has_value() != !q.gen.prompt_ids.empty()));
        for (int32_t id : q.gen.prompt_ids) require(id >= 0);
        require(!q.suffix || (q.prompt_text && !q.echo));
        require(q.gen.logprobs >= -1 && q.gen.logprobs <= cetus::k_max_top_logprobs);
    }
    require(std::isfinite(s.temperature) && s.temperature >= 0 && s.temperature <= 2);
    require(std::isfinite(s.top_p) && s.top_p > 0 && s.top_p <= 1);
    require(std::isfinite(s.min_p) && s.min_p >= 0 && s.min_p <= 1);
    require(std::isfinite(s.repetition_penalty) && s.repetition_penalty >= 0.01f && s.repetition_penalty <= 10);
    require(s.frequency_penalty >= -2 && s.frequency_penalty <= 2 && s.presence_penalty >= -2 && s.presence_penalty <= 2);
    require(cetus::sampling_params_valid(s));
    require(s.top_k >= 0);
    require(q.gen.max_new_tokens >= 1);
    require(q.gen.n_draft >= 1 && q.gen.n_draft <= 8);
    require(q.gen.stop.size() <= 16);
    for (const auto& stop : q.gen.stop) require(!stop.empty());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace cetus::cli::serve;
    const std::string body(reinterpret_cast<const char*>(data), size);
    check(parse_chat_request(body, "cetus-demo", 42), true);
    check(parse_completion_request(body, "cetus-demo", 42), false);
    return 0;
}
