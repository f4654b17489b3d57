// The tokenizer's private state, shared by the loader (tokenizer_load.cpp) and the
// encoder/decoder (tokenizer.cpp). Built once by the loader, then only read.
#pragma once

#include "added_tokens.h"
#include "bpe.h"
#include "cetus/tokenizer.h"
#include "pretokenizer.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace cetus {

struct Tokenizer::Impl {
    // Ids are limited so that a hostile file cannot make us allocate per-id tables of
    // gigabytes; real vocabularies stay far below (DeepSeek-V3: 128,815).
    static constexpr int32_t k_max_id = 1 << 20;

    struct TokenText {
        uint32_t piece_begin = 0; // into m_text: the string as written in tokenizer.json
        uint32_t piece_size = 0;
        uint32_t bytes_begin = 0; // into m_text: what the token decodes to
        uint32_t bytes_size = 0;
        bool exists = false;
        bool special = false;
    };

    std::string source; // tokenizer.json's path, for messages
    detail::BpeModel bpe;
    detail::PreTokenizer pre_tokenizer;
    detail::AddedTokenMatcher raw_tokens;        // normalized = false: matched first
    detail::AddedTokenMatcher normalized_tokens; // normalized = true: then in what is left
    std::vector<TokenText> tokens;               // by id
    std::string text_blob;
    int32_t bos = -1;
    int32_t eos = -1;
    bool add_bos = false;
    ChatTemplate chat;

    std::string_view piece(int32_t id) const {
        const TokenText& t = tokens[static_cast<size_t>(id)];
        return std::string_view(text_blob).substr(t.piece_begin, t.piece_size);
    }
    std::string_view bytes(int32_t id) const {
        const TokenText& t = tokens[static_cast<size_t>(id)];
        return std::string_view(text_blob).substr(t.bytes_begin, t.bytes_size);
    }
    bool valid(int32_t id) const {
        return id >= 0 && static_cast<size_t>(id) < tokens.size() &&
               tokens[static_cast<size_t>(id)].exists;
    }
};

namespace detail {

// Parses and validates tokenizer.json (+ tokenizer_config.json, may be empty); the
// sources name the files in error messages.
std::shared_ptr<Tokenizer::Impl> load_tokenizer(std::string_view tokenizer_json,
                                                const std::string& tokenizer_source,
                                                std::string_view config_json,
                                                const std::string& config_source);

// GPT-2's byte <-> character map: printable bytes map to themselves, the other 68 to
// U+0100 onwards in byte order. Code point of byte b / byte of code point cp (-1: none).
uint32_t byte_to_codepoint(uint8_t b);
int byte_of_codepoint(uint32_t cp);

} // namespace detail
} // namespace cetus
