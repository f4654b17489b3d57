// Remote engines: a GenerationService over an OpenAI-compatible HTTP endpoint (vLLM,
// SGLang, another machine's `cetus-cli serve`), and the switch that puts either it or
// the local engine behind the one GenerationService the controller and window see.
// Everything runs on the GUI thread: QNetworkAccessManager is asynchronous already.
#pragma once

#include "cetus/ui/generation_service.h"

#include <QByteArray>
#include <QElapsedTimer>
#include <QJsonObject>
#include <QPointer>
#include <QStringList>
#include <QTimer>
#include <QUrl>

#include <optional>
#include <vector>

#include <QNetworkReply>

class QNetworkAccessManager;
class QNetworkRequest;

namespace cetus::ui {

// One remote endpoint as the user entered it (QSettings "remote/endpoints").
struct RemoteEndpoint {
    QString base_url;  // "http://host:8000/v1"; a bare "http://host:8000" gets "/v1" appended
    QString api_key;   // optional bearer key
    QString model;     // an id from GET {base}/models
    bool send_reasoning = false;  // send earlier answers' reasoning back (reasoning_content)
    // Ask an endpoint that is not a Cetus server for OpenAI's logprobs (token
    // probabilities): off by default, as some refuse the field (reasoning models).
    bool ask_logprobs = false;
    // It takes vLLM's continue_final_message (vLLM, SGLang): Continue is offered for its answers.
    bool continues_answers = false;

    QUrl url(const QString& path) const;  // path: "/models", "/chat/completions"
    QString label() const;                // "model @ host:port"
    bool operator==(const RemoteEndpoint&) const = default;
};

// Splits a Server-Sent Events byte stream into the payloads of its `data:` fields,
// whatever the packet boundaries: LF or CRLF endings, `:` comment lines (keep-alive),
// `event:`/`id:` fields ignored. A payload is delivered at its blank line, or at once
// when a `data:` line is complete JSON by itself (servers that omit the blank line).
class SseParser {
public:
    // Feeds bytes; returns the payloads completed by them ("[DONE]" included, as is).
    std::vector<QByteArray> feed(const QByteArray& bytes);
    // End of stream: whatever is left (a last line without its newline).
    std::vector<QByteArray> finish();

private:
    void takeLine(QByteArray line, std::vector<QByteArray>& out);
    QByteArray m_buffer, m_data;
};

// One streamed chat.completion.chunk, read leniently: `choices` may be null, empty or
// absent (the usage-only final chunk); `finish_reason` may be missing.
struct RemoteDelta {
    QString content, reasoning;  // reasoning: `reasoning_content` (DeepSeek, vLLM) or `reasoning`
    QString finish_reason;       // empty while the answer runs
    std::optional<qint64> prompt_tokens, completion_tokens;  // from `usage`
    QString error;               // an OpenAI error object ({"error": {...}}) in words
    bool has_cetus = false;      // the Cetus server's per-token extension
    bool cetus_token = false;    // cetus.id >= 0: this chunk is one generated token (-1: text after the last)
    RoutingData routing;         // cetus.routing / weights (one token)
    TokenProbabilityData probabilities;  // cetus.logprobs (one token, when asked for)
    // choices[0].logprobs.content: OpenAI's entries of this chunk's tokens (their bytes,
    // figures and alternatives), as any endpoint sends them when asked.
    struct Entry {
        QByteArray bytes;
        float logprob = 0.0f;
        std::vector<QString> alt_texts;
        std::vector<float> alt_logprobs;
    };
    std::vector<Entry> logprob_entries;
    std::optional<StepStats> stats;
    int n_moe_layers = 0, n_routed_experts = 0;
    QString cetus_finish;
    bool valid = true;           // false: not JSON
};
RemoteDelta parseChatChunk(const QByteArray& json);
// An OpenAI error body ({"error": {"message", "type", "code"}} or {"error": "text"}) in words; empty if none.
QString openAiErrorText(const QJsonObject& body);

class RemoteGenerationService : public GenerationService {
    Q_OBJECT
public:
    explicit RemoteGenerationService(QObject* parent = nullptr);
    ~RemoteGenerationService() override;

    void setEndpoint(const RemoteEndpoint& endpoint);
    const RemoteEndpoint& endpoint() const { return m_endpoint; }
    bool isCetusServer() const { return m_cetus; }

    // "Loading" a remote model: GET {base}/models, check the chosen id is there, then
    // modelLoaded (or loadFailed). The request's model_dir is ignored.
    void loadModel(const LoadRequest& request) override;
    void cancelLoad() override;
    bool isLoading() const override { return m_load_reply != nullptr; }
    bool hasModel() const override { return m_has_model; }
    quint64 generate(const GenerationParams& params) override;
    // Aborts the HTTP reply, which closes the connection; the server cancels the request.
    void stop(quint64 request_id) override;
    bool isGenerating() const override { return m_reply != nullptr; }

    // Asks an endpoint for its models (the endpoint dialog): modelsListed answers.
    void listModels(const RemoteEndpoint& endpoint);

signals:
    void modelsListed(const QStringList& ids, bool cetus_server, const QString& error);

private:
    QNetworkRequest request(const RemoteEndpoint& e, const QString& path) const;
    void onReadyRead();
    void onReplyFinished();
    void handlePayload(const QByteArray& payload);
    void applyDelta(const RemoteDelta& d);
    // An endpoint's logprobs entries (not a Cetus server): a token end and figures per
    // entry when their bytes spell the delta's text, else one token for the delta.
    void addTokensFromEntries(const RemoteDelta& d);
    void flush();
    void finish(FinishKind kind, const QString& error);
    ModelDescription describe() const;

    QNetworkAccessManager* m_net = nullptr;
    RemoteEndpoint m_endpoint;
    bool m_has_model = false, m_cetus = false;
    QPointer<QNetworkReply> m_load_reply, m_list_reply;

    // The running answer.
    QPointer<QNetworkReply> m_reply;
    quint64 m_next_id = 1, m_running_id = 0;
    bool m_stopping = false, m_done = false, m_got_finish = false;
    SseParser m_sse;
    QByteArray m_body;           // a non-SSE body (errors, servers that ignore "stream")
    GenerationChunk m_pending;   // batched for the GUI (at most ~30 chunks per second)
    QTimer m_flush;
    GenerationOutcome m_outcome;
    StepStats m_stats;
    QString m_finish_reason, m_cetus_finish, m_error;
    QElapsedTimer m_clock;
    qint64 m_first_token_ms = -1;
    int m_n_moe_layers = 0, m_n_routed_experts = 0, m_top_k = 0;
    RoutingData m_routing;  // the whole answer's, for the expert counts
    std::vector<qint64> m_counts;
};

// The GenerationService the window is given when remote endpoints are on: forwards to
// the local engine or to the remote service, whichever is active, with its own request
// ids so an answer of the other one (stopped while switching) never reaches the controller.
class SwitchingGenerationService : public GenerationService {
    Q_OBJECT
public:
    SwitchingGenerationService(GenerationService& local, RemoteGenerationService& remote, QObject* parent = nullptr);

    bool remoteActive() const { return m_active == &m_remote; }
    RemoteGenerationService& remote() { return m_remote; }
    // Makes the endpoint the active engine and connects to it (modelLoaded / loadFailed).
    void useRemote(const RemoteEndpoint& endpoint);
    // Makes the local engine active again; re-announces its model if one is loaded.
    void useLocal();

    // A request with a model folder switches to the local engine.
    void loadModel(const LoadRequest& request) override;
    void cancelLoad() override { m_active->cancelLoad(); }
    bool isLoading() const override { return m_active->isLoading(); }
    bool hasModel() const override { return m_active->hasModel(); }
    quint64 generate(const GenerationParams& params) override;
    void stop(quint64 request_id) override;
    bool isGenerating() const override { return m_running_id != 0; }
    // The local engine's caches, whichever service is active.
    void setConversationCacheFolder(const QString& folder) override { m_local.setConversationCacheFolder(folder); }
    void forgetConversation(const QString& cache_tag) override { m_local.forgetConversation(cache_tag); }
    void clearConversationCaches() override { m_local.clearConversationCaches(); }
    // The local engine's tokenizer, while it is the active one.
    void countTokens(quint64 id, const QString& text) override {
        if (m_active == &m_local) m_local.countTokens(id, text);
    }

signals:
    void activeChanged(bool remote);

private:
    void attach(GenerationService& s);
    void stopRunning();

    GenerationService& m_local;
    RemoteGenerationService& m_remote;
    GenerationService* m_active;
    std::optional<ModelDescription> m_local_model;
    quint64 m_next_id = 1, m_running_id = 0, m_inner_id = 0;
    GenerationService* m_running_on = nullptr;
};

}  // namespace cetus::ui
