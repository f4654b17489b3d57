// HistoryStore over cetus::storage::Store: converts values, catches StorageError at this
// boundary and reports it as storageError. Runs on the GUI thread only.
#include "cetus/ui/sqlite_history_store.h"

#include "log.h"

#include <cetus/storage/attachments.h>
#include <cetus/storage/store.h>

#include <QFile>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>

namespace cetus::ui {

namespace st = cetus::storage;

namespace {

std::string u8(const QString& s) { return s.toStdString(); }
QString qs(const std::string& s) { return QString::fromStdString(s); }

st::Role toStorage(ChatRole r) {
    switch (r) {
    case ChatRole::System: return st::Role::System;
    case ChatRole::User: return st::Role::User;
    case ChatRole::Assistant: return st::Role::Assistant;
    }
    return st::Role::User;
}
ChatRole fromStorage(st::Role r) {
    switch (r) {
    case st::Role::System: return ChatRole::System;
    case st::Role::Assistant: return ChatRole::Assistant;
    default: return ChatRole::User;
    }
}
st::MessageState toStorage(MessageStatus s) {
    switch (s) {
    case MessageStatus::Streaming: return st::MessageState::Streaming;
    case MessageStatus::Complete: return st::MessageState::Complete;
    case MessageStatus::Interrupted: return st::MessageState::Interrupted;
    case MessageStatus::Error: return st::MessageState::Error;
    }
    return st::MessageState::Complete;
}
MessageStatus fromStorage(st::MessageState s) {
    switch (s) {
    case st::MessageState::Streaming: return MessageStatus::Streaming;
    case st::MessageState::Complete: return MessageStatus::Complete;
    case st::MessageState::Interrupted: return MessageStatus::Interrupted;
    case st::MessageState::Error: return MessageStatus::Error;
    }
    return MessageStatus::Complete;
}

}  // namespace

template <class F>
auto SqliteHistoryStore::guarded(const char* what, F&& f) -> decltype(f()) {
    try {
        return f();
    } catch (const std::exception& e) {
        logger()->warn("storage: {} failed: {}", what, e.what());
        emit storageError(tr("Could not %1: %2").arg(QString::fromUtf8(what), QString::fromUtf8(e.what())));
        return decltype(f()){};
    }
}

SqliteHistoryStore::SqliteHistoryStore(std::unique_ptr<st::Store> store) : m_store(std::move(store)) {}
SqliteHistoryStore::~SqliteHistoryStore() = default;

std::unique_ptr<SqliteHistoryStore> SqliteHistoryStore::open(const QString& file, QString* notice, QString* error) {
    const std::filesystem::path path = file.toStdString();
    try {
        auto store = std::make_unique<st::Store>(st::Store::open(path));
        if (notice && store->n_recovered() > 0) {
            *notice = tr("%n unfinished answer(s) from the last session were marked interrupted.", nullptr, store->n_recovered());
        }
        return std::unique_ptr<SqliteHistoryStore>(new SqliteHistoryStore(std::move(store)));
    } catch (const st::StorageError& e) {
        const auto code = e.code();
        if (code != st::StorageErrorCode::Corrupt && code != st::StorageErrorCode::NotADatabase) {
            if (error) *error = QString::fromUtf8(e.what());
            return nullptr;
        }
        try {
            const auto aside = st::Store::move_aside(path);
            auto store = std::make_unique<st::Store>(st::Store::open(path));
            if (notice) {
                *notice = tr("The conversation database was damaged (%1). It was kept as %2 and a new one was started.")
                              .arg(QString::fromUtf8(e.what()), QString::fromStdString(aside.string()));
            }
            return std::unique_ptr<SqliteHistoryStore>(new SqliteHistoryStore(std::move(store)));
        } catch (const std::exception& e2) {
            if (error) *error = QString::fromUtf8(e2.what());
            return nullptr;
        }
    } catch (const std::exception& e) {
        if (error) *error = QString::fromUtf8(e.what());
        return nullptr;
    }
}

std::unique_ptr<SqliteHistoryStore> SqliteHistoryStore::openInMemory() {
    return std::unique_ptr<SqliteHistoryStore>(
        new SqliteHistoryStore(std::make_unique<st::Store>(st::Store::open_memory())));
}

std::vector<ConversationSummaryRecord> SqliteHistoryStore::listConversations(bool archived, int limit) {
    return guarded("list conversations", [&] {
        std::vector<ConversationSummaryRecord> out;
        st::ListOptions options;
        options.archived = archived ? st::ArchiveFilter::Only : st::ArchiveFilter::Exclude;
        // The store's pages hold up to 1,000.
        while (int(out.size()) < limit) {
            options.limit = std::min(1000, limit - int(out.size()));
            options.offset = int(out.size());
            const auto page = m_store->list_conversations(options);
            for (const auto& c : page) out.push_back({c.id, qs(c.title), c.pinned, c.updated_ms, c.n_messages, c.archived});
            if (int(page.size()) < options.limit) break;
        }
        return out;
    });
}

std::optional<qint64> SqliteHistoryStore::createConversation(const QString& model, const QString& system_prompt,
                                                             const QString& sampling_json) {
    return guarded("create a conversation", [&]() -> std::optional<qint64> {
        st::NewConversation c;
        c.model = u8(model);
        c.system_prompt = u8(system_prompt);
        c.sampling_json = sampling_json.isEmpty() ? "{}" : u8(sampling_json);
        return m_store->create_conversation(c);
    });
}

std::optional<ConversationRecord> SqliteHistoryStore::openConversation(qint64 id) {
    return guarded("open the conversation", [&]() -> std::optional<ConversationRecord> {
        const st::ConversationTree tree = m_store->open_conversation(id);
        ConversationRecord r;
        r.id = tree.conversation.id;
        r.title = qs(tree.conversation.title);
        r.model = qs(tree.conversation.model);
        r.system_prompt = qs(tree.conversation.system_prompt);
        r.sampling_json = qs(tree.conversation.sampling_json);
        r.pinned = tree.conversation.pinned;
        r.archived = tree.conversation.archived;
        for (const st::Message& m : tree.messages) {
            MessageRecord mr;
            mr.id = m.id;
            mr.parent_id = m.parent_id;
            mr.role = fromStorage(m.role);
            mr.content = qs(m.content);
            mr.status = fromStorage(m.state);
            mr.stats_json = qs(m.stats_json);
            mr.created_ms = m.created_ms;
            mr.has_routing_trace = m.has_routing_trace;
            r.messages.push_back(std::move(mr));
        }
        r.active_path.assign(tree.active_path.begin(), tree.active_path.end());
        return r;
    });
}

bool SqliteHistoryStore::renameConversation(qint64 id, const QString& title) {
    return guarded("rename the conversation", [&] { m_store->rename_conversation(id, u8(title)); return true; });
}

bool SqliteHistoryStore::setPinned(qint64 id, bool pinned) {
    return guarded("pin the conversation", [&] { m_store->set_pinned(id, pinned); return true; });
}

bool SqliteHistoryStore::setArchived(qint64 id, bool archived) {
    return guarded("archive the conversation", [&] { m_store->set_archived(id, archived); return true; });
}

bool SqliteHistoryStore::deleteConversation(qint64 id) {
    return guarded("delete the conversation", [&] { m_store->delete_conversation(id); return true; });
}

bool SqliteHistoryStore::setSettings(qint64 id, const QString& model, const QString& system_prompt,
                                     const QString& sampling_json) {
    return guarded("save the conversation settings", [&] {
        m_store->set_settings(id, u8(model), u8(system_prompt), u8(sampling_json));
        return true;
    });
}

bool SqliteHistoryStore::setActiveMessage(qint64 conversation_id, qint64 message_id) {
    return guarded("switch the branch", [&] { m_store->set_active_message(conversation_id, message_id); return true; });
}

std::optional<qint64> SqliteHistoryStore::addMessage(qint64 conversation_id, std::optional<qint64> parent_id,
                                                     ChatRole role, const QString& content, MessageStatus status) {
    return guarded("save the message", [&]() -> std::optional<qint64> {
        st::NewMessage m;
        m.conversation_id = conversation_id;
        m.parent_id = parent_id;
        m.role = toStorage(role);
        m.content = u8(content);
        m.state = toStorage(status);
        return m_store->add_message(m);
    });
}

std::optional<qint64> SqliteHistoryStore::branchAt(qint64 message_id, const QString& content, MessageStatus status) {
    return guarded("start a new branch", [&]() -> std::optional<qint64> {
        return m_store->branch_at(message_id, u8(content), toStorage(status));
    });
}

bool SqliteHistoryStore::clearRoutingTrace(qint64 message_id) {
    return guarded("update the routing trace", [&] { m_store->delete_routing_trace(message_id); return true; });
}

bool SqliteHistoryStore::reopenMessage(qint64 message_id) {
    return guarded("continue the answer", [&] { m_store->reopen_message(message_id); return true; });
}

bool SqliteHistoryStore::checkpointMessage(qint64 message_id, const QString& content) {
    return guarded("save the partial answer", [&] { m_store->checkpoint_message(message_id, u8(content)); return true; });
}

bool SqliteHistoryStore::finishMessage(qint64 message_id, const QString& content, MessageStatus status,
                                       const QString& stats_json) {
    return guarded("save the answer", [&] {
        m_store->finish_message(message_id, u8(content), toStorage(status), stats_json.isEmpty() ? "{}" : u8(stats_json));
        return true;
    });
}

bool SqliteHistoryStore::setRoutingTrace(qint64 message_id, const RoutingData& trace) {
    return guarded("save the routing trace", [&] {
        st::RoutingTrace t;
        t.n_layers = trace.n_layers;
        t.top_k = trace.top_k;
        t.first_layer = trace.first_layer;
        t.expert_ids.reserve(trace.expert_ids.size());
        for (int32_t e : trace.expert_ids) t.expert_ids.push_back(uint16_t(std::max(0, e)));
        t.weights = trace.weights;
        for (float& w : t.weights) if (!(w >= 0.0f) || !std::isfinite(w)) w = 0.0f;
        m_store->set_routing_trace(message_id, t);
        return true;
    });
}

std::optional<RoutingData> SqliteHistoryStore::routingTrace(qint64 message_id) {
    return guarded("read the routing trace", [&]() -> std::optional<RoutingData> {
        const auto t = m_store->routing_trace(message_id);
        if (!t) return std::nullopt;
        RoutingData r;
        r.n_layers = t->n_layers;
        r.top_k = t->top_k;
        r.first_layer = t->first_layer;
        r.expert_ids.assign(t->expert_ids.begin(), t->expert_ids.end());
        r.weights = t->weights;
        return r;
    });
}

bool SqliteHistoryStore::setTokenProbabilities(qint64 message_id, const TokenProbabilityData& p) {
    return guarded("save the token probabilities", [&] {
        st::TokenProbabilities t;
        t.top_n = p.top_n;
        // Figures from a remote endpoint may be anything: NaN and positive values are
        // stored as no mass and certainty.
        auto clean = [](float v) { return std::isnan(v) ? -std::numeric_limits<float>::infinity() : std::min(v, 0.0f); };
        for (float v : p.logprobs) t.logprobs.push_back(clean(v));
        for (size_t i = 0; i < p.alt_texts.size() && i < p.alt_logprobs.size(); ++i)
            t.alternatives.push_back({u8(p.alt_texts[i]), clean(p.alt_logprobs[i])});
        m_store->set_token_probabilities(message_id, t);
        return true;
    });
}

std::optional<TokenProbabilityData> SqliteHistoryStore::tokenProbabilities(qint64 message_id) {
    return guarded("read the token probabilities", [&]() -> std::optional<TokenProbabilityData> {
        const auto t = m_store->token_probabilities(message_id);
        if (!t) return std::nullopt;
        TokenProbabilityData p;
        p.top_n = t->top_n;
        p.logprobs = t->logprobs;
        for (const st::TokenAlternative& a : t->alternatives) {
            p.alt_texts.push_back(qs(a.text));
            p.alt_logprobs.push_back(a.logprob);
        }
        return p;
    });
}

bool SqliteHistoryStore::clearTokenProbabilities(qint64 message_id) {
    return guarded("update the token probabilities", [&] { m_store->delete_token_probabilities(message_id); return true; });
}

std::vector<SearchResult> SqliteHistoryStore::search(const QString& text) {
    return guarded("search", [&] {
        std::vector<SearchResult> out;
        if (text.trimmed().isEmpty()) return out;
        for (const st::SearchHit& h : m_store->search(u8(text))) {
            // Mark with control characters first, so escaping cannot touch the tags.
            QString marked = qs(st::mark_snippet(h, "\x01", "\x02")).toHtmlEscaped();
            marked.replace(QChar(1), QStringLiteral("<b>")).replace(QChar(2), QStringLiteral("</b>"));
            out.push_back({h.conversation_id, h.message_id, qs(h.conversation_title), marked});
        }
        return out;
    });
}

bool SqliteHistoryStore::exportJson(const QString& file, std::optional<qint64> conversation_id) {
    return guarded("export", [&] {
        std::ofstream out(file.toStdString(), std::ios::binary | std::ios::trunc);
        if (!out) throw std::runtime_error("cannot write " + file.toStdString());
        m_store->export_json(out, conversation_id);
        out.close();
        if (!out) throw std::runtime_error("cannot write " + file.toStdString());
        return true;
    });
}

bool SqliteHistoryStore::exportMarkdown(const QString& file, qint64 conversation_id) {
    return guarded("export", [&] {
        const std::string md = m_store->export_markdown(conversation_id);
        QFile f(file);
        if (!f.open(QIODevice::WriteOnly | QIODevice::Truncate) || f.write(md.data(), qint64(md.size())) != qint64(md.size())) {
            throw std::runtime_error("cannot write " + file.toStdString() + ": " + f.errorString().toStdString());
        }
        return true;
    });
}

std::optional<int> SqliteHistoryStore::importJson(const QString& file) {
    return guarded("import", [&]() -> std::optional<int> {
        QFile f(file);
        if (!f.open(QIODevice::ReadOnly)) throw std::runtime_error("cannot read " + file.toStdString() + ": " + f.errorString().toStdString());
        const QByteArray data = f.readAll();
        const auto r = m_store->import_json(std::string_view(data.constData(), size_t(data.size())), file.toStdString());
        return r.n_conversations;
    });
}

QString SqliteHistoryStore::location() const {
    const auto& p = m_store->path();
    return p.empty() ? tr("in memory") : QString::fromStdString(p.string());
}

QString composeMessage(const QList<Attachment>& files, const QString& text) {
    std::vector<st::AttachedFile> out;
    out.reserve(size_t(files.size()));
    for (const Attachment& f : files) out.push_back({f.name.toStdString(), f.text.toStdString()});
    return QString::fromStdString(st::compose_message(out, text.toStdString()));
}

MessageParts splitMessage(const QString& content) {
    const st::MessageParts parts = st::split_message(content.toStdString());
    MessageParts out;
    for (const st::AttachedFile& f : parts.files)
        out.files.append(Attachment{QString::fromStdString(f.name), QString::fromStdString(f.text)});
    out.text = parts.files.empty() ? content : QString::fromStdString(parts.text);
    return out;
}

std::optional<Attachment> readAttachment(const QString& path, QString* error) {
    try {
        const std::string native = QFile::encodeName(path).toStdString();
        st::AttachedFile f = st::read_attachment(std::filesystem::path(native));
        return Attachment{QString::fromStdString(f.name), QString::fromStdString(f.text)};
    } catch (const std::exception& e) {
        if (error) *error = QString::fromStdString(e.what());
        return std::nullopt;
    }
}

qint64 attachmentLimitBytes() { return qint64(st::k_max_attachment_bytes); }

}  // namespace cetus::ui
