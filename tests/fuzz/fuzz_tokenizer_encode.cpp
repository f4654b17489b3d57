// libFuzzer target: encoding arbitrary bytes with DeepSeek-V3's real tokenizer (the test
// fixture in tests/data; CETUS_FUZZ_TOKENIZER_DIR overrides the folder). The first byte picks
// allow_special, or a chat (check_chat). Checks, trapping on failure: valid UTF-8
// round-trips exactly; the streaming detokenizer's pieces are complete UTF-8 and add up
// to decode(ids).
#include "cetus/error.h"
#include "cetus/tokenizer.h"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace {

const cetus::Tokenizer& tokenizer() {
    static const cetus::Tokenizer tok = [] {
        if (const char* dir = std::getenv("CETUS_FUZZ_TOKENIZER_DIR"))
            return cetus::Tokenizer::load(dir);
        // The fixture beside this source file: tests/data/tokenizer/deepseek-v3.
        return cetus::Tokenizer::load(std::filesystem::path(__FILE__).parent_path() / ".." /
                                      "data" / "tokenizer" / "deepseek-v3");
    }();
    return tok;
}

// Well-formed UTF-8 (Unicode Table 3-7).
bool valid_utf8(std::string_view s) {
    size_t i = 0;
    while (i < s.size()) {
        const auto b = static_cast<unsigned char>(s[i]);
        const size_t n = b < 0x80                 ? 1
                         : b >= 0xC2 && b <= 0xDF ? 2
                         : b >= 0xE0 && b <= 0xEF ? 3
                         : b >= 0xF0 && b <= 0xF4 ? 4
                                                  : 0;
        if (n == 0 || i + n > s.size()) return false;
        const auto b1 = static_cast<unsigned char>(s[i + (n > 1 ? 1 : 0)]);
        if ((b == 0xE0 && b1 < 0xA0) || (b == 0xED && b1 > 0x9F) || (b == 0xF0 && b1 < 0x90) ||
            (b == 0xF4 && b1 > 0x8F)) {
            return false;
        }
        for (size_t k = 1; k < n; ++k) {
            if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
        }
        i += n;
    }
    return true;
}

// Bit 1 of the first byte: the rest is a chat (messages split at 0x1E, roles in turn
// system, user, assistant, tool; bit 2 continues a final answer) through encode_chat:
// the ids spell the rendered text, and "<｜User｜>" appears once per user message and
// otherwise only from assistants' text (the model's own), never from what a user, a
// tool or a system prompt wrote.
void check_chat(const cetus::Tokenizer& tok, std::string_view rest, bool continue_final) {
    static const char* roles[] = {"system", "user", "assistant", "tool"};
    std::vector<cetus::ChatMessage> messages;
    size_t users = 0, in_answers = 0;
    for (size_t i = 0, start = 0; i <= rest.size(); ++i) {
        if (i < rest.size() && rest[i] != '\x1e') continue;
        const char* role = roles[messages.size() % 4];
        const std::string_view text = rest.substr(start, i - start);
        users += role == std::string_view("user");
        if (role == std::string_view("assistant"))
            for (size_t at = text.find("<｜User｜>"); at != std::string_view::npos; at = text.find("<｜User｜>", at + 1))
                ++in_answers;
        messages.push_back({role, std::string(text)});
        start = i + 1;
    }
    continue_final = continue_final && messages.back().role == "assistant";
    const auto prompt = cetus::render_chat_prompt(tok.chat_template(), messages, !continue_final, continue_final);
    const auto ids = tok.encode_prompt(prompt);
    const std::string decoded = tok.decode(ids);
    if (!valid_utf8(decoded)) __builtin_trap();
    if (valid_utf8(prompt.text) && decoded != prompt.text) __builtin_trap();
    static const int32_t user_id = tok.encode("<｜User｜>", true).at(0);
    size_t n = 0;
    for (int32_t id : ids) n += id == user_id;
    if (n < users || n > users + in_answers) __builtin_trap();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    const cetus::Tokenizer& tok = tokenizer();
    const bool allow_special = (data[0] & 1) != 0;
    const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
    if (data[0] & 2) {
        check_chat(tok, text, (data[0] & 4) != 0);
        return 0;
    }

    const auto ids = tok.encode(text, allow_special);
    const std::string decoded = tok.decode(ids);
    if (!valid_utf8(decoded)) __builtin_trap();
    if (valid_utf8(text) && decoded != text) __builtin_trap();

    cetus::StreamDetokenizer stream(tok);
    std::string streamed;
    for (const int32_t id : ids) {
        const std::string piece = stream.push(id);
        if (!valid_utf8(piece)) __builtin_trap();
        streamed += piece;
    }
    streamed += stream.flush();
    if (streamed != decoded) __builtin_trap();
    return 0;
}
