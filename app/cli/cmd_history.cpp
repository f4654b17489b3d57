// `cetus-cli history --db FILE ...`: list, show, search, export, import, check and
// move-aside over the conversation database the app uses, and `bench`, which
// fills a new database and times the queries the UI depends on (JSON with --json).
#include "commands.h"

#include "cetus/storage/store.h"

#include <fcntl.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <random>
#include <sstream>

namespace fs = std::filesystem;
using namespace cetus::storage;

namespace cetus::cli {
namespace {

struct HistoryArgs {
    std::string db;
    int limit = 50, offset = 0;
    bool archived = false, all = false, json = false;
    int64_t id = 0;
    std::optional<int64_t> export_id;
    std::string text, format = "json", out, in;
    int n_conversations = 10000, n_messages = 50, n_large = 2000, n_repeats = 7;
    bool reuse = false;
};

// A file the store refuses is never touched; say how to keep it and start over.
Store open_store(const std::string& db, const OpenOptions& options = {}) {
    try {
        return Store::open(db, options);
    } catch (const StorageError& e) {
        const auto c = e.code();
        if (c != StorageErrorCode::Corrupt && c != StorageErrorCode::NotADatabase && c != StorageErrorCode::NewerSchema) throw;
        throw StorageError(c, std::string(e.what()) + "\n  to keep it and start a new history: cetus-cli history --db " +
                                  db + " move-aside");
    }
}

std::string day_text(int64_t ms) {
    const std::time_t t = static_cast<std::time_t>(ms / 1000);
    std::tm utc{};
    gmtime_r(&t, &utc);
    char text[32];
    std::strftime(text, sizeof text, "%Y-%m-%d %H:%M", &utc);
    return text;
}

// Exports hold private conversations: owner-only, like the database.
std::ofstream private_output(const fs::path& path) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) throw StorageError(StorageErrorCode::Io, path.string() + ": cannot create: " + std::strerror(errno));
    ::close(fd);
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out) throw StorageError(StorageErrorCode::Io, path.string() + ": cannot write");
    return out;
}

std::string slug(const std::string& title) {
    std::string s;
    for (char c : title) {
        const auto b = static_cast<unsigned char>(c);
        if (std::isalnum(b)) s += static_cast<char>(std::tolower(b));
        else if (!s.empty() && s.back() != '-') s += '-';
        if (s.size() >= 40) break;
    }
    while (!s.empty() && s.back() == '-') s.pop_back();
    return s.empty() ? "untitled" : s;
}

void run_list(const HistoryArgs& a) {
    Store store = open_store(a.db);
    const ArchiveFilter filter = a.all ? ArchiveFilter::Include : a.archived ? ArchiveFilter::Only : ArchiveFilter::Exclude;
    const auto rows = store.list_conversations({a.limit, a.offset, filter});
    for (const auto& r : rows) {
        std::printf("%6lld  %c%c  %s  %4lld msgs  %s\n", static_cast<long long>(r.id), r.pinned ? 'P' : ' ',
                    r.archived ? 'A' : ' ', day_text(r.updated_ms).c_str(), static_cast<long long>(r.n_messages),
                    r.title.empty() ? "(untitled)" : r.title.c_str());
    }
    std::fprintf(stderr, "%zu of %lld conversations\n", rows.size(), static_cast<long long>(store.count_conversations(filter)));
}

void run_show(const HistoryArgs& a) {
    Store store = open_store(a.db);
    if (a.json) {
        store.export_json(std::cout, a.id);
    } else {
        std::cout << store.export_markdown(a.id);
    }
}

void run_search(const HistoryArgs& a) {
    Store store = open_store(a.db);
    const bool tty = ::isatty(STDOUT_FILENO);
    SearchOptions options;
    options.limit = a.limit;
    for (const SearchHit& h : store.search(a.text, options)) {
        std::string snippet = mark_snippet(h, tty ? "\x1b[1m" : "[", tty ? "\x1b[0m" : "]");
        std::replace(snippet.begin(), snippet.end(), '\n', ' ');
        std::printf("%lld/%lld  %-9s %s  %s\n    %s\n", static_cast<long long>(h.conversation_id),
                    static_cast<long long>(h.message_id), role_name(h.role), day_text(h.created_ms).c_str(),
                    h.conversation_title.c_str(), snippet.c_str());
    }
}

void run_export(const HistoryArgs& a) {
    if (a.format != "json" && a.format != "markdown") {
        throw StorageError(StorageErrorCode::InvalidArgument, "--format must be json or markdown");
    }
    Store store = open_store(a.db);
    if (a.format == "json") {
        std::ofstream out = private_output(a.out);
        store.export_json(out, a.export_id);
        out.close();
        if (!out) throw StorageError(StorageErrorCode::Io, a.out + ": cannot write");
        std::fprintf(stderr, "wrote %s\n", a.out.c_str());
        return;
    }
    if (a.export_id) {
        std::ofstream out = private_output(a.out);
        out << store.export_markdown(*a.export_id);
        std::fprintf(stderr, "wrote %s\n", a.out.c_str());
        return;
    }
    // Markdown of everything: one file per conversation in the --out folder.
    fs::create_directories(a.out);
    int n = 0;
    for (int offset = 0;; offset += 1000) {
        const auto rows = store.list_conversations({1000, offset, ArchiveFilter::Include});
        for (const auto& r : rows) {
            std::ofstream out = private_output(fs::path(a.out) / (std::to_string(r.id) + "-" + slug(r.title) + ".md"));
            out << store.export_markdown(r.id);
            ++n;
        }
        if (rows.size() < 1000) break;
    }
    std::fprintf(stderr, "wrote %d Markdown files to %s\n", n, a.out.c_str());
}

void run_import(const HistoryArgs& a) {
    std::ifstream in(a.in, std::ios::binary);
    if (!in) throw StorageError(StorageErrorCode::Io, a.in + ": cannot open");
    std::ostringstream text;
    text << in.rdbuf();
    Store store = open_store(a.db);
    const ImportResult r = store.import_json(text.str(), a.in);
    std::printf("imported %d conversation(s), %lld message(s); skipped %d already present\n", r.n_conversations,
                static_cast<long long>(r.n_messages), r.n_skipped);
}

void run_check(const HistoryArgs& a) {
    Store store = open_store(a.db, OpenOptions{false, true, 5000, false, {}});
    const auto problems = store.check_integrity(false);
    if (problems.empty()) {
        std::printf("%s: ok\n", a.db.c_str());
        return;
    }
    for (const auto& p : problems) std::printf("%s\n", p.c_str());
    throw StorageError(StorageErrorCode::Corrupt, a.db + ": damaged: " + std::to_string(problems.size()) +
                                                      " problem(s); `history move-aside` keeps it and starts fresh");
}

// ---- bench ---------------------------------------------------------------

// Text with a Zipf-like word distribution: "the" is in nearly every message,
// "quokka" in about one message in five thousand.
class TextGen {
public:
    explicit TextGen(unsigned seed) : m_rng(seed) {
        static const char* syllables[] = {"ka", "lo", "mi", "ne", "ru", "ta", "ve", "so", "pi", "dar", "en", "ul",
                                          "ex", "per", "tor", "lat", "gen", "mo", "di", "sa"};
        m_words = {"the", "of", "and", "to", "a", "in", "is", "that", "expert", "model"};
        while (m_words.size() < 5000) {
            std::string w;
            const int n = 2 + static_cast<int>(m_rng() % 3);
            for (int i = 0; i < n; ++i) w += syllables[m_rng() % 20];
            m_words.push_back(w);
        }
        double total = 0;
        for (size_t i = 0; i < m_words.size(); ++i) m_cdf.push_back(total += 1.0 / std::pow(double(i + 1), 1.07));
        for (double& c : m_cdf) c /= total;
    }
    std::string message(int n_words) {
        std::string text;
        std::uniform_real_distribution<double> u(0, 1);
        for (int i = 0; i < n_words; ++i) {
            const size_t w = std::lower_bound(m_cdf.begin(), m_cdf.end(), u(m_rng)) - m_cdf.begin();
            text += m_words[std::min(w, m_words.size() - 1)];
            text += (i % 17 == 16) ? ".\n" : " ";
        }
        if (m_rng() % 5000 == 0) text += " quokka";
        return text;
    }
    std::mt19937& rng() { return m_rng; }

private:
    std::mt19937 m_rng;
    std::vector<std::string> m_words;
    std::vector<double> m_cdf;
};

int64_t fill_conversation(Store& store, TextGen& gen, int n_messages) {
    const int64_t c = store.create_conversation({"", "bench-model", "", R"({"temperature":0.7})"});
    std::optional<int64_t> parent;
    for (int i = 0; i < n_messages; ++i) {
        NewMessage m;
        m.conversation_id = c;
        m.parent_id = parent;
        m.role = i % 2 == 0 ? Role::User : Role::Assistant;
        const int n_words = m.role == Role::User ? 15 + static_cast<int>(gen.rng()() % 30) : 50 + static_cast<int>(gen.rng()() % 150);
        m.content = gen.message(n_words);
        if (m.role == Role::Assistant) m.stats_json = "{\"n_generated_tokens\":" + std::to_string(n_words * 4 / 3) + "}";
        parent = store.add_message(m);
    }
    return c;
}

template <typename F> double median_ms(int n_repeats, F&& f) {
    f();  // warm-up, discarded
    std::vector<double> ms;
    for (int i = 0; i < n_repeats; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        f();
        ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
}

void run_bench(const HistoryArgs& a) {
    nlohmann::ordered_json report;
    Store store = open_store(a.db);
    const int64_t existing = store.count_conversations(ArchiveFilter::Include);
    double fill_s = 0;
    if (existing > 0 && !a.reuse) {
        throw StorageError(StorageErrorCode::InvalidArgument,
                           a.db + ": bench fills the database: give it a new file (or --reuse a filled one)");
    }
    int64_t large = 0;
    if (existing == 0) {
        TextGen gen(42);
        const auto t0 = std::chrono::steady_clock::now();
        large = fill_conversation(store, gen, a.n_large);
        for (int done = 0; done < a.n_conversations;) {
            Store::Transaction tx(store);  // batches: one fsync per 50 conversations
            for (int k = 0; k < 50 && done < a.n_conversations; ++k, ++done) fill_conversation(store, gen, a.n_messages);
            tx.commit();
            if (done % 1000 == 0) std::fprintf(stderr, "filled %d/%d conversations\r", done, a.n_conversations);
        }
        fill_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::fprintf(stderr, "\n");
    } else {
        // --reuse: the large conversation is the one with the most messages.
        int64_t most = -1;
        for (int offset = 0;; offset += 1000) {
            const auto rows = store.list_conversations({1000, offset, ArchiveFilter::Include});
            for (const auto& r : rows) {
                if (r.n_messages > most) most = r.n_messages, large = r.id;
            }
            if (rows.size() < 1000) break;
        }
    }
    const auto first_page = store.list_conversations({50, 0, ArchiveFilter::Exclude});
    const int64_t typical = first_page.empty() ? large : first_page[first_page.size() / 2].id;
    size_t n_common = 0, n_rare = 0, n_large_messages = 0, n_typical_messages = 0;

    report["conversations"] = store.count_conversations(ArchiveFilter::Include);
    report["messages_per_conversation"] = a.n_messages;
    report["large_conversation_messages"] = store.open_conversation(large).messages.size();
    report["db_bytes"] = fs::file_size(a.db) + (fs::exists(a.db + "-wal") ? fs::file_size(a.db + "-wal") : 0);
    if (fill_s > 0) report["fill_s"] = std::round(fill_s * 10) / 10;
    report["repeats"] = a.n_repeats;
    auto ms = [](double v) { return std::round(v * 1000) / 1000; };
    report["list_first_page_ms"] = ms(median_ms(a.n_repeats, [&] { store.list_conversations({50, 0, ArchiveFilter::Exclude}); }));
    report["open_conversation_ms"] = ms(median_ms(a.n_repeats, [&] { n_typical_messages = store.open_conversation(typical).messages.size(); }));
    report["open_large_conversation_ms"] = ms(median_ms(a.n_repeats, [&] { n_large_messages = store.open_conversation(large).messages.size(); }));
    report["search_common_word"] = "the";  // as-you-type: also matches words starting with "the"
    report["search_common_ms"] = ms(median_ms(a.n_repeats, [&] { n_common = store.search("the").size(); }));
    SearchOptions whole_words;  // as typed and finished, not as-you-type
    whole_words.prefix_last_word = false;
    report["search_common_whole_word_ms"] = ms(median_ms(a.n_repeats, [&] { store.search("the", whole_words); }));
    report["search_rare_word"] = "quokka";
    report["search_rare_ms"] = ms(median_ms(a.n_repeats, [&] { n_rare = store.search("quokka").size(); }));
    report["search_page_size"] = 50;
    report["search_common_hits_on_page"] = n_common;
    report["search_rare_hits_on_page"] = n_rare;
    if (a.json) {
        std::cout << report.dump(2) << "\n";
        return;
    }
    for (const auto& [key, value] : report.items()) std::printf("%-30s %s\n", key.c_str(), value.dump().c_str());
    (void)n_large_messages;
    (void)n_typical_messages;
}

}  // namespace

void add_history_command(CLI::App& app) {
    auto args = std::make_shared<HistoryArgs>();
    CLI::App* history = app.add_subcommand("history", "List, search, export and import saved conversations");
    history->add_option("--db", args->db, "Conversation database (SQLite) file")->required();
    history->require_subcommand(1);

    CLI::App* list = history->add_subcommand("list", "Conversations, pinned first, then by last activity");
    list->add_option("--limit", args->limit, "Page size (1..1000)")->capture_default_str();
    list->add_option("--offset", args->offset, "Rows to skip")->capture_default_str();
    list->add_flag("--archived", args->archived, "Only archived conversations");
    list->add_flag("--all", args->all, "Archived and not");
    list->callback([args] { run_list(*args); });

    CLI::App* show = history->add_subcommand("show", "One conversation: its active branch as Markdown");
    show->add_option("ID", args->id, "Conversation id")->required();
    show->add_flag("--json", args->json, "Lossless JSON (every branch) instead");
    show->callback([args] { run_show(*args); });

    CLI::App* search = history->add_subcommand("search", "Full-text search with highlighted snippets");
    search->add_option("TEXT", args->text, "Words to find (all must occur)")->required();
    search->add_option("--limit", args->limit, "Most hits to show")->capture_default_str();
    search->callback([args] { run_search(*args); });

    CLI::App* exp = history->add_subcommand("export", "Write JSON (lossless) or Markdown (readable)");
    exp->add_option("--format", args->format, "json or markdown")->check(CLI::IsMember({"json", "markdown"}))->capture_default_str();
    exp->add_option("--id", args->export_id, "One conversation (default: all)");
    exp->add_option("--out", args->out, "Output file; a folder for Markdown of all conversations")->required();
    exp->callback([args] { run_export(*args); });

    CLI::App* imp = history->add_subcommand("import", "Import a JSON export: all of it or, if anything is wrong, none");
    imp->add_option("FILE", args->in, "JSON file written by export")->required();
    imp->callback([args] { run_import(*args); });

    CLI::App* check = history->add_subcommand("check", "PRAGMA integrity_check and the full-text index's own check");
    check->callback([args] { run_check(*args); });

    CLI::App* aside = history->add_subcommand("move-aside", "Rename a damaged database (kept, never deleted); the next open starts fresh");
    aside->callback([args] { std::printf("moved to %s\n", Store::move_aside(args->db).c_str()); });

    CLI::App* bench = history->add_subcommand("bench", "Fill a new database and time list, open and search");
    bench->add_option("--conversations", args->n_conversations, "Conversations to create")->capture_default_str();
    bench->add_option("--messages", args->n_messages, "Messages per conversation")->capture_default_str();
    bench->add_option("--large", args->n_large, "Messages in the one large conversation")->capture_default_str();
    bench->add_option("--repeats", args->n_repeats, "Timed runs per query (median reported)")->capture_default_str();
    bench->add_flag("--reuse", args->reuse, "Time the queries on an already filled database");
    bench->add_flag("--json", args->json, "Print the report as JSON");
    bench->callback([args] { run_bench(*args); });
}

}  // namespace cetus::cli
