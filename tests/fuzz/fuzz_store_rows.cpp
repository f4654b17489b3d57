// libFuzzer target for conversation databases whose rows were edited by hand
// (a user with the sqlite3 shell, another program, a half-restored backup).
// Such a file has Cetus's schema, so it opens, but its rows may say anything
// SQLite lets them say: parents in other conversations or later in the file,
// cycles of parents, active messages that do not exist, ids of any size,
// invalid UTF-8, JSON that is not an object, blobs that are not traces, roles
// and states outside the CHECK constraints, a full-text index out of step.
//
// The store built once at start-up (branches, a trace, statistics, an archived
// and an empty conversation) is copied to a file, the input's edits are made on
// it through SQLite directly, and then every reader and a few writers run on it.
// With bit 2 of the first byte set, bytes of the file itself are overwritten
// instead (damaged pages, as after a bad disk or a partial copy). A
// StorageError is an acceptable answer to any call; anything else escaping, or
// a sanitizer report, is a finding. What must also hold (of damaged files only
// the active path's shape: a damaged index may hide rows from one query and not
// another, or give one conversation a message of another):
//   - an opened conversation's active path is a chain of parent links without
//     repeats, through messages of that conversation;
//   - the conversation list agrees with the count;
//   - an export of everything imports into a new store, with every conversation
//     and message, so that exporting is a way to rescue a damaged file.
#include "cetus/storage/store.h"

#include <sqlite3.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace {

namespace fs = std::filesystem;
using namespace cetus::storage;

void require(bool ok) {
    if (!ok) __builtin_trap();
}

fs::path g_dir;
fs::path g_file;
std::string g_template;  // the bytes of the store built at start-up

// The input, consumed front to back; past its end every read gives zeros.
class Reader {
public:
    Reader(const uint8_t* data, size_t size) : m_data(data), m_size(size) {}
    bool done() const { return m_at >= m_size; }
    uint8_t byte() { return m_at < m_size ? m_data[m_at++] : 0; }
    int64_t i64() {
        uint64_t v = 0;
        for (int i = 0; i < 8; ++i) v = v << 8 | byte();
        return static_cast<int64_t>(v);
    }
    std::string bytes(size_t n) {
        n = std::min(n, m_size - std::min(m_at, m_size));
        std::string out(reinterpret_cast<const char*>(m_data + m_at), n);
        m_at += n;
        return out;
    }

private:
    const uint8_t* m_data;
    size_t m_size;
    size_t m_at = 0;
};

struct Column {
    const char* table;
    const char* name;
};

// Every column of schema version 2, so an edit can reach any of them (version 2's
// table last: the seeds' column numbers index the list).
constexpr Column k_columns[] = {
    {"conversations", "id"},         {"conversations", "uuid"},       {"conversations", "title"},
    {"conversations", "model"},      {"conversations", "system_prompt"},
    {"conversations", "sampling_json"}, {"conversations", "pinned"},  {"conversations", "archived"},
    {"conversations", "created_ms"}, {"conversations", "updated_ms"}, {"conversations", "active_message_id"},
    {"messages", "id"},              {"messages", "conversation_id"}, {"messages", "parent_id"},
    {"messages", "role"},            {"messages", "content"},         {"messages", "state"},
    {"messages", "writer"},          {"messages", "stats_json"},      {"messages", "created_ms"},
    {"messages", "updated_ms"},      {"routing_traces", "message_id"}, {"routing_traces", "n_tokens"},
    {"routing_traces", "data"},
    {"token_probabilities", "message_id"}, {"token_probabilities", "n_tokens"}, {"token_probabilities", "data"},
};
constexpr const char* k_tables[] = {"conversations", "messages", "routing_traces", "token_probabilities"};

constexpr const char* k_texts[] = {
    "user", "assistant", "system", "tool", "streaming", "complete", "interrupted", "error", "",
    "{}", "[]", "null", "{\"temperature\":0.7}", "{\"n_generated_tokens\":1e308,\"decode_tokens_per_s\":-1}",
    "{\"decode_tokens_per_s\":\"fast\"}", "{\"a\":", "\xff\xfe quokka \xc3", "quokka", "sea",
    "1:1:1", "00000000-0000-4000-8000-000000000000", "NOT-A-UUID",
};

constexpr int64_t k_integers[] = {
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, -1, -2,
    std::numeric_limits<int64_t>::max(), std::numeric_limits<int64_t>::min(),
    std::numeric_limits<int32_t>::max(), int64_t(1) << 53, -(int64_t(1) << 53), 253402300800000,  // year 10000
};

// Binds one value chosen by the input: NULL, an integer, text or a blob of raw
// bytes, a double (NaN and infinities included) or a known word.
void bind_value(sqlite3_stmt* stmt, int index, Reader& in) {
    switch (in.byte() % 7) {
    case 0: sqlite3_bind_null(stmt, index); break;
    case 1: sqlite3_bind_int64(stmt, index, k_integers[in.byte() % std::size(k_integers)]); break;
    case 2: sqlite3_bind_int64(stmt, index, in.i64()); break;
    case 3: {
        const std::string text = in.bytes(in.byte());
        sqlite3_bind_text(stmt, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
        break;
    }
    case 4: {
        const std::string blob = in.bytes(size_t(in.byte()) << 2);
        sqlite3_bind_blob(stmt, index, blob.data(), static_cast<int>(blob.size()), SQLITE_TRANSIENT);
        break;
    }
    case 5: {
        const int64_t bits = in.i64();
        double d;
        std::memcpy(&d, &bits, sizeof d);
        sqlite3_bind_double(stmt, index, d);
        break;
    }
    default: sqlite3_bind_text(stmt, index, k_texts[in.byte() % std::size(k_texts)], -1, SQLITE_STATIC); break;
    }
}

// The rowid of the (n mod count)-th row of `table`, or 0 when it is empty.
int64_t pick_row(sqlite3* db, const char* table, uint8_t n) {
    const std::string sql = std::string("SELECT rowid FROM ") + table + " ORDER BY rowid LIMIT 1 OFFSET ?1 % max(1, (SELECT count(*) FROM " + table + "))";
    sqlite3_stmt* stmt = nullptr;
    int64_t rowid = 0;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK) {
        sqlite3_bind_int(stmt, 1, n);
        if (sqlite3_step(stmt) == SQLITE_ROW) rowid = sqlite3_column_int64(stmt, 0);
    }
    sqlite3_finalize(stmt);
    return rowid;
}

// Runs one edit, with n_values values from the input and then the row (when
// given); SQLite may refuse it (a constraint, a type), which is fine.
void run(sqlite3* db, const std::string& sql, Reader& in, int n_values, std::optional<int64_t> rowid = {}) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) != SQLITE_OK) return;
    for (int i = 1; i <= n_values; ++i) bind_value(stmt, i, in);
    if (rowid) sqlite3_bind_int64(stmt, n_values + 1, *rowid);
    while (sqlite3_step(stmt) == SQLITE_ROW) {}
    sqlite3_finalize(stmt);
}

// Overwrites up to eight runs of bytes of the file: a 3-byte offset, a length
// byte (1..8), then the bytes.
void damage(const fs::path& file, Reader& in) {
    std::fstream f(file, std::ios::binary | std::ios::in | std::ios::out);
    const auto size = static_cast<uint64_t>(fs::file_size(file));
    for (int n = 0; n < 8 && !in.done(); ++n) {
        uint64_t at = 0;
        for (int i = 0; i < 3; ++i) at = at << 8 | in.byte();
        const std::string bytes = in.bytes(1 + in.byte() % 8);
        f.seekp(static_cast<std::streamoff>(at % size));
        f.write(bytes.data(), std::streamsize(bytes.size()));
    }
}

// Edits the file as the input says. The first byte (`flags`) sets the
// connection's pragmas; each edit after it starts with a byte choosing its kind.
void edit(const fs::path& file, uint8_t flags, Reader& in) {
    sqlite3* db = nullptr;
    if (sqlite3_open_v2(file.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
        sqlite3_close(db);
        return;
    }
    sqlite3_exec(db, "PRAGMA synchronous = OFF", nullptr, nullptr, nullptr);  // a scratch copy
    if (flags & 1) sqlite3_exec(db, "PRAGMA ignore_check_constraints = ON", nullptr, nullptr, nullptr);
    if (flags & 2) sqlite3_exec(db, "PRAGMA foreign_keys = ON", nullptr, nullptr, nullptr);
    sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
    for (int n = 0; n < 32 && !in.done(); ++n) {
        switch (in.byte() % 5) {
        case 0: {  // set one column of one row
            const Column& c = k_columns[in.byte() % std::size(k_columns)];
            const int64_t rowid = pick_row(db, c.table, in.byte());
            run(db, std::string("UPDATE ") + c.table + " SET " + c.name + " = ?1 WHERE rowid = ?2", in, 1, rowid);
            break;
        }
        case 1: {  // delete a row
            const char* table = k_tables[in.byte() % std::size(k_tables)];
            const int64_t rowid = pick_row(db, table, in.byte());
            run(db, std::string("DELETE FROM ") + table + " WHERE rowid = ?1", in, 0, rowid);
            break;
        }
        case 2: {  // copy a message (the triggers index it)
            const int64_t rowid = pick_row(db, "messages", in.byte());
            run(db,
                "INSERT INTO messages (conversation_id, parent_id, role, content, state, writer, stats_json, "
                "created_ms, updated_ms) SELECT conversation_id, ?1, role, content, state, writer, stats_json, "
                "created_ms, updated_ms FROM messages WHERE id = ?2",
                in, 1, rowid);
            break;
        }
        case 3:  // an index entry for a row that says otherwise, or none
            run(db, "INSERT INTO messages_fts (rowid, content) VALUES (?1, ?2)", in, 2);
            break;
        default:  // an index entry removed with the wrong text
            run(db, "INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', ?1, ?2)", in, 2);
            break;
        }
    }
    sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
    sqlite3_close(db);
}

// The active path: a chain of parent links without repeats, through messages
// of the tree, from a root, a message whose parent is not in the tree, or one
// whose parent is further down the path (a cycle of parents, cut). The messages
// are the conversation's unless the file is damaged (an index entry may then
// name a row of another conversation).
void check_tree(const ConversationTree& tree, bool damaged) {
    std::unordered_map<int64_t, const Message*> by_id;
    for (const Message& m : tree.messages) {
        require(damaged || m.conversation_id == tree.conversation.id);
        by_id.emplace(m.id, &m);
    }
    const std::set<int64_t> on_path(tree.active_path.begin(), tree.active_path.end());
    require(on_path.size() == tree.active_path.size());
    for (size_t i = 0; i < tree.active_path.size(); ++i) {
        const auto it = by_id.find(tree.active_path[i]);
        require(it != by_id.end());
        const std::optional<int64_t> parent = it->second->parent_id;
        if (i == 0) require(!parent || !by_id.count(*parent) || on_path.count(*parent));
        else require(parent && *parent == tree.active_path[i - 1]);
    }
    require(tree.messages.empty() == tree.active_path.empty());
}

template <typename F>
void tolerate(F&& call) {
    try {
        call();
    } catch (const StorageError&) {
    }
}

void exercise(Store& store, bool damaged, Reader& in) {
    const int64_t n_all = store.count_conversations(ArchiveFilter::Include);
    require(n_all >= 0);
    std::vector<int64_t> ids;
    for (ArchiveFilter f : {ArchiveFilter::Exclude, ArchiveFilter::Only, ArchiveFilter::Include}) {
        for (const ConversationSummary& s : store.list_conversations({1000, 0, f})) {
            require(s.n_messages >= 0);
            if (f == ArchiveFilter::Include) ids.push_back(s.id);
        }
    }
    require(damaged || int64_t(ids.size()) == n_all);

    int64_t n_messages = 0;
    for (int64_t id : ids) {
        tolerate([&] {
            const ConversationTree tree = store.open_conversation(id);
            check_tree(tree, damaged);
            n_messages += int64_t(tree.messages.size());
            for (const Message& m : tree.messages) {
                (void)children_of(tree, m.parent_id);
                tolerate([&] { (void)store.message(m.id); });
                tolerate([&] { (void)store.routing_trace(m.id); });
                tolerate([&] { (void)store.token_probabilities(m.id); });
            }
        });
        tolerate([&] { (void)store.statistics(id); });
        tolerate([&] { (void)store.export_markdown(id); });
    }
    for (const char* words : {"quokka", "sea", "the", "\xff"}) {
        tolerate([&] {
            for (const SearchHit& hit : store.search(words)) {
                (void)mark_snippet(hit, "<b>", "</b>");
                for (const auto& [b, e] : hit.highlights) require(b <= e && e <= hit.snippet.size());
            }
        });
    }

    // The rescue path: everything exported must import, with all its messages.
    std::ostringstream out;
    bool exported = true;
    try {
        store.export_json(out);
    } catch (const StorageError&) {
        exported = false;
    }
    if (exported && !damaged) {
        Store fresh = Store::open_memory();
        ImportResult imported;
        try {
            imported = fresh.import_json(out.str(), "export of an edited file");
        } catch (const StorageError& e) {
            std::fprintf(stderr, "an export does not import: %s\n", e.what());
            __builtin_trap();
        }
        require(imported.n_conversations == int(ids.size()));
        require(imported.n_messages == n_messages);
    }

    // Writers on what the edits left: each may refuse, none may do harm.
    for (int64_t id : ids) {
        tolerate([&] {
            const ConversationTree tree = store.open_conversation(id);
            NewMessage m;
            m.conversation_id = id;
            if (!tree.active_path.empty()) m.parent_id = tree.active_path.back();
            m.content = "and then?";
            const int64_t added = store.add_message(m);
            (void)store.branch_at(added, "", MessageState::Streaming);
            if (!tree.messages.empty()) store.set_active_message(id, tree.messages.front().id);
            check_tree(store.open_conversation(id), damaged);
        });
    }
    tolerate([&] { (void)store.recover_interrupted(); });
    if (!ids.empty()) tolerate([&] { store.delete_conversation(ids[in.byte() % ids.size()]); });
    (void)store.check_integrity();
}

std::string read_file(const fs::path& file) {
    std::ifstream f(file, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
}

void remove_companions(const fs::path& file) {
    for (const char* suffix : {"-wal", "-shm", "-journal"}) fs::remove(file.string() + suffix);
}

void build_template() {
    OpenOptions options;
    options.durable = false;
    int64_t clock = 1764500000000;
    options.clock_ms = [&clock] { return clock += 1000; };
    {
        Store store = Store::open(g_file, options);
        NewConversation nc;
        nc.model = "demo";
        nc.system_prompt = "You are brief.";
        nc.sampling_json = R"({"temperature":0.7,"top_p":0.9})";
        const int64_t a = store.create_conversation(nc);
        NewMessage m{a, std::nullopt, Role::User, "How do quokkas sleep?"};
        const int64_t q1 = store.add_message(m);
        m = {a, q1, Role::Assistant, "In the shade, by day.", MessageState::Complete,
             R"({"n_prompt_tokens":12,"n_generated_tokens":6,"decode_tokens_per_s":41.5,"n_draft_proposed":4,"n_draft_accepted":3})"};
        const int64_t a1 = store.add_message(m);
        RoutingTrace trace{2, 2, 1, {1, 5, 0, 7, 2, 3, 4, 6}, {0.6f, 0.4f, 0.9f, 0.1f, 0.5f, 0.5f, 0.7f, 0.3f}};
        store.set_routing_trace(a1, trace);
        TokenProbabilities tp;
        tp.top_n = 2;
        for (int t = 0; t < 2; ++t) {
            tp.logprobs.push_back(-0.5f * float(t));
            tp.alternatives.push_back({" In", -0.25f});
            tp.alternatives.push_back({"\n", -2.0f});
        }
        store.set_token_probabilities(a1, tp);
        m = {a, a1, Role::User, "And the sea?"};
        const int64_t q2 = store.add_message(m);
        m = {a, q2, Role::Assistant, "Quokkas avoid the sea."};
        store.add_message(m);
        store.branch_at(a1, "They nap under bushes.", MessageState::Complete);
        store.set_pinned(a, true);

        const int64_t b = store.create_conversation({});
        m = {b, std::nullopt, Role::User, "Tell me about the sea."};
        const int64_t q3 = store.add_message(m);
        m = {b, q3, Role::Assistant, "", MessageState::Streaming};
        const int64_t a3 = store.add_message(m);
        store.checkpoint_message(a3, "The sea is");  // interrupted when the store closes
        store.set_archived(b, true);

        store.create_conversation({});  // empty
    }
    remove_companions(g_file);
    g_template = read_file(g_file);
    require(!g_template.empty());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    // In memory where there is a tmpfs: each input writes the file and syncs it.
    const char* tmp = std::getenv("TMPDIR");
    const std::string base = tmp && *tmp ? tmp : fs::is_directory("/dev/shm") ? "/dev/shm" : "/tmp";
    std::string pattern = base + "/cetus-fuzz-store.XXXXXX";
    require(mkdtemp(pattern.data()) != nullptr);
    g_dir = pattern;
    g_file = g_dir / "history.db";
    std::atexit([] {
        std::error_code ec;
        fs::remove_all(g_dir, ec);
    });
    build_template();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    remove_companions(g_file);
    {
        std::ofstream f(g_file, std::ios::binary | std::ios::trunc);
        f.write(g_template.data(), std::streamsize(g_template.size()));
        require(bool(f));
    }
    Reader in(data, size);
    const uint8_t flags = in.byte();
    const bool damaged = flags & 4;
    if (damaged) damage(g_file, in);
    else edit(g_file, flags, in);
    OpenOptions options;
    options.durable = false;
    try {
        Store store = Store::open(g_file, options);
        exercise(store, damaged, in);
    } catch (const StorageError&) {
    }
    return 0;
}
