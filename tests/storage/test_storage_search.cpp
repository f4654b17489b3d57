// Full-text search: highlighted snippets, bm25 ranking, prefixes, diacritics,
// FTS5 syntax treated as plain words, and the index kept in step by triggers.
#include "cetus/storage/store.h"

#include <QtTest>

#include <set>

using namespace cetus::storage;

namespace {

int64_t add(Store& s, int64_t conversation, const std::string& text, Role role = Role::User,
            MessageState state = MessageState::Complete) {
    NewMessage m;
    m.conversation_id = conversation;
    m.role = role;
    m.content = text;
    m.state = state;
    return s.add_message(m);
}

std::vector<int64_t> ids_of(const std::vector<SearchHit>& hits) {
    std::vector<int64_t> ids;
    for (const auto& h : hits) ids.push_back(h.message_id);
    return ids;
}

}  // namespace

class TestStorageSearch : public QObject {
    Q_OBJECT

private slots:
    void snippet_highlights_every_match() {
        Store s = Store::open_memory();
        const int64_t c = s.create_conversation({"Routing notes", "", "", "{}"});
        const int64_t m = add(s, c, "Each token picks experts; the router scores experts with a sigmoid.");
        const auto hits = s.search("experts");
        QCOMPARE(hits.size(), size_t(1));
        const SearchHit& h = hits[0];
        QCOMPARE(h.message_id, m);
        QCOMPARE(h.conversation_id, c);
        QCOMPARE(h.conversation_title, std::string("Routing notes"));
        QCOMPARE(h.role, Role::User);
        QCOMPARE(h.highlights.size(), size_t(2));
        for (auto [b, e] : h.highlights) QCOMPARE(h.snippet.substr(b, e - b), std::string("experts"));
        QCOMPARE(mark_snippet(h, "[", "]"),
                 std::string("Each token picks [experts]; the router scores [experts] with a sigmoid."));
    }

    void long_messages_are_cut_with_an_ellipsis() {
        Store s = Store::open_memory();
        const int64_t c = s.create_conversation({});
        std::string text;
        for (int i = 0; i < 200; ++i) text += "filler" + std::to_string(i) + " ";
        text += "needle ";
        for (int i = 0; i < 200; ++i) text += "tail" + std::to_string(i) + " ";
        add(s, c, text);
        const auto hits = s.search("needle");
        QCOMPARE(hits.size(), size_t(1));
        QVERIFY(hits[0].snippet.size() < 300);
        QVERIFY(hits[0].snippet.find("\xE2\x80\xA6") != std::string::npos);
        QCOMPARE(mark_snippet(hits[0], "<", ">").find("<needle>") != std::string::npos, true);
    }

    void ranking_prefers_denser_matches() {
        Store s = Store::open_memory();
        const int64_t c = s.create_conversation({});
        const int64_t weak = add(s, c, "latent appears once among many other unrelated words in this long message here");
        const int64_t strong = add(s, c, "latent latent latent");
        const int64_t middle = add(s, c, "latent attention caches the latent");
        QCOMPARE(ids_of(s.search("latent")), (std::vector<int64_t>{strong, middle, weak}));
        const auto hits = s.search("latent");
        QVERIFY(hits[0].score <= hits[1].score && hits[1].score <= hits[2].score);
    }

    void common_words_rank_the_newest_matches() {
        Store s = Store::open_memory();
        const int64_t c = s.create_conversation({});
        const int64_t oldest = add(s, c, "gnu gnu gnu gnu");  // the best bm25 score, but old
        {
            Store::Transaction tx(s);
            for (int i = 0; i < 2100; ++i) add(s, c, "a gnu among many other words number " + std::to_string(i));
            tx.commit();
        }
        const int64_t dense = add(s, c, "gnu gnu and more");
        const auto hits = s.search("gnu");
        QCOMPARE(hits.size(), size_t(50));
        QCOMPARE(hits.front().message_id, dense);
        for (const auto& h : hits) QVERIFY(h.message_id != oldest);
        QVERIFY(s.search("gnu", {50, 2000, true, true}).empty());
    }

    void all_words_must_match_in_any_order() {
        Store s = Store::open_memory();
        const int64_t c = s.create_conversation({});
        const int64_t both = add(s, c, "shared expert and routed expert");
        add(s, c, "only shared here");
        QCOMPARE(ids_of(s.search("routed shared")), (std::vector<int64_t>{both}));
    }

    void prefix_and_diacritics() {
        Store s = Store::open_memory();
        const int64_t c = s.create_conversation({});
        const int64_t m = add(s, c, "Un café à Genève avec un quokka");
        QCOMPARE(ids_of(s.search("quok")), (std::vector<int64_t>{m}));
        SearchOptions exact;
        exact.prefix_last_word = false;
        QVERIFY(s.search("quok", exact).empty());
        QCOMPARE(ids_of(s.search("cafe geneve")), (std::vector<int64_t>{m}));
        QCOMPARE(ids_of(s.search("CAFÉ")), (std::vector<int64_t>{m}));
    }

    void query_syntax_is_plain_text_data() {
        QTest::addColumn<QString>("query");
        QTest::addColumn<int>("n_hits");
        QTest::newRow("quote") << "\"" << 0;
        QTest::newRow("unbalanced_quote") << "say \"hello" << 1;
        QTest::newRow("near_operator") << "NEAR(hello world)" << 0;
        QTest::newRow("boolean_words") << "hello AND OR NOT" << 1;
        QTest::newRow("column_filter") << "content:hello" << 0;
        QTest::newRow("star_only") << "*" << 0;
        QTest::newRow("caret") << "^hello" << 2;
        QTest::newRow("sql") << "'); DROP TABLE messages; --" << 0;
        QTest::newRow("empty") << "" << 0;
        QTest::newRow("spaces") << "   \t " << 0;
    }
    void query_syntax_is_plain_text() {
        QFETCH(QString, query);
        QFETCH(int, n_hits);
        Store s = Store::open_memory();
        const int64_t c = s.create_conversation({});
        add(s, c, "hello world");
        add(s, c, "say hello AND OR NOT near the world");
        // No query text may raise an FTS5 syntax error; it is all words.
        const auto hits = s.search(query.toStdString());
        QCOMPARE(int(hits.size()), n_hits);
        QVERIFY(s.check_integrity().empty());
    }

    void index_follows_checkpoints_finishes_and_deletes() {
        Store s = Store::open_memory();
        const int64_t c = s.create_conversation({});
        const int64_t a = add(s, c, "", Role::Assistant, MessageState::Streaming);
        s.checkpoint_message(a, "first draft mentions walrus");
        QCOMPARE(ids_of(s.search("walrus")), (std::vector<int64_t>{a}));
        s.checkpoint_message(a, "second draft mentions narwhal");
        QVERIFY(s.search("walrus").empty());
        QCOMPARE(ids_of(s.search("narwhal")), (std::vector<int64_t>{a}));
        s.finish_message(a, "final text about belugas", MessageState::Complete, "{}");
        QVERIFY(s.search("narwhal").empty());
        QCOMPARE(s.search("belugas").size(), size_t(1));
        s.delete_conversation(c);
        QVERIFY(s.search("belugas").empty());
        QVERIFY(s.check_integrity().empty());  // includes FTS5's own integrity-check
    }

    void archived_and_paging() {
        Store s = Store::open_memory();
        const int64_t live = s.create_conversation({});
        const int64_t old = s.create_conversation({});
        for (int i = 0; i < 12; ++i) add(s, live, "tapir " + std::to_string(i));
        const int64_t archived_hit = add(s, old, "tapir in the archive");
        s.set_archived(old, true);
        QCOMPARE(s.search("tapir", {100, 0, true, true}).size(), size_t(13));
        SearchOptions no_archive{100, 0, false, true};
        const auto live_hits = s.search("tapir", no_archive);
        QCOMPARE(live_hits.size(), size_t(12));
        for (const auto& h : live_hits) QVERIFY(h.message_id != archived_hit);
        std::set<int64_t> seen;
        for (int offset = 0; offset < 15; offset += 5) {
            for (const auto& h : s.search("tapir", {5, offset, true, true})) QVERIFY(seen.insert(h.message_id).second);
        }
        QCOMPARE(seen.size(), size_t(13));
        QVERIFY_THROWS_EXCEPTION(StorageError, s.search("tapir", {0, 0, true, true}));
        QVERIFY_THROWS_EXCEPTION(StorageError, s.search(std::string("\xC0\xAF")));
    }
};

QTEST_GUILESS_MAIN(TestStorageSearch)
#include "test_storage_search.moc"
