// The app's remote engine client (RemoteGenerationService) against a real
// `cetus-cli serve` process on the tiny golden model (no mock): models list, a streamed
// answer equal to the server's own non-streamed one at temperature 0, stop (the server
// logs the cancel and serves the next request), bearer auth with and without a key, and
// the real main window chatting with the endpoint, its panels fed by the `cetus`
// extension. The lenient stream parsers are checked on canned byte streams.
#include "cetus/ui/chat_controller.h"
#include "cetus/ui/chat_view.h"
#include "cetus/ui/endpoint_dialog.h"
#include "cetus/ui/engine_service.h"
#include "cetus/ui/main_window.h"
#include "cetus/ui/panels.h"
#include "cetus/ui/remote_service.h"
#include "cetus/ui/sqlite_history_store.h"

#include <QComboBox>
#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QLabel>
#include <QLineEdit>
#include <QPushButton>
#include <QNetworkAccessManager>
#include <QNetworkReply>
#include <QProcess>
#include <QRegularExpression>
#include <QSettings>
#include <QSignalSpy>
#include <QStandardPaths>
#include <QTcpServer>
#include <QTcpSocket>
#include <QTemporaryDir>
#include <QTest>
#include <QToolButton>

#include <map>
#include <memory>
#include <optional>

using namespace cetus::ui;

namespace {

// `cetus-cli serve --port 0` on a copy of the golden tiny model; the port comes from stderr.
class Server {
public:
    explicit Server(const QStringList& extra = {}) {
        const QString dir = m_tmp.filePath(QStringLiteral("v3-tiny"));
        QDir().mkpath(dir);
        const QString g = QStringLiteral(CETUS_TEST_DATA "/golden/v3-noaux/"), t = QStringLiteral(CETUS_TEST_DATA "/ui/");
        for (const char* f : {"config.json", "model.safetensors"}) QFile::copy(g + f, dir + "/" + f);
        for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) QFile::copy(t + f, dir + "/" + f);
        QObject::connect(&m_proc, &QProcess::readyReadStandardError, [this] { m_log += m_proc.readAllStandardError(); });
        m_proc.start(QStringLiteral(CETUS_CLI_BINARY),
                     QStringList{"serve", "--model", dir, "--port", "0", "--threads", "1", "--context", "256"} + extra);
        static const QRegularExpression re(QStringLiteral("listening on (http://127\\.0\\.0\\.1:\\d+)"));
        (void)QTest::qWaitFor([&] {
            const auto m = re.match(QString::fromUtf8(m_log));
            if (m.hasMatch()) m_base = m.captured(1) + QStringLiteral("/v1");
            return m.hasMatch() || m_proc.state() == QProcess::NotRunning;
        }, 60000);
    }
    ~Server() {
        m_proc.terminate();
        if (!m_proc.waitForFinished(10000)) m_proc.kill();
    }
    bool ok() const { return !m_base.isEmpty(); }
    QString base() const { return m_base; }
    QByteArray log() { QCoreApplication::processEvents(); return m_log; }
    bool running() const { return m_proc.state() == QProcess::Running; }

private:
    QTemporaryDir m_tmp;
    QProcess m_proc;
    QByteArray m_log;
    QString m_base;
};

// An OpenAI endpoint that is not a Cetus server (as vLLM answers), serving canned
// replies: its model list, and for every chat request the given SSE payloads. It keeps
// the request bodies it got.
class CannedEndpoint {
public:
    explicit CannedEndpoint(std::vector<QByteArray> payloads) : m_payloads(std::move(payloads)) {
        QObject::connect(&m_server, &QTcpServer::newConnection, [this] {
            while (QTcpSocket* c = m_server.nextPendingConnection()) {
                QObject::connect(c, &QTcpSocket::readyRead, c, [this, c] { serve(c); });
                QObject::connect(c, &QTcpSocket::disconnected, c, &QObject::deleteLater);
            }
        });
        m_server.listen(QHostAddress::LocalHost, 0);
    }
    QString base() const { return QStringLiteral("http://127.0.0.1:%1/v1").arg(m_server.serverPort()); }
    std::vector<QJsonObject> bodies;

private:
    void serve(QTcpSocket* c) {
        QByteArray& in = m_in[c];
        in += c->readAll();
        const qsizetype head_end = in.indexOf("\r\n\r\n");
        if (head_end < 0) return;
        const QByteArray head = in.left(head_end);
        static const QRegularExpression length(QStringLiteral("(?i)content-length:\\s*(\\d+)"));
        const auto m = length.match(QString::fromLatin1(head));
        const qsizetype body_length = m.hasMatch() ? m.captured(1).toLongLong() : 0;
        if (in.size() < head_end + 4 + body_length) return;
        const QByteArray body = in.mid(head_end + 4, body_length);
        in.clear();
        QByteArray out;
        if (head.startsWith("GET /v1/models")) {
            const QByteArray json = R"({"object":"list","data":[{"id":"deepseek-v3","object":"model","owned_by":"vllm"}]})";
            out = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + QByteArray::number(json.size()) +
                  "\r\nConnection: close\r\n\r\n" + json;
        } else {
            bodies.push_back(QJsonDocument::fromJson(body).object());
            out = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";
            for (const QByteArray& p : m_payloads) out += "data: " + p + "\n\n";
            out += "data: [DONE]\n\n";
        }
        c->write(out);
        c->disconnectFromHost();
    }
    QTcpServer m_server;
    std::vector<QByteArray> m_payloads;
    std::map<QTcpSocket*, QByteArray> m_in;
};

// Points the service at an endpoint and "loads" it: the model it describes, or
// nothing when loading did not finish.
std::optional<ModelDescription> connectTo(RemoteGenerationService& s, const RemoteEndpoint& endpoint) {
    s.setEndpoint(endpoint);
    QSignalSpy loaded(&s, &GenerationService::modelLoaded);
    s.loadModel({});
    if (!loaded.wait(10000)) return std::nullopt;
    return loaded.at(0).at(0).value<ModelDescription>();
}

struct Collected {
    QString text, reasoning;
    std::vector<GenerationChunk> chunks;
    std::optional<GenerationOutcome> outcome;
};

void collect(RemoteGenerationService& s, Collected& c) {
    QObject::connect(&s, &GenerationService::generationChunk, &s, [&c](const GenerationChunk& k) {
        c.text += k.text;
        c.reasoning += k.reasoning;
        c.chunks.push_back(k);
    });
    QObject::connect(&s, &GenerationService::generationFinished, &s, [&c](const GenerationOutcome& o) { c.outcome = o; });
}

GenerationParams params(const QString& prompt, int max_tokens) {
    GenerationParams p;
    p.turns = {{QStringLiteral("user"), prompt, {}}};
    p.sampling.temperature = 0;
    p.sampling.max_new_tokens = max_tokens;
    p.sampling.seed = 1;
    return p;
}

}  // namespace

class TestRemoteService : public QObject {
    Q_OBJECT

private slots:
    void initTestCase();
    // canned byte streams
    void sseSplitAcrossPackets();
    void chunkChoicesNullAndUsageOnly();
    void chunkReasoningFields();
    void chunkErrorObjectAndCetus();
    void endpointUrls();
    // against the real server
    void listModels();
    void streamEqualsNonStreamed();
    void stopClosesTheConnection();
    void authWithAndWithoutKey();
    void mainWindowChatsWithEndpoint();
    void otherEndpointsLogprobs();
    void continueAnEndpointsAnswer();

private:
    QTemporaryDir m_dir;
};

void TestRemoteService::initTestCase() {
    QStandardPaths::setTestModeEnabled(true);
    QCoreApplication::setOrganizationName(QStringLiteral("CetusTest"));
    QCoreApplication::setApplicationName(QStringLiteral("cetus-remote"));
    QSettings().clear();
    QVERIFY(m_dir.isValid());
}

void TestRemoteService::sseSplitAcrossPackets() {
    const QByteArray stream =
        ": keep-alive\r\n\r\n"
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"}}]}\r\n\r\n"
        "event: message\n"
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo ☃\"}}]}\n\n"
        ": keep-alive\n\n"
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n"  // no blank line
        "data: [DONE]\n\n";
    // Every split point, one byte at a time included.
    for (int step : {1, 2, 3, 7, 64, int(stream.size())}) {
        SseParser p;
        std::vector<QByteArray> got;
        for (qsizetype i = 0; i < stream.size(); i += step)
            for (auto& x : p.feed(stream.mid(i, step))) got.push_back(x);
        for (auto& x : p.finish()) got.push_back(x);
        QCOMPARE(int(got.size()), 4);
        QCOMPARE(parseChatChunk(got[0]).content, QStringLiteral("Hel"));
        QCOMPARE(parseChatChunk(got[1]).content, QStringLiteral("lo ☃"));
        QCOMPARE(*parseChatChunk(got[2]).completion_tokens, qint64(2));
        QCOMPARE(got[3], QByteArray("[DONE]"));
    }
    // A multi-line data field (delivered once its JSON is complete), a last line without its newline.
    SseParser p;
    const auto multi = p.feed("data: {\"a\":\ndata: 1}\n");
    QCOMPARE(int(multi.size()), 1);
    QCOMPARE(QJsonDocument::fromJson(multi[0]).object().value("a").toInt(), 1);
    QVERIFY(p.feed("data: [DO").empty());
    QVERIFY(p.feed("NE]").empty());
    const auto last = p.finish();
    QCOMPARE(int(last.size()), 1);
    QCOMPARE(last[0], QByteArray("[DONE]"));
}

void TestRemoteService::chunkChoicesNullAndUsageOnly() {
    RemoteDelta d = parseChatChunk(R"({"id":"x","choices":null,"usage":{"prompt_tokens":7,"completion_tokens":3}})");
    QVERIFY(d.valid);
    QVERIFY(d.content.isEmpty());
    QCOMPARE(*d.prompt_tokens, qint64(7));
    QCOMPARE(*d.completion_tokens, qint64(3));
    d = parseChatChunk(R"({"choices":[{"index":0,"delta":{}}]})");  // no finish_reason at all
    QVERIFY(d.valid && d.finish_reason.isEmpty() && !d.prompt_tokens);
    d = parseChatChunk(R"({"choices":[{"index":0,"delta":{"content":null},"finish_reason":"length"}],"usage":null})");
    QCOMPARE(d.finish_reason, QStringLiteral("length"));
    QVERIFY(!parseChatChunk("not json").valid);
}

void TestRemoteService::chunkReasoningFields() {
    QCOMPARE(parseChatChunk(R"({"choices":[{"delta":{"reasoning_content":"think","content":null}}]})").reasoning, QStringLiteral("think"));
    QCOMPARE(parseChatChunk(R"({"choices":[{"delta":{"reasoning":"ponder"}}]})").reasoning, QStringLiteral("ponder"));
    const RemoteDelta both = parseChatChunk(R"({"choices":[{"delta":{"reasoning_content":"a","content":"b"}}]})");
    QCOMPARE(both.reasoning, QStringLiteral("a"));
    QCOMPARE(both.content, QStringLiteral("b"));
    // A whole (non-streamed) answer reads the same way.
    QCOMPARE(parseChatChunk(R"({"choices":[{"message":{"content":"whole","reasoning_content":"r"},"finish_reason":"stop"}]})").content, QStringLiteral("whole"));
}

void TestRemoteService::chunkErrorObjectAndCetus() {
    QCOMPARE(parseChatChunk(R"({"error":{"message":"bad key","type":"invalid_request_error","code":"invalid_api_key"}})").error,
             QStringLiteral("bad key (invalid_api_key)"));
    QCOMPARE(parseChatChunk(R"({"error":"overloaded"})").error, QStringLiteral("overloaded"));
    const RemoteDelta d = parseChatChunk(R"({"choices":[{"delta":{"content":" the"}}],"cetus":{"id":279,"drafted":false,
        "routing":[[3,17],[5,9]],"weights":[[0.6,0.4],[0.7,0.3]],"stats":{"generated_tokens":4,"kv_cache_bytes":5120,"tokens_cached":13}}})");
    QVERIFY(d.has_cetus && d.cetus_token);
    QCOMPARE(d.routing.n_layers, 2);
    QCOMPARE(d.routing.top_k, 2);
    QCOMPARE(d.routing.expert_ids, (std::vector<int32_t>{3, 17, 5, 9}));
    QCOMPARE(d.stats->generated_tokens, qint64(4));
    QCOMPARE(d.stats->kv_bytes_used, quint64(5120));
}

void TestRemoteService::endpointUrls() {
    RemoteEndpoint e;
    e.base_url = QStringLiteral("http://h:8000");
    QCOMPARE(e.url("/models").toString(), QStringLiteral("http://h:8000/v1/models"));
    e.base_url = QStringLiteral("http://h:8000/v1/");
    QCOMPARE(e.url("/chat/completions").toString(), QStringLiteral("http://h:8000/v1/chat/completions"));
    e.base_url = QStringLiteral("https://api.example.com/openai/v1");
    QCOMPARE(e.url("/models").toString(), QStringLiteral("https://api.example.com/openai/v1/models"));
}

void TestRemoteService::listModels() {
    Server server;
    QVERIFY2(server.ok(), server.log().constData());
    RemoteGenerationService s;
    QSignalSpy listed(&s, &RemoteGenerationService::modelsListed);
    RemoteEndpoint e{server.base(), {}, {}, false};
    s.listModels(e);
    QVERIFY(listed.wait(10000));
    QCOMPARE(listed.at(0).at(0).toStringList(), QStringList{QStringLiteral("v3-tiny")});
    QVERIFY(listed.at(0).at(1).toBool());  // owned_by "cetus"
    QVERIFY(listed.at(0).at(2).toString().isEmpty());
    // Nothing listens: a clear error.
    s.listModels(RemoteEndpoint{QStringLiteral("http://127.0.0.1:1/v1"), {}, {}, false});
    QVERIFY(listed.wait(10000));
    QVERIFY2(listed.at(1).at(2).toString().contains(QStringLiteral("Cannot reach")), qPrintable(listed.at(1).at(2).toString()));
    // An unknown model fails the "load" with the list of what is there.
    s.setEndpoint(RemoteEndpoint{server.base(), {}, QStringLiteral("nope"), false});
    QSignalSpy failed(&s, &GenerationService::loadFailed);
    s.loadModel({});
    QVERIFY(failed.wait(10000));
    QVERIFY(failed.at(0).at(0).toString().contains(QStringLiteral("v3-tiny")));
    QVERIFY(!s.hasModel());
}

void TestRemoteService::streamEqualsNonStreamed() {
    Server server;
    QVERIFY2(server.ok(), server.log().constData());
    RemoteGenerationService s;
    const auto m = connectTo(s, RemoteEndpoint{server.base(), {}, QStringLiteral("v3-tiny"), false});
    QVERIFY(m);
    QVERIFY(m->remote && m->remote_reports_routing);
    QVERIFY(s.isCetusServer());

    // The server's own non-streamed answer, by plain HTTP.
    QNetworkAccessManager nam;
    QNetworkRequest r(QUrl(server.base() + "/chat/completions"));
    r.setHeader(QNetworkRequest::ContentTypeHeader, "application/json");
    const QJsonObject body{{"model", "v3-tiny"}, {"temperature", 0}, {"max_tokens", 24}, {"seed", 1},
                           {"messages", QJsonArray{QJsonObject{{"role", "user"}, {"content", "Hello there"}}}}};
    QNetworkReply* whole = nam.post(r, QJsonDocument(body).toJson());
    QVERIFY(QTest::qWaitFor([&] { return whole->isFinished(); }, 30000));
    const QJsonObject wj = QJsonDocument::fromJson(whole->readAll().trimmed()).object();
    whole->deleteLater();
    const QString expected = wj["choices"].toArray().at(0).toObject()["message"].toObject()["content"].toString();
    QVERIFY(!expected.isEmpty());

    Collected c;
    collect(s, c);
    const quint64 id = s.generate(params(QStringLiteral("Hello there"), 24));
    QVERIFY(s.isGenerating());
    QVERIFY(QTest::qWaitFor([&] { return c.outcome.has_value(); }, 30000));
    QCOMPARE(c.outcome->request_id, id);
    QVERIFY2(c.outcome->finish != FinishKind::Error, qPrintable(c.outcome->error));
    QCOMPARE(c.text, expected);
    QCOMPARE(c.outcome->stats.generated_tokens, qint64(wj["usage"].toObject()["completion_tokens"].toInt()));
    // The cetus extension: one routing row per token, MoE shape and expert counts at the end.
    RoutingData all;
    size_t n_ends = 0;
    for (const auto& k : c.chunks) {
        all.append(k.routing);
        n_ends += k.token_text_ends.size();
    }
    QCOMPARE(all.nTokens(), n_ends);
    QVERIFY(all.n_layers > 0);
    QVERIFY(c.outcome->n_moe_layers > 0 && c.outcome->n_routed_experts > 0);
    QCOMPARE(int(c.outcome->expert_counts.size()), c.outcome->n_moe_layers * c.outcome->n_routed_experts);
    QVERIFY(c.chunks.size() < 40);  // batched, not one signal per token
    TokenProbabilityData none;
    for (const auto& k : c.chunks) none.append(k.probabilities);
    QCOMPARE(none.nTokens(), size_t(0));  // not asked for

    // Token probabilities (Model > Record token probabilities): one entry per token, the
    // server's own figures (its non-streamed logprobs list, which leaves out the end token).
    QJsonObject lbody = body;
    lbody["logprobs"] = true;
    lbody["top_logprobs"] = 3;
    QNetworkReply* lreply = nam.post(r, QJsonDocument(lbody).toJson());
    QVERIFY(QTest::qWaitFor([&] { return lreply->isFinished(); }, 30000));
    const QJsonArray entries = QJsonDocument::fromJson(lreply->readAll().trimmed())
                                   .object()["choices"].toArray().at(0).toObject()["logprobs"].toObject()["content"].toArray();
    lreply->deleteLater();
    GenerationParams lp = params(QStringLiteral("Hello there"), 24);
    lp.token_alternatives = 3;
    Collected c3;
    collect(s, c3);
    s.generate(lp);
    QVERIFY(QTest::qWaitFor([&] { return c3.outcome.has_value(); }, 30000));
    TokenProbabilityData probabilities;
    size_t n_tokens = 0;
    for (const auto& k : c3.chunks) {
        probabilities.append(k.probabilities);
        n_tokens += k.token_text_ends.size();
    }
    QCOMPARE(probabilities.nTokens(), n_tokens);
    QCOMPARE(probabilities.top_n, 3);
    QVERIFY(!entries.isEmpty() && size_t(entries.size()) <= n_tokens);
    for (qsizetype i = 0; i < entries.size(); ++i) {
        const QJsonObject e = entries.at(i).toObject();
        QCOMPARE(probabilities.logprobs[size_t(i)], float(e["logprob"].toDouble()));
        QCOMPARE(probabilities.alt_texts[size_t(i) * 3], e["top_logprobs"].toArray().at(0).toObject()["token"].toString());
    }

    // Continue (the app's Continue button): the same answer as the server's own
    // continue_final_message request; and the draft length reaches the server (two
    // drafts per step propose more than one per step).
    QJsonObject cbody = body;
    cbody["max_tokens"] = 8;
    cbody["continue_final_message"] = true;
    cbody["messages"] = QJsonArray{QJsonObject{{"role", "user"}, {"content", "Hello there"}},
                                   QJsonObject{{"role", "assistant"}, {"content", "abc"}}};
    QNetworkReply* cont = nam.post(r, QJsonDocument(cbody).toJson());
    QVERIFY(QTest::qWaitFor([&] { return cont->isFinished(); }, 30000));
    const QJsonObject cj = QJsonDocument::fromJson(cont->readAll().trimmed()).object();
    cont->deleteLater();
    const QString continued = cj["choices"].toArray().at(0).toObject()["message"].toObject()["content"].toString();
    QVERIFY2(!continued.isEmpty(), qPrintable(QJsonDocument(cj).toJson()));
    GenerationParams p = params(QStringLiteral("Hello there"), 8);
    p.turns.push_back({QStringLiteral("assistant"), QStringLiteral("abc"), {}});
    p.continue_final = true;
    p.sampling.mtp = true;
    p.sampling.n_draft = 2;
    Collected c2;
    collect(s, c2);
    s.generate(p);
    QVERIFY(QTest::qWaitFor([&] { return c2.outcome.has_value(); }, 30000));
    QVERIFY2(c2.outcome->finish != FinishKind::Error, qPrintable(c2.outcome->error));
    QCOMPARE(c2.text, continued);
    QVERIFY2(c2.outcome->stats.drafts_proposed > c2.outcome->stats.verify_steps,
             qPrintable(QStringLiteral("%1 drafts in %2 steps").arg(c2.outcome->stats.drafts_proposed).arg(c2.outcome->stats.verify_steps)));
}

void TestRemoteService::stopClosesTheConnection() {
    Server server({"--debug-token-delay-ms", "100"});
    QVERIFY2(server.ok(), server.log().constData());
    RemoteGenerationService s;
    QVERIFY(connectTo(s, RemoteEndpoint{server.base(), {}, QStringLiteral("v3-tiny"), false}));
    Collected c;
    collect(s, c);
    const quint64 id = s.generate(params(QStringLiteral("abc"), 200));
    QVERIFY(QTest::qWaitFor([&] { return !c.text.isEmpty(); }, 30000));
    s.stop(id);
    QVERIFY(!s.isGenerating());
    QVERIFY(QTest::qWaitFor([&] { return c.outcome.has_value(); }, 5000));
    QCOMPARE(c.outcome->finish, FinishKind::Cancelled);
    QVERIFY2(QTest::qWaitFor([&] { return server.log().contains("cancelled after"); }, 5000), server.log().constData());
    // The server serves the next request at once.
    Collected next;
    RemoteGenerationService s2;
    QVERIFY(connectTo(s2, s.endpoint()));
    collect(s2, next);
    s2.generate(params(QStringLiteral("abc"), 3));
    QVERIFY(QTest::qWaitFor([&] { return next.outcome.has_value(); }, 10000));
    QCOMPARE(next.outcome->finish, FinishKind::Length);
    QCOMPARE(next.outcome->stats.generated_tokens, qint64(3));
}

void TestRemoteService::authWithAndWithoutKey() {
    Server server({"--api-key", "sekrit"});
    QVERIFY2(server.ok(), server.log().constData());
    RemoteGenerationService s;
    QSignalSpy listed(&s, &RemoteGenerationService::modelsListed);
    s.listModels(RemoteEndpoint{server.base(), {}, {}, false});
    QVERIFY(listed.wait(10000));
    const QString error = listed.at(0).at(2).toString();
    QVERIFY2(error.contains(QStringLiteral("401")) && error.contains(QStringLiteral("API key")), qPrintable(error));
    s.listModels(RemoteEndpoint{server.base(), QStringLiteral("wrong"), {}, false});
    QVERIFY(listed.wait(10000));
    QVERIFY(listed.at(1).at(2).toString().contains(QStringLiteral("401")));
    s.listModels(RemoteEndpoint{server.base(), QStringLiteral("sekrit"), {}, false});
    QVERIFY(listed.wait(10000));
    QCOMPARE(listed.at(2).at(0).toStringList(), QStringList{QStringLiteral("v3-tiny")});
    // With the key: an answer.
    QVERIFY(connectTo(s, RemoteEndpoint{server.base(), QStringLiteral("sekrit"), QStringLiteral("v3-tiny"), false}));
    Collected c;
    collect(s, c);
    s.generate(params(QStringLiteral("hi"), 4));
    QVERIFY(QTest::qWaitFor([&] { return c.outcome.has_value(); }, 10000));
    QVERIFY2(c.outcome->finish != FinishKind::Error, qPrintable(c.outcome->error));
    QVERIFY(!c.text.isEmpty());
}

void TestRemoteService::mainWindowChatsWithEndpoint() {
    Server server({"--debug-token-delay-ms", "30"});  // slow enough for Stop to land mid-answer
    QVERIFY2(server.ok(), server.log().constData());
    QString notice, error;
    auto store = SqliteHistoryStore::open(m_dir.filePath(QStringLiteral("conversations.sqlite3")), &notice, &error);
    QVERIFY2(store, qPrintable(error));
    EngineGenerationService engine;
    RemoteGenerationService remote;
    SwitchingGenerationService service(engine, remote);
    MainWindow window(*store, service);
    ConversationSettings defaults;
    defaults.sampling.temperature = 0;
    defaults.sampling.max_new_tokens = 30;
    window.controller().setDefaultSettings(defaults);
    window.resize(1400, 900);
    window.show();
    QVERIFY(QTest::qWaitForWindowExposed(&window));

    // The dialog lists the endpoint's models.
    {
        EndpointDialog dialog(remote, &window);
        dialog.urlField()->setText(server.base());
        dialog.fetchModels();
        QVERIFY(QTest::qWaitFor([&] { return dialog.modelBox()->count() > 0; }, 10000));
        QCOMPARE(dialog.modelBox()->currentText(), QStringLiteral("v3-tiny"));
        QVERIFY(dialog.statusLabel()->text().contains(QStringLiteral("Cetus server")));
        QVERIFY(window.connectEndpoint(dialog.endpoint()));
    }
    QVERIFY(QTest::qWaitFor([&] { return service.hasModel(); }, 10000));
    QVERIFY(service.remoteActive());
    QVERIFY2(window.modelStatus()->text().startsWith(QStringLiteral("Remote: v3-tiny @ 127.0.0.1:")), qPrintable(window.modelStatus()->text()));
    QVERIFY(activeEndpoint().has_value());  // remembered
    QCOMPARE(activeEndpoint()->model, QStringLiteral("v3-tiny"));

    QVERIFY(window.controller().send(QStringLiteral("Hello there")));
    QVERIFY(QTest::qWaitFor([&] { return !window.controller().isGenerating(); }, 30000));
    const auto& msgs = window.controller().messages();
    QCOMPARE(int(msgs.size()), 2);
    QCOMPARE(msgs.back().record.status, MessageStatus::Complete);
    QVERIFY(!msgs.back().record.content.isEmpty());
    // Persisted in the same database.
    const auto conv = store->openConversation(*window.controller().currentConversation());
    QVERIFY(conv && conv->messages.size() == 2);
    QCOMPARE(conv->messages.back().content, msgs.back().record.content);
    QVERIFY(conv->messages.back().has_routing_trace);
    // The panels got the routing and the statistics through the cetus extension.
    QVERIFY(window.expertPanel()->heatmap()->total() > 0);
    QVERIFY2(window.kvPanel()->summary().contains(QStringLiteral("Remote Cetus server")), qPrintable(window.kvPanel()->summary()));
    window.controller().selectToken(msgs.back().record.id, 0);
    QVERIFY(window.routingPanel()->bars()->routing().n_layers > 0);
    // And each token's probability (asked for by default), kept with the answer.
    const auto kept = store->tokenProbabilities(msgs.back().record.id);
    QVERIFY(kept && kept->nTokens() == msgs.back().token_text_ends.size() && kept->top_n == 5);
    QVERIFY(window.routingPanel()->probabilitiesText().contains(QStringLiteral("Probability under the model")));

    // Stop mid-answer from the window: the answer keeps its text, marked stopped.
    QVERIFY(window.controller().send(QStringLiteral("Tell me more")));
    QVERIFY(QTest::qWaitFor([&] { return !window.controller().messages().back().record.content.isEmpty() || !window.controller().isGenerating(); }, 30000));
    window.stopButton()->click();
    QVERIFY(QTest::qWaitFor([&] { return !window.controller().isGenerating(); }, 5000));
    QCOMPARE(window.controller().messages().back().record.status, MessageStatus::Complete);
    QVERIFY2(window.controller().messages().back().stats_line.contains(QStringLiteral("stopped")),
             qPrintable(window.controller().messages().back().stats_line));
    QVERIFY(QTest::qWaitFor([&] { return server.log().contains("cancelled after"); }, 5000));

    const QString file = QStringLiteral(CETUS_TEST_BUILD_DIR "/ui-remote-endpoint.png");
    QCoreApplication::processEvents();
    QVERIFY(window.grab().save(file));

    // A plain remote engine (no cetus extension) says so in the panels.
    ModelDescription plain;
    plain.remote = true;
    plain.name = QStringLiteral("deepseek-r1");
    window.kvPanel()->setModel(plain);
    window.expertPanel()->setModel(plain);
    QVERIFY(window.kvPanel()->summary().contains(QStringLiteral("does not report")));

    // Back to the local engine: the status bar says so.
    remote.disconnect(&window);
    rememberActiveEndpoint(std::nullopt);
    service.useLocal();
    QVERIFY(!service.remoteActive());
    QVERIFY(window.modelStatus()->text().startsWith(QStringLiteral("Local")));
}

void TestRemoteService::otherEndpointsLogprobs() {
    // An endpoint that is not a Cetus server, asked for logprobs (its entry says so), in
    // vLLM's way: each logprobs entry becomes a token with its figures. An "é" split over
    // two tokens comes as a delta without text, then one with the character, both entries
    // with the bytes of U+FFFD (vLLM decodes a partial token so); the end-of-sequence
    // token's entry comes with the finish and no text. Entries that do not spell the text
    // give one token for the delta and no figures; a delta that ends the reasoning and
    // starts the answer has the reasoning's entries first. Not asked, the request
    // carries no logprobs.
    auto delta = [](const char* fields, const QByteArray& entries, const char* finish = "null") {
        return QByteArray(R"({"id":"c","object":"chat.completion.chunk","model":"deepseek-v3","choices":[{"index":0,"delta":{)") +
               fields + R"(},"logprobs":{"content":[)" + entries + R"(]},"finish_reason":)" + finish + "}]}";
    };
    auto chunk = [&](const char* content, const QByteArray& entries) {
        return delta((QByteArray(R"("content":")") + content + "\"").constData(), entries);
    };
    auto entry = [](const char* token, const char* bytes, double lp) {
        return QByteArray(R"({"token":")") + token + R"(","logprob":)" + QByteArray::number(lp) + R"(,"bytes":[)" + bytes +
               R"(],"top_logprobs":[{"token":")" + token + R"(","logprob":)" + QByteArray::number(lp) +
               R"(},{"token":"x","logprob":-5.0}]})";
    };
    const QByteArray fffd = "239,191,189";
    CannedEndpoint endpoint({
        R"({"id":"c","object":"chat.completion.chunk","model":"deepseek-v3","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]})",
        chunk("H", entry("H", "72", -0.5)),
        chunk("", entry("\\ufffd", fffd, -1.0)),
        chunk("\u00e9", entry("\\ufffd", fffd, -0.25)),
        chunk(" world", entry(" world", "32,119,111,114,108,100", -0.125)),
        delta(R"("content":"")", entry("<eos>", "60,101,111,115,62", -0.0625), R"("stop")"),
        R"({"id":"c","object":"chat.completion.chunk","model":"deepseek-v3","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":5,"total_tokens":10}})",
    });
    RemoteGenerationService s;
    RemoteEndpoint e{endpoint.base(), {}, QStringLiteral("deepseek-v3"), false};
    e.ask_logprobs = true;
    const auto m = connectTo(s, e);
    QVERIFY(m && !s.isCetusServer());
    GenerationParams p = params(QStringLiteral("Hi"), 16);
    p.token_alternatives = 2;
    Collected c;
    collect(s, c);
    s.generate(p);
    QVERIFY(QTest::qWaitFor([&] { return c.outcome.has_value(); }, 10000));
    QVERIFY2(c.outcome->finish != FinishKind::Error, qPrintable(c.outcome->error));
    QCOMPARE(c.text, QStringLiteral("H\u00e9 world"));
    QCOMPARE(endpoint.bodies.back().value("logprobs").toBool(), true);
    QCOMPARE(endpoint.bodies.back().value("top_logprobs").toInt(), 2);
    std::vector<int> ends;
    TokenProbabilityData probabilities;
    int base = 0;
    for (const auto& k : c.chunks) {
        for (int x : k.token_text_ends) ends.push_back(base + x);
        base += int(k.text.size());
        probabilities.append(k.probabilities);
    }
    QCOMPARE(ends, (std::vector<int>{1, 1, 2, 8, 8}));
    QCOMPARE(probabilities.logprobs, (std::vector<float>{-0.5f, -1.0f, -0.25f, -0.125f, -0.0625f}));
    QCOMPARE(probabilities.top_n, 2);
    QVERIFY(probabilities.consistent());
    QCOMPARE(probabilities.alt_texts[6], QStringLiteral(" world"));

    // Entries that do not spell the text: the delta is one token, without figures.
    CannedEndpoint odd({chunk("abc", entry("ab", "97,98", -0.5))});
    RemoteGenerationService s2;
    RemoteEndpoint e2{odd.base(), {}, QStringLiteral("deepseek-v3"), false};
    e2.ask_logprobs = true;
    QVERIFY(connectTo(s2, e2));
    Collected c2;
    collect(s2, c2);
    s2.generate(p);
    QVERIFY(QTest::qWaitFor([&] { return c2.outcome.has_value(); }, 10000));
    size_t n_ends = 0, n_figures = 0;
    for (const auto& k : c2.chunks) {
        n_ends += k.token_text_ends.size();
        n_figures += k.probabilities.nTokens();
    }
    QCOMPARE(n_ends, size_t(1));
    QCOMPARE(n_figures, size_t(0));

    // Reasoning first (its entries are not the answer's), then a delta with both.
    CannedEndpoint reasoning({delta(R"("reasoning_content":"hmm")", entry("hmm", "104,109,109", -0.5)),
                              delta(R"("reasoning_content":" ok","content":"Hi")",
                                    entry(" ok", "32,111,107", -0.5) + "," + entry("</think>", "60,47,116,104,105,110,107,62", -0.01) +
                                        "," + entry("Hi", "72,105", -0.75))});
    RemoteGenerationService s5;
    RemoteEndpoint e5{reasoning.base(), {}, QStringLiteral("deepseek-v3"), false};
    e5.ask_logprobs = true;
    QVERIFY(connectTo(s5, e5));
    Collected c5;
    collect(s5, c5);
    s5.generate(p);
    QVERIFY(QTest::qWaitFor([&] { return c5.outcome.has_value(); }, 10000));
    QCOMPARE(c5.text, QStringLiteral("Hi"));
    QCOMPARE(c5.reasoning, QStringLiteral("hmm ok"));
    std::vector<int> ends5;
    TokenProbabilityData p5;
    for (const auto& k : c5.chunks) {
        ends5.insert(ends5.end(), k.token_text_ends.begin(), k.token_text_ends.end());
        p5.append(k.probabilities);
    }
    QCOMPARE(ends5, std::vector<int>{2});
    QCOMPARE(p5.logprobs, std::vector<float>{-0.75f});

    // Not asked for: no logprobs in the request.
    e.ask_logprobs = false;
    RemoteGenerationService s3;
    QVERIFY(connectTo(s3, e));
    Collected c3;
    collect(s3, c3);
    s3.generate(p);
    QVERIFY(QTest::qWaitFor([&] { return c3.outcome.has_value(); }, 10000));
    QVERIFY(!endpoint.bodies.back().contains("logprobs"));
    // Sampling extras are sent only when set (OpenAI refuses some of them).
    for (const char* key : {"min_p", "repetition_penalty", "frequency_penalty", "presence_penalty", "response_format"})
        QVERIFY2(!endpoint.bodies.back().contains(QLatin1String(key)), key);
    GenerationParams penalised = p;
    penalised.sampling.min_p = 0.05;
    penalised.sampling.repetition_penalty = 1.1;
    penalised.sampling.frequency_penalty = 0.5;
    penalised.sampling.presence_penalty = -0.25;
    penalised.sampling.json_object = true;
    c3 = {};
    s3.generate(penalised);
    QVERIFY(QTest::qWaitFor([&] { return c3.outcome.has_value(); }, 10000));
    QCOMPARE(endpoint.bodies.back().value("min_p").toDouble(), 0.05);
    QCOMPARE(endpoint.bodies.back().value("repetition_penalty").toDouble(), 1.1);
    QCOMPARE(endpoint.bodies.back().value("frequency_penalty").toDouble(), 0.5);
    QCOMPARE(endpoint.bodies.back().value("presence_penalty").toDouble(), -0.25);
    QCOMPARE(endpoint.bodies.back().value("response_format").toObject().value("type").toString(),
             QStringLiteral("json_object"));  // OpenAI's JSON mode
    QVERIFY(!connectTo(s3, e)->remote_continues);  // Continue is not offered by default...

    // ...but is for an endpoint whose entry says it continues answers, and the request
    // then asks for vLLM's continue_final_message.
    e.continues_answers = true;
    RemoteGenerationService s4;
    const auto m4 = connectTo(s4, e);
    QVERIFY(m4 && m4->remote_continues && !m4->remote_reports_routing);
    GenerationParams more = params(QStringLiteral("Hi"), 16);
    more.turns.push_back({QStringLiteral("assistant"), QStringLiteral("H\u00e9"), {}});
    more.continue_final = true;
    Collected c4;
    collect(s4, c4);
    s4.generate(more);
    QVERIFY(QTest::qWaitFor([&] { return c4.outcome.has_value(); }, 10000));
    QCOMPARE(endpoint.bodies.back().value("continue_final_message").toBool(), true);
    QCOMPARE(endpoint.bodies.back().value("add_generation_prompt").toBool(true), false);
}

void TestRemoteService::continueAnEndpointsAnswer() {
    // An answer of an endpoint that reports no routing but sends logprobs (its entry says
    // it continues answers and asks for them), cut by the length limit, continued: its
    // tokens are known from their figures alone, so its earlier token ends and figures go
    // on and add up with the new ones.
    const QByteArray stream =
        R"({"id":"c","object":"chat.completion.chunk","model":"deepseek-v3","choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":{"content":[)"
        R"({"token":"H","logprob":-0.5,"bytes":[72],"top_logprobs":[{"token":"H","logprob":-0.5},{"token":"x","logprob":-3.0}]},)"
        R"({"token":"i","logprob":-0.25,"bytes":[105],"top_logprobs":[{"token":"i","logprob":-0.25},{"token":"y","logprob":-3.0}]}]},"finish_reason":"length"}]})";
    CannedEndpoint endpoint({stream});
    auto store = SqliteHistoryStore::openInMemory();
    RemoteGenerationService service;
    ChatController controller(*store, service);
    controller.setTokenAlternatives(2);
    RemoteEndpoint e{endpoint.base(), {}, QStringLiteral("deepseek-v3"), false};
    e.ask_logprobs = true;
    e.continues_answers = true;
    QVERIFY(connectTo(service, e));
    QVERIFY(controller.send(QStringLiteral("Hello")));
    QVERIFY(QTest::qWaitFor([&] { return !controller.isGenerating(); }, 10000));
    const qint64 id = controller.messages().back().record.id;
    QCOMPARE(store->tokenProbabilities(id)->nTokens(), size_t(2));
    QVERIFY(controller.messages().back().can_continue);
    controller.continueAnswer(id);
    QVERIFY(QTest::qWaitFor([&] { return !controller.isGenerating(); }, 10000));
    const DisplayMessage& d = controller.messages().back();
    QCOMPARE(d.record.content, QStringLiteral("HiHi"));
    QCOMPARE(d.token_text_ends, (std::vector<int>{1, 2, 3, 4}));
    const auto p = store->tokenProbabilities(id);
    QVERIFY(p);
    QCOMPARE(p->logprobs, (std::vector<float>{-0.5f, -0.25f, -0.5f, -0.25f}));
    QCOMPARE(endpoint.bodies.back().value("continue_final_message").toBool(), true);
}

QTEST_MAIN(TestRemoteService)
#include "test_remote_service.moc"
