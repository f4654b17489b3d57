// Conversation and message operations on in-memory stores: list order and
// paging, rename/pin/archive/delete, branches, auto-titles, statistics, the
// streaming checkpoint, recovery of unfinished answers, transactions.
#include "cetus/storage/store.h"
#include "cetus/storage/token_probabilities.h"

#include <QtTest>

#include <memory>
#include <set>

using namespace cetus::storage;

namespace {

// Each reading is one second after the last, so activity order is unambiguous.
OpenOptions stepping_clock() {
    OpenOptions options;
    auto now = std::make_shared<int64_t>(1'700'000'000'000);
    options.clock_ms = [now] { return *now += 1000; };
    return options;
}

int64_t add(Store& s, int64_t conversation, std::optional<int64_t> parent, Role role, const std::string& text,
            MessageState state = MessageState::Complete) {
    NewMessage m;
    m.conversation_id = conversation;
    m.parent_id = parent;
    m.role = role;
    m.content = text;
    m.state = state;
    return s.add_message(m);
}

template <typename F> StorageErrorCode error_of(F&& f) {
    try {
        f();
    } catch (const StorageError& e) {
        return e.code();
    }
    return static_cast<StorageErrorCode>(-1);
}

}  // namespace

class TestStorageStore : public QObject {
    Q_OBJECT

private slots:
    void create_and_read_back() {
        Store s = Store::open_memory(stepping_clock());
        NewConversation nc;
        nc.title = "Plans";
        nc.model = "DeepSeek-V2-Lite";
        nc.system_prompt = "Be brief.";
        nc.sampling_json = R"({ "top_p": 0.9, "temperature": 0.7 })";
        const int64_t id = s.create_conversation(nc);
        const Conversation c = s.conversation(id);
        QCOMPARE(c.title, std::string("Plans"));
        QCOMPARE(c.model, std::string("DeepSeek-V2-Lite"));
        QCOMPARE(c.system_prompt, std::string("Be brief."));
        QCOMPARE(c.sampling_json, std::string(R"({"temperature":0.7,"top_p":0.9})"));  // normalised
        QCOMPARE(c.uuid.size(), size_t(36));
        QVERIFY(!c.pinned && !c.archived);
        QCOMPARE(c.created_ms, c.updated_ms);
    }

    void list_pinned_first_then_by_activity() {
        Store s = Store::open_memory(stepping_clock());
        std::vector<int64_t> ids;
        for (int i = 0; i < 5; ++i) ids.push_back(s.create_conversation({"c" + std::to_string(i), "", "", "{}"}));
        add(s, ids[1], std::nullopt, Role::User, "activity");  // c1 becomes the most recent
        s.set_pinned(ids[3], true);
        const auto rows = s.list_conversations();
        std::vector<int64_t> order;
        for (const auto& r : rows) order.push_back(r.id);
        QCOMPARE(order, (std::vector<int64_t>{ids[3], ids[1], ids[4], ids[2], ids[0]}));
        QCOMPARE(rows[1].n_messages, int64_t(1));
        QVERIFY(rows[0].pinned);
    }

    void list_pages_cover_everything_once() {
        Store s = Store::open_memory(stepping_clock());
        for (int i = 0; i < 23; ++i) s.create_conversation({"c" + std::to_string(i), "", "", "{}"});
        std::set<int64_t> seen;
        for (int offset = 0; offset < 30; offset += 10) {
            for (const auto& r : s.list_conversations({10, offset, ArchiveFilter::Exclude})) QVERIFY(seen.insert(r.id).second);
        }
        QCOMPARE(seen.size(), size_t(23));
        QCOMPARE(s.count_conversations(), int64_t(23));
        QCOMPARE(error_of([&] { s.list_conversations({0, 0, ArchiveFilter::Exclude}); }), StorageErrorCode::InvalidArgument);
        QCOMPARE(error_of([&] { s.list_conversations({10, -1, ArchiveFilter::Exclude}); }), StorageErrorCode::InvalidArgument);
    }

    void rename_pin_archive() {
        Store s = Store::open_memory(stepping_clock());
        const int64_t a = s.create_conversation({"a", "", "", "{}"});
        const int64_t b = s.create_conversation({"b", "", "", "{}"});
        s.rename_conversation(a, "Renamed \xF0\x9F\x90\xB3");
        QCOMPARE(s.conversation(a).title, std::string("Renamed \xF0\x9F\x90\xB3"));
        s.set_archived(b, true);
        QCOMPARE(s.list_conversations().size(), size_t(1));
        QCOMPARE(s.list_conversations({50, 0, ArchiveFilter::Only}).front().id, b);
        QCOMPARE(s.list_conversations({50, 0, ArchiveFilter::Include}).size(), size_t(2));
        QCOMPARE(s.count_conversations(ArchiveFilter::Only), int64_t(1));
        s.set_settings(a, "m2", "sys", R"({"temperature":1})");
        QCOMPARE(s.conversation(a).model, std::string("m2"));
        QCOMPARE(error_of([&] { s.rename_conversation(999, "x"); }), StorageErrorCode::NotFound);
        QCOMPARE(error_of([&] { s.set_pinned(999, true); }), StorageErrorCode::NotFound);
        QCOMPARE(error_of([&] { s.rename_conversation(a, "bad \xC3"); }), StorageErrorCode::InvalidArgument);
        QCOMPARE(error_of([&] { s.set_settings(a, "", "", "[1,2]"); }), StorageErrorCode::InvalidArgument);
    }

    void delete_cascades() {
        Store s = Store::open_memory(stepping_clock());
        const int64_t c = s.create_conversation({});
        const int64_t u = add(s, c, std::nullopt, Role::User, "zebra question");
        const int64_t a = add(s, c, u, Role::Assistant, "zebra answer");
        RoutingTrace t{1, 1, 0, {3}, {0.5f}};
        s.set_routing_trace(a, t);
        QCOMPARE(s.search("zebra").size(), size_t(2));
        s.delete_conversation(c);
        QCOMPARE(error_of([&] { s.conversation(c); }), StorageErrorCode::NotFound);
        QCOMPARE(error_of([&] { s.message(u); }), StorageErrorCode::NotFound);
        QVERIFY(!s.routing_trace(a).has_value());
        QCOMPARE(s.search("zebra").size(), size_t(0));
        QCOMPARE(error_of([&] { s.delete_conversation(c); }), StorageErrorCode::NotFound);
        QVERIFY(s.check_integrity().empty());
    }

    void branches_keep_the_old_path() {
        Store s = Store::open_memory(stepping_clock());
        const int64_t c = s.create_conversation({});
        const int64_t u1 = add(s, c, std::nullopt, Role::User, "first question");
        const int64_t a1 = add(s, c, u1, Role::Assistant, "first answer");
        const int64_t u2 = add(s, c, a1, Role::User, "follow-up");
        const int64_t a2 = add(s, c, u2, Role::Assistant, "answer two");

        // Regenerate a2: a streaming sibling under u2; a2 stays.
        const int64_t a2b = s.branch_at(a2, "", MessageState::Streaming);
        s.finish_message(a2b, "answer two, again", MessageState::Complete, "{}");
        ConversationTree tree = s.open_conversation(c);
        QCOMPARE(tree.active_path, (std::vector<int64_t>{u1, a1, u2, a2b}));
        QCOMPARE(children_of(tree, u2), (std::vector<int64_t>{a2, a2b}));

        // Edit-and-resend u2: a sibling user message under a1 with its own answer.
        const int64_t u2b = s.branch_at(u2, "follow-up, edited", MessageState::Complete);
        const int64_t a3 = add(s, c, u2b, Role::Assistant, "answer to the edit");
        tree = s.open_conversation(c);
        QCOMPARE(tree.messages.size(), size_t(7));
        QCOMPARE(tree.active_path, (std::vector<int64_t>{u1, a1, u2b, a3}));
        QCOMPARE(children_of(tree, a1), (std::vector<int64_t>{u2, u2b}));
        QCOMPARE(children_of(tree, std::nullopt), (std::vector<int64_t>{u1}));
        QCOMPARE(s.message(u2).content, std::string("follow-up"));

        // Going back to the old branch: the path runs down its newest child.
        s.set_active_message(c, u2);
        tree = s.open_conversation(c);
        QCOMPARE(tree.active_path, (std::vector<int64_t>{u1, a1, u2, a2b}));
        QCOMPARE(s.statistics(c).n_branches, int64_t(3));

        const int64_t other = s.create_conversation({});
        QCOMPARE(error_of([&] { add(s, other, u1, Role::User, "x"); }), StorageErrorCode::InvalidArgument);
        QCOMPARE(error_of([&] { s.set_active_message(other, u1); }), StorageErrorCode::InvalidArgument);
        QCOMPARE(error_of([&] { add(s, c, 12345, Role::User, "x"); }), StorageErrorCode::NotFound);
        QCOMPARE(error_of([&] { add(s, 777, std::nullopt, Role::User, "x"); }), StorageErrorCode::NotFound);
    }

    void auto_title_data() {
        QTest::addColumn<QString>("text");
        QTest::addColumn<QString>("title");
        QTest::newRow("short") << "How do experts route?" << "How do experts route?";
        QTest::newRow("first_non_blank_line") << "\n  \n  Explain  MLA\tplease \nmore" << "Explain MLA please";
        QTest::newRow("long_cut_at_word")
            << "Please write a detailed comparison of multi-head latent attention and grouped query attention"
            << "Please write a detailed comparison of multi-head latent…";
        QTest::newRow("long_no_spaces") << QString(70, QChar('x')) << QString(60, QChar('x')) + QString::fromUtf8("…");
        QTest::newRow("multibyte_not_split") << QString(70, QChar(0x00E9)) << QString(60, QChar(0x00E9)) + QString::fromUtf8("…");
        QTest::newRow("empty") << "" << "";
        QTest::newRow("only_space") << " \n\t " << "";
    }
    void auto_title() {
        QFETCH(QString, text);
        QFETCH(QString, title);
        QCOMPARE(QString::fromStdString(make_auto_title(text.toStdString())), title);
    }

    void first_user_message_titles_an_untitled_conversation() {
        Store s = Store::open_memory(stepping_clock());
        const int64_t c = s.create_conversation({});
        add(s, c, std::nullopt, Role::System, "system text");
        QCOMPARE(s.conversation(c).title, std::string());
        const int64_t u = add(s, c, std::nullopt, Role::User, "What is DeepSeekMoE?\nDetails follow.");
        QCOMPARE(s.conversation(c).title, std::string("What is DeepSeekMoE?"));
        add(s, c, u, Role::User, "second");
        QCOMPARE(s.conversation(c).title, std::string("What is DeepSeekMoE?"));
        const int64_t titled = s.create_conversation({"Mine", "", "", "{}"});
        add(s, titled, std::nullopt, Role::User, "words");
        QCOMPARE(s.conversation(titled).title, std::string("Mine"));
    }

    void streaming_checkpoint_and_finish() {
        Store s = Store::open_memory(stepping_clock());
        const int64_t c = s.create_conversation({});
        const int64_t u = add(s, c, std::nullopt, Role::User, "q");
        const int64_t before = s.conversation(c).updated_ms;
        const int64_t a = add(s, c, u, Role::Assistant, "", MessageState::Streaming);
        s.checkpoint_message(a, "The answer is");
        QCOMPARE(s.message(a).content, std::string("The answer is"));
        QCOMPARE(s.message(a).state, MessageState::Streaming);
        QVERIFY(s.conversation(c).updated_ms > before);
        s.finish_message(a, "The answer is 42.", MessageState::Complete,
                         R"({"n_generated_tokens":5,"decode_tokens_per_s":12.5,"n_prompt_tokens":3})");
        const Message m = s.message(a);
        QCOMPARE(m.state, MessageState::Complete);
        QCOMPARE(m.content, std::string("The answer is 42."));
        QCOMPARE(error_of([&] { s.checkpoint_message(a, "more"); }), StorageErrorCode::InvalidArgument);
        QCOMPARE(error_of([&] { s.checkpoint_message(4242, "more"); }), StorageErrorCode::NotFound);
        QCOMPARE(error_of([&] { s.finish_message(a, "x", MessageState::Streaming, "{}"); }), StorageErrorCode::InvalidArgument);
        QCOMPARE(error_of([&] { s.finish_message(a, "x", MessageState::Complete, "not json"); }), StorageErrorCode::InvalidArgument);
        QCOMPARE(error_of([&] { s.checkpoint_message(a, std::string("\xFF\xFE")); }), StorageErrorCode::InvalidArgument);
    }

    void statistics() {
        Store s = Store::open_memory(stepping_clock());
        const int64_t c = s.create_conversation({});
        const int64_t u = add(s, c, std::nullopt, Role::User, "héllo");  // 6 bytes
        const int64_t a = add(s, c, u, Role::Assistant, "", MessageState::Streaming);
        s.finish_message(a, "abc", MessageState::Complete,
                         R"({"n_generated_tokens":10,"n_prompt_tokens":4,"decode_tokens_per_s":20,"n_draft_proposed":8,"n_draft_accepted":6})");
        const int64_t b = s.branch_at(a, "", MessageState::Streaming);
        s.finish_message(b, "de", MessageState::Interrupted, R"({"n_generated_tokens":2,"decode_tokens_per_s":10})");
        s.set_routing_trace(a, RoutingTrace{2, 2, 1, {1, 2, 3, 4}, {0.1f, 0.2f, 0.3f, 0.4f}});
        TokenProbabilities probabilities;
        probabilities.top_n = 1;
        probabilities.logprobs = {-0.5f, -1.5f};
        probabilities.alternatives = {{"ab", -0.5f}, {"c", -0.25f}};
        s.set_token_probabilities(a, probabilities);
        s.set_token_probabilities(b, probabilities);
        const ConversationStats st = s.statistics(c);
        QCOMPARE(st.n_messages, int64_t(3));
        QCOMPARE(st.n_user_messages, int64_t(1));
        QCOMPARE(st.n_assistant_messages, int64_t(2));
        QCOMPARE(st.n_interrupted, int64_t(1));
        QCOMPARE(st.n_branches, int64_t(2));
        QCOMPARE(st.content_bytes, int64_t(6 + 3 + 2));
        QCOMPARE(st.n_generated_tokens, int64_t(12));
        QCOMPARE(st.n_prompt_tokens, int64_t(4));
        QCOMPARE(st.n_draft_proposed, int64_t(8));
        QCOMPARE(st.n_draft_accepted, int64_t(6));
        QCOMPARE(st.mean_decode_tokens_per_s, 15.0);
        QVERIFY(st.routing_trace_bytes > 32);
        QCOMPARE(st.token_probability_bytes, int64_t(2 * encode_token_probabilities(probabilities).size()));
        QVERIFY(st.first_ms > 0 && st.last_ms >= st.first_ms);
        QCOMPARE(error_of([&] { s.statistics(99); }), StorageErrorCode::NotFound);
    }

    void routing_trace_round_trip() {
        Store s = Store::open_memory(stepping_clock());
        const int64_t c = s.create_conversation({});
        const int64_t a = add(s, c, std::nullopt, Role::Assistant, "x");
        QVERIFY(!s.routing_trace(a).has_value());
        QVERIFY(!s.message(a).has_routing_trace);
        RoutingTrace t{3, 2, 1, {}, {}};
        for (int i = 0; i < 60; ++i) {
            t.expert_ids.push_back(uint16_t(i % 64));
            t.weights.push_back(float(i % 7) / 7.0f);
        }
        s.set_routing_trace(a, t);
        QVERIFY(s.message(a).has_routing_trace);
        const auto back = s.routing_trace(a);
        QVERIFY(back.has_value());
        QVERIFY(back->expert_ids == t.expert_ids);
        QCOMPARE(back->n_tokens(), size_t(10));
        QCOMPARE(error_of([&] { s.set_routing_trace(555, t); }), StorageErrorCode::NotFound);
        t.weights.pop_back();
        QCOMPARE(error_of([&] { s.set_routing_trace(a, t); }), StorageErrorCode::InvalidArgument);
    }

    void reopened_answer_continues() {
        // Continue: a complete or interrupted answer streams again with its text; a user
        // message, a streaming one or a missing one cannot be reopened.
        Store s = Store::open_memory(stepping_clock());
        const int64_t c = s.create_conversation({});
        const int64_t u = add(s, c, std::nullopt, Role::User, "q");
        const int64_t a = add(s, c, u, Role::Assistant, "One, two,");
        s.reopen_message(a);
        QCOMPARE(s.message(a).state, MessageState::Streaming);
        QCOMPARE(s.message(a).content, std::string("One, two,"));
        s.checkpoint_message(a, "One, two, three");
        QCOMPARE(error_of([&] { s.reopen_message(a); }), StorageErrorCode::InvalidArgument);  // streaming
        s.finish_message(a, "One, two, three.", MessageState::Interrupted, "{}");
        s.reopen_message(a);  // an interrupted one too
        s.finish_message(a, "One, two, three. Four.", MessageState::Complete, "{}");
        QCOMPARE(s.message(a).content, std::string("One, two, three. Four."));
        QCOMPARE(error_of([&] { s.reopen_message(u); }), StorageErrorCode::InvalidArgument);
        QCOMPARE(error_of([&] { s.reopen_message(4242); }), StorageErrorCode::NotFound);
        QCOMPARE(s.open_conversation(c).messages.size(), size_t(2));
    }

    void closing_marks_own_streaming_messages_interrupted() {
        QTemporaryDir dir;
        const std::string file = dir.filePath("h.db").toStdString();
        int64_t streaming = 0, finished = 0, other = 0, reopened = 0;
        {
            Store a = Store::open(file);
            Store b = Store::open(file);  // a second live writer in this process
            const int64_t c = a.create_conversation({});
            const int64_t u = add(a, c, std::nullopt, Role::User, "q");
            streaming = add(a, c, u, Role::Assistant, "", MessageState::Streaming);
            a.checkpoint_message(streaming, "partial");
            finished = add(a, c, u, Role::Assistant, "done");
            other = add(b, c, u, Role::Assistant, "", MessageState::Streaming);
            reopened = add(a, c, u, Role::Assistant, "kept");
            a.reopen_message(reopened);
            a.checkpoint_message(reopened, "kept and more");
            // b is alive: a fresh Store must leave its answer alone.
            Store probe = Store::open(file);
            QCOMPARE(probe.n_recovered(), 0);
            QCOMPARE(probe.message(other).state, MessageState::Streaming);
        }
        Store s = Store::open(file);
        QCOMPARE(s.message(streaming).state, MessageState::Interrupted);
        QCOMPARE(s.message(streaming).content, std::string("partial"));
        QCOMPARE(s.message(finished).state, MessageState::Complete);
        QCOMPARE(s.message(other).state, MessageState::Interrupted);
        QCOMPARE(s.message(reopened).state, MessageState::Interrupted);
        QCOMPARE(s.message(reopened).content, std::string("kept and more"));
    }

    void transactions_commit_roll_back_and_nest() {
        Store s = Store::open_memory(stepping_clock());
        {
            Store::Transaction tx(s);
            s.create_conversation({"kept", "", "", "{}"});
            tx.commit();
        }
        {
            Store::Transaction tx(s);
            s.create_conversation({"dropped", "", "", "{}"});
        }
        {
            Store::Transaction outer(s);
            const int64_t c = s.create_conversation({"outer", "", "", "{}"});
            // A failing call inside rolls back only itself.
            QCOMPARE(error_of([&] { add(s, c, 999, Role::User, "x"); }), StorageErrorCode::NotFound);
            add(s, c, std::nullopt, Role::User, "inside");
            outer.commit();
        }
        std::vector<std::string> titles;
        for (const auto& r : s.list_conversations()) titles.push_back(r.title);
        QCOMPARE(titles, (std::vector<std::string>{"outer", "kept"}));
        QCOMPARE(s.list_conversations().front().n_messages, int64_t(1));
    }

    void text_is_data_never_sql() {
        Store s = Store::open_memory(stepping_clock());
        const std::string evil = "'); DROP TABLE messages; --\" OR 1=1; PRAGMA writable_schema=1;";
        const int64_t c = s.create_conversation({evil, evil, evil, "{}"});
        const int64_t m = add(s, c, std::nullopt, Role::User, evil);
        QCOMPARE(s.conversation(c).title, evil);
        QCOMPARE(s.message(m).content, evil);
        QCOMPARE(s.search("DROP TABLE").size(), size_t(1));
        QVERIFY(s.check_integrity().empty());
    }
};

QTEST_GUILESS_MAIN(TestStorageStore)
#include "test_storage_store.moc"
