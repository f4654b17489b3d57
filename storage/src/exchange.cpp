// Export: lossless JSON and readable Markdown (import.cpp reads the JSON back).
// Message ids in the JSON are local to their conversation (1..n in creation
// order, which puts parents first unless rows were edited by hand), so a round
// trip through another database is byte-identical.
#include "store_impl.h"

#include "text_util.h"

#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <ostream>
#include <queue>
#include <set>
#include <span>
#include <unordered_map>

namespace cetus::storage {
namespace {

using ordered_json = nlohmann::ordered_json;
using json = nlohmann::json;

constexpr const char* k_format = "cetus-conversations";
constexpr int k_format_version = 2;  // 2: token probabilities

// Parsed in the stored insertion order (sorted keys), so export(import(x)) == x.
ordered_json stored_object(const std::string& text) {
    ordered_json value = ordered_json::parse(text, nullptr, false);
    return value.is_object() ? value : ordered_json::object();
}

// The order in which a conversation's messages are written, as indices into
// `messages` (sorted by id), and which of them lose their parent. Files Cetus
// wrote have every parent before its children, so this is id order. A file
// edited by hand may name a later message as parent, or make a cycle of
// parents: then a message waits for its parent, the oldest message of a cycle
// becomes a root, and the export still imports.
std::vector<size_t> parents_first(const std::vector<Message>& messages, std::vector<bool>& cut) {
    const size_t n = messages.size();
    std::unordered_map<int64_t, size_t> index;
    for (size_t i = 0; i < n; ++i) index.emplace(messages[i].id, i);
    std::unordered_map<int64_t, std::vector<size_t>> children;
    // Smallest index first: with every parent older than its children this pops 0, 1, 2, ...
    std::priority_queue<size_t, std::vector<size_t>, std::greater<>> ready;
    for (size_t i = 0; i < n; ++i) {
        const auto& parent = messages[i].parent_id;
        if (parent && index.count(*parent)) children[*parent].push_back(i);
        else ready.push(i);
    }
    cut.assign(n, false);
    std::vector<bool> done(n, false);
    std::vector<size_t> order;
    order.reserve(n);
    size_t oldest_left = 0;
    while (order.size() < n) {
        if (ready.empty()) {  // only cycles are left
            while (done[oldest_left]) ++oldest_left;
            cut[oldest_left] = true;
            ready.push(oldest_left);
        }
        const size_t i = ready.top();
        ready.pop();
        if (done[i]) continue;
        done[i] = true;
        order.push_back(i);
        if (auto it = children.find(messages[i].id); it != children.end()) {
            for (size_t c : it->second) {
                if (!done[c]) ready.push(c);
            }
        }
    }
    return order;
}

// Whether a stored blob (routing trace, token probabilities) decodes: one that does not is left out of the export
// (it would make the whole file refuse to import).
template <class Decode>
bool decodes(std::span<const uint8_t> blob, Decode decode) {
    try {
        (void)decode(blob);
    } catch (const StorageError&) {
        return false;
    }
    return true;
}

}  // namespace

namespace detail {

std::string base64_encode(const std::vector<uint8_t>& in) {
    static const char* table = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    out.reserve((in.size() + 2) / 3 * 4);
    for (size_t i = 0; i < in.size(); i += 3) {
        const uint32_t n = (uint32_t(in[i]) << 16) | (i + 1 < in.size() ? uint32_t(in[i + 1]) << 8 : 0) |
                           (i + 2 < in.size() ? uint32_t(in[i + 2]) : 0);
        out += table[(n >> 18) & 63];
        out += table[(n >> 12) & 63];
        out += i + 1 < in.size() ? table[(n >> 6) & 63] : '=';
        out += i + 2 < in.size() ? table[n & 63] : '=';
    }
    return out;
}

// Strict: canonical padding only, no whitespace.
bool base64_decode(std::string_view in, std::vector<uint8_t>& out) {
    if (in.size() % 4 != 0) return false;
    auto value = [](char c) -> int {
        if (c >= 'A' && c <= 'Z') return c - 'A';
        if (c >= 'a' && c <= 'z') return c - 'a' + 26;
        if (c >= '0' && c <= '9') return c - '0' + 52;
        if (c == '+') return 62;
        if (c == '/') return 63;
        return -1;
    };
    out.clear();
    for (size_t i = 0; i < in.size(); i += 4) {
        const bool last = i + 4 == in.size();
        const int pad = last ? (in[i + 3] == '=') + (in[i + 2] == '=') : 0;
        if (pad == 1 && in[i + 2] == '=') return false;
        uint32_t n = 0;
        for (int k = 0; k < 4; ++k) {
            const int v = k >= 4 - pad ? 0 : value(in[i + k]);
            if (v < 0) return false;
            n = (n << 6) | uint32_t(v);
        }
        out.push_back(uint8_t(n >> 16));
        if (pad < 2) out.push_back(uint8_t(n >> 8));
        if (pad < 1) out.push_back(uint8_t(n));
        if ((pad == 2 && (n & 0xFFFF)) || (pad == 1 && (n & 0xFF))) return false;  // non-canonical
    }
    return true;
}

}  // namespace detail

void Store::export_json(std::ostream& out, std::optional<int64_t> conversation_id) {
    std::vector<int64_t> ids;
    if (conversation_id) {
        conversation(*conversation_id);  // NotFound
        ids.push_back(*conversation_id);
    } else {
        auto q = m_impl->sql("SELECT id FROM conversations ORDER BY id");
        while (q->step()) ids.push_back(q->col_int(0));
    }
    std::set<std::string> uuids;
    out << "{\"format\":\"" << k_format << "\",\"format_version\":" << k_format_version << ",\"conversations\":[";
    bool first = true;
    for (int64_t id : ids) {
        const ConversationTree tree = open_conversation(id);
        const Conversation& c = tree.conversation;
        std::vector<bool> cut;
        const std::vector<size_t> order = parents_first(tree.messages, cut);
        std::map<int64_t, int64_t> local;
        for (size_t i : order) local.emplace(tree.messages[i].id, static_cast<int64_t>(local.size()) + 1);
        ordered_json doc;
        // A uuid edited out of shape, or one twice (only a damaged index
        // allows that), would stop the file importing: a new one instead.
        std::string uuid = c.uuid;
        while (!detail::valid_uuid(uuid) || !uuids.insert(uuid).second) uuid = detail::new_uuid();
        doc["uuid"] = uuid;
        doc["title"] = c.title;
        doc["model"] = c.model;
        doc["system_prompt"] = c.system_prompt;
        doc["sampling"] = stored_object(c.sampling_json);
        doc["pinned"] = c.pinned;
        doc["archived"] = c.archived;
        doc["created_ms"] = c.created_ms;
        doc["updated_ms"] = c.updated_ms;
        doc["active_message"] = (c.active_message_id && local.count(*c.active_message_id))
                                    ? ordered_json(local[*c.active_message_id]) : ordered_json(nullptr);
        ordered_json messages = ordered_json::array();
        for (size_t i : order) {
            const Message& m = tree.messages[i];
            ordered_json jm;
            jm["id"] = local[m.id];
            jm["parent"] = !cut[i] && m.parent_id && local.count(*m.parent_id) ? ordered_json(local[*m.parent_id])
                                                                               : ordered_json(nullptr);
            jm["role"] = role_name(m.role);
            // Nothing streams into an export: an unfinished answer is an interrupted one.
            jm["state"] = state_name(m.state == MessageState::Streaming ? MessageState::Interrupted : m.state);
            jm["created_ms"] = m.created_ms;
            jm["updated_ms"] = m.updated_ms;
            jm["stats"] = stored_object(m.stats_json);
            jm["content"] = m.content;
            if (m.has_routing_trace) {
                auto q = m_impl->sql("SELECT data FROM routing_traces WHERE message_id = ?1");
                q->bind(1, m.id);
                if (q->step()) {
                    const std::vector<uint8_t> blob = q->col_blob(0);
                    if (decodes(blob, decode_routing_trace)) jm["routing_trace"] = detail::base64_encode(blob);
                }
            }
            {
                auto q = m_impl->sql("SELECT data FROM token_probabilities WHERE message_id = ?1");
                q->bind(1, m.id);
                if (q->step()) {
                    const std::vector<uint8_t> blob = q->col_blob(0);
                    if (decodes(blob, decode_token_probabilities)) jm["token_probabilities"] = detail::base64_encode(blob);
                }
            }
            messages.push_back(std::move(jm));
        }
        doc["messages"] = std::move(messages);
        out << (first ? "\n" : ",\n") << doc.dump(-1, ' ', false, ordered_json::error_handler_t::replace);
        first = false;
    }
    out << "\n]}\n";
    if (!out) m_impl->fail(StorageErrorCode::Io, "export: cannot write the output");
}

std::string Store::export_markdown(int64_t conversation_id) {
    const ConversationTree tree = open_conversation(conversation_id);
    const Conversation& c = tree.conversation;
    std::string md = "# " + (c.title.empty() ? std::string("Untitled conversation") : c.title) + "\n\n";
    if (!c.model.empty()) md += "- Model: " + c.model + "\n";
    md += "- Started: " + detail::utc_time_text(c.created_ms) + "\n";
    md += "- Last activity: " + detail::utc_time_text(c.updated_ms) + "\n";
    if (c.sampling_json != "{}") md += "- Sampling: `" + c.sampling_json + "`\n";
    const size_t n_leaves = [&] {
        std::set<int64_t> parents;
        for (const Message& m : tree.messages) if (m.parent_id) parents.insert(*m.parent_id);
        return tree.messages.size() - parents.size();
    }();
    if (n_leaves > 1) {
        md += "- Branches: " + std::to_string(n_leaves) + " (this file shows the active one; export JSON for all)\n";
    }
    if (!c.system_prompt.empty()) {
        md += "\n**System prompt**\n\n";
        size_t at = 0;
        while (at <= c.system_prompt.size()) {
            const size_t nl = c.system_prompt.find('\n', at);
            md += "> " + c.system_prompt.substr(at, nl == std::string::npos ? std::string::npos : nl - at) + "\n";
            if (nl == std::string::npos) break;
            at = nl + 1;
        }
    }
    std::map<int64_t, const Message*> by_id;
    for (const Message& m : tree.messages) by_id[m.id] = &m;
    for (int64_t id : tree.active_path) {
        const Message& m = *by_id.at(id);
        static const char* headings[] = {"System", "User", "Assistant", "Tool"};
        md += "\n## " + std::string(headings[static_cast<int>(m.role)]) + " \xC2\xB7 " +
              detail::utc_time_text(m.created_ms) + "\n\n" + m.content;
        if (!m.content.empty() && m.content.back() != '\n') md += "\n";
        if (m.state == MessageState::Interrupted || m.state == MessageState::Streaming) md += "\n*(interrupted)*\n";
        if (m.state == MessageState::Error) md += "\n*(generation failed)*\n";
    }
    return md;
}

}  // namespace cetus::storage
