// `cetus-cli serve` as a client sees it: the real server process on the tiny golden
// model (no mock), driven over loopback HTTP with Qt Network: the models list, whole
// and streamed completions (SSE deltas equal to the whole text, usage chunk, stop
// strings, the `cetus` extension), cancellation by disconnect, queue order, bearer
// auth, every error case, graceful shutdown, and a bounded load test whose requests/s
// and time to first token are printed (a benchmark, not an assertion).
#include <nlohmann/json.hpp>

#include <QtNetwork>
#include <QtTest>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

using nlohmann::json;

namespace {

constexpr const char* kModel = "v3-tiny";

// A running `cetus-cli serve` on a free loopback port (--port 0; the port is read
// from the "listening on" line), with the golden tiny model copied into a temp dir.
class ServerProcess {
public:
    explicit ServerProcess(const QStringList& extra = {}) {
        QDir(m_tmp.path()).mkdir(kModel);
        const QString dir = m_tmp.filePath(kModel) + "/";
        const QString g = QStringLiteral(CETUS_TEST_DATA "/golden/v3-noaux/"), t = QStringLiteral(CETUS_TEST_DATA "/ui/");
        for (const char* f : {"config.json", "model.safetensors"}) QFile::copy(g + f, dir + f);
        QFile::copy(t + "tokenizer_config.json", dir + "tokenizer_config.json");
        // The UI tests' tokenizer, with DeepSeek's fill-in-the-middle tokens added (ids 260-262).
        QFile in(t + "tokenizer.json");
        if (in.open(QIODevice::ReadOnly)) {
            json tok = json::parse(in.readAll().toStdString());
            int id = 260;
            for (const char* marker : {"<｜fim▁hole｜>", "<｜fim▁begin｜>", "<｜fim▁end｜>"})
                tok["added_tokens"].push_back({{"id", id++}, {"content", marker}, {"single_word", false},
                                               {"lstrip", false}, {"rstrip", false}, {"normalized", false},
                                               {"special", true}});
            QFile out(dir + "tokenizer.json");
            if (out.open(QIODevice::WriteOnly)) out.write(QByteArray::fromStdString(tok.dump()));
        }
        QObject::connect(&m_proc, &QProcess::readyReadStandardError, [this] { m_log += m_proc.readAllStandardError(); });
        m_proc.setProcessChannelMode(QProcess::SeparateChannels);
        m_proc.start(QStringLiteral(CETUS_CLI_BINARY),
                     QStringList{"serve", "--model", m_tmp.filePath(kModel), "--port", "0", "--threads", "1"} + extra);
        static const QRegularExpression re(QStringLiteral("listening on http://127\\.0\\.0\\.1:(\\d+)"));
        QElapsedTimer t0;
        t0.start();
        while (t0.elapsed() < 60000 && m_proc.state() != QProcess::NotRunning) {
            m_proc.waitForReadyRead(100);
            QCoreApplication::processEvents();
            auto m = re.match(QString::fromUtf8(m_log));
            if (m.hasMatch()) {
                m_base = QStringLiteral("http://127.0.0.1:%1").arg(m.captured(1));
                return;
            }
        }
        qWarning("server did not start: %s", m_log.constData());
    }
    ~ServerProcess() {
        if (m_proc.state() != QProcess::NotRunning) {
            m_proc.terminate();
            if (!m_proc.waitForFinished(10000)) m_proc.kill();
            m_proc.waitForFinished(5000);
        }
    }
    bool ok() const { return !m_base.isEmpty(); }
    QUrl url(const QString& path) const { return QUrl(m_base + path); }
    QProcess& process() { return m_proc; }
    QString modelDir() const { return m_tmp.filePath(kModel); }
    QByteArray log() {
        QCoreApplication::processEvents();
        return m_log;
    }

private:
    QTemporaryDir m_tmp;
    QProcess m_proc;
    QByteArray m_log;
    QString m_base;
};

struct HttpResult {
    int status = 0;
    QByteArray body;
    QByteArray content_type;
    json j;  // parsed body (discarded when not JSON)
};

// Runs the event loop until `done` or timeout_ms.
bool wait_until(const std::function<bool()>& done, int timeout_ms) {
    QElapsedTimer t;
    t.start();
    while (!done() && t.elapsed() < timeout_ms) QCoreApplication::processEvents(QEventLoop::AllEvents, 20);
    return done();
}

QNetworkRequest make_request(const QUrl& url, const QByteArray& key = {}) {
    QNetworkRequest r(url);
    r.setHeader(QNetworkRequest::ContentTypeHeader, "application/json");
    if (!key.isEmpty()) r.setRawHeader("Authorization", "Bearer " + key);
    r.setTransferTimeout(60000);
    return r;
}

HttpResult http(QNetworkAccessManager& nam, const QByteArray& method, const QUrl& url, const QByteArray& body = {},
                const QByteArray& key = {}) {
    QNetworkReply* reply = nam.sendCustomRequest(make_request(url, key), method, body);
    wait_until([&] { return reply->isFinished(); }, 60000);
    HttpResult r;
    r.status = reply->attribute(QNetworkRequest::HttpStatusCodeAttribute).toInt();
    r.body = reply->readAll();
    r.content_type = reply->header(QNetworkRequest::ContentTypeHeader).toByteArray();
    r.j = json::parse(r.body.toStdString(), nullptr, false);
    reply->deleteLater();
    return r;
}

// One streamed completion, its SSE events parsed as they arrive.
struct Stream {
    QNetworkReply* reply = nullptr;
    QByteArray buffer;
    std::vector<json> chunks;  // every data: event but [DONE]
    bool done_marker = false;
    bool after_done = false;  // anything after [DONE]
    std::string text;        // concatenated delta contents
    qint64 first_content_ms = -1;
    QElapsedTimer timer;

    void start(QNetworkAccessManager& nam, const QUrl& url, const json& body, const QByteArray& key = {}) {
        timer.start();
        reply = nam.post(make_request(url, key), QByteArray::fromStdString(body.dump()));
        QObject::connect(reply, &QNetworkReply::readyRead, [this] { read(); });
    }
    void read() {
        buffer += reply->readAll();
        for (qsizetype end; (end = buffer.indexOf("\n\n")) >= 0;) {
            const QByteArray event = buffer.left(end);
            buffer.remove(0, end + 2);
            for (const QByteArray& line : event.split('\n')) {
                if (!line.startsWith("data: ")) continue;  // ": keep-alive" comments
                const QByteArray data = line.mid(6);
                if (done_marker) after_done = true;
                if (data == "[DONE]") {
                    done_marker = true;
                    continue;
                }
                json j = json::parse(data.toStdString(), nullptr, false);
                if (j.contains("choices") && j["choices"].is_array() && !j["choices"].empty()) {
                    if (j["choices"][0].contains("text") && j["choices"][0]["text"].is_string())  // /v1/completions
                        text += j["choices"][0]["text"].get<std::string>();
                    const json& d = j["choices"][0]["delta"];
                    if (d.contains("content") && d["content"].is_string()) {
                        const std::string piece = d["content"].get<std::string>();
                        if (!piece.empty() && first_content_ms < 0) first_content_ms = timer.elapsed();
                        text += piece;
                    }
                }
                chunks.push_back(std::move(j));
            }
        }
    }
    bool finished() const { return reply && reply->isFinished(); }
    int status() const { return reply->attribute(QNetworkRequest::HttpStatusCodeAttribute).toInt(); }
    // The chunks that carry a non-null finish_reason.
    std::vector<json> finish_chunks() const {
        std::vector<json> out;
        for (const auto& c : chunks)
            if (c.contains("choices") && !c["choices"].empty() && !c["choices"][0]["finish_reason"].is_null())
                out.push_back(c);
        return out;
    }
};

json chat(const std::string& content, int max_tokens, double temperature = 0.0) {
    return {{"model", kModel},
            {"messages", json::array({{{"role", "user"}, {"content", content}}})},
            {"temperature", temperature},
            {"max_tokens", max_tokens}};
}

QByteArray body_of(const json& j) { return QByteArray::fromStdString(j.dump()); }

// An OpenAI-style error object: {"error": {"message": str, "type": str, "param", "code"}}.
bool is_error_object(const json& j) {
    return j.is_object() && j.contains("error") && j["error"].is_object() && j["error"].contains("message") &&
           j["error"]["message"].is_string() && j["error"].contains("type") && j["error"]["type"].is_string() &&
           j["error"].contains("param") && j["error"].contains("code");
}

}  // namespace

class TestServer : public QObject {
    Q_OBJECT
    std::unique_ptr<ServerProcess> m_server;
    QNetworkAccessManager m_nam;
    std::string m_greedy;  // greedy answer to "abc", 30 tokens

    QUrl url(const QString& p) const { return m_server->url(p); }
    HttpResult post(const json& body) { return http(m_nam, "POST", url("/v1/chat/completions"), body_of(body)); }
    Stream stream(const json& body, QNetworkAccessManager* nam = nullptr, const QUrl& at = {}) {
        Stream s;
        s.start(nam ? *nam : m_nam, at.isEmpty() ? url("/v1/chat/completions") : at, body);
        wait_until([&] { return s.finished(); }, 60000);
        s.read();
        return s;
    }

private slots:
    void initTestCase() {
        m_server = std::make_unique<ServerProcess>(QStringList{"--context", "128"});
        QVERIFY2(m_server->ok(), m_server->log().constData());
        HttpResult r = post(chat("abc", 30));
        QCOMPARE(r.status, 200);
        m_greedy = r.j["choices"][0]["message"]["content"].get<std::string>();
        QVERIFY(!m_greedy.empty());
    }

    void modelsList() {
        HttpResult r = http(m_nam, "GET", url("/v1/models"));
        QCOMPARE(r.status, 200);
        QVERIFY(r.content_type.startsWith("application/json"));
        QCOMPARE(r.j["object"].get<std::string>(), std::string("list"));
        QCOMPARE(r.j["data"].size(), size_t(1));
        QCOMPARE(r.j["data"][0]["id"].get<std::string>(), std::string(kModel));
        QCOMPARE(r.j["data"][0]["object"].get<std::string>(), std::string("model"));
        QCOMPARE(r.j["data"][0]["max_model_len"].get<int64_t>(), int64_t(128));  // --context 128
        QCOMPARE(http(m_nam, "GET", url("/v1/models/v3-tiny")).status, 200);
        HttpResult missing = http(m_nam, "GET", url("/v1/models/gpt-4"));
        QCOMPARE(missing.status, 404);
        QVERIFY(is_error_object(missing.j));
    }

    void nonStreaming() {
        HttpResult r = post(chat("abc", 30));
        QCOMPARE(r.status, 200);
        const json& j = r.j;
        QCOMPARE(j["object"].get<std::string>(), std::string("chat.completion"));
        QVERIFY(j["id"].get<std::string>().rfind("chatcmpl-", 0) == 0);
        QCOMPARE(j["model"].get<std::string>(), std::string(kModel));
        QCOMPARE(j["choices"][0]["message"]["role"].get<std::string>(), std::string("assistant"));
        QCOMPARE(j["choices"][0]["message"]["content"].get<std::string>(), m_greedy);  // greedy is deterministic
        QCOMPARE(j["choices"][0]["finish_reason"].get<std::string>(), std::string("length"));
        QCOMPARE(j["usage"]["completion_tokens"].get<int>(), 30);
        QVERIFY(j["usage"]["prompt_tokens"].get<int>() > 0);
        QCOMPARE(j["usage"]["total_tokens"].get<int>(),
                 j["usage"]["prompt_tokens"].get<int>() + j["usage"]["completion_tokens"].get<int>());
        QVERIFY(!j.contains("cetus"));
        // max_completion_tokens is the current name of max_tokens.
        json b = chat("abc", 30);
        b.erase("max_tokens");
        b["max_completion_tokens"] = 5;
        QCOMPARE(post(b).j["usage"]["completion_tokens"].get<int>(), 5);
        // A seeded sampled answer repeats.
        json s = chat("abc", 12, 1.0);
        s["seed"] = 7;
        s["top_p"] = 0.9;
        QCOMPARE(post(s).j["choices"][0]["message"]["content"], post(s).j["choices"][0]["message"]["content"]);
        // OpenAI's frequency and presence penalties reach the engine (the tiny random model
        // repeats tokens within 30, so the greedy answer changes; test_generator checks the rule).
        json pen = chat("abc", 30);
        pen["frequency_penalty"] = 2.0;
        pen["presence_penalty"] = 2.0;
        const HttpResult penalised = post(pen);
        QCOMPARE(penalised.status, 200);
        const std::string text = penalised.j["choices"][0]["message"]["content"].get<std::string>();
        QVERIFY(text != m_greedy);
        QCOMPARE(post(pen).j["choices"][0]["message"]["content"].get<std::string>(), text);
    }

    // OpenAI's JSON mode: the answer is an object from its first byte, whole when it ends
    // with "stop"; streaming gives the same text. test_json_grammar checks every token.
    void jsonMode() {
        for (uint64_t seed : {0, 1, 2, 3}) {
            json b = chat("abc", 60, seed == 0 ? 0.0 : 1.0);
            b["seed"] = seed;
            b["response_format"] = {{"type", "json_object"}};
            const HttpResult r = post(b);
            QCOMPARE(r.status, 200);
            const std::string content = r.j["choices"][0]["message"]["content"].get<std::string>();
            QVERIFY2(content.starts_with("{"), content.c_str());
            const std::string finish = r.j["choices"][0]["finish_reason"].get<std::string>();
            QCOMPARE(json::accept(content), finish == "stop");
            if (finish == "stop") QVERIFY(json::parse(content).is_object());
            b["stream"] = true;
            const Stream st = stream(b);
            QCOMPARE(st.text, content);
        }
        json b = chat("abc", 30);
        b["response_format"] = {{"type", "text"}};
        QCOMPARE(post(b).j["choices"][0]["message"]["content"].get<std::string>(), m_greedy);
        for (const json& bad : {json{{"type", "json_schema"}, {"json_schema", json::object()}}, json{{"type", "xml"}},
                                json("json_object"), json{{"kind", "json_object"}}}) {
            b["response_format"] = bad;
            const HttpResult r = post(b);
            QCOMPARE(r.status, 400);
            QCOMPARE(r.j["error"]["param"].get<std::string>(), std::string("response_format"));
        }
    }

    // /v1/completions: the prompt as it is (BOS first, no template), the engine's own answer
    // to those ids (cetus-cli generate --ids), streamed the same, echo, the legacy logprobs,
    // DeepSeek's fill-in-the-middle form for a suffix, and the errors.
    void textCompletions() {
        const QString dir = m_server->modelDir();
        auto ids_of = [&](const QString& text) {
            QProcess p;
            p.start(QStringLiteral(CETUS_CLI_BINARY), {"tokenize", "--model", dir, "--text", text, "--json"});
            p.waitForFinished(60000);
            return json::parse(p.readAllStandardOutput().toStdString())["ids"].get<std::vector<int32_t>>();
        };
        auto engine_text = [&](const std::vector<int32_t>& ids, int max_tokens) {
            QStringList list;
            for (int32_t id : ids) list << QString::number(id);
            QProcess p;
            p.start(QStringLiteral(CETUS_CLI_BINARY), {"generate", "--model", dir, "--ids", list.join(','), "--temperature",
                                                       "0", "--max-tokens", QString::number(max_tokens), "--json",
                                                       "--threads", "1", "--context", "128"});
            p.waitForFinished(60000);
            return json::parse(p.readAllStandardOutput().trimmed().split('\n').last().toStdString())["text"].get<std::string>();
        };
        const QUrl completions = url("/v1/completions");
        auto complete = [&](const json& body) { return http(m_nam, "POST", completions, body_of(body)); };
        json b = {{"model", kModel}, {"prompt", "abc"}, {"max_tokens", 10}, {"temperature", 0}};
        const HttpResult r = complete(b);
        QCOMPARE(r.status, 200);
        QCOMPARE(r.j["object"].get<std::string>(), std::string("text_completion"));
        QVERIFY(r.j["id"].get<std::string>().starts_with("cmpl-"));
        const std::string text = r.j["choices"][0]["text"].get<std::string>();
        QCOMPARE(r.j["choices"][0]["finish_reason"].get<std::string>(), std::string("length"));
        std::vector<int32_t> prompt = {0};  // BOS (add_bos_token), then the text's ids
        for (int32_t id : ids_of("abc")) prompt.push_back(id);
        QCOMPARE(r.j["usage"]["prompt_tokens"].get<size_t>(), prompt.size());
        QCOMPARE(r.j["usage"]["completion_tokens"].get<int>(), 10);
        QCOMPARE(text, engine_text(prompt, 10));
        // The same ids given as the prompt, streamed: the same text.
        json by_ids = b;
        by_ids["prompt"] = prompt;
        by_ids["stream"] = true;
        by_ids["stream_options"] = {{"include_usage", true}};
        const Stream st = stream(by_ids, nullptr, completions);
        QCOMPARE(st.text, text);
        QVERIFY(st.done_marker);
        QCOMPARE(st.chunks.back()["object"].get<std::string>(), std::string("text_completion"));
        QCOMPARE(st.chunks.back()["usage"]["completion_tokens"].get<int>(), 10);
        // OpenAI's default length for text completions: 16 tokens.
        json plain = b;
        plain.erase("max_tokens");
        QCOMPARE(complete(plain).j["usage"]["completion_tokens"].get<int>(), 16);
        // echo and logprobs: the text after the prompt; each token with its alternatives and
        // its offset in characters.
        json echo = b;
        echo["echo"] = true;
        echo["logprobs"] = 2;
        const HttpResult e = complete(echo);
        QCOMPARE(e.j["choices"][0]["text"].get<std::string>(), "abc" + text);
        const json& lp = e.j["choices"][0]["logprobs"];
        QCOMPARE(lp["tokens"].size(), size_t(10));
        std::string joined;
        int64_t offset = 3;
        for (size_t i = 0; i < lp["tokens"].size(); ++i) {
            QCOMPARE(lp["text_offset"][i].get<int64_t>(), offset);
            const std::string t = lp["tokens"][i].get<std::string>();
            joined += t;
            offset += QString::fromStdString(t).toUcs4().size();
            QVERIFY(lp["token_logprobs"][i].get<double>() <= 0.0);
            QCOMPARE(lp["top_logprobs"][i].size(), size_t(2));
        }
        QCOMPARE(joined, text);
        // Fill in the middle: <｜fim▁begin｜>prefix<｜fim▁hole｜>suffix<｜fim▁end｜> after BOS.
        json fim = b;
        fim["prompt"] = "def f(";
        fim["suffix"] = "return x";
        const HttpResult f = complete(fim);
        QCOMPARE(f.status, 200);
        std::vector<int32_t> fim_ids = {0, 261};
        for (int32_t id : ids_of("def f(")) fim_ids.push_back(id);
        fim_ids.push_back(260);
        for (int32_t id : ids_of("return x")) fim_ids.push_back(id);
        fim_ids.push_back(262);
        QCOMPARE(f.j["usage"]["prompt_tokens"].get<size_t>(), fim_ids.size());
        QCOMPARE(f.j["choices"][0]["text"].get<std::string>(), engine_text(fim_ids, 10));
        // Errors.
        auto expect_400 = [&](json body, const char* param) {
            const HttpResult x = complete(body);
            QCOMPARE(x.status, 400);
            QVERIFY2(is_error_object(x.j), x.body.constData());
            if (param) QCOMPARE(x.j["error"]["param"].get<std::string>(), std::string(param));
        };
        json bad = b;
        bad.erase("prompt");
        expect_400(bad, "prompt");
        for (const json& p : {json::array({"a", "b"}), json::array({1, "x"}), json::array(), json(5)}) {
            bad = b;
            bad["prompt"] = p;
            expect_400(bad, "prompt");
        }
        bad = by_ids;
        bad["suffix"] = "x";
        expect_400(bad, "suffix");
        bad = fim;
        bad["echo"] = true;
        expect_400(bad, "echo");
        bad = b;
        bad["prompt"] = json::array({3, 99999});
        expect_400(bad, "prompt");
        bad = b;
        bad["logprobs"] = 21;
        expect_400(bad, "logprobs");
        bad = b;
        bad["prompt"] = std::string(300, 'x');
        expect_400(bad, "prompt");
        QCOMPARE(http(m_nam, "GET", completions).status, 405);
    }

    void continueFinalMessage() {
        // vLLM's continue_final_message: the prompt ends in the answer's own text (no end
        // of turn, no new "<｜Assistant｜>"), so an empty answer gives the question's prompt
        // and each further token of it one more prompt token.
        const int plain = post(chat("abc", 4)).j["usage"]["prompt_tokens"].get<int>();
        json b = chat("abc", 4);
        b["messages"].push_back({{"role", "assistant"}, {"content", ""}});
        b["continue_final_message"] = true;
        HttpResult r = post(b);
        QCOMPARE(r.status, 200);
        QCOMPARE(r.j["usage"]["prompt_tokens"].get<int>(), plain);
        QCOMPARE(r.j["usage"]["completion_tokens"].get<int>(), 4);
        b["messages"][1]["content"] = "a";  // one byte, one token with this tokenizer
        b["add_generation_prompt"] = false;  // as vLLM's clients send it
        QCOMPARE(post(b).j["usage"]["prompt_tokens"].get<int>(), plain + 1);
        // Answered normally the same messages end a turn and open another.
        b.erase("continue_final_message");
        b.erase("add_generation_prompt");
        QVERIFY(post(b).j["usage"]["prompt_tokens"].get<int>() > plain + 1);
        // Refused: a user message last, both flags, or no generation prompt alone.
        json u = chat("abc", 4);
        u["continue_final_message"] = true;
        HttpResult e = post(u);
        QCOMPARE(e.status, 400);
        QCOMPARE(e.j["error"]["param"].get<std::string>(), std::string("continue_final_message"));
        b["continue_final_message"] = true;
        b["add_generation_prompt"] = true;
        QCOMPARE(post(b).status, 400);
        b.erase("continue_final_message");
        b["add_generation_prompt"] = false;
        QCOMPARE(post(b).status, 400);
    }

    void logprobs() {
        // OpenAI's logprobs: one entry per answer token (its text, bytes and log-probability,
        // and the most likely tokens of its step), the same streamed or not; the entries'
        // bytes spell the answer.
        json b = chat("abc", 30);
        b["logprobs"] = true;
        b["top_logprobs"] = 2;
        HttpResult r = post(b);
        QCOMPARE(r.status, 200);
        QCOMPARE(r.j["choices"][0]["message"]["content"].get<std::string>(), m_greedy);  // the same answer
        const json content = r.j["choices"][0]["logprobs"]["content"];
        QCOMPARE(content.size(), size_t(30));
        std::string spelled;
        for (const json& e : content) {
            for (const json& byte : e["bytes"]) spelled.push_back(char(byte.get<int>()));
            const double lp = e["logprob"].get<double>();
            QVERIFY(lp <= 0.0 && lp >= -9999.0);
            QCOMPARE(e["top_logprobs"].size(), size_t(2));
            // Greedy: the token is its step's most likely one.
            QCOMPARE(e["top_logprobs"][0]["token"], e["token"]);
            QCOMPARE(e["top_logprobs"][0]["logprob"].get<double>(), lp);
            QVERIFY(e["top_logprobs"][1]["logprob"].get<double>() <= lp);
        }
        // The answer's text is their bytes with invalid UTF-8 replaced (this random model
        // writes some).
        QCOMPARE(QString::fromUtf8(spelled.data(), qsizetype(spelled.size())), QString::fromStdString(m_greedy));
        QVERIFY(post(chat("abc", 4)).j["choices"][0]["logprobs"].is_null());  // only when asked
        // Streamed: the same entries, each with the chunk that carries its text.
        b["stream"] = true;
        Stream st = stream(b);
        QCOMPARE(st.status(), 200);
        json streamed = json::array();
        for (const auto& c : st.chunks) {
            if (!c.contains("choices") || c["choices"].empty() || c["choices"][0]["logprobs"].is_null()) continue;
            for (const json& e : c["choices"][0]["logprobs"]["content"]) streamed.push_back(e);
        }
        QCOMPARE(streamed, content);
        // With the cetus extension every token has its chunk, and its entry.
        b["cetus"] = {{"routing", true}};
        Stream per_token = stream(b);
        size_t with_entry = 0;
        for (const auto& c : per_token.chunks)
            if (c.contains("cetus") && c["cetus"].contains("routing")) {
                QCOMPARE(c["choices"][0]["logprobs"]["content"].size(), size_t(1));
                QCOMPARE(c["cetus"]["logprobs"], c["choices"][0]["logprobs"]["content"][0]);  // every token's, also in cetus
                ++with_entry;
            }
        QCOMPARE(with_entry, size_t(30));
        // logprobs alone: no alternatives.
        json plain = chat("abc", 3);
        plain["logprobs"] = true;
        QCOMPARE(post(plain).j["choices"][0]["logprobs"]["content"][0]["top_logprobs"].size(), size_t(0));
        // Refused: alternatives without logprobs, too many, not a boolean.
        json bad = chat("abc", 3);
        bad["top_logprobs"] = 2;
        HttpResult e1 = post(bad);
        QCOMPARE(e1.status, 400);
        QCOMPARE(e1.j["error"]["param"].get<std::string>(), std::string("top_logprobs"));
        bad["logprobs"] = true;
        bad["top_logprobs"] = 21;
        QCOMPARE(post(bad).status, 400);
        bad["top_logprobs"] = 1;
        bad["logprobs"] = "yes";
        QCOMPARE(post(bad).status, 400);
    }

    void streamingEqualsNonStreaming() {
        json b = chat("abc", 30);
        b["stream"] = true;
        b["stream_options"] = {{"include_usage", true}};
        Stream s = stream(b);
        QCOMPARE(s.status(), 200);
        QVERIFY(s.reply->header(QNetworkRequest::ContentTypeHeader).toString().startsWith("text/event-stream"));
        QVERIFY(s.done_marker);
        QVERIFY(!s.after_done);
        QVERIFY(s.chunks.size() >= 3);
        QCOMPARE(s.text, m_greedy);
        const std::string id = s.chunks[0]["id"].get<std::string>();
        for (const auto& c : s.chunks) {
            QCOMPARE(c["object"].get<std::string>(), std::string("chat.completion.chunk"));
            QCOMPARE(c["id"].get<std::string>(), id);
        }
        QCOMPARE(s.chunks[0]["choices"][0]["delta"]["role"].get<std::string>(), std::string("assistant"));
        auto fin = s.finish_chunks();
        QCOMPARE(fin.size(), size_t(1));
        QCOMPARE(fin[0]["choices"][0]["finish_reason"].get<std::string>(), std::string("length"));
        // The usage chunk comes last, with empty choices; other chunks carry "usage": null.
        const json& u = s.chunks.back();
        QVERIFY(u["choices"].empty());
        QCOMPARE(u["usage"]["completion_tokens"].get<int>(), 30);
        QCOMPARE(u["usage"]["total_tokens"].get<int>(),
                 u["usage"]["prompt_tokens"].get<int>() + u["usage"]["completion_tokens"].get<int>());
        QVERIFY(s.chunks[1].contains("usage") && s.chunks[1]["usage"].is_null());
        s.reply->deleteLater();

        b.erase("stream_options");
        Stream plain = stream(b);
        QCOMPARE(plain.text, m_greedy);
        for (const auto& c : plain.chunks) QVERIFY(!c.contains("usage") && !c["choices"].empty());
        plain.reply->deleteLater();
    }

    void stopStrings() {
        // A stop string taken from the middle of the greedy answer ends the text before it.
        const QString full = QString::fromStdString(m_greedy);
        qsizetype at = -1;
        QString stop;
        for (qsizetype k = 4; k + 3 <= full.size(); ++k) {
            stop = full.mid(k, 3);
            if (!stop.contains(QChar(0xFFFD)) && full.indexOf(stop) == k) {
                at = k;
                break;
            }
        }
        QVERIFY2(at > 0, "no usable stop string in the greedy answer");
        const std::string expected = full.left(at).toStdString();
        json b = chat("abc", 30);
        b["stop"] = json::array({stop.toStdString(), "never-in-this-answer"});
        HttpResult r = post(b);
        QCOMPARE(r.status, 200);
        QCOMPARE(r.j["choices"][0]["message"]["content"].get<std::string>(), expected);
        QCOMPARE(r.j["choices"][0]["finish_reason"].get<std::string>(), std::string("stop"));
        b["stop"] = stop.toStdString();  // a plain string too
        b["stream"] = true;
        Stream s = stream(b);
        QCOMPARE(s.text, expected);
        auto fin = s.finish_chunks();
        QCOMPARE(fin.size(), size_t(1));
        QCOMPARE(fin[0]["choices"][0]["finish_reason"].get<std::string>(), std::string("stop"));
        s.reply->deleteLater();
    }

    void cetusExtension() {
        json b = chat("abc", 10);
        b["stream"] = true;
        b["cetus"] = {{"routing", true}, {"stats", true}};
        Stream s = stream(b);
        QCOMPARE(s.text.empty(), false);
        int tokens = 0;
        int64_t last_generated = 0;
        for (const auto& c : s.chunks) {
            if (!c.contains("cetus") || !c["cetus"].contains("routing")) continue;
            ++tokens;
            const json& x = c["cetus"];
            QCOMPARE(x["routing"].size(), size_t(2));  // two MoE layers
            QCOMPARE(x["routing"][0].size(), size_t(4));  // top 4
            QCOMPARE(x["weights"].size(), size_t(2));
            QCOMPARE(x["weights"][1].size(), size_t(4));
            QVERIFY(x["routing"][0][0].is_number_integer() && x["weights"][0][0].is_number());
            const int64_t g = x["stats"]["generated_tokens"].get<int64_t>();
            QVERIFY(g > last_generated);
            last_generated = g;
            QVERIFY(x["stats"].contains("kv_cache_bytes") && x["stats"].contains("decode_tokens_per_s"));
        }
        QCOMPARE(tokens, 10);  // one chunk per token, even while its text is pending
        auto fin = s.finish_chunks();
        QCOMPARE(fin.size(), size_t(1));
        QCOMPARE(fin[0]["cetus"]["stats"]["generated_tokens"].get<int>(), 10);
        s.reply->deleteLater();

        // Non-streaming: routing per token and the final statistics in "cetus".
        b.erase("stream");
        HttpResult r = post(b);
        QCOMPARE(r.status, 200);
        QCOMPARE(r.j["cetus"]["tokens"].size(), size_t(10));
        QCOMPARE(r.j["cetus"]["tokens"][0]["routing"].size(), size_t(2));
        QCOMPARE(r.j["cetus"]["stats"]["generated_tokens"].get<int>(), 10);
        QVERIFY(!r.j["cetus"]["lookup"].get<bool>());

        // "lookup": drafts looked up in the context (up to 4 a step unless n_draft says): the
        // same greedy answer, and the final figures say which drafts ran.
        json g = chat("abc abc abc abc abc abc", 24);
        g["temperature"] = 0;
        g["cetus"] = {{"stats", true}, {"mtp", false}};
        const HttpResult plain = post(g);
        g["cetus"]["lookup"] = true;
        const HttpResult looked = post(g);
        QCOMPARE(plain.status, 200);
        QCOMPARE(looked.status, 200);
        QCOMPARE(looked.j["choices"][0]["message"]["content"], plain.j["choices"][0]["message"]["content"]);
        QVERIFY(looked.j["cetus"]["lookup"].get<bool>() && !plain.j["cetus"]["lookup"].get<bool>());
        QVERIFY(looked.j["cetus"]["stats"]["drafts_proposed"].get<int>() > 0);
        QCOMPARE(plain.j["cetus"]["stats"]["drafts_proposed"].get<int>(), 0);
    }

    void errors() {
        auto expect = [&](const HttpResult& r, int status, const char* code) {
            QCOMPARE(r.status, status);
            QVERIFY2(is_error_object(r.j), r.body.constData());
            if (code) QCOMPARE(r.j["error"]["code"].get<std::string>(), std::string(code));
        };
        const QUrl chat_url = url("/v1/chat/completions");
        expect(http(m_nam, "POST", chat_url, "{\"model\": \"v3-tiny\", \"messages\": ["), 400, "invalid_json");
        expect(http(m_nam, "POST", chat_url, "[1, 2]"), 400, "invalid_json");
        json b = chat("Hi", 4);
        b["model"] = "gpt-4o";
        expect(post(b), 404, "model_not_found");
        QCOMPARE(post(b).j["error"]["param"].get<std::string>(), std::string("model"));
        b = chat("Hi", 4);
        b.erase("messages");
        expect(post(b), 400, nullptr);
        b = chat("Hi", 4);
        b["temperature"] = 5;
        expect(post(b), 400, nullptr);
        QCOMPARE(post(b).j["error"]["param"].get<std::string>(), std::string("temperature"));
        for (const char* penalty : {"frequency_penalty", "presence_penalty"}) {
            b = chat("Hi", 4);
            b[penalty] = 2.5;  // OpenAI's range is -2 .. 2
            expect(post(b), 400, nullptr);
            QCOMPARE(post(b).j["error"]["param"].get<std::string>(), std::string(penalty));
            b[penalty] = "high";
            expect(post(b), 400, nullptr);
        }
        b = chat("Hi", 4);
        b["messages"][0]["role"] = "wizard";
        expect(post(b), 400, nullptr);
        // A content part whose type is not a string (found by fuzz_chat_request: it was a 500).
        b = chat("Hi", 4);
        b["messages"][0]["content"] = json::array({json{{"type", 5}, {"text", "Hi"}}});
        expect(post(b), 400, nullptr);
        QCOMPARE(post(b).j["error"]["param"].get<std::string>(), std::string("messages[0].content"));
        b = chat("Hi", 4);
        b["max_tokens"] = 0;
        expect(post(b), 400, nullptr);
        b = chat("Hi", 4);
        b["stop"] = 3;
        expect(post(b), 400, nullptr);
        b = chat("Hi", 4);
        b["n"] = 2;
        expect(post(b), 400, nullptr);
        // Longer than the context (128 tokens), streaming or not: a 400 before any byte of a stream.
        std::string longer;
        for (int i = 0; i < 200; ++i) longer += "word ";
        expect(post(chat(longer, 4)), 400, "context_length_exceeded");
        b = chat(longer, 4);
        b["stream"] = true;
        expect(post(b), 400, "context_length_exceeded");
        // A body over the 4 MB limit.
        expect(http(m_nam, "POST", chat_url, QByteArray(5 << 20, ' ')), 413, "request_too_large");
        // Wrong method, unknown path.
        expect(http(m_nam, "GET", chat_url), 405, "method_not_allowed");
        expect(http(m_nam, "POST", url("/v1/models"), "{}"), 405, "method_not_allowed");
        expect(http(m_nam, "DELETE", url("/v1/models")), 405, "method_not_allowed");
        expect(http(m_nam, "GET", url("/v1/completions/nothing")), 404, "unknown_url");
        // ...and the server keeps serving.
        QCOMPARE(http(m_nam, "GET", url("/v1/models")).status, 200);
        HttpResult r = post(chat("abc", 30));
        QCOMPARE(r.status, 200);
        QCOMPARE(r.j["choices"][0]["message"]["content"].get<std::string>(), m_greedy);
    }

    void auth() {
        ServerProcess s({"--api-key", "sekrit-key", "--context", "128"});
        QVERIFY2(s.ok(), s.log().constData());
        QNetworkAccessManager nam;
        for (const QByteArray& key : {QByteArray(), QByteArray("wrong-key"), QByteArray("sekrit-keyX")}) {
            HttpResult r = http(nam, "GET", s.url("/v1/models"), {}, key);
            QCOMPARE(r.status, 401);
            QVERIFY(is_error_object(r.j));
            QCOMPARE(r.j["error"]["code"].get<std::string>(), std::string("invalid_api_key"));
            QCOMPARE(http(nam, "POST", s.url("/v1/chat/completions"), body_of(chat("abc", 4)), key).status, 401);
        }
        QCOMPARE(http(nam, "GET", s.url("/v1/models"), {}, "sekrit-key").status, 200);
        HttpResult ok = http(nam, "POST", s.url("/v1/chat/completions"), body_of(chat("abc", 4)), "sekrit-key");
        QCOMPARE(ok.status, 200);
        QCOMPARE(ok.j["usage"]["completion_tokens"].get<int>(), 4);
        QCOMPARE(http(nam, "GET", s.url("/health")).status, 200);  // liveness needs no key
    }

    // A slow server (100 ms per token): a client that disconnects stops its request,
    // running or queued, and the next request is answered at once.
    void cancelByDisconnect() {
        ServerProcess s({"--context", "128", "--debug-token-delay-ms", "100"});
        QVERIFY2(s.ok(), s.log().constData());
        QNetworkAccessManager nam_a, nam_b, nam_c;
        json b = chat("abc", 100);  // ~10 s if it ran to the end
        b["stream"] = true;
        Stream a, queued;
        a.start(nam_a, s.url("/v1/chat/completions"), b);
        QVERIFY(wait_until([&] { return !a.text.empty(); }, 20000));
        queued.start(nam_b, s.url("/v1/chat/completions"), b);  // waits behind a
        QTest::qWait(300);
        queued.reply->abort();
        QTest::qWait(1500);  // the queued request's heartbeats notice the disconnect
        a.reply->abort();
        QElapsedTimer t;
        t.start();
        HttpResult next = http(nam_c, "POST", s.url("/v1/chat/completions"), body_of(chat("abc", 3)));
        const qint64 ms = t.elapsed();
        QCOMPARE(next.status, 200);
        QCOMPARE(next.j["usage"]["completion_tokens"].get<int>(), 3);
        qInfo("next request after the disconnects answered in %lld ms", static_cast<long long>(ms));
        QVERIFY2(ms < 3000, "the disconnected requests kept the engine busy");
        QVERIFY(wait_until([&] { return s.log().contains("cancelled before it started"); }, 3000));
        QVERIFY(s.log().contains("cancelled after"));
        a.reply->deleteLater();
        queued.reply->deleteLater();
    }

    // Requests run one at a time, in arrival order.
    void queueOrder() {
        ServerProcess s({"--context", "128", "--debug-token-delay-ms", "40"});
        QVERIFY2(s.ok(), s.log().constData());
        std::vector<std::unique_ptr<QNetworkAccessManager>> nams;
        std::vector<QNetworkReply*> replies;
        std::vector<int> order;
        for (int i = 0; i < 3; ++i) {
            nams.push_back(std::make_unique<QNetworkAccessManager>());
            QNetworkReply* r = nams.back()->post(make_request(s.url("/v1/chat/completions")), body_of(chat("abc", 4)));
            QObject::connect(r, &QNetworkReply::finished, [&order, i] { order.push_back(i); });
            replies.push_back(r);
            QTest::qWait(60);  // arrive in this order
        }
        QVERIFY(wait_until([&] { return order.size() == 3; }, 30000));
        QCOMPARE(order, (std::vector<int>{0, 1, 2}));
        for (auto* r : replies) {
            QCOMPARE(r->attribute(QNetworkRequest::HttpStatusCodeAttribute).toInt(), 200);
            r->deleteLater();
        }
    }

    // SIGTERM: the running stream ends, the process exits 0.
    void gracefulShutdown() {
        ServerProcess s({"--context", "128", "--debug-token-delay-ms", "100"});
        QVERIFY2(s.ok(), s.log().constData());
        QNetworkAccessManager nam;
        json b = chat("abc", 100);
        b["stream"] = true;
        Stream a;
        a.start(nam, s.url("/v1/chat/completions"), b);
        QVERIFY(wait_until([&] { return !a.text.empty(); }, 20000));
        s.process().terminate();
        QVERIFY(wait_until([&] { return s.process().state() == QProcess::NotRunning; }, 10000));
        QCOMPARE(s.process().exitStatus(), QProcess::NormalExit);
        QCOMPARE(s.process().exitCode(), 0);
        QVERIFY(wait_until([&] { return a.finished(); }, 5000));
        a.reply->deleteLater();
    }

    // Bounded load: CLIENTS concurrent streaming clients (each its own connection pool),
    // REQUESTS requests each, one after another. Every answer must be complete and the
    // server alive afterwards; requests/s and time to first token are printed.
    void loadTest() {
        const int clients = qEnvironmentVariableIntValue("CETUS_LOAD_CLIENTS") > 0
                                ? qEnvironmentVariableIntValue("CETUS_LOAD_CLIENTS") : 8;
        const int per_client = qEnvironmentVariableIntValue("CETUS_LOAD_REQUESTS") > 0
                                   ? qEnvironmentVariableIntValue("CETUS_LOAD_REQUESTS") : 2;
        const int max_tokens = 30;
        json b = chat("abc", max_tokens);
        b["stream"] = true;
        b["stream_options"] = {{"include_usage", true}};

        struct Client {
            std::unique_ptr<QNetworkAccessManager> nam = std::make_unique<QNetworkAccessManager>();
            std::unique_ptr<Stream> current;
            int done = 0;
        };
        std::vector<Client> cs(static_cast<size_t>(clients));
        std::vector<qint64> ttft, total;
        int complete = 0, incomplete = 0;
        long long tokens = 0;
        QElapsedTimer wall;
        wall.start();
        auto launch = [&](Client& c) {
            c.current = std::make_unique<Stream>();
            c.current->start(*c.nam, url("/v1/chat/completions"), b);
        };
        for (auto& c : cs) launch(c);
        wait_until(
            [&] {
                bool all = true;
                for (auto& c : cs) {
                    if (c.done == per_client) continue;
                    all = false;
                    if (!c.current->finished()) continue;
                    Stream& s = *c.current;
                    s.read();
                    const bool ok = s.status() == 200 && s.done_marker && s.text == m_greedy &&
                                    s.finish_chunks().size() == 1 && !s.chunks.empty() &&
                                    s.chunks.back().contains("usage") && s.chunks.back()["choices"].empty();
                    ok ? ++complete : ++incomplete;
                    if (ok) tokens += s.chunks.back()["usage"]["completion_tokens"].get<long long>();
                    ttft.push_back(s.first_content_ms);
                    total.push_back(s.timer.elapsed());
                    s.reply->deleteLater();
                    if (++c.done < per_client) launch(c);
                }
                return all;
            },
            300000);
        const double seconds = double(wall.elapsed()) / 1000.0;
        QCOMPARE(complete, clients * per_client);
        QCOMPARE(incomplete, 0);
        QCOMPARE(http(m_nam, "GET", url("/health")).status, 200);
        QCOMPARE(m_server->process().state(), QProcess::Running);

        std::sort(ttft.begin(), ttft.end());
        std::sort(total.begin(), total.end());
        auto pct = [](const std::vector<qint64>& v, double p) {
            return v.empty() ? qint64(-1) : v[std::min(v.size() - 1, size_t(p * double(v.size() - 1) + 0.5))];
        };
        std::printf("\nLOAD TEST (cetus-cli serve, tiny golden model, CPU, %d clients x %d streaming requests, "
                    "max_tokens %d)\n"
                    "  requests: %d complete in %.2f s -> %.1f requests/s, %.0f completion tokens/s\n"
                    "  time to first token: p50 %lld ms, p95 %lld ms, max %lld ms\n"
                    "  request latency:     p50 %lld ms, p95 %lld ms, max %lld ms\n\n",
                    clients, per_client, max_tokens, complete, seconds, double(complete) / seconds,
                    double(tokens) / seconds, static_cast<long long>(pct(ttft, 0.5)),
                    static_cast<long long>(pct(ttft, 0.95)), static_cast<long long>(ttft.back()),
                    static_cast<long long>(pct(total, 0.5)), static_cast<long long>(pct(total, 0.95)),
                    static_cast<long long>(total.back()));
        std::fflush(stdout);
    }

    void cleanupTestCase() { m_server.reset(); }
};

QTEST_GUILESS_MAIN(TestServer)
#include "test_server.moc"
