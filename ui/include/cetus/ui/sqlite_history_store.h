// The real HistoryStore over the storage library's SQLite Store. Storage errors are
// caught here and become return values plus storageError (style guide 4).
#pragma once

#include "cetus/ui/history_store.h"

#include <memory>

namespace cetus::storage {
class Store;
}

namespace cetus::ui {

class SqliteHistoryStore : public HistoryStore {
    Q_OBJECT
public:
    // Opens (creating) the database file. A damaged or foreign file is moved aside and a
    // fresh one started; *notice then says so. Returns null with *error on failure.
    static std::unique_ptr<SqliteHistoryStore> open(const QString& file, QString* notice, QString* error);
    static std::unique_ptr<SqliteHistoryStore> openInMemory();
    ~SqliteHistoryStore() override;

    std::vector<ConversationSummaryRecord> listConversations(bool archived = false, int limit = 500) override;
    std::optional<qint64> createConversation(const QString& model, const QString& system_prompt,
                                             const QString& sampling_json) override;
    std::optional<ConversationRecord> openConversation(qint64 id) override;
    bool renameConversation(qint64 id, const QString& title) override;
    bool setPinned(qint64 id, bool pinned) override;
    bool setArchived(qint64 id, bool archived) override;
    bool deleteConversation(qint64 id) override;
    bool setSettings(qint64 id, const QString& model, const QString& system_prompt, const QString& sampling_json) override;
    bool setActiveMessage(qint64 conversation_id, qint64 message_id) override;
    std::optional<qint64> addMessage(qint64 conversation_id, std::optional<qint64> parent_id, ChatRole role,
                                     const QString& content, MessageStatus status) override;
    std::optional<qint64> branchAt(qint64 message_id, const QString& content, MessageStatus status) override;
    bool reopenMessage(qint64 message_id) override;
    bool checkpointMessage(qint64 message_id, const QString& content) override;
    bool finishMessage(qint64 message_id, const QString& content, MessageStatus status, const QString& stats_json) override;
    bool setRoutingTrace(qint64 message_id, const RoutingData& trace) override;
    std::optional<RoutingData> routingTrace(qint64 message_id) override;
    bool clearRoutingTrace(qint64 message_id) override;
    bool setTokenProbabilities(qint64 message_id, const TokenProbabilityData& probabilities) override;
    std::optional<TokenProbabilityData> tokenProbabilities(qint64 message_id) override;
    bool clearTokenProbabilities(qint64 message_id) override;
    std::vector<SearchResult> search(const QString& text) override;
    bool exportJson(const QString& file, std::optional<qint64> conversation_id) override;
    bool exportMarkdown(const QString& file, qint64 conversation_id) override;
    std::optional<int> importJson(const QString& file) override;
    QString location() const override;

private:
    explicit SqliteHistoryStore(std::unique_ptr<cetus::storage::Store> store);
    template <class F>
    auto guarded(const char* what, F&& f) -> decltype(f());

    std::unique_ptr<cetus::storage::Store> m_store;
};

}  // namespace cetus::ui
