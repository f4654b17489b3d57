// The tokenizer: byte-level BPE from a Hugging Face tokenizer.json, token for token equal
// to the `tokenizers` library, plus DeepSeek chat templates rendered natively. Loading
// validates everything and throws; afterwards a Tokenizer is immutable, cheap to copy
// (shared state) and safe to use from several threads. Moonlight's tiktoken.model is not read.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cetus {

struct ChatMessage {
    std::string role; // "system", "user", "assistant" or "tool"; other roles render nothing
    std::string content;
};

enum class ChatFamily { DeepSeekV3, DeepSeekR1, DeepSeekV2, Moonlight };

const char* chat_family_name(ChatFamily family) noexcept;

// What the model's Jinja template does, reduced to the choices our renderers make.
struct ChatTemplate {
    ChatFamily family = ChatFamily::DeepSeekV3;
    bool recognized = false;  // false: unknown or missing template, V3 form used
    bool joins_system = true; // V3/R1: system messages joined by "\n\n" (else the last wins)
    bool assistant_after_user = false; // V3-0324/R1-0528: "<｜Assistant｜>" follows every user turn
    bool opens_think = false;          // R1: the generation prompt ends with "<think>\n"
    std::string bos_token = "<｜begin▁of▁sentence｜>";
    std::string eos_token = "<｜end▁of▁sentence｜>";
};

// Picks the family from marker strings in a tokenizer_config.json chat_template. An
// unrecognised template yields the V3 form with recognized = false and a warning on the
// "engine" logger. Never throws.
ChatTemplate detect_chat_template(std::string_view jinja_source);

// A rendered chat prompt: the text the model's template would produce, and the byte
// ranges of it that must not become added tokens, in order: what users, tools and
// system prompts wrote, and the roles. (An assistant's text is the model's own
// output: markers in it, such as R1's "</think>", were tokens when it wrote them.)
struct ChatPrompt {
    std::string text;
    std::vector<std::pair<size_t, size_t>> content;  // [begin, end) byte offsets into text
};

// continue_final_message (the final message must be the assistant's): the prompt ends
// where that message's content ends, without its end-of-sentence token or a new
// generation prompt, so the model continues it (transformers' continue_final_message).
// With R1 templates the answer keeps its reasoning and, where the generation prompt
// opens "<think>\n", follows it (the answer is the model's raw output; transformers
// refuses such answers, or drops the "<think>\n"). Throws Error(BadRequest) when the
// final message is not an assistant message.
ChatPrompt render_chat_prompt(const ChatTemplate& tmpl, std::span<const ChatMessage> messages,
                              bool add_generation_prompt, bool continue_final_message = false);
// The text alone.
std::string render_chat(const ChatTemplate& tmpl, std::span<const ChatMessage> messages,
                        bool add_generation_prompt);

class Tokenizer {
  public:
    // Reads model_dir/tokenizer.json and, when present, model_dir/tokenizer_config.json
    // (BOS/EOS names, add_bos_token, chat_template). Throws cetus::Error: Io when a file
    // cannot be read, BadFormat for malformed contents, Unsupported for valid files of a
    // kind we do not run (not byte-level BPE, unsupported normalizer or pre-tokenizer);
    // messages name the file and the field. A GGUF model (a .gguf file, or a folder whose
    // only model file is one) uses the tokenizer.json beside it, else its own vocabulary.
    static Tokenizer load(const std::filesystem::path& model_dir);
    // The same from file contents; config_json may be empty. source names the files in errors.
    static Tokenizer from_json(std::string_view tokenizer_json, std::string_view config_json,
                               const std::string& source = "tokenizer.json");

    // Ids of text alone: no BOS, no template. Invalid UTF-8 is first repaired to U+FFFD as
    // Python's bytes.decode("utf-8", "replace") does. With allow_special, added tokens
    // (special or not) found in the text become their ids, as `tokenizers` does; without it
    // every byte is plain text, so user input cannot forge "<｜User｜>" and the like.
    std::vector<int32_t> encode(std::string_view text, bool allow_special) const;

    // Concatenated bytes of the ids, invalid UTF-8 repaired. Throws Error(BadRequest) for
    // an id that names no token.
    std::string decode(std::span<const int32_t> ids) const;

    // The token as written in tokenizer.json ("Ġthe"); empty for an id with no token.
    std::string_view token_piece(int32_t id) const;
    // The bytes the token stands for (" the"); may be an incomplete UTF-8 sequence.
    std::string_view token_bytes(int32_t id) const;
    bool is_special(int32_t id) const; // the `special` flag of an added token
    bool has_token(int32_t id) const;

    // From tokenizer_config.json, else DeepSeek's <｜begin▁of▁sentence｜> / <｜end▁of▁sentence｜>
    // when the vocabulary has them; -1 when there is none.
    int32_t bos_id() const;
    int32_t eos_id() const;
    bool add_bos_token() const; // tokenizer_config.json's advice for raw completion
    int32_t vocab_size() const; // highest id + 1, added tokens included

    const ChatTemplate& chat_template() const;
    std::string apply_chat_template(std::span<const ChatMessage> messages,
                                    bool add_generation_prompt) const {
        return render_chat(chat_template(), messages, add_generation_prompt);
    }
    // The ids of a chat prompt. The template's own markers and an assistant's text match
    // added tokens; what users, tools and system prompts wrote never does (every byte is
    // text there), so a pasted text cannot forge "<｜User｜>" or end the prompt with
    // "<｜end▁of▁sentence｜>". Otherwise equal to encode(text, true): each run between
    // added tokens is tokenized whole, message text and template text together.
    std::vector<int32_t> encode_chat(std::span<const ChatMessage> messages, bool add_generation_prompt,
                                     bool continue_final_message = false) const;
    std::vector<int32_t> encode_prompt(const ChatPrompt& prompt) const;

    struct Impl;

  private:
    explicit Tokenizer(std::shared_ptr<const Impl> impl) : m_impl(std::move(impl)) {}
    std::shared_ptr<const Impl> m_impl;
    friend class StreamDetokenizer;
};

// Turns generated ids into text for display, handing out only complete UTF-8: the bytes
// of a character split across tokens are held until it is complete. Without skip_special,
// concatenating every push() and the final flush() gives exactly decode(all ids). One
// instance per stream, not thread-safe; keeps the tokenizer's shared state alive.
class StreamDetokenizer {
  public:
    explicit StreamDetokenizer(const Tokenizer& tokenizer, bool skip_special = false);
    // Text completed by this id (often empty). Throws Error(BadRequest) for an unknown id.
    std::string push(int32_t id);
    // Whatever is still held, an incomplete sequence repaired to U+FFFD; then resets.
    std::string flush();
    void reset() { m_pending.clear(); }

  private:
    Tokenizer m_tokenizer;
    bool m_skip_special;
    std::string m_pending;
};

} // namespace cetus
