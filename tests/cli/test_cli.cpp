// cetus-cli as a user runs it: generate --json prints one object per token and
// the documented summary keys; chat stores its turns (with routing traces) in
// the database the app reads, and continues a stored conversation.
#include "cetus/storage/store.h"

#include <nlohmann/json.hpp>

#include <QtTest>

namespace {

QString model_dir(const QTemporaryDir& tmp) {
    const QString g = QStringLiteral(CETUS_TEST_DATA "/golden/v3-noaux/"), t = QStringLiteral(CETUS_TEST_DATA "/ui/");
    for (const char* f : {"config.json", "model.safetensors"}) QFile::copy(g + f, tmp.filePath(f));
    for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) QFile::copy(t + f, tmp.filePath(f));
    return tmp.path();
}

QByteArray run(const QStringList& args, const QByteArray& input = {}, int* code = nullptr) {
    QProcess p;
    p.start(QStringLiteral(CETUS_CLI_BINARY), args);
    p.write(input);
    p.closeWriteChannel();
    if (!p.waitForFinished(120000)) qWarning("cetus-cli timed out");
    if (code) *code = p.exitCode();
    if (p.exitCode() != 0) qWarning("%s", p.readAllStandardError().constData());
    return p.readAllStandardOutput();
}

}  // namespace

class TestCli : public QObject {
    Q_OBJECT
private slots:
    void generateJson() {
        QTemporaryDir tmp;
        const QString m = model_dir(tmp);
        int code = -1;
        const QByteArray out = run({"generate", "--model", m, "--prompt", "Hi", "--temperature", "0", "--max-tokens",
                                    "6", "--json"},
                                   {}, &code);
        QCOMPARE(code, 0);
        const QList<QByteArray> lines = out.trimmed().split('\n');
        QVERIFY(lines.size() >= 2);
        auto summary = nlohmann::json::parse(lines.last().toStdString());
        for (const char* k : {"text", "n_tokens", "prefill_tokens_per_s", "decode_tokens_per_s", "acceptance_rate",
                              "mean_accepted_length", "kv_cache_bytes", "reused_prefix_tokens"})
            QVERIFY2(summary.contains(k), k);
        const int n = summary["n_tokens"].get<int>();
        QCOMPARE(lines.size(), n + 1);
        auto first = nlohmann::json::parse(lines.first().toStdString());
        QVERIFY(first.contains("id") && first.contains("text") && first.contains("routing"));
        QCOMPARE(first["routing"].size(), size_t(2));  // two MoE layers
    }

    void chatStoresAndContinues() {
        QTemporaryDir tmp, dbdir;
        const QString m = model_dir(tmp), db = dbdir.filePath("history.db");
        int code = -1;
        run({"chat", "--model", m, "--db", db, "--temperature", "0", "--max-tokens", "8"}, "Hello\nMore please\n",
            &code);
        QCOMPARE(code, 0);
        {
            auto store = cetus::storage::Store::open(db.toStdString());
            auto list = store.list_conversations();
            QCOMPARE(list.size(), size_t(1));
            auto tree = store.open_conversation(list[0].id);
            QCOMPARE(tree.messages.size(), size_t(4));
            QCOMPARE(tree.messages[0].content, std::string("Hello"));
            QCOMPARE(tree.messages[1].role, cetus::storage::Role::Assistant);
            QCOMPARE(tree.messages[1].state, cetus::storage::MessageState::Complete);
            QVERIFY(tree.messages[1].has_routing_trace);
            auto trace = store.routing_trace(tree.messages[1].id);
            QVERIFY(trace && trace->n_tokens() > 0 && trace->n_layers == 2 && trace->top_k == 4);
            auto stats = nlohmann::json::parse(tree.messages[3].stats_json);
            QVERIFY(stats["n_generated_tokens"].get<int>() > 0);
            QVERIFY(stats["reused_prefix_tokens"].get<int>() > 0);  // the second turn reused the first
        }
        run({"chat", "--model", m, "--db", db, "--conversation", "1", "--temperature", "0", "--max-tokens", "4"},
            "And again\n", &code);
        QCOMPARE(code, 0);
        auto store = cetus::storage::Store::open(db.toStdString());
        QCOMPARE(store.open_conversation(1).messages.size(), size_t(6));
    }
};

QTEST_GUILESS_MAIN(TestCli)
#include "test_cli.moc"
