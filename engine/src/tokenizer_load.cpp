// Loading tokenizer.json and tokenizer_config.json: every field is checked here, with
// messages naming the file and the JSON path, so that encoding can trust its tables.
// Accepted: BPE model, no-op normalizer, Split/Digits/ByteLevel pre-tokenizers ending in
// ByteLevel, ByteLevel decoder. The post-processor is ignored: callers add BOS themselves.
#include "cetus/error.h"
#include "json_util.h"
#include "tokenizer_impl.h"

#include <nlohmann/json.hpp>

#include <array>
#include <cstdio>
#include <unordered_map>

namespace cetus::detail {

namespace {

using nlohmann::json;

struct ByteMap {
    std::array<uint32_t, 256> to_cp{};
    std::array<int16_t, 0x144> to_byte{}; // every mapped code point is below U+0144
    ByteMap() {
        to_byte.fill(-1);
        uint32_t next = 0x100;
        for (int b = 0; b < 256; ++b) {
            const bool printable =
                (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            to_cp[b] = printable ? static_cast<uint32_t>(b) : next++;
            to_byte[to_cp[b]] = static_cast<int16_t>(b);
        }
    }
};

const ByteMap& byte_map() {
    static const ByteMap map;
    return map;
}

void append_utf8(uint32_t cp, std::string& out) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

// The ByteLevel decoder's rule: a token whose every character is in the byte map stands
// for those bytes; any other token for its own UTF-8. Returns whether it was mapped.
bool token_bytes_of(std::string_view piece, std::string& out) {
    out.clear();
    size_t i = 0;
    while (i < piece.size()) {
        const auto b0 = static_cast<unsigned char>(piece[i]);
        uint32_t cp = 0;
        size_t len = 1;
        if (b0 < 0x80) {
            cp = b0;
        } else if (b0 < 0xE0) {
            cp = ((b0 & 0x1Fu) << 6) | (static_cast<unsigned char>(piece[i + 1]) & 0x3Fu);
            len = 2;
        } else {
            len = b0 < 0xF0 ? 3 : 4; // never a mapped character
            cp = 0x10000;
        }
        const int byte = cp < 0x144 ? byte_map().to_byte[cp] : -1;
        if (byte < 0) {
            out.assign(piece);
            return false;
        }
        out += static_cast<char>(byte);
        i += len;
    }
    return true;
}

std::string quote_text(std::string_view s) {
    std::string out = "\"";
    out.append(s.substr(0, 80));
    if (s.size() > 80) out += "...";
    return out + "\"";
}

[[noreturn]] void fail(ErrorCode code, const std::string& source, const std::string& where,
                       const std::string& what) {
    throw Error(code, source + ": " + (where.empty() ? "" : where + ": ") + what);
}

json parse_json(std::string_view text, const std::string& source) {
    return parse_json_strict(std::string(text),
                             source); // duplicate keys (vocab entries) rejected too
}

const json* member(const json& obj, const char* key) {
    if (!obj.is_object()) return nullptr;
    const auto it = obj.find(key);
    return it == obj.end() || it->is_null() ? nullptr : &*it;
}

bool get_bool(const json& obj, const char* key, bool fallback, const std::string& source,
              const std::string& where) {
    const json* v = member(obj, key);
    if (v == nullptr) return fallback;
    if (!v->is_boolean())
        fail(ErrorCode::BadFormat, source, where.empty() ? key : where + "." + key,
             "expected true or false");
    return v->get<bool>();
}

int32_t get_id(const json& v, const std::string& source, const std::string& where) {
    if (!v.is_number_integer()) fail(ErrorCode::BadFormat, source, where, "id must be an integer");
    const auto id = v.get<int64_t>();
    if (id < 0 || id >= Tokenizer::Impl::k_max_id) {
        fail(ErrorCode::BadFormat, source, where,
             "id " + std::to_string(id) + " is outside 0.." +
                 std::to_string(Tokenizer::Impl::k_max_id - 1));
    }
    return static_cast<int32_t>(id);
}

class Loader {
  public:
    Loader(Tokenizer::Impl& impl, const std::string& source) : m_impl(impl), m_src(source) {}

    void run(const json& root) {
        if (!root.is_object())
            fail(ErrorCode::BadFormat, m_src, "", "top level is not a JSON object");
        const json* model = member(root, "model");
        if (model == nullptr || !model->is_object())
            fail(ErrorCode::BadFormat, m_src, "model", "missing or not an object");
        check_normalizer(member(root, "normalizer"), "normalizer");
        if (const json* pre = member(root, "pre_tokenizer"))
            add_pre_tokenizer(*pre, "pre_tokenizer");
        check_pipeline_is_byte_level();
        check_decoder(member(root, "decoder"), "decoder");
        load_vocab(*model);
        load_merges(*model);
        if (const json* added = member(root, "added_tokens")) load_added_tokens(*added);
    }

    std::unordered_map<std::string, int32_t> piece_to_id;

  private:
    void check_normalizer(const json* n, const std::string& where) {
        if (n == nullptr) return;
        const json* type = member(*n, "type");
        if (type == nullptr || !type->is_string())
            fail(ErrorCode::BadFormat, m_src, where, "missing \"type\"");
        if (*type == "Sequence") {
            const json* list = member(*n, "normalizers");
            if (list == nullptr || !list->is_array())
                fail(ErrorCode::BadFormat, m_src, where,
                     "Sequence without a \"normalizers\" array");
            for (size_t i = 0; i < list->size(); ++i)
                check_normalizer(&(*list)[i], where + ".normalizers[" + std::to_string(i) + "]");
            return;
        }
        fail(ErrorCode::Unsupported, m_src, where,
             "normalizer type \"" + type->get<std::string>() +
                 "\" is not supported (only an empty Sequence)");
    }

    void add_pre_tokenizer(const json& p, const std::string& where) {
        const json* type_v = member(p, "type");
        if (type_v == nullptr || !type_v->is_string())
            fail(ErrorCode::BadFormat, m_src, where, "missing \"type\"");
        const std::string type = type_v->get<std::string>();
        if (m_saw_byte_level) {
            fail(ErrorCode::Unsupported, m_src, where,
                 "pre-tokenizer after ByteLevel is not supported");
        }
        if (type == "Sequence") {
            const json* list = member(p, "pretokenizers");
            if (list == nullptr || !list->is_array())
                fail(ErrorCode::BadFormat, m_src, where,
                     "Sequence without a \"pretokenizers\" array");
            for (size_t i = 0; i < list->size(); ++i)
                add_pre_tokenizer((*list)[i], where + ".pretokenizers[" + std::to_string(i) + "]");
        } else if (type == "Split") {
            add_split(p, where);
        } else if (type == "Digits") {
            PreTokenizerStep step;
            const bool individual = get_bool(p, "individual_digits", false, m_src, where);
            // Digits splits on char::is_numeric, i.e. general category N.
            step.regex = std::make_shared<Regex>(individual ? R"(\p{N})" : R"(\p{N}+)", false,
                                                 m_src + ": " + where);
            m_impl.pre_tokenizer.add_step(std::move(step));
        } else if (type == "ByteLevel") {
            PreTokenizerStep step;
            step.kind = PreTokenizerStep::Kind::ByteLevel;
            step.add_prefix_space = get_bool(p, "add_prefix_space", true, m_src, where);
            if (get_bool(p, "use_regex", true, m_src, where)) {
                step.regex = std::make_shared<Regex>(k_gpt2_pattern, false, m_src + ": " + where);
            }
            m_impl.pre_tokenizer.add_step(std::move(step));
            m_saw_byte_level = true;
        } else if (type == "BertPreTokenizer" || type == "Whitespace" ||
                   type == "WhitespaceSplit" || type == "Punctuation" || type == "Metaspace" ||
                   type == "CharDelimiterSplit" || type == "UnicodeScripts" ||
                   type == "FixedLength") {
            fail(ErrorCode::Unsupported, m_src, where,
                 "pre-tokenizer type \"" + type + "\" is not supported");
        } else {
            fail(ErrorCode::BadFormat, m_src, where, "unknown pre-tokenizer type \"" + type + "\"");
        }
    }

    void add_split(const json& p, const std::string& where) {
        PreTokenizerStep step;
        const json* pattern = member(p, "pattern");
        const json* regex = pattern ? member(*pattern, "Regex") : nullptr;
        const json* literal = pattern ? member(*pattern, "String") : nullptr;
        if ((regex == nullptr || !regex->is_string()) &&
            (literal == nullptr || !literal->is_string())) {
            fail(ErrorCode::BadFormat, m_src, where + ".pattern",
                 "expected {\"Regex\": ...} or {\"String\": ...}");
        }
        const bool is_literal = regex == nullptr || !regex->is_string();
        const std::string text = (is_literal ? literal : regex)->get<std::string>();
        step.regex = std::make_shared<Regex>(text, is_literal, m_src + ": " + where + ".pattern");
        const json* behavior = member(p, "behavior");
        const std::string b = behavior && behavior->is_string() ? behavior->get<std::string>() : "";
        if (b == "Removed")
            step.behavior = SplitBehavior::Removed;
        else if (b == "Isolated")
            step.behavior = SplitBehavior::Isolated;
        else if (b == "MergedWithPrevious")
            step.behavior = SplitBehavior::MergedWithPrevious;
        else if (b == "MergedWithNext")
            step.behavior = SplitBehavior::MergedWithNext;
        else if (b == "Contiguous")
            step.behavior = SplitBehavior::Contiguous;
        else
            fail(ErrorCode::BadFormat, m_src, where + ".behavior",
                 "unknown split behavior " + quote_text(b));
        step.invert = get_bool(p, "invert", false, m_src, where);
        m_impl.pre_tokenizer.add_step(std::move(step));
    }

    void check_pipeline_is_byte_level() {
        if (!m_saw_byte_level) {
            fail(ErrorCode::Unsupported, m_src, "pre_tokenizer",
                 "no ByteLevel step; only byte-level BPE tokenizers are supported");
        }
    }

    void check_decoder(const json* d, const std::string& where) {
        if (d == nullptr)
            fail(ErrorCode::Unsupported, m_src, where, "missing; a ByteLevel decoder is required");
        const json* type = member(*d, "type");
        if (type == nullptr || !type->is_string())
            fail(ErrorCode::BadFormat, m_src, where, "missing \"type\"");
        if (*type == "ByteLevel") return;
        if (*type == "Sequence") {
            const json* list = member(*d, "decoders");
            if (list == nullptr || !list->is_array() || list->empty())
                fail(ErrorCode::BadFormat, m_src, where, "Sequence without decoders");
            for (size_t i = 0; i < list->size(); ++i)
                check_decoder(&(*list)[i], where + ".decoders[" + std::to_string(i) + "]");
            return;
        }
        fail(ErrorCode::Unsupported, m_src, where,
             "decoder type \"" + type->get<std::string>() + "\" is not supported (only ByteLevel)");
    }

    void load_vocab(const json& model) {
        if (const json* type = member(model, "type"); type && *type != "BPE") {
            fail(ErrorCode::Unsupported, m_src, "model.type",
                 (type->is_string() ? quote_text(type->get<std::string>())
                                    : std::string("non-string")) +
                     " is not supported (only BPE)");
        }
        if (get_bool(model, "byte_fallback", false, m_src, "model")) {
            fail(ErrorCode::Unsupported, m_src, "model.byte_fallback",
                 "byte fallback is not supported");
        }
        for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
            if (const json* v = member(model, key);
                v && !(v->is_string() && v->get<std::string>().empty())) {
                fail(ErrorCode::Unsupported, m_src, std::string("model.") + key,
                     "is not supported");
            }
        }
        if (const json* dropout = member(model, "dropout");
            dropout && !(dropout->is_number() && dropout->get<double>() == 0.0)) {
            fail(ErrorCode::Unsupported, m_src, "model.dropout", "BPE dropout is not supported");
        }
        m_impl.bpe.ignore_merges = get_bool(model, "ignore_merges", false, m_src, "model");

        const json* vocab = member(model, "vocab");
        if (vocab == nullptr || !vocab->is_object())
            fail(ErrorCode::BadFormat, m_src, "model.vocab", "missing or not an object");
        piece_to_id.reserve(vocab->size() * 2);
        m_mapped.reserve(vocab->size() * 2);
        m_mapped_ids.assign(Tokenizer::Impl::k_max_id, 0);
        std::string bytes;
        for (const auto& [piece, value] : vocab->items()) {
            // Messages are built only on failure: this loop runs 128k times for V3.
            const bool plain_id = value.is_number_integer() && value.get<int64_t>() >= 0 &&
                                  value.get<int64_t>() < Tokenizer::Impl::k_max_id;
            const int32_t id = plain_id
                                   ? static_cast<int32_t>(value.get<int64_t>())
                                   : get_id(value, m_src, "model.vocab[" + quote_text(piece) + "]");
            const bool mapped = token_bytes_of(piece, bytes);
            add_token(id, piece, bytes, "model.vocab");
            piece_to_id.emplace(piece, id);
            if (mapped) {
                m_mapped.emplace(bytes, id);
                m_mapped_ids[static_cast<size_t>(id)] = 1;
            }
        }
        for (int b = 0; b < 256; ++b) {
            const auto it = m_mapped.find(std::string(1, static_cast<char>(b)));
            if (it == m_mapped.end()) {
                std::string piece;
                append_utf8(byte_map().to_cp[static_cast<size_t>(b)], piece);
                char hex[8];
                std::snprintf(hex, sizeof(hex), "0x%02X", b);
                fail(ErrorCode::BadFormat, m_src, "model.vocab",
                     std::string("no token for byte ") + hex + " (" + quote_text(piece) +
                         "); a byte-level vocabulary needs all 256 byte tokens");
            }
            m_impl.bpe.byte_ids[static_cast<size_t>(b)] = it->second;
        }
        if (m_impl.bpe.ignore_merges) {
            m_impl.bpe.words.insert(m_mapped.begin(), m_mapped.end());
        }
    }

    void load_merges(const json& model) {
        const json* merges = member(model, "merges");
        if (merges == nullptr) return;
        if (!merges->is_array()) fail(ErrorCode::BadFormat, m_src, "model.merges", "not an array");
        m_impl.bpe.merges.reserve(merges->size());
        std::string left, right;
        for (size_t i = 0; i < merges->size(); ++i) {
            const json& m = (*merges)[i];
            const auto where = [i] { return "model.merges[" + std::to_string(i) + "]"; };
            if (m.is_string()) {
                const std::string& s = m.get_ref<const std::string&>();
                const size_t space = s.find(' ');
                if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
                    fail(ErrorCode::BadFormat, m_src, where(),
                         quote_text(s) + " is not two tokens separated by one space");
                }
                left = s.substr(0, space);
                right = s.substr(space + 1);
            } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
                left = m[0].get<std::string>();
                right = m[1].get<std::string>();
            } else {
                fail(ErrorCode::BadFormat, m_src, where(), "expected \"a b\" or [\"a\", \"b\"]");
            }
            const int32_t l = lookup(left, where);
            const int32_t r = lookup(right, where);
            left += right;
            const int32_t merged = lookup(left, where);
            // A merge of tokens outside the byte map can never apply to byte symbols.
            if (m_mapped_ids[static_cast<size_t>(l)] && m_mapped_ids[static_cast<size_t>(r)]) {
                m_impl.bpe.merges.insert(l, r, static_cast<int32_t>(i), merged);
            }
        }
    }

    void load_added_tokens(const json& added) {
        if (!added.is_array()) fail(ErrorCode::BadFormat, m_src, "added_tokens", "not an array");
        std::string bytes;
        for (size_t i = 0; i < added.size(); ++i) {
            const json& a = added[i];
            const std::string where = "added_tokens[" + std::to_string(i) + "]";
            const json* content_v = member(a, "content");
            const json* id_v = member(a, "id");
            if (content_v == nullptr || !content_v->is_string())
                fail(ErrorCode::BadFormat, m_src, where, "missing \"content\"");
            if (id_v == nullptr) fail(ErrorCode::BadFormat, m_src, where, "missing \"id\"");
            AddedToken tok;
            tok.content = content_v->get<std::string>();
            tok.id = get_id(*id_v, m_src, where);
            tok.single_word = get_bool(a, "single_word", false, m_src, where);
            tok.lstrip = get_bool(a, "lstrip", false, m_src, where);
            tok.rstrip = get_bool(a, "rstrip", false, m_src, where);
            tok.normalized = get_bool(a, "normalized", true, m_src, where);
            tok.special = get_bool(a, "special", false, m_src, where);
            if (tok.content.empty()) fail(ErrorCode::BadFormat, m_src, where, "empty content");

            if (const auto it = piece_to_id.find(tok.content); it != piece_to_id.end()) {
                if (it->second != tok.id) {
                    fail(ErrorCode::BadFormat, m_src, where,
                         quote_text(tok.content) + " has id " + std::to_string(tok.id) +
                             " but is already token " + std::to_string(it->second));
                }
            } else {
                token_bytes_of(tok.content, bytes);
                add_token(tok.id, tok.content, bytes, where);
                piece_to_id.emplace(tok.content, tok.id);
            }
            m_impl.tokens[static_cast<size_t>(tok.id)].special = tok.special;
            (tok.normalized ? m_impl.normalized_tokens : m_impl.raw_tokens).add(tok);
        }
    }

    void add_token(int32_t id, std::string_view piece, std::string_view bytes,
                   const std::string& where) {
        auto& tokens = m_impl.tokens;
        if (static_cast<size_t>(id) >= tokens.size()) tokens.resize(static_cast<size_t>(id) + 1);
        auto& t = tokens[static_cast<size_t>(id)];
        if (t.exists) {
            fail(ErrorCode::BadFormat, m_src, where,
                 "duplicate id " + std::to_string(id) + " for " + quote_text(piece) + " (already " +
                     quote_text(m_impl.piece(id)) + ")");
        }
        auto& blob = m_impl.text_blob;
        if (blob.size() + piece.size() + bytes.size() > 0xFFFFFFFFull) {
            fail(ErrorCode::BadFormat, m_src, where, "token texts exceed 4 GiB");
        }
        t.exists = true;
        t.piece_begin = static_cast<uint32_t>(blob.size());
        t.piece_size = static_cast<uint32_t>(piece.size());
        blob.append(piece);
        t.bytes_begin = static_cast<uint32_t>(blob.size());
        t.bytes_size = static_cast<uint32_t>(bytes.size());
        blob.append(bytes);
    }

    template <class Where> int32_t lookup(const std::string& piece, const Where& where) const {
        const auto it = piece_to_id.find(piece);
        if (it == piece_to_id.end())
            fail(ErrorCode::BadFormat, m_src, where(),
                 "token " + quote_text(piece) + " is not in the vocab");
        return it->second;
    }

    Tokenizer::Impl& m_impl;
    const std::string& m_src;
    bool m_saw_byte_level = false;
    std::unordered_map<std::string, int32_t> m_mapped; // raw bytes -> id of byte-level tokens
    std::vector<uint8_t> m_mapped_ids;                 // by id: 1 for byte-level tokens
};

// tokenizer_config.json's bos_token / eos_token: a string, or an AddedToken object.
std::string token_name(const json& config, const char* key, const std::string& source) {
    const json* v = member(config, key);
    if (v == nullptr) return {};
    if (v->is_string()) return v->get<std::string>();
    if (const json* content = member(*v, "content"); content && content->is_string())
        return content->get<std::string>();
    fail(ErrorCode::BadFormat, source, key, "expected a string or an object with \"content\"");
}

std::string chat_template_source(const json& config, const std::string& source) {
    const json* t = member(config, "chat_template");
    if (t == nullptr) return {};
    if (t->is_string()) return t->get<std::string>();
    if (t->is_array()) { // [{"name": "default", "template": ...}, ...]
        for (const json& entry : *t) {
            const json* name = member(entry, "name");
            const json* text = member(entry, "template");
            if (name && *name == "default" && text && text->is_string())
                return text->get<std::string>();
        }
        return {};
    }
    fail(ErrorCode::BadFormat, source, "chat_template",
         "expected a string or a list of named templates");
}

} // namespace

uint32_t byte_to_codepoint(uint8_t b) {
    return byte_map().to_cp[b];
}

int byte_of_codepoint(uint32_t cp) {
    return cp < 0x144 ? byte_map().to_byte[cp] : -1;
}

std::shared_ptr<Tokenizer::Impl> load_tokenizer(std::string_view tokenizer_json,
                                                const std::string& tokenizer_source,
                                                std::string_view config_json,
                                                const std::string& config_source) {
    auto impl = std::make_shared<Tokenizer::Impl>();
    impl->source = tokenizer_source;
    Loader loader(*impl, tokenizer_source);
    loader.run(parse_json(tokenizer_json, tokenizer_source));

    auto id_of = [&](const std::string& name, const char* key) -> int32_t {
        if (name.empty()) return -1;
        const auto it = loader.piece_to_id.find(name);
        if (it == loader.piece_to_id.end()) {
            fail(ErrorCode::BadFormat, config_source, key,
                 quote_text(name) + " is not a token of " + tokenizer_source);
        }
        return it->second;
    };

    std::string bos_name, eos_name, template_text;
    if (!config_json.empty()) {
        const json config = parse_json(config_json, config_source);
        if (!config.is_object())
            fail(ErrorCode::BadFormat, config_source, "", "top level is not a JSON object");
        bos_name = token_name(config, "bos_token", config_source);
        eos_name = token_name(config, "eos_token", config_source);
        impl->add_bos = get_bool(config, "add_bos_token", false, config_source, "");
        template_text = chat_template_source(config, config_source);
    }
    impl->bos = id_of(bos_name, "bos_token");
    impl->eos = id_of(eos_name, "eos_token");
    // Not named by a config: DeepSeek's names, when the vocabulary has them.
    for (auto [name, slot] : {std::pair{"<｜begin▁of▁sentence｜>", &impl->bos},
                              std::pair{"<｜end▁of▁sentence｜>", &impl->eos}}) {
        if (*slot >= 0) continue;
        if (const auto it = loader.piece_to_id.find(name); it != loader.piece_to_id.end())
            *slot = it->second;
    }
    impl->chat = detect_chat_template(template_text);
    if (impl->bos >= 0) impl->chat.bos_token = std::string(impl->piece(impl->bos));
    if (impl->eos >= 0) impl->chat.eos_token = std::string(impl->piece(impl->eos));
    return impl;
}

} // namespace cetus::detail
