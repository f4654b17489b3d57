// Names of roles and states, tree and snippet helpers, auto-titles, and the
// text helpers of text_util.h.
#include "cetus/storage/types.h"

#include "cetus/storage/attachments.h"

#include "file_util.h"
#include "text_util.h"

#include <ctime>

namespace cetus::storage {

const char* role_name(Role role) noexcept {
    switch (role) {
    case Role::System: return "system";
    case Role::User: return "user";
    case Role::Assistant: return "assistant";
    case Role::Tool: return "tool";
    }
    return "user";
}

std::optional<Role> parse_role(std::string_view name) noexcept {
    for (Role r : {Role::System, Role::User, Role::Assistant, Role::Tool}) {
        if (name == role_name(r)) return r;
    }
    return std::nullopt;
}

const char* state_name(MessageState state) noexcept {
    switch (state) {
    case MessageState::Streaming: return "streaming";
    case MessageState::Complete: return "complete";
    case MessageState::Interrupted: return "interrupted";
    case MessageState::Error: return "error";
    }
    return "complete";
}

std::optional<MessageState> parse_state(std::string_view name) noexcept {
    for (MessageState s : {MessageState::Streaming, MessageState::Complete, MessageState::Interrupted,
                           MessageState::Error}) {
        if (name == state_name(s)) return s;
    }
    return std::nullopt;
}

std::vector<int64_t> children_of(const ConversationTree& tree, std::optional<int64_t> parent) {
    std::vector<int64_t> ids;
    for (const Message& m : tree.messages) {
        if (m.parent_id == parent) ids.push_back(m.id);
    }
    return ids;
}

std::string mark_snippet(const SearchHit& hit, std::string_view open, std::string_view close) {
    std::string out;
    size_t at = 0;
    for (auto [begin, end] : hit.highlights) {
        if (begin < at || end < begin || end > hit.snippet.size()) continue;
        out.append(hit.snippet, at, begin - at);
        out.append(open);
        out.append(hit.snippet, begin, end - begin);
        out.append(close);
        at = end;
    }
    out.append(hit.snippet, at, std::string::npos);
    return out;
}

namespace {

std::string title_from_text(std::string_view text) {
    constexpr size_t k_max_chars = 60;
    // First line that holds anything but whitespace.
    std::string_view line;
    while (!text.empty()) {
        const auto nl = text.find('\n');
        line = text.substr(0, nl);
        text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
        if (line.find_first_not_of(" \t\r\f\v") != std::string_view::npos) break;
        line = {};
    }
    std::string collapsed;
    bool space = false;
    for (char c : line) {
        if (c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v') {
            space = !collapsed.empty();
            continue;
        }
        if (space) collapsed += ' ';
        space = false;
        collapsed += c;
    }
    size_t n_chars = 0, cut = collapsed.size(), last_space = std::string::npos, chars_at_space = 0;
    for (size_t i = 0; i < collapsed.size(); ++i) {
        const auto byte = static_cast<unsigned char>(collapsed[i]);
        if ((byte & 0xC0) == 0x80) continue;  // continuation byte
        if (n_chars == k_max_chars) {
            cut = i;
            break;
        }
        if (byte == ' ') {
            last_space = i;
            chars_at_space = n_chars;
        }
        ++n_chars;
    }
    if (cut == collapsed.size()) return collapsed;
    if (last_space != std::string::npos && chars_at_space >= k_max_chars / 2) cut = last_space;
    collapsed.resize(cut);
    while (!collapsed.empty() && collapsed.back() == ' ') collapsed.pop_back();
    return collapsed + "\xE2\x80\xA6";  // "…"
}

}  // namespace

std::string make_auto_title(std::string_view content) {
    const MessageParts parts = split_message(content);
    std::string title = title_from_text(parts.text);
    if (!title.empty() || parts.files.empty()) return title;
    std::string names;
    for (const AttachedFile& f : parts.files) names += (names.empty() ? "" : ", ") + f.name;
    return title_from_text(names);
}

namespace detail {

bool valid_utf8(std::string_view text) noexcept {
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    const auto* end = p + text.size();
    while (p < end) {
        const unsigned char c = *p;
        if (c < 0x80) {
            ++p;
            continue;
        }
        int n = 0;
        uint32_t cp = 0;
        if ((c & 0xE0) == 0xC0) n = 1, cp = c & 0x1F;
        else if ((c & 0xF0) == 0xE0) n = 2, cp = c & 0x0F;
        else if ((c & 0xF8) == 0xF0) n = 3, cp = c & 0x07;
        else return false;
        if (end - p <= n) return false;
        for (int i = 1; i <= n; ++i) {
            if ((p[i] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        // Overlong forms, surrogates and values past U+10FFFF are not UTF-8.
        static const uint32_t k_min[4] = {0, 0x80, 0x800, 0x10000};
        if (cp < k_min[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        p += n + 1;
    }
    return true;
}

std::string new_uuid() {
    uint64_t hi = random_u64(), lo = random_u64();
    hi = (hi & ~uint64_t(0xF000)) | 0x4000;                     // version 4
    lo = (lo & ~(uint64_t(0xC) << 60)) | (uint64_t(0x8) << 60);  // variant 10
    static const char* digits = "0123456789abcdef";
    std::string out;
    for (int i = 0; i < 32; ++i) {
        const uint64_t word = i < 16 ? hi : lo;
        const int shift = 60 - 4 * (i % 16);
        if (i == 8 || i == 12 || i == 16 || i == 20) out += '-';
        out += digits[(word >> shift) & 0xF];
    }
    return out;
}

bool valid_uuid(std::string_view text) noexcept {
    if (text.size() != 36) return false;
    for (size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? c != '-' : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    }
    return true;
}

std::string utc_time_text(int64_t ms) {
    const std::time_t seconds = static_cast<std::time_t>(ms / 1000);
    std::tm utc{};
    gmtime_r(&seconds, &utc);
    char text[40];
    std::strftime(text, sizeof text, "%Y-%m-%d %H:%M UTC", &utc);
    return text;
}

}  // namespace detail
}  // namespace cetus::storage
