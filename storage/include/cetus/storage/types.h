// Plain value types of the conversation store: what the UI reads and writes.
// No SQLite or JSON library types appear here; JSON travels as UTF-8 text
// (settings and statistics), validated and normalised by the store.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cetus::storage {

enum class Role { System, User, Assistant, Tool };

// Streaming: an answer being generated and checkpointed; Interrupted: its writer
// stopped or died before finishing (set by recovery); Error: generation failed.
enum class MessageState { Streaming, Complete, Interrupted, Error };

const char* role_name(Role role) noexcept;                      // "user", ...
std::optional<Role> parse_role(std::string_view name) noexcept;
const char* state_name(MessageState state) noexcept;            // "streaming", ...
std::optional<MessageState> parse_state(std::string_view name) noexcept;

struct NewConversation {
    std::string title;                 // empty: set from the first user message
    std::string model;
    std::string system_prompt;
    std::string sampling_json = "{}";  // a JSON object, e.g. {"temperature":0.7}
};

struct Conversation {
    int64_t id = 0;
    std::string uuid;  // stable across export and import
    std::string title;
    std::string model;
    std::string system_prompt;
    std::string sampling_json;  // normalised JSON object text
    bool pinned = false;
    bool archived = false;
    int64_t created_ms = 0;  // milliseconds since the Unix epoch, UTC
    int64_t updated_ms = 0;  // last activity: a message added, saved or finished
    std::optional<int64_t> active_message_id;  // the branch the user last looked at
};

// One row of the conversation list.
struct ConversationSummary {
    int64_t id = 0;
    std::string title;
    std::string model;
    bool pinned = false;
    bool archived = false;
    int64_t created_ms = 0;
    int64_t updated_ms = 0;
    int64_t n_messages = 0;
};

enum class ArchiveFilter { Exclude, Only, Include };

struct ListOptions {
    int limit = 50;  // page size, 1..1000
    int offset = 0;
    ArchiveFilter archived = ArchiveFilter::Exclude;
};

struct NewMessage {
    int64_t conversation_id = 0;
    std::optional<int64_t> parent_id;  // none: a root message
    Role role = Role::User;
    std::string content;                // valid UTF-8
    MessageState state = MessageState::Complete;
    std::string stats_json = "{}";
};

// Known keys of a message's statistics object (all optional, numbers):
// n_prompt_tokens, n_generated_tokens, prefill_tokens_per_s, decode_tokens_per_s,
// n_draft_proposed, n_draft_accepted, kv_cache_bytes. Other keys are kept as given.
struct Message {
    int64_t id = 0;
    int64_t conversation_id = 0;
    std::optional<int64_t> parent_id;
    Role role = Role::User;
    std::string content;
    MessageState state = MessageState::Complete;
    std::string stats_json;
    int64_t created_ms = 0;
    int64_t updated_ms = 0;
    bool has_routing_trace = false;
};

// A conversation with every message of every branch, ordered by id, so a parent
// precedes its children (in files Cetus wrote; rows edited by hand may name a
// newer parent, or make a cycle). active_path runs from a root to the leaf
// shown, through parent links, never twice through one message.
struct ConversationTree {
    Conversation conversation;
    std::vector<Message> messages;
    std::vector<int64_t> active_path;
};

// Ids of the children of `parent` (roots when none), oldest first: the branches.
std::vector<int64_t> children_of(const ConversationTree& tree, std::optional<int64_t> parent);

struct SearchOptions {
    int limit = 50;  // 1..1000
    int offset = 0;
    bool include_archived = true;
    bool prefix_last_word = true;  // "quok" finds "quokka": search as you type
};

struct SearchHit {
    int64_t conversation_id = 0;
    std::string conversation_title;
    int64_t message_id = 0;
    Role role = Role::User;
    int64_t created_ms = 0;
    double score = 0;  // lower is better (bm25)
    std::string snippet;  // plain text around the matches, "…" where cut
    std::vector<std::pair<size_t, size_t>> highlights;  // [begin, end) byte ranges in snippet
};

// The snippet with every highlight wrapped in `open` and `close`.
std::string mark_snippet(const SearchHit& hit, std::string_view open, std::string_view close);

struct ConversationStats {
    int64_t n_messages = 0;
    int64_t n_user_messages = 0;
    int64_t n_assistant_messages = 0;
    int64_t n_branches = 0;  // leaves of the message tree
    int64_t n_interrupted = 0;
    int64_t content_bytes = 0;
    int64_t n_prompt_tokens = 0;     // sums of the statistics keys above
    int64_t n_generated_tokens = 0;
    int64_t n_draft_proposed = 0;
    int64_t n_draft_accepted = 0;
    double mean_decode_tokens_per_s = 0;  // over messages that report it
    int64_t routing_trace_bytes = 0;      // stored (compressed) size
    int64_t token_probability_bytes = 0;  // stored size of the answers' token probabilities
    int64_t first_ms = 0;
    int64_t last_ms = 0;
};

struct ImportResult {
    int n_conversations = 0;  // imported
    int n_skipped = 0;        // already present (same uuid)
    int64_t n_messages = 0;
    std::vector<int64_t> conversation_ids;
};

// A title from the first line of a user message: whitespace collapsed, cut at a
// word boundary to about 60 characters with "…". Empty text gives "". For a
// message with attached files (attachments.h), the first line of the typed text,
// or the files' names when nothing was typed.
std::string make_auto_title(std::string_view content);

}  // namespace cetus::storage
