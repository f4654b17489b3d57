// The UI's one door to the conversation database. Calls are synchronous and made on
// the GUI thread only at message boundaries (plus a checkpoint about once a second).
// Failures never throw: a call returns false / nullopt / empty and emits storageError.
#pragma once

#include "cetus/ui/types.h"

#include <QObject>

#include <optional>
#include <vector>

namespace cetus::ui {

class HistoryStore : public QObject {
    Q_OBJECT
public:
    using QObject::QObject;
    ~HistoryStore() override = default;

    // Pinned first, then by last activity: at most `limit` of the conversations that are
    // archived (or, by default, of those that are not).
    virtual std::vector<ConversationSummaryRecord> listConversations(bool archived = false, int limit = 500) = 0;
    virtual std::optional<qint64> createConversation(const QString& model, const QString& system_prompt,
                                                     const QString& sampling_json) = 0;
    virtual std::optional<ConversationRecord> openConversation(qint64 id) = 0;
    virtual bool renameConversation(qint64 id, const QString& title) = 0;
    virtual bool setPinned(qint64 id, bool pinned) = 0;
    // Archived conversations leave the list for the archive (Conversation > Show archived).
    virtual bool setArchived(qint64 id, bool archived) = 0;
    virtual bool deleteConversation(qint64 id) = 0;
    virtual bool setSettings(qint64 id, const QString& model, const QString& system_prompt,
                             const QString& sampling_json) = 0;
    virtual bool setActiveMessage(qint64 conversation_id, qint64 message_id) = 0;

    virtual std::optional<qint64> addMessage(qint64 conversation_id, std::optional<qint64> parent_id,
                                             ChatRole role, const QString& content, MessageStatus status) = 0;
    // A sibling of message_id (same parent and role), the old branch kept.
    virtual std::optional<qint64> branchAt(qint64 message_id, const QString& content, MessageStatus status) = 0;
    // An answer to continue: streaming again with its text (Store::reopen_message).
    virtual bool reopenMessage(qint64 message_id) = 0;
    virtual bool checkpointMessage(qint64 message_id, const QString& content) = 0;
    virtual bool finishMessage(qint64 message_id, const QString& content, MessageStatus status,
                               const QString& stats_json) = 0;
    virtual bool setRoutingTrace(qint64 message_id, const RoutingData& trace) = 0;
    virtual std::optional<RoutingData> routingTrace(qint64 message_id) = 0;
    virtual bool clearRoutingTrace(qint64 message_id) = 0;
    // An answer's token probabilities, kept beside its trace (one entry per token).
    virtual bool setTokenProbabilities(qint64 message_id, const TokenProbabilityData& probabilities) = 0;
    virtual std::optional<TokenProbabilityData> tokenProbabilities(qint64 message_id) = 0;
    virtual bool clearTokenProbabilities(qint64 message_id) = 0;

    virtual std::vector<SearchResult> search(const QString& text) = 0;
    virtual bool exportJson(const QString& file, std::optional<qint64> conversation_id) = 0;
    virtual bool exportMarkdown(const QString& file, qint64 conversation_id) = 0;
    // Number of conversations imported, or nullopt on failure (nothing imported).
    virtual std::optional<int> importJson(const QString& file) = 0;

    // A description of the database for the About box and the log ("file", "in memory").
    virtual QString location() const = 0;

signals:
    void storageError(const QString& message);
};

// Files attached to a user message live inside its content in the store's one form
// (a "File: name" line and a fenced block per file, then the typed text), so the
// prompt, the context fit, search, export and remote endpoints all see them as text.
// Implemented over the storage library in sqlite_history_store.cpp.
QString composeMessage(const QList<Attachment>& files, const QString& text);
// No files unless the content starts with blocks exactly as composeMessage writes them.
MessageParts splitMessage(const QString& content);
// Reads a UTF-8 text file (up to attachmentLimitBytes()) to attach; on failure returns
// nullopt and sets `error` to a sentence naming the file and the problem.
std::optional<Attachment> readAttachment(const QString& path, QString* error);
qint64 attachmentLimitBytes();

}  // namespace cetus::ui
