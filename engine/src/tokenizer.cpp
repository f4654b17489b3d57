// Encoding and decoding over the tables tokenizer_load.cpp built: repair invalid UTF-8,
// cut out added tokens (non-normalized ones first, then normalized ones in what is left,
// as AddedVocabulary::extract_and_normalize does), pre-tokenize, BPE each piece with a
// per-call word cache. Decoding concatenates token bytes and repairs what is not UTF-8.
#include "cetus/tokenizer.h"

#include "cetus/error.h"
#include "gguf.h"
#include "tokenizer_impl.h"
#include "utf8.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <unordered_map>

namespace cetus {

namespace {

struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const noexcept {
        return std::hash<std::string_view>{}(s);
    }
};

// Everything one encode call needs; nothing here outlives the call, so concurrent
// calls on one Tokenizer share no mutable state.
struct EncodeState {
    static constexpr size_t k_max_cached_word = 4096;
    static constexpr size_t k_max_cache_bytes = 8 << 20; // words and ids, per call

    std::string text; // repaired input; ByteLevel's add_prefix_space may append to it
    std::vector<detail::Segment> segments;
    std::vector<detail::Segment> next_segments;
    std::vector<detail::Piece> pieces;
    detail::PreTokenizerScratch pre;
    detail::BpeScratch bpe;
    std::unordered_map<std::string, std::pair<uint32_t, uint32_t>, StringHash, std::equal_to<>>
        cache;
    std::vector<int32_t> cached_ids;
    size_t cache_bytes = 0;
};

void extract_added(const detail::AddedTokenMatcher& matcher, EncodeState& st) {
    if (matcher.empty()) return;
    st.next_segments.clear();
    for (const auto& seg : st.segments) {
        if (seg.id >= 0) {
            st.next_segments.push_back(seg);
        } else {
            matcher.split(st.text, seg, st.next_segments);
        }
    }
    st.segments.swap(st.next_segments);
}

void encode_text(const Tokenizer::Impl& impl, const detail::Segment& seg, EncodeState& st,
                 std::vector<int32_t>& out) {
    st.pieces.assign(
        1, detail::Piece{static_cast<uint32_t>(seg.begin), static_cast<uint32_t>(seg.end)});
    impl.pre_tokenizer.run(st.text, st.pieces, st.pre);
    for (const auto& p : st.pieces) {
        const std::string_view word(st.text.data() + p.begin, p.end - p.begin);
        if (word.size() <= 1 || word.size() > EncodeState::k_max_cached_word) {
            impl.bpe.encode_word(word, st.bpe, out);
            continue;
        }
        if (const auto it = st.cache.find(word); it != st.cache.end()) {
            const auto [off, len] = it->second;
            out.insert(out.end(), st.cached_ids.begin() + off, st.cached_ids.begin() + off + len);
            continue;
        }
        const size_t before = out.size();
        impl.bpe.encode_word(word, st.bpe, out);
        const size_t n_ids = out.size() - before;
        if (st.cache_bytes < EncodeState::k_max_cache_bytes) {
            const auto off = static_cast<uint32_t>(st.cached_ids.size());
            st.cached_ids.insert(st.cached_ids.end(),
                                 out.begin() + static_cast<std::ptrdiff_t>(before), out.end());
            st.cache.emplace(std::string(word), std::pair{off, static_cast<uint32_t>(n_ids)});
            st.cache_bytes += word.size() + n_ids * sizeof(int32_t) + 64;
        }
    }
}

// The ids of st.segments in order: added tokens as they are, text through BPE.
void encode_segments(const Tokenizer::Impl& impl, EncodeState& st, std::vector<int32_t>& out) {
    for (size_t i = 0; i < st.segments.size(); ++i) {
        const detail::Segment seg = st.segments[i];
        if (seg.id >= 0) {
            out.push_back(seg.id);
        } else if (seg.end > seg.begin) {
            encode_text(impl, seg, st, out);
        }
    }
}

std::string read_file(const std::filesystem::path& path) {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (f == nullptr)
        throw Error(ErrorCode::Io, "cannot open " + path.string() + ": " + std::strerror(errno));
    std::string data;
    char buffer[1 << 16];
    size_t n = 0;
    while ((n = std::fread(buffer, 1, sizeof(buffer), f)) > 0) data.append(buffer, n);
    const bool failed = std::ferror(f) != 0;
    std::fclose(f);
    if (failed) throw Error(ErrorCode::Io, "cannot read " + path.string());
    return data;
}

} // namespace

Tokenizer Tokenizer::load(const std::filesystem::path& model_path) {
    std::filesystem::path model_dir = model_path;
    if (auto gguf = gguf_model_file(model_path)) {
        // The model's own tokenizer.json beside the file wins; else the file's vocabulary.
        model_dir = gguf->parent_path();
        std::error_code ec;
        if (!std::filesystem::exists(model_dir / "tokenizer.json", ec)) {
            const GgufFile f(*gguf);
            const GgufTokenizerJson j = gguf_tokenizer_json(f);
            return Tokenizer(detail::load_tokenizer(j.tokenizer, gguf->string() + " (its vocabulary as tokenizer.json)",
                                                    j.config, gguf->string() + " (as tokenizer_config.json)"));
        }
    }
    const auto json_path = model_dir / "tokenizer.json";
    const auto config_path = model_dir / "tokenizer_config.json";
    const std::string json_text = read_file(json_path);
    std::error_code ec;
    const std::string config_text =
        std::filesystem::exists(config_path, ec) ? read_file(config_path) : std::string();
    return Tokenizer(
        detail::load_tokenizer(json_text, json_path.string(), config_text, config_path.string()));
}

Tokenizer Tokenizer::from_json(std::string_view tokenizer_json, std::string_view config_json,
                               const std::string& source) {
    return Tokenizer(
        detail::load_tokenizer(tokenizer_json, source, config_json, "tokenizer_config.json"));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool allow_special) const {
    const Impl& impl = *m_impl;
    EncodeState st;
    if (detail::utf8_is_valid(text)) {
        st.text.assign(text);
    } else {
        detail::utf8_append_repaired(text, st.text);
    }
    // Piece offsets are 32-bit; leave room for ByteLevel's prefix spaces.
    if (st.text.size() >= (1ull << 31))
        throw Error(ErrorCode::BadRequest, "text to tokenize is 2 GiB or longer");

    std::vector<int32_t> out;
    out.reserve(st.text.size() / 3 + 8);
    st.segments.push_back({0, st.text.size(), -1});
    if (allow_special) {
        extract_added(impl.raw_tokens, st);
        extract_added(impl.normalized_tokens, st);
    }
    encode_segments(impl, st, out);
    return out;
}

std::vector<int32_t> Tokenizer::encode_chat(std::span<const ChatMessage> messages, bool add_generation_prompt,
                                            bool continue_final_message) const {
    return encode_prompt(render_chat_prompt(chat_template(), messages, add_generation_prompt, continue_final_message));
}

std::vector<int32_t> Tokenizer::encode_prompt(const ChatPrompt& prompt) const {
    const Impl& impl = *m_impl;
    EncodeState st;
    // The text piece by piece, each repaired on its own so that the ranges of message
    // text stay exact: [begin, end) of st.text for every range of prompt.content.
    std::vector<std::pair<size_t, size_t>> protect;
    size_t at = 0;
    auto append = [&](size_t end) {
        const std::string_view piece(prompt.text.data() + at, end - at);
        if (detail::utf8_is_valid(piece)) st.text.append(piece);
        else detail::utf8_append_repaired(piece, st.text);
        at = end;
    };
    for (const auto& [b, e] : prompt.content) {
        if (b < at || e < b || e > prompt.text.size()) throw Error(ErrorCode::BadRequest, "chat prompt ranges out of order");
        append(b);
        const size_t begin = st.text.size();
        append(e);
        if (st.text.size() > begin) protect.emplace_back(begin, st.text.size());
    }
    append(prompt.text.size());
    if (st.text.size() >= (1ull << 31))
        throw Error(ErrorCode::BadRequest, "text to tokenize is 2 GiB or longer");

    // Added tokens as everywhere; then a match any byte of which came from a message
    // goes back to being text, joined with the text around it (as `tokenizers` skips
    // a match under encode_special_tokens, here for every added token: DeepSeek's
    // "<｜User｜>" and "<｜Assistant｜>" are not marked special).
    auto in_message = [&](const detail::Segment& seg) {
        auto it = std::upper_bound(protect.begin(), protect.end(), seg.begin,
                                   [](size_t pos, const auto& r) { return pos < r.second; });
        return it != protect.end() && it->first < seg.end;
    };
    auto unmatch_protected = [&] {
        st.next_segments.clear();
        for (const auto& seg : st.segments) {
            detail::Segment s2 = seg;
            if (s2.id >= 0 && in_message(s2)) s2.id = -1;
            if (s2.id < 0 && !st.next_segments.empty() && st.next_segments.back().id < 0 &&
                st.next_segments.back().end == s2.begin) {
                st.next_segments.back().end = s2.end;
            } else {
                st.next_segments.push_back(s2);
            }
        }
        st.segments.swap(st.next_segments);
    };
    std::vector<int32_t> out;
    out.reserve(st.text.size() / 3 + 8);
    st.segments.push_back({0, st.text.size(), -1});
    extract_added(impl.raw_tokens, st);
    unmatch_protected();
    extract_added(impl.normalized_tokens, st);
    unmatch_protected();
    encode_segments(impl, st, out);
    return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
    std::string bytes;
    for (const int32_t id : ids) {
        if (!m_impl->valid(id)) {
            throw Error(ErrorCode::BadRequest, "token id " + std::to_string(id) +
                                                   " is not in the vocabulary of " +
                                                   m_impl->source);
        }
        bytes.append(m_impl->bytes(id));
    }
    return detail::utf8_is_valid(bytes) ? bytes : detail::utf8_repaired(bytes);
}

std::string_view Tokenizer::token_piece(int32_t id) const {
    return m_impl->valid(id) ? m_impl->piece(id) : std::string_view();
}

std::string_view Tokenizer::token_bytes(int32_t id) const {
    return m_impl->valid(id) ? m_impl->bytes(id) : std::string_view();
}

bool Tokenizer::is_special(int32_t id) const {
    return m_impl->valid(id) && m_impl->tokens[static_cast<size_t>(id)].special;
}

bool Tokenizer::has_token(int32_t id) const {
    return m_impl->valid(id);
}

int32_t Tokenizer::bos_id() const {
    return m_impl->bos;
}

int32_t Tokenizer::eos_id() const {
    return m_impl->eos;
}

bool Tokenizer::add_bos_token() const {
    return m_impl->add_bos;
}

int32_t Tokenizer::vocab_size() const {
    return static_cast<int32_t>(m_impl->tokens.size());
}

const ChatTemplate& Tokenizer::chat_template() const {
    return m_impl->chat;
}

StreamDetokenizer::StreamDetokenizer(const Tokenizer& tokenizer, bool skip_special)
    : m_tokenizer(tokenizer), m_skip_special(skip_special) {}

std::string StreamDetokenizer::push(int32_t id) {
    const Tokenizer::Impl& impl = *m_tokenizer.m_impl;
    if (!impl.valid(id)) {
        throw Error(ErrorCode::BadRequest, "token id " + std::to_string(id) +
                                               " is not in the vocabulary of " + impl.source);
    }
    if (m_skip_special && impl.tokens[static_cast<size_t>(id)].special) return {};
    m_pending.append(impl.bytes(id));
    const size_t n = detail::utf8_emittable_prefix(m_pending);
    if (n == 0) return {};
    const std::string_view ready(m_pending.data(), n);
    std::string out =
        detail::utf8_is_valid(ready) ? std::string(ready) : detail::utf8_repaired(ready);
    m_pending.erase(0, n);
    return out;
}

std::string StreamDetokenizer::flush() {
    std::string out = detail::utf8_repaired(m_pending);
    m_pending.clear();
    return out;
}

} // namespace cetus
