// Import of the JSON export format. The whole document is validated into plain
// structs first (strict: unknown keys, wrong types, dangling parents and
// undecodable traces are errors naming their JSON path); only then does one
// transaction insert it. Every value reaches SQLite as a bound parameter.
#include "store_impl.h"

#include "text_util.h"

#include <nlohmann/json.hpp>

#include <limits>
#include <set>
#include <span>

namespace cetus::storage {

namespace {

using json = nlohmann::json;

struct ImportedMessage {
    std::optional<int64_t> parent;  // local id
    Role role = Role::User;
    MessageState state = MessageState::Complete;
    int64_t created_ms = 0, updated_ms = 0;
    std::string stats, content;
    std::vector<uint8_t> trace;
    int64_t n_trace_tokens = 0;
    std::vector<uint8_t> probabilities;  // token probabilities (format 2)
    int64_t n_probability_tokens = 0;
};

struct ImportedConversation {
    std::string uuid, title, model, system_prompt, sampling;
    bool pinned = false, archived = false;
    int64_t created_ms = 0, updated_ms = 0;
    std::optional<int64_t> active;  // local id
    std::vector<ImportedMessage> messages;
};

class Validator {
public:
    explicit Validator(std::string source) : m_source(std::move(source)) {}

    [[noreturn]] void fail(const std::string& path, const std::string& problem) const {
        throw StorageError(StorageErrorCode::BadImport,
                           m_source + ": " + (path.empty() ? "" : path + ": ") + problem + "; nothing was imported");
    }
    void keys(const json& object, const std::string& path, std::initializer_list<const char*> required,
              std::initializer_list<const char*> optional = {}) const {
        if (!object.is_object()) fail(path, "expected an object");
        for (const char* key : required) {
            if (!object.contains(key)) fail(path, std::string("missing \"") + key + "\"");
        }
        for (const auto& item : object.items()) {
            bool known = false;
            for (const char* key : required) known = known || item.key() == key;
            for (const char* key : optional) known = known || item.key() == key;
            if (!known) fail(path, "unknown key \"" + item.key() + "\"");
        }
    }
    std::string text(const json& object, const char* key, const std::string& path) const {
        const json& v = object.at(key);
        if (!v.is_string()) fail(path + "." + key, "expected a string");
        return v.get<std::string>();
    }
    int64_t integer(const json& object, const char* key, const std::string& path) const {
        const json& v = object.at(key);
        if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max())) {
            fail(path + "." + key, "integer out of range");
        }
        if (!v.is_number_integer()) fail(path + "." + key, "expected an integer");
        return v.get<int64_t>();
    }
    bool boolean(const json& object, const char* key, const std::string& path) const {
        const json& v = object.at(key);
        if (!v.is_boolean()) fail(path + "." + key, "expected true or false");
        return v.get<bool>();
    }
    std::string object_text(const json& object, const char* key, const std::string& path) const {
        const json& v = object.at(key);
        if (!v.is_object()) fail(path + "." + key, "expected an object");
        return v.dump();
    }
    std::optional<int64_t> local_ref(const json& object, const char* key, const std::string& path, int64_t below) const {
        const json& v = object.at(key);
        if (v.is_null()) return std::nullopt;
        if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() >= below) {
            fail(path + "." + key, "expected null or the id of an earlier message (1.." + std::to_string(below - 1) + ")");
        }
        return v.get<int64_t>();
    }

private:
    std::string m_source;
};

// An answer's blob (base64 in the file) into `out`; it must decode. Returns its token count.
template <class Decode>
int64_t read_blob(const Validator& v, const json& jm, const char* key, const std::string& path,
                  std::vector<uint8_t>& out, Decode decode) {
    const std::string field = path + "." + key;
    if (!detail::base64_decode(v.text(jm, key, path), out)) v.fail(field, "not valid base64");
    try {
        return static_cast<int64_t>(decode(out).n_tokens());
    } catch (const StorageError& e) {
        v.fail(field, e.what());
    }
}

ImportedMessage read_message(const Validator& v, const json& jm, const std::string& path, int64_t local_id) {
    v.keys(jm, path, {"id", "parent", "role", "state", "created_ms", "updated_ms", "stats", "content"},
           {"routing_trace", "token_probabilities"});
    if (v.integer(jm, "id", path) != local_id) {
        v.fail(path + ".id", "expected " + std::to_string(local_id) + " (ids run 1..n in order)");
    }
    ImportedMessage m;
    m.parent = v.local_ref(jm, "parent", path, local_id);
    const auto role = parse_role(v.text(jm, "role", path));
    if (!role) v.fail(path + ".role", "expected system, user, assistant or tool");
    m.role = *role;
    const auto state = parse_state(v.text(jm, "state", path));
    if (!state) v.fail(path + ".state", "expected streaming, complete, interrupted or error");
    m.state = *state == MessageState::Streaming ? MessageState::Interrupted : *state;  // nobody is writing it
    m.created_ms = v.integer(jm, "created_ms", path);
    m.updated_ms = v.integer(jm, "updated_ms", path);
    m.stats = v.object_text(jm, "stats", path);
    m.content = v.text(jm, "content", path);
    if (jm.contains("routing_trace"))
        m.n_trace_tokens = read_blob(v, jm, "routing_trace", path, m.trace,
                                     [](std::span<const uint8_t> b) { return decode_routing_trace(b); });
    if (jm.contains("token_probabilities"))
        m.n_probability_tokens = read_blob(v, jm, "token_probabilities", path, m.probabilities,
                                           [](std::span<const uint8_t> b) { return decode_token_probabilities(b); });
    return m;
}

ImportedConversation read_conversation(const Validator& v, const json& jc, const std::string& path) {
    v.keys(jc, path,
           {"uuid", "title", "model", "system_prompt", "sampling", "pinned", "archived", "created_ms", "updated_ms",
            "active_message", "messages"});
    ImportedConversation c;
    c.uuid = v.text(jc, "uuid", path);
    if (!detail::valid_uuid(c.uuid)) v.fail(path + ".uuid", "expected a lowercase 8-4-4-4-12 hex uuid");
    c.title = v.text(jc, "title", path);
    c.model = v.text(jc, "model", path);
    c.system_prompt = v.text(jc, "system_prompt", path);
    c.sampling = v.object_text(jc, "sampling", path);
    c.pinned = v.boolean(jc, "pinned", path);
    c.archived = v.boolean(jc, "archived", path);
    c.created_ms = v.integer(jc, "created_ms", path);
    c.updated_ms = v.integer(jc, "updated_ms", path);
    const json& messages = jc.at("messages");
    if (!messages.is_array()) v.fail(path + ".messages", "expected an array");
    for (size_t i = 0; i < messages.size(); ++i) {
        c.messages.push_back(read_message(v, messages[i], path + ".messages[" + std::to_string(i) + "]",
                                          static_cast<int64_t>(i) + 1));
    }
    c.active = v.local_ref(jc, "active_message", path, static_cast<int64_t>(c.messages.size()) + 1);
    return c;
}

std::vector<ImportedConversation> validate(const Validator& v, std::string_view text) {
    json doc;
    try {
        // nlohmann parses without recursion; the depth cap bounds what we then walk.
        std::vector<std::set<std::string>> open_objects;  // keys seen, per open object
        doc = json::parse(text, [&](int depth, json::parse_event_t event, json& parsed) {
            if (depth > 64) v.fail("", "nested deeper than 64 levels");
            if (event == json::parse_event_t::object_start) open_objects.emplace_back();
            if (event == json::parse_event_t::object_end && !open_objects.empty()) open_objects.pop_back();
            if (event == json::parse_event_t::key && !open_objects.empty() &&
                !open_objects.back().insert(parsed.get<std::string>()).second) {
                v.fail("", "key \"" + parsed.get<std::string>() + "\" appears twice in one object");
            }
            return true;
        });
    } catch (const json::exception& e) {
        v.fail("", std::string("not valid JSON: ") + e.what());
    }
    v.keys(doc, "(top level)", {"format", "format_version", "conversations"});
    if (!doc.at("format").is_string() || doc.at("format").get<std::string>() != "cetus-conversations") {
        v.fail("format", "expected \"cetus-conversations\"");
    }
    const int64_t version = v.integer(doc, "format_version", "");
    // Format 2 added token probabilities; a file of format 1 has none.
    if (version > 2)
        v.fail("format_version", "written by a newer Cetus (format " + std::to_string(version) + "; this build reads 1 and 2)");
    if (version < 1) v.fail("format_version", "expected 1 or 2");
    const json& list = doc.at("conversations");
    if (!list.is_array()) v.fail("conversations", "expected an array");
    std::vector<ImportedConversation> out;
    std::set<std::string> uuids;
    for (size_t i = 0; i < list.size(); ++i) {
        const std::string path = "conversations[" + std::to_string(i) + "]";
        out.push_back(read_conversation(v, list[i], path));
        if (!uuids.insert(out.back().uuid).second) v.fail(path + ".uuid", "appears twice in the file");
    }
    return out;
}

}  // namespace

ImportResult Store::import_json(std::string_view json_text, std::string_view source) {
    const Validator v{std::string(source)};
    const std::vector<ImportedConversation> conversations = validate(v, json_text);

    ImportResult result;
    detail::WriteTx tx(*m_impl);
    for (const ImportedConversation& c : conversations) {
        {
            auto q = m_impl->sql("SELECT 1 FROM conversations WHERE uuid = ?1");
            q->bind(1, c.uuid);
            if (q->step()) {
                ++result.n_skipped;
                continue;
            }
        }
        {
            auto q = m_impl->sql(
                "INSERT INTO conversations (uuid, title, model, system_prompt, sampling_json, pinned, archived, "
                "created_ms, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)");
            q->bind_all(c.uuid, c.title, c.model, c.system_prompt, c.sampling, c.pinned, c.archived, c.created_ms,
                        c.updated_ms)
                .run();
        }
        const int64_t conversation_id = m_impl->last_id();
        std::vector<int64_t> ids;  // local id - 1 -> new id
        for (const ImportedMessage& m : c.messages) {
            auto q = m_impl->sql(
                "INSERT INTO messages (conversation_id, parent_id, role, content, state, stats_json, created_ms, "
                "updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
            q->bind_all(conversation_id, m.parent ? std::optional<int64_t>(ids[*m.parent - 1]) : std::nullopt,
                        role_name(m.role), m.content, state_name(m.state), m.stats, m.created_ms, m.updated_ms)
                .run();
            ids.push_back(m_impl->last_id());
            if (!m.trace.empty()) {
                auto t = m_impl->sql("INSERT INTO routing_traces (message_id, n_tokens, data) VALUES (?1, ?2, ?3)");
                t->bind_all(ids.back(), m.n_trace_tokens).bind_blob(3, m.trace).run();
            }
            if (!m.probabilities.empty()) {
                auto t = m_impl->sql("INSERT INTO token_probabilities (message_id, n_tokens, data) VALUES (?1, ?2, ?3)");
                t->bind_all(ids.back(), m.n_probability_tokens).bind_blob(3, m.probabilities).run();
            }
        }
        if (c.active) {
            auto q = m_impl->sql("UPDATE conversations SET active_message_id = ?2 WHERE id = ?1");
            q->bind_all(conversation_id, ids[*c.active - 1]).run();
        }
        ++result.n_conversations;
        result.n_messages += static_cast<int64_t>(c.messages.size());
        result.conversation_ids.push_back(conversation_id);
    }
    tx.commit();
    return result;
}

}  // namespace cetus::storage
