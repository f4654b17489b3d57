// DeepSeek chat templates rendered natively instead of by a Jinja engine: the family is
// recognised by marker strings of the model's own template, and each renderer reproduces
// that template's output for plain text messages (tool *calls* are out of scope; tool
// outputs follow V3's template). The fixtures of tests/tokenizer come from the Jinja originals.
#include "cetus/tokenizer.h"

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

// R1 resends only the answer of earlier turns: content.split('</think>')[-1].
std::string_view without_reasoning(std::string_view content) {
    const size_t at = content.rfind(k_think_end);
    return at == std::string_view::npos ? content : content.substr(at + k_think_end.size());
}

std::string render_deepseek(const ChatTemplate& t, std::span<const ChatMessage> messages,
                            bool add_generation_prompt) {
    const bool r1 = t.family == ChatFamily::DeepSeekR1;
    std::string out = t.bos_token;
    std::string system;
    bool first_system = true;
    for (const auto& m : messages) {
        if (m.role != "system") continue;
        if (!t.joins_system) {
            system = m.content;
        } else {
            if (!first_system) system += "\n\n";
            system += m.content;
            first_system = false;
        }
    }
    out += system;

    bool is_tool = false;
    bool is_output_first = true; // never reset: the published templates do not either
    bool is_last_user = false;
    for (const auto& m : messages) {
        if (m.role == "user") {
            is_tool = false;
            is_last_user = true;
            out.append(k_user).append(m.content);
            if (t.assistant_after_user) out.append(k_assistant);
        } else if (m.role == "assistant") {
            is_last_user = false;
            if (is_tool) {
                // The 0528-style templates strip reasoning before this branch, R1's first one
                // after.
                const std::string_view c =
                    r1 && t.assistant_after_user ? without_reasoning(m.content) : m.content;
                out.append("<｜tool▁outputs▁end｜>").append(c).append(k_eos);
                is_tool = false;
            } else {
                const std::string_view c = r1 ? without_reasoning(m.content) : m.content;
                if (!t.assistant_after_user) out.append(k_assistant);
                out.append(c).append(k_eos);
            }
        } else if (m.role == "tool") {
            is_last_user = false;
            is_tool = true;
            if (is_output_first) {
                out.append("<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>");
                is_output_first = false;
            } else {
                out.append("\n<｜tool▁output▁begin｜>");
            }
            out.append(m.content).append("<｜tool▁output▁end｜>");
        }
    }
    if (is_tool) out.append("<｜tool▁outputs▁end｜>");
    if (add_generation_prompt && !is_tool && !(t.assistant_after_user && is_last_user)) {
        out.append(k_assistant);
        if (t.opens_think) out.append("<think>\n");
    }
    return out;
}

std::string render_v2(const ChatTemplate& t, std::span<const ChatMessage> messages,
                      bool add_generation_prompt) {
    std::string out = t.bos_token;
    for (const auto& m : messages) {
        if (m.role == "user") {
            out.append("User: ").append(m.content).append("\n\n");
        } else if (m.role == "assistant") {
            out.append("Assistant: ").append(m.content).append(t.eos_token);
        } else if (m.role == "system") {
            out.append(m.content).append("\n\n");
        }
    }
    if (add_generation_prompt) out.append("Assistant:");
    return out;
}

std::string render_moonlight(std::span<const ChatMessage> messages, bool add_generation_prompt) {
    std::string out;
    if (!messages.empty() && messages.front().role != "system") {
        out.append("<|im_system|>system<|im_middle|>You are a helpful assistant provided by "
                   "Moonshot-AI.<|im_end|>");
    }
    for (const auto& m : messages) {
        if (m.role == "system") out.append("<|im_system|>");
        if (m.role == "user") out.append("<|im_user|>");
        if (m.role == "assistant") out.append("<|im_assistant|>");
        out.append(m.role).append("<|im_middle|>").append(m.content).append("<|im_end|>");
    }
    if (add_generation_prompt) out.append("<|im_assistant|>assistant<|im_middle|>");
    return out;
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

std::string render_chat(const ChatTemplate& tmpl, std::span<const ChatMessage> messages,
                        bool add_generation_prompt) {
    switch (tmpl.family) {
    case ChatFamily::DeepSeekV2:
        return render_v2(tmpl, messages, add_generation_prompt);
    case ChatFamily::Moonlight:
        return render_moonlight(messages, add_generation_prompt);
    case ChatFamily::DeepSeekV3:
    case ChatFamily::DeepSeekR1:
        break;
    }
    return render_deepseek(tmpl, messages, add_generation_prompt);
}

} // namespace cetus
