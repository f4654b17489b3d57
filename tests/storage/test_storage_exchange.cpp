// Export and import: JSON round trips are byte-identical, imports are idempotent,
// Markdown is readable, every malformed import is rejected with nothing
// half-imported (the database exports identically before and after), and a file
// whose rows were edited by hand still exports to a file that imports.
#include "cetus/storage/store.h"

#include "sqlite_util.h"

#include <QtTest>

#include <QTemporaryDir>

#include <limits>
#include <memory>
#include <sstream>
#include <stdexcept>

using namespace cetus::storage;

namespace {

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

// The message of `tree` with this text.
const Message& by_content(const ConversationTree& tree, const std::string& text) {
    for (const Message& m : tree.messages) {
        if (m.content == text) return m;
    }
    throw std::runtime_error("no message \"" + text + "\"");
}

std::string export_all(Store& s) {
    std::ostringstream out;
    s.export_json(out);
    return out.str();
}

// Two conversations with branches, statistics, a routing trace, awkward text.
void fill(Store& s) {
    const int64_t a = s.create_conversation({"", "DeepSeek-V2-Lite", "You are terse.\nVery.", R"({"temperature":0.6,"top_p":0.95,"seed":7})"});
    const int64_t sys = add(s, a, std::nullopt, Role::System, "system line");
    const int64_t u = add(s, a, sys, Role::User, "Quotes \" and \\ backslashes, tabs\t, emoji \xF0\x9F\x90\x8B, NUL-free");
    const int64_t r1 = add(s, a, u, Role::Assistant, "", MessageState::Streaming);
    s.finish_message(r1, "# Answer\n\n```cpp\nint x = 1;\n```\n", MessageState::Complete,
                     R"({"n_generated_tokens":12,"decode_tokens_per_s":33.25,"kv_cache_bytes":123456,"nested":{"b":[1,2.5,"x"]}})");
    RoutingTrace t{2, 3, 1, {}, {}};
    for (int i = 0; i < 12 * 6; ++i) {
        t.expert_ids.push_back(uint16_t((i * 37) % 64));
        t.weights.push_back(float(i % 11) / 10.0f);
    }
    s.set_routing_trace(r1, t);
    TokenProbabilities tp;
    tp.top_n = 2;
    for (int i = 0; i < 12; ++i) {
        tp.logprobs.push_back(-0.125f * float(i));
        tp.alternatives.push_back({i % 3 ? " the" : "\xE2\x80\x9C", -0.125f * float(i)});
        tp.alternatives.push_back({"\n", i == 5 ? -std::numeric_limits<float>::infinity() : -3.5f});
    }
    s.set_token_probabilities(r1, tp);
    const int64_t r2 = s.branch_at(r1, "", MessageState::Streaming);
    s.finish_message(r2, "partial", MessageState::Interrupted, "{}");
    s.set_pinned(a, true);
    const int64_t b = s.create_conversation({"Second", "", "", "{}"});
    const int64_t q = add(s, b, std::nullopt, Role::User, "'); DROP TABLE conversations; --");
    add(s, b, q, Role::Assistant, "failed", MessageState::Error);
    s.set_archived(b, true);
}

}  // namespace

class TestStorageExchange : public QObject {
    Q_OBJECT

private slots:
    void json_round_trip_is_identical() {
        Store source = Store::open_memory(stepping_clock());
        fill(source);
        const std::string first = export_all(source);
        Store target = Store::open_memory();
        const ImportResult r = target.import_json(first, "backup.json");
        QCOMPARE(r.n_conversations, 2);
        QCOMPARE(r.n_messages, int64_t(6));
        QCOMPARE(r.n_skipped, 0);
        const std::string second = export_all(target);
        QCOMPARE(second, first);
        // And again through a third database.
        Store third = Store::open_memory();
        third.import_json(second);
        QCOMPARE(export_all(third), first);

        // What came back is the same data, not just the same text.
        const auto rows = target.list_conversations({50, 0, ArchiveFilter::Include});
        QCOMPARE(rows.size(), size_t(2));
        QVERIFY(rows[0].pinned);
        const ConversationTree tree = target.open_conversation(rows[0].id);
        QCOMPARE(tree.messages.size(), size_t(4));
        QCOMPARE(tree.conversation.system_prompt, std::string("You are terse.\nVery."));
        const Message& answer = tree.messages[2];
        QVERIFY(answer.has_routing_trace);
        QCOMPARE(target.routing_trace(answer.id)->n_tokens(), size_t(12));
        const auto tp = target.token_probabilities(answer.id);
        QVERIFY(tp && tp->n_tokens() == 12 && tp->top_n == 2);
        QCOMPARE(tp->alternatives[1].text, std::string("\n"));
        QCOMPARE(tp->logprobs[4], -0.5f);
        QVERIFY(!target.token_probabilities(tree.messages[3].id));
        QCOMPARE(tree.active_path.back(), tree.messages[3].id);
        QVERIFY(target.search("backslashes").size() == 1);
    }

    void one_conversation_export() {
        Store s = Store::open_memory(stepping_clock());
        fill(s);
        const int64_t second = s.list_conversations({50, 0, ArchiveFilter::Only}).front().id;
        std::ostringstream out;
        s.export_json(out, second);
        Store target = Store::open_memory();
        QCOMPARE(target.import_json(out.str()).n_conversations, 1);
        std::ostringstream again;
        target.export_json(again);
        QCOMPARE(again.str(), out.str());
        std::ostringstream none;
        QVERIFY_THROWS_EXCEPTION(StorageError, s.export_json(none, 999));
    }

    void import_skips_conversations_already_present() {
        Store s = Store::open_memory(stepping_clock());
        fill(s);
        const std::string before = export_all(s);
        const ImportResult r = s.import_json(before);
        QCOMPARE(r.n_conversations, 0);
        QCOMPARE(r.n_skipped, 2);
        QCOMPARE(export_all(s), before);
    }

    void streaming_exports_as_interrupted() {
        Store s = Store::open_memory(stepping_clock());
        const int64_t c = s.create_conversation({});
        add(s, c, std::nullopt, Role::Assistant, "half", MessageState::Streaming);
        const std::string text = export_all(s);
        QVERIFY(text.find("\"state\":\"interrupted\"") != std::string::npos);
        Store target = Store::open_memory();
        target.import_json(text);
        QCOMPARE(export_all(target), text);
    }

    void markdown_is_readable() {
        Store s = Store::open_memory(stepping_clock());
        fill(s);
        const auto rows = s.list_conversations({50, 0, ArchiveFilter::Include});
        const std::string md = s.export_markdown(rows[0].id);
        QVERIFY(md.rfind("# Quotes \" and \\ backslashes", 0) == 0);
        QVERIFY(md.find("- Model: DeepSeek-V2-Lite") != std::string::npos);
        QVERIFY(md.find("> You are terse.\n> Very.\n") != std::string::npos);
        QVERIFY(md.find("## User") != std::string::npos);
        QVERIFY(md.find("## Assistant") != std::string::npos);
        QVERIFY(md.find("- Branches: 2") != std::string::npos);
        // The active branch is the regenerated, interrupted answer.
        QVERIFY(md.find("partial\n\n*(interrupted)*") != std::string::npos);
        QVERIFY(md.find("```cpp") == std::string::npos);
        const std::string md2 = s.export_markdown(rows[1].id);
        QVERIFY(md2.find("*(generation failed)*") != std::string::npos);
        QVERIFY_THROWS_EXCEPTION(StorageError, s.export_markdown(999));
    }

    void malformed_imports_are_rejected_whole_data() {
        QTest::addColumn<bool>("whole_document");
        QTest::addColumn<QString>("pattern");
        QTest::addColumn<QString>("replacement");
        QTest::addColumn<QString>("reason");
        // Each row edits a valid export of two conversations: the first match of
        // `pattern` in the whole document, or in the second conversation only,
        // which proves that nothing of the first conversation is kept.
        auto row = [](const char* name, bool whole, const char* pattern, const QString& replacement, const char* reason) {
            QTest::newRow(name) << whole << QString(pattern) << replacement << QString(reason);
        };
        row("not_json", true, R"(^\{"format")", "{format", "not valid JSON");
        row("truncated", true, R"(\]\}\n$)", "", "not valid JSON");
        row("trailing_garbage", true, R"(\]\}\n$)", "]}x", "not valid JSON");
        row("wrong_format", true, "cetus-conversations", "other-app", "format");
        row("newer_format", true, R"("format_version":2)", R"("format_version":3)", "newer Cetus");
        row("format_zero", true, R"("format_version":2)", R"("format_version":0)", "expected 1 or 2");
        row("top_level_array", true, R"(^\{)", "[{", "not valid JSON");
        row("unknown_key", false, R"("pinned":false)", R"("pinned":false,"extra":1)", "unknown key \"extra\"");
        row("duplicate_key", false, R"("pinned":false)", R"("pinned":false,"pinned":true)", "twice");
        row("missing_key", false, R"(,"model":"")", "", "missing \"model\"");
        row("wrong_type", false, R"("archived":true)", R"("archived":"yes")", "conversations[1].archived");
        row("bad_role", false, R"("role":"assistant")", R"("role":"wizard")", "messages[1].role");
        row("bad_state", false, R"("state":"error")", R"("state":"done")", "messages[1].state");
        row("dangling_parent", false, R"("parent":1)", R"("parent":5)", "messages[1].parent");
        row("self_parent", false, R"("parent":1)", R"("parent":2)", "messages[1].parent");
        row("ids_out_of_order", false, R"("id":2)", R"("id":3)", "messages[1].id");
        row("bad_uuid", false, R"("uuid":")", R"("uuid":"X)", "uuid");
        row("bad_active", false, R"("active_message":2)", R"("active_message":9)", "active_message");
        row("stats_not_object", false, R"("stats":\{\})", R"("stats":[])", "stats");
        row("uint64_time", false, R"("created_ms":\d+)", R"("created_ms":18446744073709551615)", "out of range");
        row("float_time", false, R"("created_ms":\d+)", R"("created_ms":1.5)", "expected an integer");
        row("content_not_text", false, R"("content":"failed")", R"("content":7)", "content");
        row("bad_base64", true, R"("routing_trace":")", R"("routing_trace":"!!)", "routing_trace");
        row("corrupt_trace", true, R"("routing_trace":"Q1JUM)", R"("routing_trace":"Q1JUN)", "routing_trace");
        row("bad_base64_probabilities", true, R"("token_probabilities":")", R"("token_probabilities":"!!)", "token_probabilities");
        row("corrupt_probabilities", true, R"("token_probabilities":"Q1RQM)", R"("token_probabilities":"Q1RQN)", "token_probabilities");
        row("probabilities_not_text", true, R"("token_probabilities":"Q1RQM[A-Za-z0-9+/=]*")", R"("token_probabilities":7)", "token_probabilities");
        row("deep_nesting", false, R"("stats":\{\})",
            QString(R"("stats":{"a":%1%2})").arg(QString(100, '['), QString(100, ']')), "deeper than 64");
    }
    void malformed_imports_are_rejected_whole() {
        QFETCH(bool, whole_document);
        QFETCH(QString, pattern);
        QFETCH(QString, replacement);
        QFETCH(QString, reason);
        Store source = Store::open_memory(stepping_clock());
        fill(source);
        QString doc = QString::fromStdString(export_all(source));
        const qsizetype from = whole_document ? 0 : doc.lastIndexOf("\n{");
        const QRegularExpressionMatch match = QRegularExpression(pattern).match(doc, from);
        QVERIFY2(match.hasMatch(), qPrintable("fixture lacks " + pattern));
        doc.replace(match.capturedStart(), match.capturedLength(), replacement);

        Store target = Store::open_memory();
        const int64_t keep = target.create_conversation({"already here", "", "", "{}"});
        add(target, keep, std::nullopt, Role::User, "existing");
        const std::string before = export_all(target);
        try {
            target.import_json(doc.toStdString(), "backup.json");
            QFAIL("accepted a malformed import");
        } catch (const StorageError& e) {
            QCOMPARE(e.code(), StorageErrorCode::BadImport);
            const std::string what = e.what();
            QVERIFY2(what.rfind("backup.json: ", 0) == 0, e.what());
            QVERIFY2(what.find(reason.toStdString()) != std::string::npos, e.what());
            QVERIFY2(what.find("nothing was imported") != std::string::npos, e.what());
        }
        QCOMPARE(export_all(target), before);
        QVERIFY(target.check_integrity().empty());
    }

    // Rows edited outside Cetus (schema intact, so the file opens): a cycle of
    // parents, a parent newer than its child, a uuid out of shape, a trace blob
    // that does not decode. Before, each made the export refuse to import, so
    // exporting could not rescue such a file.
    void export_of_hand_edited_rows_imports() {
        QTemporaryDir dir;
        QVERIFY(dir.isValid());
        const std::string file = dir.filePath("history.db").toStdString();
        int64_t a = 0, b = 0;
        {
            Store s = Store::open(file, stepping_clock());
            fill(s);
            b = s.list_conversations({50, 0, ArchiveFilter::Only}).front().id;
            a = s.list_conversations({50, 0, ArchiveFilter::Exclude}).front().id;
        }
        int64_t user = 0, first_answer = 0, second_answer = 0, question = 0, failed = 0;
        {
            Store s = Store::open(file);
            const ConversationTree ta = s.open_conversation(a), tb = s.open_conversation(b);
            user = by_content(ta, ta.messages[1].content).id;
            first_answer = ta.messages[2].id;
            second_answer = by_content(ta, "partial").id;
            question = tb.messages[0].id;
            failed = by_content(tb, "failed").id;
        }
        {
            cetus::storage::detail::Db raw(file, SQLITE_OPEN_READWRITE, file);
            const std::string edits =
                // user <-> second answer: a cycle (the first answer still hangs off the user)
                "UPDATE messages SET parent_id = " + std::to_string(second_answer) + " WHERE id = " + std::to_string(user) + ";"
                // the failed answer first, the question after it
                "UPDATE messages SET parent_id = NULL WHERE id = " + std::to_string(failed) + ";"
                "UPDATE messages SET parent_id = " + std::to_string(failed) + " WHERE id = " + std::to_string(question) + ";"
                "UPDATE conversations SET uuid = 'not a uuid' WHERE id = " + std::to_string(b) + ";"
                "UPDATE routing_traces SET data = x'4352543100000000' WHERE message_id = " + std::to_string(first_answer) + ";"
                "UPDATE token_probabilities SET data = x'4354503100' WHERE message_id = " + std::to_string(first_answer) + ";";
            raw.exec(edits.c_str());
        }
        Store s = Store::open(file);
        // The cycle ends the active path (it went round until the path was longer than the tree).
        const ConversationTree ta = s.open_conversation(a);
        QCOMPARE(ta.active_path, (std::vector<int64_t>{user, second_answer}));
        QVERIFY_THROWS_EXCEPTION(StorageError, s.routing_trace(first_answer));
        QVERIFY_THROWS_EXCEPTION(StorageError, s.token_probabilities(first_answer));

        const std::string text = export_all(s);
        Store target = Store::open_memory();
        const ImportResult r = target.import_json(text, "rescued.json");
        QCOMPARE(r.n_conversations, 2);
        QCOMPARE(r.n_messages, int64_t(6));
        const ConversationTree ia = target.open_conversation(r.conversation_ids[0]);
        const ConversationTree ib = target.open_conversation(r.conversation_ids[1]);
        // The cycle is cut at its oldest message, which becomes a root; the rest keep their parents.
        const Message& iuser = by_content(ia, ta.messages[1].content);
        QVERIFY(!iuser.parent_id);
        QCOMPARE(by_content(ia, "partial").parent_id, std::optional<int64_t>(iuser.id));
        QCOMPARE(by_content(ia, ta.messages[2].content).parent_id, std::optional<int64_t>(iuser.id));
        QVERIFY(!by_content(ia, "system line").parent_id);
        // The unreadable trace is left out; nothing else is lost.
        QVERIFY(!by_content(ia, ta.messages[2].content).has_routing_trace);
        QVERIFY(!target.token_probabilities(by_content(ia, ta.messages[2].content).id));
        // The newer parent is written first.
        QCOMPARE(ib.messages.size(), size_t(2));
        QCOMPARE(ib.messages[0].content, std::string("failed"));
        QCOMPARE(ib.messages[1].parent_id, std::optional<int64_t>(ib.messages[0].id));
        QVERIFY(ib.conversation.uuid != "not a uuid");
        QCOMPARE(ib.conversation.uuid.size(), size_t(36));
        // And the rescued copy round-trips as any other.
        Store third = Store::open_memory();
        third.import_json(export_all(target));
        QCOMPARE(export_all(third), export_all(target));
    }

    void duplicate_uuid_in_one_file_is_rejected() {
        Store source = Store::open_memory(stepping_clock());
        fill(source);
        std::string doc = export_all(source);
        const auto uuid = source.conversation(source.list_conversations({50, 0, ArchiveFilter::Include})[0].id).uuid;
        const auto other = source.conversation(source.list_conversations({50, 0, ArchiveFilter::Include})[1].id).uuid;
        doc.replace(doc.find(other), other.size(), uuid);
        Store target = Store::open_memory();
        QVERIFY_THROWS_EXCEPTION(StorageError, target.import_json(doc));
        QCOMPARE(target.count_conversations(ArchiveFilter::Include), int64_t(0));
    }
};

QTEST_GUILESS_MAIN(TestStorageExchange)
#include "test_storage_exchange.moc"
