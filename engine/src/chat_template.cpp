// DeepSeek chat templates rendered natively instead of by a Jinja engine: the family is
// recognised by marker strings of the model's own template, and each renderer reproduces
// that template's output for plain text messages (tool *calls* are out of scope; tool
// outputs follow V3's template). The fixtures of tests/tokenizer come from the Jinja originals.
#include "cetus/tokenizer.h"

#include "cetus/error.h"

#include "log.h"

namespace cetus {

namespace {

constexpr std::string_view k_user = "<｜User｜>";
constexpr std::string_view k_assistant = "<｜Assistant｜>";
constexpr std::string_view k_think_end = "</think>";
// V3 and R1 templates write the end-of-sentence token literally, not as eos_token.
constexpr std::string_view k_eos = "<｜end▁of▁sentence｜>";

bool contains(std::string_view haystack, std::string_view needle) {
    return haystack.find(needle) != std::string_view::npos;
}

void warn(const std::string& message) {
    engine_log().warn("{}", message);
}

// Builds a ChatPrompt: markup() is the template's own text, body() text from a user,
// a tool, a system prompt or a role (kept from matching added tokens), answer() an
// assistant's text (the model's own output), whose end a continued answer is cut at.
struct PromptBuilder {
    ChatPrompt p;
    size_t answer_end = 0;
    PromptBuilder& markup(std::string_view s) {
        p.text.append(s);
        return *this;
    }
    PromptBuilder& body(std::string_view s) {
        p.content.emplace_back(p.text.size(), p.text.size() + s.size());
        p.text.append(s);
        return *this;
    }
    PromptBuilder& answer(std::string_view s) {
        p.text.append(s);
        answer_end = p.text.size();
        return *this;
    }
};

// R1 resends only the answer of earlier turns: content.split('</think>')[-1].
std::string_view without_reasoning(std::string_view content) {
    const size_t at = content.rfind(k_think_end);
    return at == std::string_view::npos ? content : content.substr(at + k_think_end.size());
}

// continue_final: the last message is an answer being continued. Its text is the
// model's own output, so reasoning is kept (earlier answers lose theirs), and an R1
// template whose generation prompt opens "<think>\n" gets that first, as when the
// answer began: the prompt is the generation prompt followed by the answer so far.
void render_deepseek(PromptBuilder& out, const ChatTemplate& t, std::span<const ChatMessage> messages,
                     bool add_generation_prompt, bool continue_final) {
    const bool r1 = t.family == ChatFamily::DeepSeekR1;
    out.markup(t.bos_token);
    // The system messages, joined (or the last one), come first.
    bool first_system = true;
    const ChatMessage* last_system = nullptr;
    for (const auto& m : messages) {
        if (m.role != "system") continue;
        if (!t.joins_system) {
            last_system = &m;
        } else {
            if (!first_system) out.markup("\n\n");
            out.body(m.content);
            first_system = false;
        }
    }
    if (last_system) out.body(last_system->content);

    bool is_tool = false;
    bool is_output_first = true; // never reset: the published templates do not either
    bool is_last_user = false;
    for (const auto& m : messages) {
        const bool continued = continue_final && &m == &messages.back();
        if (m.role == "user") {
            is_tool = false;
            is_last_user = true;
            out.markup(k_user).body(m.content);
            if (t.assistant_after_user) out.markup(k_assistant);
        } else if (m.role == "assistant") {
            is_last_user = false;
            if (is_tool) {
                // The 0528-style templates strip reasoning before this branch, R1's first one
                // after.
                const std::string_view c =
                    r1 && t.assistant_after_user && !continued ? without_reasoning(m.content) : m.content;
                out.markup("<｜tool▁outputs▁end｜>").answer(c).markup(k_eos);
                is_tool = false;
            } else {
                const std::string_view c = r1 && !continued ? without_reasoning(m.content) : m.content;
                if (!t.assistant_after_user) out.markup(k_assistant);
                if (continued && t.opens_think && !c.starts_with("<think>")) out.markup("<think>\n");
                out.answer(c).markup(k_eos);
            }
        } else if (m.role == "tool") {
            is_last_user = false;
            is_tool = true;
            if (is_output_first) {
                out.markup("<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>");
                is_output_first = false;
            } else {
                out.markup("\n<｜tool▁output▁begin｜>");
            }
            out.body(m.content).markup("<｜tool▁output▁end｜>");
        }
    }
    if (is_tool) out.markup("<｜tool▁outputs▁end｜>");
    if (add_generation_prompt && !is_tool && !(t.assistant_after_user && is_last_user)) {
        out.markup(k_assistant);
        if (t.opens_think) out.markup("<think>\n");
    }
}

void render_v2(PromptBuilder& out, const ChatTemplate& t, std::span<const ChatMessage> messages,
               bool add_generation_prompt) {
    out.markup(t.bos_token);
    for (const auto& m : messages) {
        if (m.role == "user") {
            out.markup("User: ").body(m.content).markup("\n\n");
        } else if (m.role == "assistant") {
            out.markup("Assistant: ").answer(m.content).markup(t.eos_token);
        } else if (m.role == "system") {
            out.body(m.content).markup("\n\n");
        }
    }
    if (add_generation_prompt) out.markup("Assistant:");
}

void render_moonlight(PromptBuilder& out, std::span<const ChatMessage> messages, bool add_generation_prompt) {
    if (!messages.empty() && messages.front().role != "system") {
        out.markup("<|im_system|>system<|im_middle|>You are a helpful assistant provided by "
                   "Moonshot-AI.<|im_end|>");
    }
    for (const auto& m : messages) {
        if (m.role == "system") out.markup("<|im_system|>");
        if (m.role == "user") out.markup("<|im_user|>");
        if (m.role == "assistant") out.markup("<|im_assistant|>");
        out.body(m.role).markup("<|im_middle|>");
        if (m.role == "assistant") out.answer(m.content);
        else out.body(m.content);
        out.markup("<|im_end|>");
    }
    if (add_generation_prompt) out.markup("<|im_assistant|>assistant<|im_middle|>");
}

} // namespace

const char* chat_family_name(ChatFamily family) noexcept {
    switch (family) {
    case ChatFamily::DeepSeekV3:
        return "deepseek-v3";
    case ChatFamily::DeepSeekR1:
        return "deepseek-r1";
    case ChatFamily::DeepSeekV2:
        return "deepseek-v2";
    case ChatFamily::Moonlight:
        return "moonlight";
    }
    return "unknown";
}

ChatTemplate detect_chat_template(std::string_view source) {
    ChatTemplate t;
    if (contains(source, k_user)) {
        t.family = contains(source, k_think_end) ? ChatFamily::DeepSeekR1 : ChatFamily::DeepSeekV3;
        t.recognized = true;
        t.joins_system = contains(source, "is_first_sp");
        t.assistant_after_user = contains(source, "is_last_user");
        t.opens_think = contains(source, "<｜Assistant｜><think>");
    } else if (contains(source, "<|im_user|>")) {
        t.family = ChatFamily::Moonlight;
        t.recognized = true;
    } else if (contains(source, "User: ")) {
        t.family = ChatFamily::DeepSeekV2;
        t.recognized = true;
    } else if (source.empty()) {
        warn("tokenizer_config.json has no chat_template; rendering prompts in the DeepSeek-V3 "
             "form");
    } else {
        warn("chat_template not recognised (no DeepSeek or Moonlight markers); rendering prompts "
             "in the DeepSeek-V3 form");
    }
    return t;
}

ChatPrompt render_chat_prompt(const ChatTemplate& tmpl, std::span<const ChatMessage> messages,
                              bool add_generation_prompt, bool continue_final_message) {
    if (continue_final_message) {
        if (messages.empty() || messages.back().role != "assistant")
            throw Error(ErrorCode::BadRequest, "continue_final_message needs an assistant message last (the answer to "
                                               "continue)");
        add_generation_prompt = false;
    }
    PromptBuilder out;
    switch (tmpl.family) {
    case ChatFamily::DeepSeekV2:
        render_v2(out, tmpl, messages, add_generation_prompt);
        break;
    case ChatFamily::Moonlight:
        render_moonlight(out, messages, add_generation_prompt);
        break;
    case ChatFamily::DeepSeekV3:
    case ChatFamily::DeepSeekR1:
        render_deepseek(out, tmpl, messages, add_generation_prompt, continue_final_message);
        break;
    }
    // Every template writes the final (assistant) message's text last among the answers,
    // followed only by markup (its end of turn): cut there.
    if (continue_final_message) out.p.text.resize(out.answer_end);
    return std::move(out.p);
}

std::string render_chat(const ChatTemplate& tmpl, std::span<const ChatMessage> messages,
                        bool add_generation_prompt) {
    return render_chat_prompt(tmpl, messages, add_generation_prompt).text;
}

} // namespace cetus
