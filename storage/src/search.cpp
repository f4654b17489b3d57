// Full-text search over message content (FTS5, kept in step by the triggers of
// schema.cpp). The user's text is turned into quoted FTS5 phrases, so nothing
// the user types is ever parsed as FTS5 query syntax or SQL.
#include "store_impl.h"

#include <algorithm>
#include <cctype>
#include <unordered_map>

namespace cetus::storage {
namespace {

// Each whitespace-separated word becomes a quoted phrase; all must match.
std::string fts_query(std::string_view text, bool prefix_last) {
    std::string query;
    size_t i = 0;
    bool last_was_word = false;
    while (i < text.size()) {
        while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
        const size_t start = i;
        while (i < text.size() && !std::isspace(static_cast<unsigned char>(text[i]))) ++i;
        const std::string_view word = text.substr(start, i - start);
        bool has_letter = false;
        for (char c : word) {
            const auto b = static_cast<unsigned char>(c);
            has_letter = has_letter || b >= 0x80 || std::isalnum(b);
        }
        if (!has_letter) continue;
        if (!query.empty()) query += ' ';
        query += '"';
        for (char c : word) {
            if (c == '"') query += '"';
            query += c;
        }
        query += '"';
        last_was_word = true;
    }
    if (prefix_last && last_was_word) query += '*';
    return query;
}

constexpr char k_open = '\x01', k_close = '\x02';
constexpr int k_rank_window = 2000;

void split_snippet(const std::string& marked, SearchHit& hit) {
    size_t begin = 0;
    for (char c : marked) {
        if (c == k_open) {
            begin = hit.snippet.size();
        } else if (c == k_close) {
            hit.highlights.emplace_back(begin, hit.snippet.size());
        } else {
            hit.snippet += c;
        }
    }
}

}  // namespace

std::vector<SearchHit> Store::search(std::string_view text, const SearchOptions& options) {
    if (options.limit < 1 || options.limit > 1000 || options.offset < 0) {
        m_impl->fail(StorageErrorCode::InvalidArgument, "search limit must be 1..1000 and offset >= 0");
    }
    detail::require_utf8(*m_impl, text, "search text");
    const std::string query = fts_query(text, options.prefix_last_word);
    if (query.empty()) return {};

    // bm25 costs a few microseconds per matching row, so a word found in most
    // messages would take seconds to rank in full. Rank the k_rank_window newest
    // matches instead (FTS5 walks rowids newest first and stops there); a word
    // with fewer matches is ranked over all of them. Snippets come after, for
    // the page only: snippet() is the costly part.
    std::vector<SearchHit> hits;
    {
        auto q = m_impl->sql(options.include_archived
                                 ? "SELECT id, score FROM (SELECT f.rowid AS id, bm25(messages_fts) AS score "
                                   "FROM messages_fts f WHERE messages_fts MATCH ?1 ORDER BY f.rowid DESC LIMIT ?4) "
                                   "ORDER BY score, id DESC LIMIT ?2 OFFSET ?3"
                                 : "SELECT id, score FROM (SELECT f.rowid AS id, bm25(messages_fts) AS score "
                                   "FROM messages_fts f JOIN messages m ON m.id = f.rowid "
                                   "JOIN conversations c ON c.id = m.conversation_id "
                                   "WHERE messages_fts MATCH ?1 AND c.archived = 0 ORDER BY f.rowid DESC LIMIT ?4) "
                                   "ORDER BY score, id DESC LIMIT ?2 OFFSET ?3");
        q->bind_all(query, options.limit, options.offset, k_rank_window);
        while (q->step()) {
            SearchHit hit;
            hit.message_id = q->col_int(0);
            hit.score = q->col_double(1);
            hits.push_back(std::move(hit));
        }
    }
    if (hits.empty()) return hits;

    // Snippets in one pass: a prefix query re-merges its doclists on every MATCH,
    // so running one MATCH per hit (rowid = ?) would cost the page size times
    // over. The range bounds the scan; instr() picks the page's rows and, being
    // opaque to the planner, cannot turn into a per-row MATCH loop.
    int64_t lo = hits.front().message_id, hi = lo;
    std::string ids = ",";
    for (const SearchHit& hit : hits) {
        lo = std::min(lo, hit.message_id);
        hi = std::max(hi, hit.message_id);
        ids += std::to_string(hit.message_id) + ",";
    }
    std::unordered_map<int64_t, std::string> snippets;
    {
        auto q = m_impl->sql(
            "SELECT f.rowid, snippet(messages_fts, 0, char(1), char(2), '\xE2\x80\xA6', 16) FROM messages_fts f "
            "WHERE messages_fts MATCH ?1 AND f.rowid BETWEEN ?2 AND ?3 AND instr(?4, ',' || f.rowid || ',') > 0");
        q->bind_all(query, lo, hi, ids);
        while (q->step()) snippets[q->col_int(0)] = q->col_text(1);
    }
    for (SearchHit& hit : hits) {
        auto q = m_impl->sql(
            "SELECT m.conversation_id, c.title, m.role, m.created_ms FROM messages m "
            "JOIN conversations c ON c.id = m.conversation_id WHERE m.id = ?1");
        q->bind(1, hit.message_id);
        if (!q->step()) continue;
        hit.conversation_id = q->col_int(0);
        hit.conversation_title = q->col_text(1);
        hit.role = parse_role(q->col_text(2)).value_or(Role::User);
        hit.created_ms = q->col_int(3);
        split_snippet(snippets[hit.message_id], hit);
    }
    return hits;
}

}  // namespace cetus::storage
