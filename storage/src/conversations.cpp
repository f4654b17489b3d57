// Conversation operations: create, list (pinned first, then by last activity),
// open with the message tree, rename, pin, archive, settings, delete, statistics.
#include "store_impl.h"

#include "text_util.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>
#include <unordered_set>

namespace cetus::storage {
namespace {

// From the active message up to its root, then down the newest child to a leaf.
// A cycle of parents (only a file edited by hand has one) ends the walk where it
// would come back to a message already on the path.
std::vector<int64_t> active_path(const std::vector<Message>& messages, std::optional<int64_t> active) {
    if (messages.empty()) return {};
    std::unordered_map<int64_t, size_t> index;
    std::unordered_map<int64_t, int64_t> newest_child;
    for (size_t i = 0; i < messages.size(); ++i) {
        index[messages[i].id] = i;
        if (messages[i].parent_id) newest_child[*messages[i].parent_id] = messages[i].id;
    }
    const int64_t start = active && index.count(*active) ? *active : messages.back().id;
    std::vector<int64_t> path;
    std::unordered_set<int64_t> on_path;
    for (std::optional<int64_t> at = start; at && index.count(*at) && on_path.insert(*at).second;
         at = messages[index[*at]].parent_id) {
        path.push_back(*at);
    }
    std::reverse(path.begin(), path.end());
    for (auto it = newest_child.find(start); it != newest_child.end() && on_path.insert(it->second).second;
         it = newest_child.find(it->second)) {
        path.push_back(it->second);
    }
    return path;
}

void check_paging(const Store::Impl& impl, int limit, int offset) {
    if (limit < 1 || limit > 1000 || offset < 0) {
        impl.fail(StorageErrorCode::InvalidArgument, "page limit must be 1..1000 and offset >= 0");
    }
}

void require_changed(const Store::Impl& impl, int64_t id) {
    if (impl.changes() == 0) impl.fail(StorageErrorCode::NotFound, "no conversation with id " + std::to_string(id));
}

}  // namespace

int64_t Store::create_conversation(const NewConversation& c) {
    detail::require_utf8(*m_impl, c.title, "title");
    detail::require_utf8(*m_impl, c.model, "model");
    detail::require_utf8(*m_impl, c.system_prompt, "system prompt");
    const std::string sampling = detail::normalise_json_object(*m_impl, c.sampling_json, "sampling settings");
    const int64_t now = m_impl->now();
    detail::WriteTx tx(*m_impl);
    auto q = m_impl->sql(
        "INSERT INTO conversations (uuid, title, model, system_prompt, sampling_json, created_ms, updated_ms) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)");
    q->bind_all(detail::new_uuid(), c.title, c.model, c.system_prompt, sampling, now).run();
    const int64_t id = m_impl->last_id();
    tx.commit();
    return id;
}

std::vector<ConversationSummary> Store::list_conversations(const ListOptions& options) {
    check_paging(*m_impl, options.limit, options.offset);
    // One text per filter, so each uses its index for the order and the limit.
#define CETUS_LIST_SQL(where)                                                                     \
    "SELECT c.id, c.title, c.model, c.pinned, c.archived, c.created_ms, c.updated_ms, "           \
    "(SELECT count(*) FROM messages m WHERE m.conversation_id = c.id) FROM conversations c " where \
    " ORDER BY c.pinned DESC, c.updated_ms DESC, c.id DESC LIMIT ?1 OFFSET ?2"
    const char* sql = options.archived == ArchiveFilter::Exclude ? CETUS_LIST_SQL("WHERE c.archived = 0")
                      : options.archived == ArchiveFilter::Only  ? CETUS_LIST_SQL("WHERE c.archived = 1")
                                                                 : CETUS_LIST_SQL("");
#undef CETUS_LIST_SQL
    std::vector<ConversationSummary> rows;
    auto q = m_impl->sql(sql);
    q->bind_all(options.limit, options.offset);
    while (q->step()) {
        ConversationSummary s;
        s.id = q->col_int(0);
        s.title = q->col_text(1);
        s.model = q->col_text(2);
        s.pinned = q->col_int(3) != 0;
        s.archived = q->col_int(4) != 0;
        s.created_ms = q->col_int(5);
        s.updated_ms = q->col_int(6);
        s.n_messages = q->col_int(7);
        rows.push_back(std::move(s));
    }
    return rows;
}

int64_t Store::count_conversations(ArchiveFilter filter) {
    const char* sql = filter == ArchiveFilter::Exclude ? "SELECT count(*) FROM conversations WHERE archived = 0"
                      : filter == ArchiveFilter::Only  ? "SELECT count(*) FROM conversations WHERE archived = 1"
                                                       : "SELECT count(*) FROM conversations";
    auto q = m_impl->sql(sql);
    q->step();
    return q->col_int(0);
}

Conversation Store::conversation(int64_t id) {
    auto q = m_impl->sql(
        "SELECT id, uuid, title, model, system_prompt, sampling_json, pinned, archived, created_ms, updated_ms, "
        "active_message_id FROM conversations WHERE id = ?1");
    q->bind(1, id);
    if (!q->step()) m_impl->fail(StorageErrorCode::NotFound, "no conversation with id " + std::to_string(id));
    Conversation c;
    c.id = q->col_int(0);
    c.uuid = q->col_text(1);
    c.title = q->col_text(2);
    c.model = q->col_text(3);
    c.system_prompt = q->col_text(4);
    c.sampling_json = q->col_text(5);
    c.pinned = q->col_int(6) != 0;
    c.archived = q->col_int(7) != 0;
    c.created_ms = q->col_int(8);
    c.updated_ms = q->col_int(9);
    c.active_message_id = q->col_opt_int(10);
    return c;
}

ConversationTree Store::open_conversation(int64_t id) {
    ConversationTree tree;
    tree.conversation = conversation(id);
    {
        auto q = m_impl->sql(CETUS_MESSAGE_SELECT "WHERE m.conversation_id = ?1 ORDER BY m.id");
        q->bind(1, id);
        while (q->step()) tree.messages.push_back(detail::read_message(*m_impl, *q));
    }
    tree.active_path = active_path(tree.messages, tree.conversation.active_message_id);
    return tree;
}

void Store::rename_conversation(int64_t id, std::string_view title) {
    detail::require_utf8(*m_impl, title, "title");
    auto q = m_impl->sql("UPDATE conversations SET title = ?2 WHERE id = ?1");
    q->bind_all(id, title).run();
    require_changed(*m_impl, id);
}

void Store::set_pinned(int64_t id, bool pinned) {
    auto q = m_impl->sql("UPDATE conversations SET pinned = ?2 WHERE id = ?1");
    q->bind_all(id, pinned).run();
    require_changed(*m_impl, id);
}

void Store::set_archived(int64_t id, bool archived) {
    auto q = m_impl->sql("UPDATE conversations SET archived = ?2 WHERE id = ?1");
    q->bind_all(id, archived).run();
    require_changed(*m_impl, id);
}

void Store::set_settings(int64_t id, std::string_view model, std::string_view system_prompt,
                         std::string_view sampling_json) {
    detail::require_utf8(*m_impl, model, "model");
    detail::require_utf8(*m_impl, system_prompt, "system prompt");
    const std::string sampling = detail::normalise_json_object(*m_impl, sampling_json, "sampling settings");
    auto q = m_impl->sql("UPDATE conversations SET model = ?2, system_prompt = ?3, sampling_json = ?4 WHERE id = ?1");
    q->bind_all(id, model, system_prompt, sampling).run();
    require_changed(*m_impl, id);
}

void Store::set_active_message(int64_t conversation_id, int64_t message_id) {
    const Message m = message(message_id);
    if (m.conversation_id != conversation_id) {
        m_impl->fail(StorageErrorCode::InvalidArgument, "message " + std::to_string(message_id) +
                                                            " is not in conversation " + std::to_string(conversation_id));
    }
    auto q = m_impl->sql("UPDATE conversations SET active_message_id = ?2 WHERE id = ?1");
    q->bind_all(conversation_id, message_id).run();
    require_changed(*m_impl, conversation_id);
}

void Store::delete_conversation(int64_t id) {
    detail::WriteTx tx(*m_impl);
    auto q = m_impl->sql("DELETE FROM conversations WHERE id = ?1");
    q->bind(1, id).run();
    require_changed(*m_impl, id);
    tx.commit();
}

ConversationStats Store::statistics(int64_t conversation_id) {
    conversation(conversation_id);  // NotFound
    ConversationStats s;
    {
        // Statistics are written normalised, but a hand-edited row must not fail the query.
#define CETUS_STAT(key) "total(CASE WHEN json_valid(stats_json) THEN json_extract(stats_json, '$." key "') END)"
        auto q = m_impl->sql(
            "SELECT count(*), total(role = 'user'), total(role = 'assistant'), total(state = 'interrupted'), "
            "total(length(CAST(content AS BLOB))), " CETUS_STAT("n_prompt_tokens") ", " CETUS_STAT(
                "n_generated_tokens") ", " CETUS_STAT("n_draft_proposed") ", " CETUS_STAT("n_draft_accepted") ", "
            "avg(CASE WHEN json_valid(stats_json) THEN json_extract(stats_json, '$.decode_tokens_per_s') END), "
            "coalesce(min(created_ms), 0), coalesce(max(updated_ms), 0) "
            "FROM messages WHERE conversation_id = ?1");
#undef CETUS_STAT
        q->bind(1, conversation_id);
        q->step();
        const auto whole = [&](int i) { return static_cast<int64_t>(std::llround(q->col_double(i))); };
        s.n_messages = q->col_int(0);
        s.n_user_messages = whole(1);
        s.n_assistant_messages = whole(2);
        s.n_interrupted = whole(3);
        s.content_bytes = whole(4);
        s.n_prompt_tokens = whole(5);
        s.n_generated_tokens = whole(6);
        s.n_draft_proposed = whole(7);
        s.n_draft_accepted = whole(8);
        s.mean_decode_tokens_per_s = q->col_null(9) ? 0.0 : q->col_double(9);
        s.first_ms = q->col_int(10);
        s.last_ms = q->col_int(11);
    }
    {
        auto q = m_impl->sql(
            "SELECT count(*) FROM messages m WHERE m.conversation_id = ?1 "
            "AND NOT EXISTS (SELECT 1 FROM messages c WHERE c.parent_id = m.id)");
        q->bind(1, conversation_id);
        q->step();
        s.n_branches = q->col_int(0);
    }
    // Stored sizes of the per-answer blobs (the statements are cached by their text).
#define CETUS_BLOB_BYTES(table)                                                                  \
    "SELECT coalesce(sum(length(t.data)), 0) FROM " table " t JOIN messages m ON m.id = t.message_id " \
    "WHERE m.conversation_id = ?1"
    const auto blob_bytes = [&](const char* sql) {
        auto q = m_impl->sql(sql);
        q->bind(1, conversation_id);
        q->step();
        return q->col_int(0);
    };
    s.routing_trace_bytes = blob_bytes(CETUS_BLOB_BYTES("routing_traces"));
    s.token_probability_bytes = blob_bytes(CETUS_BLOB_BYTES("token_probabilities"));
#undef CETUS_BLOB_BYTES
    return s;
}

}  // namespace cetus::storage
