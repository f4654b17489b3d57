// cetus-cli as a user runs it: generate --json prints one object per token and
// the documented summary keys; chat stores its turns (with routing traces) in
// the database the app reads, continues a stored conversation, and goes on past
// the context without its oldest messages.
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

QByteArray run(const QStringList& args, const QByteArray& input = {}, int* code = nullptr,
               const QProcessEnvironment& env = QProcessEnvironment::systemEnvironment(), QByteArray* err = nullptr) {
    QProcess p;
    p.setProcessEnvironment(env);
    p.start(QStringLiteral(CETUS_CLI_BINARY), args);
    p.write(input);
    p.closeWriteChannel();
    if (!p.waitForFinished(120000)) qWarning("cetus-cli timed out");
    if (code) *code = p.exitCode();
    const QByteArray e = p.readAllStandardError();
    if (err) *err = e;
    else if (p.exitCode() != 0) qWarning("%s", e.constData());
    return p.readAllStandardOutput();
}

}  // namespace

class TestCli : public QObject {
    Q_OBJECT
private slots:
    // The bench's limit figures against the model's own description: bytes read per
    // decode token = BF16 active weights (one embedding row, not the table) + the
    // latent cache up to the mean decode position; the fraction is that rate over the
    // measured copy bandwidth.
    void benchReportsItsLimits() {
        int code = 0;
        const auto info = nlohmann::json::parse(run({"info", "--random-model", "tiny", "--json"}, {}, &code));
        QCOMPARE(code, 0);
        const auto b = nlohmann::json::parse(
            run({"bench", "--random-model", "tiny", "--prompt", "32", "--gen", "9", "--json", "--repeat", "1"}, {}, &code));
        QCOMPARE(code, 0);
        const double V = info["vocab_size"], H = info["hidden_size"], L = info["layers"];
        const double active = info["params_active"];
        const double row_bytes = double(info["kv_bytes_per_token"]["held"]) / (L + double(info["mtp_layers"]));
        const double want = 2.0 * (active - V * H + H) + L * (32 + 4 + 1) * row_bytes;
        const double got = b["decode_bytes_per_token"];
        // Norm weights and correction biases are F32 (counted as 2 bytes in `want`): a few KiB.
        QVERIFY2(std::abs(got - want) / want < 0.02, qPrintable(QStringLiteral("%1 vs %2").arg(got).arg(want)));
        const double gbs = b["decode_bandwidth_gbs"], copy = b["device_copy_bandwidth_gbs"];
        QVERIFY(copy > 0.1);
        QVERIFY(std::abs(gbs - got * double(b["decode_tokens_per_s"]) / 1e9) / gbs < 1e-6);
        QVERIFY(std::abs(double(b["bandwidth_fraction"]) - gbs / copy) < 1e-9);
        QVERIFY(double(b["prefill_flops_per_token"]) > 2.0 * (active - V * H));
    }

    // bench --conversations: turns of conversations taking turns reuse their prefixes
    // with the prefix store and not without (the shares, not the times, are checked).
    void benchConversationsReusesPrefixes() {
        int code = 0;
        const auto j = nlohmann::json::parse(run({"bench", "--random-model", "tiny", "--conversations", "3", "--prompt",
                                                  "64", "--followup", "8", "--repeat", "2", "--json"},
                                                 {}, &code));
        QCOMPARE(code, 0);
        QCOMPARE(j["turns"].get<int>(), 6);
        QVERIFY(j["reused_share_store"].get<double>() > 0.8);
        QCOMPARE(j["reused_share_no_store"].get<double>(), 0.0);
        QVERIFY(j["first_token_ms_store"].get<double>() > 0 && j["first_token_ms_no_store"].get<double>() > 0);
    }

    // --prefix-cache: a second run with the same prompt reads the first run's rows from
    // the folder and answers the same; bench --restart reads them back every time.
    void prefixCacheAcrossRuns() {
        QTemporaryDir tmp, cache;
        const QString m = model_dir(tmp);
        const QString prompt = QStringLiteral("Tell me everything you know about whales and the songs they sing.");
        auto summary = [&] {
            int code = -1;
            const QByteArray out = run({"generate", "--model", m, "--prompt", prompt, "--temperature", "0", "--max-tokens",
                                        "4", "--json", "--prefix-cache", cache.path()},
                                       {}, &code);
            if (code != 0) return nlohmann::json();
            return nlohmann::json::parse(out.trimmed().split('\n').last().toStdString());
        };
        const auto first = summary();
        QVERIFY(!first.is_null());
        QCOMPARE(first["prefix_from_disk"].get<bool>(), false);
        QCOMPARE(QDir(cache.path()).entryList({QStringLiteral("*.cpx")}, QDir::Files).size(), 1);
        const auto second = summary();
        QVERIFY(!second.is_null());
        QCOMPARE(second["prefix_from_disk"].get<bool>(), true);
        QCOMPARE(second["reused_prefix_tokens"].get<int>(), second["prompt_tokens"].get<int>() - 1);
        QCOMPARE(second["text"], first["text"]);
        QVERIFY(second["disk_prefixes"].get<int>() >= 1);
        // cetus-cli cache: what the folder holds (a file that is not one is listed with why),
        // forgetting a tag it does not hold, clearing it.
        QFile junk(QDir(cache.path()).filePath(QStringLiteral("0000000000000000-0000000000000000.cpx")));
        QVERIFY(junk.open(QIODevice::WriteOnly));
        junk.write("not a prefix");
        junk.close();
        int code = -1;
        auto listed = nlohmann::json::parse(run({"cache", "--dir", cache.path(), "list", "--json"}, {}, &code).toStdString());
        QCOMPARE(code, 0);
        QCOMPARE(listed.size(), size_t(2));
        int readable = 0;
        for (const auto& f : listed) {
            if (f.contains("problem")) {
                QVERIFY(f["problem"].get<std::string>().find("shorter than the header") != std::string::npos);
                continue;
            }
            ++readable;
            QVERIFY(f["model"].get<std::string>().find(m.toStdString()) != std::string::npos);
            QCOMPARE(f["backend"].get<std::string>(), std::string("cpu"));
            QVERIFY(f["tokens"].get<int>() >= second["prompt_tokens"].get<int>());
            QVERIFY(f["bytes"].get<int>() > 0 && f["last_used_s"].get<int64_t>() > 0);
        }
        QCOMPARE(readable, 1);
        QVERIFY(run({"cache", "--dir", cache.path(), "forget", "no-such-tag"}, {}, &code).contains("removed 0 files"));
        QVERIFY(run({"cache", "--dir", cache.path(), "clear"}, {}, &code).contains("removed 2 files"));
        QCOMPARE(code, 0);
        QCOMPARE(QDir(cache.path()).entryList({QStringLiteral("*.cpx")}, QDir::Files).size(), 0);
        const auto j = nlohmann::json::parse(run({"bench", "--random-model", "tiny", "--restart", "--prompt", "64",
                                                  "--followup", "8", "--repeat", "2", "--json"},
                                                 {}, &code));
        QCOMPARE(code, 0);
        QCOMPARE(j["repeats"].get<int>(), 2);
        QVERIFY(j["reused_share"].get<double>() > 0.8);
        QVERIFY(j["file_bytes"].get<double>() > 0 && j["first_token_ms_disk"].get<double>() > 0);
    }

    // The cache comparisons `info` reports, from the config's numbers (architecture
    // doc: MLA holds d_c + d_r per layer, MHA 2 n_h d_h, GQA-8 2 min(8, n_h) d_h; two
    // bytes each): the golden model has 3 heads, so GQA-8 cannot hold more than MHA.
    void infoCacheComparisons() {
        int code = 0;
        const QString m = QStringLiteral(CETUS_TEST_DATA "/golden/v3-noaux");
        const auto info = nlohmann::json::parse(run({"info", "--model", m, "--device", "cpu", "--json"}, {}, &code));
        QCOMPARE(code, 0);
        QFile f(m + QStringLiteral("/config.json"));
        QVERIFY(f.open(QIODevice::ReadOnly));
        const auto c = nlohmann::json::parse(f.readAll().toStdString());
        const uint64_t L = c["num_hidden_layers"], n_h = c["num_attention_heads"], d_h = c["v_head_dim"];
        const uint64_t d_c = c["kv_lora_rank"], d_r = c["qk_rope_head_dim"];
        QCOMPARE(n_h, uint64_t(3));
        const auto& kv = info["kv_bytes_per_token"];
        QCOMPARE(kv["mla"].get<uint64_t>(), L * (d_c + d_r) * 2);
        QCOMPARE(kv["mha"].get<uint64_t>(), L * 2 * n_h * d_h * 2);
        QCOMPARE(kv["gqa8"].get<uint64_t>(), L * 2 * std::min<uint64_t>(8, n_h) * d_h * 2);
    }

    // A damaged or foreign file where the CUDA plug-in should be: --device cuda says
    // which file and what is wrong; auto runs on the CPU and says why.
    void badCudaPluginIsReported() {
        QTemporaryDir tmp;
        const QString junk = tmp.filePath(QStringLiteral("libcetus-cuda.so"));
        QFile f(junk);
        QVERIFY(f.open(QIODevice::WriteOnly));
        f.write("\x7f" "ELF but not really a shared object");
        f.close();
        const QString m = QStringLiteral(CETUS_TEST_DATA "/golden/v3-noaux");
        struct Case {
            QString plugin, want;
        };
        const QString libm = QStringLiteral("/lib/x86_64-linux-gnu/libm.so.6");
        QList<Case> cases = {{junk, QStringLiteral("cannot be loaded")}};
        if (QFile::exists(libm)) cases.append({libm, QStringLiteral("is not a CUDA plug-in")});
        for (const Case& c : cases) {
            QProcessEnvironment env = QProcessEnvironment::systemEnvironment();
            env.insert(QStringLiteral("CETUS_CUDA_PLUGIN"), c.plugin);
            int code = 0;
            QByteArray err;
            run({"info", "--model", m, "--device", "cuda"}, {}, &code, env, &err);
            QVERIFY2(code != 0, err.constData());
            QVERIFY2(err.contains(c.plugin.toUtf8()) && err.contains(c.want.toUtf8()), err.constData());
            const QByteArray out = run({"info", "--model", m, "--device", "auto"}, {}, &code, env, &err);
            QCOMPARE(code, 0);
            QVERIFY2(err.contains("using the CPU backend") && err.contains(c.want.toUtf8()), err.constData());
            QVERIFY(out.contains("v3-noaux"));
        }
    }

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
        QVERIFY(!first.contains("logprob"));  // only when asked
        // --logprobs N: each token's log-probability and its step's N most likely tokens;
        // greedy took the most likely one.
        const QByteArray with = run({"generate", "--model", m, "--prompt", "Hi", "--temperature", "0", "--max-tokens",
                                     "6", "--json", "--logprobs", "3"},
                                    {}, &code);
        QCOMPARE(code, 0);
        const QList<QByteArray> tokens = with.trimmed().split('\n');
        QCOMPARE(tokens.size(), lines.size());
        for (qsizetype i = 0; i + 1 < tokens.size(); ++i) {
            auto t = nlohmann::json::parse(tokens[i].toStdString());
            QCOMPARE(t["id"], nlohmann::json::parse(lines[i].toStdString())["id"]);
            QCOMPARE(t["top_logprobs"].size(), size_t(3));
            QCOMPARE(t["top_logprobs"][0]["id"], t["id"]);
            QCOMPARE(t["top_logprobs"][0]["logprob"], t["logprob"]);
            QVERIFY(t["logprob"].get<double>() <= 0.0);
            QVERIFY(t["top_logprobs"][0].contains("token") && t["top_logprobs"][0].contains("bytes"));
        }
        run({"generate", "--model", m, "--prompt", "Hi", "--json", "--logprobs", "21"}, {}, &code);
        QVERIFY(code != 0);  // beyond the limit of 20
        // --lookup: drafts looked up in the context; the same greedy tokens, and the summary
        // says which drafts ran. A prompt that repeats itself, so that some are proposed.
        const QString again = QStringLiteral("one two three four five one two three four five one two three");
        QByteArray plain_out, lookup_out;
        for (bool lookup : {false, true}) {
            QStringList args = {"generate", "--model", m, "--prompt", again, "--temperature", "0", "--max-tokens",
                                "24", "--json", "--draft", "4"};
            if (lookup) args << "--lookup";
            (lookup ? lookup_out : plain_out) = run(args, {}, &code);
            QCOMPARE(code, 0);
        }
        const QList<QByteArray> plain_lines = plain_out.trimmed().split('\n'), lookup_lines = lookup_out.trimmed().split('\n');
        QCOMPARE(lookup_lines.size(), plain_lines.size());
        for (qsizetype i = 0; i + 1 < plain_lines.size(); ++i)
            QCOMPARE(nlohmann::json::parse(lookup_lines[i].toStdString())["id"],
                     nlohmann::json::parse(plain_lines[i].toStdString())["id"]);
        const auto ls = nlohmann::json::parse(lookup_lines.last().toStdString());
        const auto ps = nlohmann::json::parse(plain_lines.last().toStdString());
        QVERIFY(ls["lookup"].get<bool>() && !ls["mtp"].get<bool>());
        QVERIFY(!ps["lookup"].get<bool>());
        QVERIFY(ls["drafts_proposed"].get<int>() > 0);
    }

    // --attach reads a text file into the message in the app's form: the same prompt and
    // the same greedy answer as that form typed out by hand. Files that are not text
    // stop the command before the model loads, naming the file.
    void generateAttachesFiles() {
        QTemporaryDir tmp;
        const QString m = model_dir(tmp);
        const QString notes = tmp.filePath(QStringLiteral("notes.txt"));
        QFile f(notes);
        QVERIFY(f.open(QIODevice::WriteOnly));
        f.write("alpha\r\nbeta ```x```\n");
        f.close();
        const QStringList common{"generate", "--model", m, "--temperature", "0", "--max-tokens", "5", "--json"};
        int code = -1;
        const QByteArray attached = run(common + QStringList{"--attach", notes, "--prompt", "Sum up"}, {}, &code);
        QCOMPARE(code, 0);
        const QString typed = QStringLiteral("File: notes.txt\n````text\nalpha\nbeta ```x```\n````\n\nSum up");
        const QByteArray by_hand = run(common + QStringList{"--prompt", typed}, {}, &code);
        QCOMPARE(code, 0);
        const auto a = nlohmann::json::parse(attached.trimmed().split('\n').last().toStdString());
        const auto b = nlohmann::json::parse(by_hand.trimmed().split('\n').last().toStdString());
        QCOMPARE(a["prompt_tokens"], b["prompt_tokens"]);
        QCOMPARE(a["text"], b["text"]);
        const auto plain = nlohmann::json::parse(
            run(common + QStringList{"--prompt", "Sum up"}, {}, &code).trimmed().split('\n').last().toStdString());
        QVERIFY(a["prompt_tokens"].get<int>() > plain["prompt_tokens"].get<int>() + 5);
        // A file alone is a message too.
        run(common + QStringList{"--attach", notes}, {}, &code);
        QCOMPARE(code, 0);
        const QString binary = tmp.filePath(QStringLiteral("paper.pdf"));
        QFile pdf(binary);
        QVERIFY(pdf.open(QIODevice::WriteOnly));
        pdf.write(QByteArray("%PDF-1.7\n\0\x01\x02", 12));
        pdf.close();
        QByteArray err;
        run({"generate", "--model", "/nonexistent", "--attach", binary, "--prompt", "x"}, {}, &code,
            QProcessEnvironment::systemEnvironment(), &err);
        QVERIFY(code != 0);
        QVERIFY2(err.contains("paper.pdf is not a text file"), err.constData());
        QVERIFY2(!err.contains("nonexistent"), err.constData());  // refused before the model loads
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
            // What the app needs to click the answer's tokens: where each token's text ends
            // (one per traced token, the last at the end of the text) and their probabilities.
            const auto first = nlohmann::json::parse(tree.messages[1].stats_json);
            const auto& ends = first["token_text_ends"];
            QCOMPARE(ends.size(), trace->n_tokens());
            QCOMPARE(ends.back().get<qint64>(), QString::fromStdString(tree.messages[1].content).size());
            const auto probabilities = store.token_probabilities(tree.messages[1].id);
            QVERIFY(probabilities && probabilities->n_tokens() == trace->n_tokens() && probabilities->top_n == 5);
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

    void chatOutgrowsTheContext() {
        // The tiny model holds 128 tokens; three questions of about 100 bytes each
        // (about a token per byte with this tokenizer) do not fit together. Every
        // answer completes, the later ones without the oldest messages, and say so.
        QTemporaryDir tmp, dbdir;
        const QString m = model_dir(tmp), db = dbdir.filePath("history.db");
        const QByteArray q = QByteArray("whales sing long songs across the ocean at night, ").repeated(2).trimmed();
        int code = -1;
        QByteArray err;
        run({"chat", "--model", m, "--db", db, "--temperature", "0", "--max-tokens", "8"},
            "1. " + q + "\n2. " + q + "\n3. " + q + "\n", &code, QProcessEnvironment::systemEnvironment(), &err);
        QVERIFY2(code == 0, err.constData());
        QVERIFY2(err.contains("left out to fit the 128-token context"), err.constData());
        QVERIFY2(!err.contains("error"), err.constData());
        auto store = cetus::storage::Store::open(db.toStdString());
        auto tree = store.open_conversation(store.list_conversations().at(0).id);
        QCOMPARE(tree.messages.size(), size_t(6));
        QVERIFY(!nlohmann::json::parse(tree.messages[1].stats_json).contains("n_turns_left_out"));
        for (size_t i : {size_t(3), size_t(5)}) {
            QCOMPARE(tree.messages[i].state, cetus::storage::MessageState::Complete);
            auto stats = nlohmann::json::parse(tree.messages[i].stats_json);
            QVERIFY2(stats.value("n_turns_left_out", 0) >= 1, tree.messages[i].stats_json.c_str());
            QVERIFY(stats["n_generated_tokens"].get<int>() > 0);
        }
    }
};

QTEST_GUILESS_MAIN(TestCli)
#include "test_cli.moc"
