// The conversation store: one SQLite database file holding conversations, their
// message trees, routing traces and a full-text index. Opening validates the file
// and never overwrites one it cannot read; it migrates older schemas forward and
// marks answers whose writer died as interrupted. Rendering is the UI's business.
#pragma once

#include "cetus/storage/error.h"
#include "cetus/storage/routing_trace.h"
#include "cetus/storage/token_probabilities.h"
#include "cetus/storage/types.h"

#include <filesystem>
#include <functional>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cetus::storage {

struct OpenOptions {
    bool create = true;          // create a missing file, readable by its owner only (0600)
    bool durable = true;         // synchronous=FULL: commits survive power loss, not only a crash
    int busy_timeout_ms = 5000;  // wait this long for another process's lock, then Busy
    bool verify = false;         // PRAGMA quick_check at open: reads the whole file
    std::function<int64_t()> clock_ms;  // for tests; default: the system clock
};

// Thread-safety: a Store is used by one thread at a time. Several Stores, in this
// or other processes, may share one file (WAL; writers wait up to busy_timeout).
// Every method throws StorageError; the message names the file and the problem.
class Store {
public:
    static constexpr int k_schema_version = 2;

    // Throws NotADatabase, Corrupt (truncated, damaged, foreign schema) or
    // NewerSchema without writing to the file; Io when it cannot be opened.
    static Store open(const std::filesystem::path& file, const OpenOptions& options = {});
    static Store open_memory(const OpenOptions& options = {});

    // Renames a damaged file and its -wal/-shm/-journal companions to
    // "<file>.damaged-<UTC time>[-n]" and returns the new main path; nothing is
    // deleted. No Store may have the file open. A later open() starts fresh.
    static std::filesystem::path move_aside(const std::filesystem::path& file);

    Store(Store&&) noexcept;
    Store& operator=(Store&&) noexcept;
    ~Store();  // marks this Store's still-streaming messages interrupted

    const std::filesystem::path& path() const noexcept;  // empty for memory
    int n_recovered() const noexcept;  // messages marked interrupted when opened
    int recover_interrupted();         // again: answers whose writer has since died
    // Problems reported by PRAGMA integrity_check (quick_check when quick); empty: ok.
    std::vector<std::string> check_integrity(bool quick = false);

    // Groups calls into one transaction (nested ones become savepoints);
    // rolls back unless commit() is called.
    class Transaction {
    public:
        explicit Transaction(Store& store);
        ~Transaction();
        Transaction(const Transaction&) = delete;
        Transaction& operator=(const Transaction&) = delete;
        void commit();

    private:
        Store* m_store;
        bool m_done = false;
    };

    // Conversations. NotFound for an unknown id.
    int64_t create_conversation(const NewConversation& conversation);
    std::vector<ConversationSummary> list_conversations(const ListOptions& options = {});
    int64_t count_conversations(ArchiveFilter filter = ArchiveFilter::Exclude);
    Conversation conversation(int64_t id);
    ConversationTree open_conversation(int64_t id);
    void rename_conversation(int64_t id, std::string_view title);
    void set_pinned(int64_t id, bool pinned);
    void set_archived(int64_t id, bool archived);
    void set_settings(int64_t id, std::string_view model, std::string_view system_prompt,
                      std::string_view sampling_json);
    void set_active_message(int64_t conversation_id, int64_t message_id);
    void delete_conversation(int64_t id);  // with all messages and traces
    ConversationStats statistics(int64_t conversation_id);

    // Messages. The parent must belong to the same conversation. A new message
    // becomes the active one; the first user message titles an untitled conversation.
    int64_t add_message(const NewMessage& message);
    // Branch at a message: a sibling with the same parent and role, the old branch
    // kept. Edit-and-resend passes the edited text; regenerate passes "" and Streaming.
    int64_t branch_at(int64_t message_id, std::string_view content, MessageState state);
    // An answer to continue (complete or interrupted): Streaming again, its text kept,
    // so checkpoints and crash recovery work as for a new answer; finish_message ends it.
    void reopen_message(int64_t message_id);
    // The partial answer of a Streaming message, about once a second.
    void checkpoint_message(int64_t message_id, std::string_view content);
    // Final text, state (not Streaming) and statistics of a message.
    void finish_message(int64_t message_id, std::string_view content, MessageState state,
                        std::string_view stats_json);
    Message message(int64_t id);
    void set_routing_trace(int64_t message_id, const RoutingTrace& trace);
    std::optional<RoutingTrace> routing_trace(int64_t message_id);
    // A message's trace gone (an answer continued by another model: its old tokens'
    // routing no longer lines up). No trace is not an error.
    void delete_routing_trace(int64_t message_id);
    // An answer's token probabilities (schema version 2), kept and deleted like its trace.
    void set_token_probabilities(int64_t message_id, const TokenProbabilities& probabilities);
    std::optional<TokenProbabilities> token_probabilities(int64_t message_id);
    void delete_token_probabilities(int64_t message_id);

    // Words of `text` must all occur (any order). Ranked by bm25 (newest first on
    // ties) among the 2,000 newest matching messages, so a word found everywhere
    // stays fast; pages past that window are empty. Text is never FTS5 syntax:
    // quotes, operators and NEAR are plain words.
    std::vector<SearchHit> search(std::string_view text, const SearchOptions& options = {});

    // Export: JSON is lossless ("cetus-conversations", format_version 2, which added token
    // probabilities; format 1 files import too), one
    // conversation or all (an answer still streaming is written as interrupted);
    // Markdown is the active branch, for reading. Io when `out` fails.
    // Rows edited outside Cetus still export to a file that imports: parents
    // are written before their children (a cycle of parents is cut at its
    // oldest message), a uuid out of shape (or twice) is replaced and a routing trace
    // or token probabilities that do not decode are left out.
    void export_json(std::ostream& out, std::optional<int64_t> conversation_id = {});
    std::string export_markdown(int64_t conversation_id);
    // Validates the whole document first, then imports in one transaction: on any
    // problem throws BadImport naming `source` and the JSON path, importing nothing.
    // Conversations whose uuid is already present are skipped.
    ImportResult import_json(std::string_view json_text, std::string_view source = "import");

    struct Impl;

private:
    explicit Store(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> m_impl;
};

}  // namespace cetus::storage
