// Message operations: append (auto-title), branch, the streaming checkpoint and
// finish, and routing traces. Each call is one transaction.
#include "store_impl.h"

#include "text_util.h"

namespace cetus::storage {
namespace {

void touch_conversation(Store::Impl& impl, int64_t conversation_id, int64_t now) {
    auto q = impl.sql("UPDATE conversations SET updated_ms = max(updated_ms, ?2) WHERE id = ?1");
    q->bind_all(conversation_id, now).run();
}

[[noreturn]] void no_message(const Store::Impl& impl, int64_t id) {
    impl.fail(StorageErrorCode::NotFound, "no message with id " + std::to_string(id));
}

}  // namespace

namespace detail {

Message read_message(const Store::Impl& impl, Stmt& s) {
    Message m;
    m.id = s.col_int(0);
    m.conversation_id = s.col_int(1);
    m.parent_id = s.col_opt_int(2);
    const auto role = parse_role(s.col_text(3));
    const auto state = parse_state(s.col_text(5));
    if (!role || !state) {
        impl.fail(StorageErrorCode::Corrupt, "damaged: message " + std::to_string(m.id) + " has an unknown role or state");
    }
    m.role = *role;
    m.content = s.col_text(4);
    m.state = *state;
    m.stats_json = s.col_text(6);
    m.created_ms = s.col_int(7);
    m.updated_ms = s.col_int(8);
    m.has_routing_trace = s.col_int(9) != 0;
    return m;
}

}  // namespace detail

int64_t Store::add_message(const NewMessage& nm) {
    detail::require_utf8(*m_impl, nm.content, "message content");
    const std::string stats = detail::normalise_json_object(*m_impl, nm.stats_json, "message statistics");
    const int64_t now = m_impl->now();
    detail::WriteTx tx(*m_impl);
    std::string title;
    {
        auto q = m_impl->sql("SELECT title FROM conversations WHERE id = ?1");
        q->bind(1, nm.conversation_id);
        if (!q->step()) {
            m_impl->fail(StorageErrorCode::NotFound, "no conversation with id " + std::to_string(nm.conversation_id));
        }
        title = q->col_text(0);
    }
    if (nm.parent_id) {
        auto q = m_impl->sql("SELECT conversation_id FROM messages WHERE id = ?1");
        q->bind(1, *nm.parent_id);
        if (!q->step()) no_message(*m_impl, *nm.parent_id);
        if (q->col_int(0) != nm.conversation_id) {
            m_impl->fail(StorageErrorCode::InvalidArgument, "parent message " + std::to_string(*nm.parent_id) +
                                                                " is not in conversation " +
                                                                std::to_string(nm.conversation_id));
        }
    }
    {
        auto q = m_impl->sql(
            "INSERT INTO messages (conversation_id, parent_id, role, content, state, writer, stats_json, "
            "created_ms, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)");
        q->bind_all(nm.conversation_id, nm.parent_id, role_name(nm.role), nm.content, state_name(nm.state));
        if (nm.state == MessageState::Streaming) q->bind(6, m_impl->writer);
        q->bind(7, stats).bind(8, now).run();
    }
    const int64_t id = m_impl->last_id();
    {
        std::string new_title = title;
        if (title.empty() && nm.role == Role::User) new_title = make_auto_title(nm.content);
        auto q = m_impl->sql(
            "UPDATE conversations SET updated_ms = max(updated_ms, ?2), active_message_id = ?3, title = ?4 WHERE id = ?1");
        q->bind_all(nm.conversation_id, now, id, new_title).run();
    }
    tx.commit();
    return id;
}

int64_t Store::branch_at(int64_t message_id, std::string_view content, MessageState state) {
    const Message old = message(message_id);
    NewMessage nm;
    nm.conversation_id = old.conversation_id;
    nm.parent_id = old.parent_id;
    nm.role = old.role;
    nm.content = std::string(content);
    nm.state = state;
    return add_message(nm);
}

void Store::checkpoint_message(int64_t message_id, std::string_view content) {
    detail::require_utf8(*m_impl, content, "message content");
    const int64_t now = m_impl->now();
    detail::WriteTx tx(*m_impl);
    auto q = m_impl->sql(
        "UPDATE messages SET content = ?2, updated_ms = ?3, writer = ?4 WHERE id = ?1 AND state = 'streaming' "
        "RETURNING conversation_id");
    q->bind_all(message_id, content, now, m_impl->writer);
    if (!q->step()) {
        q->reset();
        const Message m = message(message_id);  // NotFound
        m_impl->fail(StorageErrorCode::InvalidArgument, "message " + std::to_string(message_id) +
                                                            " is not streaming (it is " + state_name(m.state) + ")");
    }
    const int64_t conversation_id = q->col_int(0);
    q->run();
    touch_conversation(*m_impl, conversation_id, now);
    tx.commit();
}

void Store::reopen_message(int64_t message_id) {
    const int64_t now = m_impl->now();
    detail::WriteTx tx(*m_impl);
    auto q = m_impl->sql(
        "UPDATE messages SET state = 'streaming', writer = ?2, updated_ms = ?3 WHERE id = ?1 AND role = 'assistant' "
        "AND state IN ('complete', 'interrupted') RETURNING conversation_id");
    q->bind_all(message_id, m_impl->writer, now);
    if (!q->step()) {
        q->reset();
        const Message m = message(message_id);  // NotFound
        m_impl->fail(StorageErrorCode::InvalidArgument, "message " + std::to_string(message_id) + " (" +
                                                            role_name(m.role) + ", " + state_name(m.state) +
                                                            ") is not an answer that can be continued");
    }
    const int64_t conversation_id = q->col_int(0);
    q->run();
    touch_conversation(*m_impl, conversation_id, now);
    tx.commit();
}

void Store::finish_message(int64_t message_id, std::string_view content, MessageState state,
                           std::string_view stats_json) {
    if (state == MessageState::Streaming) {
        m_impl->fail(StorageErrorCode::InvalidArgument, "finish_message needs a final state, not streaming");
    }
    detail::require_utf8(*m_impl, content, "message content");
    const std::string stats = detail::normalise_json_object(*m_impl, stats_json, "message statistics");
    const int64_t now = m_impl->now();
    detail::WriteTx tx(*m_impl);
    auto q = m_impl->sql(
        "UPDATE messages SET content = ?2, state = ?3, stats_json = ?4, writer = NULL, updated_ms = ?5 "
        "WHERE id = ?1 RETURNING conversation_id");
    q->bind_all(message_id, content, state_name(state), stats, now);
    if (!q->step()) no_message(*m_impl, message_id);
    const int64_t conversation_id = q->col_int(0);
    q->run();
    touch_conversation(*m_impl, conversation_id, now);
    tx.commit();
}

Message Store::message(int64_t id) {
    auto q = m_impl->sql(CETUS_MESSAGE_SELECT "WHERE m.id = ?1");
    q->bind(1, id);
    if (!q->step()) no_message(*m_impl, id);
    return detail::read_message(*m_impl, *q);
}

namespace {

// The per-answer blobs (routing traces, token probabilities): one row per message, its
// statements as literals (the statement cache keys on them).
struct AnswerBlobs {
    const char* put;
    const char* remove;
    const char* get;
};
constexpr AnswerBlobs k_traces{"INSERT OR REPLACE INTO routing_traces (message_id, n_tokens, data) VALUES (?1, ?2, ?3)",
                               "DELETE FROM routing_traces WHERE message_id = ?1",
                               "SELECT data FROM routing_traces WHERE message_id = ?1"};
constexpr AnswerBlobs k_probabilities{
    "INSERT OR REPLACE INTO token_probabilities (message_id, n_tokens, data) VALUES (?1, ?2, ?3)",
    "DELETE FROM token_probabilities WHERE message_id = ?1",
    "SELECT data FROM token_probabilities WHERE message_id = ?1"};

void put_blob(Store::Impl& impl, const AnswerBlobs& table, int64_t message_id, int64_t n_tokens,
              const std::vector<uint8_t>& blob) {
    detail::WriteTx tx(impl);
    {
        auto q = impl.sql("SELECT 1 FROM messages WHERE id = ?1");
        q->bind(1, message_id);
        if (!q->step()) no_message(impl, message_id);
    }
    auto q = impl.sql(table.put);
    q->bind_all(message_id, n_tokens).bind_blob(3, blob).run();
    tx.commit();
}

void delete_blob(Store::Impl& impl, const AnswerBlobs& table, int64_t message_id) {
    detail::WriteTx tx(impl);
    auto q = impl.sql(table.remove);
    q->bind(1, message_id);
    q->run();
    tx.commit();
}

// The decoded blob, nullopt without one; a blob that does not decode fails naming the message.
template <class Decode>
auto get_blob(Store::Impl& impl, const AnswerBlobs& table, int64_t message_id, Decode decode)
    -> std::optional<decltype(decode(std::span<const uint8_t>{}))> {
    auto q = impl.sql(table.get);
    q->bind(1, message_id);
    if (!q->step()) return std::nullopt;
    const std::vector<uint8_t> blob = q->col_blob(0);
    try {
        return decode(blob);
    } catch (const StorageError& e) {
        impl.fail(e.code(), "message " + std::to_string(message_id) + ": " + e.what());
    }
}

}  // namespace

void Store::set_routing_trace(int64_t message_id, const RoutingTrace& trace) {
    put_blob(*m_impl, k_traces, message_id, static_cast<int64_t>(trace.n_tokens()), encode_routing_trace(trace));
}

void Store::delete_routing_trace(int64_t message_id) { delete_blob(*m_impl, k_traces, message_id); }

std::optional<RoutingTrace> Store::routing_trace(int64_t message_id) {
    return get_blob(*m_impl, k_traces, message_id, [](std::span<const uint8_t> b) { return decode_routing_trace(b); });
}

void Store::set_token_probabilities(int64_t message_id, const TokenProbabilities& probabilities) {
    put_blob(*m_impl, k_probabilities, message_id, static_cast<int64_t>(probabilities.n_tokens()),
             encode_token_probabilities(probabilities));
}

void Store::delete_token_probabilities(int64_t message_id) { delete_blob(*m_impl, k_probabilities, message_id); }

std::optional<TokenProbabilities> Store::token_probabilities(int64_t message_id) {
    return get_blob(*m_impl, k_probabilities, message_id,
                    [](std::span<const uint8_t> b) { return decode_token_probabilities(b); });
}

}  // namespace cetus::storage
