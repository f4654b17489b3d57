// Remote engines over the OpenAI chat completions API: the lenient SSE and chunk
// parsers, the HTTP GenerationService, and the local/remote switch.
#include "cetus/ui/remote_service.h"
#include "cetus/generate.h"

#include "log.h"

#include <QJsonArray>
#include <QJsonDocument>
#include <QNetworkAccessManager>
#include <QNetworkReply>
#include <QNetworkRequest>

#include <algorithm>

namespace cetus::ui {

namespace {

constexpr int k_flush_ms = 33;             // ~30 chunks a second reach the GUI
constexpr int k_list_timeout_ms = 15000;   // GET /models

std::optional<qint64> optInt(const QJsonValue& v) {
    return v.isDouble() ? std::optional<qint64>(qint64(v.toDouble())) : std::nullopt;
}

StepStats statsFromJson(const QJsonObject& o) {
    StepStats s;
    s.prompt_tokens = qint64(o.value("prompt_tokens").toDouble());
    s.reused_prefix_tokens = qint64(o.value("reused_prefix_tokens").toDouble());
    s.generated_tokens = qint64(o.value("generated_tokens").toDouble());
    s.verify_steps = qint64(o.value("verify_steps").toDouble());
    s.drafts_proposed = qint64(o.value("drafts_proposed").toDouble());
    s.drafts_accepted = qint64(o.value("drafts_accepted").toDouble());
    s.tokens_cached = qint64(o.value("tokens_cached").toDouble());
    s.kv_bytes_used = quint64(o.value("kv_cache_bytes").toDouble());
    s.kv_bytes_capacity = quint64(o.value("kv_cache_capacity_bytes").toDouble());
    s.prefill_tokens_per_s = o.value("prefill_tokens_per_s").toDouble();
    s.decode_tokens_per_s = o.value("decode_tokens_per_s").toDouble();
    return s;
}

QString httpErrorText(QNetworkReply* reply, const QByteArray& body) {
    const int status = reply->attribute(QNetworkRequest::HttpStatusCodeAttribute).toInt();
    const QString api = openAiErrorText(QJsonDocument::fromJson(body.trimmed()).object());
    if (status == 401 || status == 403)
        return QObject::tr("The endpoint refused the request (HTTP %1): %2. Check the API key.")
            .arg(status)
            .arg(api.isEmpty() ? QObject::tr("unauthorized") : api);
    if (status > 0) {
        const QString reason = reply->attribute(QNetworkRequest::HttpReasonPhraseAttribute).toString();
        return QObject::tr("HTTP %1%2: %3")
            .arg(status)
            .arg(reason.isEmpty() ? QString() : QStringLiteral(" ") + reason)
            .arg(api.isEmpty() ? QString::fromUtf8(body.left(300)).trimmed() : api);
    }
    return QObject::tr("Cannot reach %1: %2").arg(reply->url().toString(QUrl::RemoveUserInfo), reply->errorString());
}

}  // namespace

// ---- endpoint ----

QUrl RemoteEndpoint::url(const QString& path) const {
    QString base = base_url.trimmed();
    while (base.endsWith(QLatin1Char('/'))) base.chop(1);
    QUrl u(base);
    if (u.path().isEmpty()) base += QStringLiteral("/v1");
    return QUrl(base + path);
}

QString RemoteEndpoint::label() const {
    const QUrl u(base_url.trimmed());
    const QString where = u.port() > 0 ? QStringLiteral("%1:%2").arg(u.host()).arg(u.port()) : u.host();
    return model.isEmpty() ? where : QStringLiteral("%1 @ %2").arg(model, where);
}

// ---- parsers ----

std::vector<QByteArray> SseParser::feed(const QByteArray& bytes) {
    std::vector<QByteArray> out;
    m_buffer += bytes;
    qsizetype start = 0;
    for (qsizetype nl; (nl = m_buffer.indexOf('\n', start)) >= 0; start = nl + 1) takeLine(m_buffer.mid(start, nl - start), out);
    m_buffer.remove(0, start);
    return out;
}

std::vector<QByteArray> SseParser::finish() {
    std::vector<QByteArray> out;
    if (!m_buffer.isEmpty()) takeLine(std::exchange(m_buffer, {}), out);
    takeLine({}, out);  // a blank line dispatches what is pending
    return out;
}

void SseParser::takeLine(QByteArray line, std::vector<QByteArray>& out) {
    if (line.endsWith('\r')) line.chop(1);
    if (line.isEmpty()) {
        if (!m_data.isEmpty()) out.push_back(std::exchange(m_data, {}));
        return;
    }
    if (line.startsWith(':')) return;  // comment: ": keep-alive"
    const qsizetype colon = line.indexOf(':');
    const QByteArray field = colon < 0 ? line : line.left(colon);
    if (field != "data") return;  // event:, id:, retry:
    QByteArray value = colon < 0 ? QByteArray() : line.mid(colon + 1);
    if (value.startsWith(' ')) value.remove(0, 1);
    if (!m_data.isEmpty()) m_data += '\n';
    m_data += value;
    // Lenient: a data line that is complete by itself need not wait for its blank line.
    const QByteArray t = m_data.trimmed();
    if (t == "[DONE]" || (t.startsWith('{') && !QJsonDocument::fromJson(t).isNull())) out.push_back(std::exchange(m_data, {}));
}

QString openAiErrorText(const QJsonObject& body) {
    const QJsonValue e = body.value("error");
    if (e.isString()) return e.toString();
    if (!e.isObject()) return {};
    const QJsonObject o = e.toObject();
    QString text = o.value("message").toString();
    if (text.isEmpty()) text = QString::fromUtf8(QJsonDocument(o).toJson(QJsonDocument::Compact));
    const QString code = o.value("code").isString() ? o.value("code").toString() : o.value("type").toString();
    return code.isEmpty() ? text : QStringLiteral("%1 (%2)").arg(text, code);
}

namespace {

// One OpenAI logprobs entry: the token's exact bytes when given (a token may hold part of
// a character), else its text; its figure and its step's alternatives.
RemoteDelta::Entry parseEntry(const QJsonObject& e) {
    RemoteDelta::Entry entry;
    const QJsonArray bytes = e.value("bytes").toArray();
    if (!bytes.isEmpty()) {
        for (const QJsonValue& b : bytes) entry.bytes.append(char(b.toInt() & 0xFF));
    } else {
        entry.bytes = e.value("token").toString().toUtf8();
    }
    entry.logprob = float(e.value("logprob").toDouble(-9999.0));
    for (const QJsonValue& t : e.value("top_logprobs").toArray()) {
        entry.alt_texts.push_back(t.toObject().value("token").toString());
        entry.alt_logprobs.push_back(float(t.toObject().value("logprob").toDouble(-9999.0)));
    }
    return entry;
}

// An entry as one token's probabilities.
TokenProbabilityData oneToken(const RemoteDelta::Entry& e) {
    TokenProbabilityData one;
    one.top_n = int(e.alt_texts.size());
    one.logprobs = {e.logprob};
    one.alt_texts = e.alt_texts;
    one.alt_logprobs = e.alt_logprobs;
    return one;
}

}  // namespace

RemoteDelta parseChatChunk(const QByteArray& json) {
    RemoteDelta d;
    QJsonParseError pe;
    const QJsonDocument doc = QJsonDocument::fromJson(json, &pe);
    if (!doc.isObject()) {
        d.valid = false;
        return d;
    }
    const QJsonObject o = doc.object();
    d.error = openAiErrorText(o);
    const QJsonArray choices = o.value("choices").toArray();  // null / absent -> empty
    if (!choices.isEmpty()) {
        const QJsonObject c = choices.first().toObject();
        const QJsonObject delta = c.contains("delta") ? c.value("delta").toObject() : c.value("message").toObject();
        d.content = delta.value("content").toString();
        d.reasoning = delta.value("reasoning_content").toString();
        if (d.reasoning.isEmpty()) d.reasoning = delta.value("reasoning").toString();
        d.finish_reason = c.value("finish_reason").toString();
        for (const QJsonValue& v : c.value("logprobs").toObject().value("content").toArray())
            d.logprob_entries.push_back(parseEntry(v.toObject()));
    }
    const QJsonObject usage = o.value("usage").toObject();
    d.prompt_tokens = optInt(usage.value("prompt_tokens"));
    d.completion_tokens = optInt(usage.value("completion_tokens"));
    const QJsonValue cv = o.value("cetus");
    if (cv.isObject()) {
        const QJsonObject c = cv.toObject();
        d.has_cetus = true;
        // id -1: text released after the last token (a stop or a full context), no token.
        d.cetus_token = c.contains("id") && c.value("id").toInt(-1) >= 0;
        const QJsonArray routing = c.value("routing").toArray(), weights = c.value("weights").toArray();
        if (!routing.isEmpty()) {
            d.routing.n_layers = int(routing.size());
            d.routing.top_k = int(routing.first().toArray().size());
            for (qsizetype l = 0; l < routing.size(); ++l) {
                const QJsonArray ids = routing.at(l).toArray(), ws = weights.at(l).toArray();
                for (int k = 0; k < d.routing.top_k; ++k) {
                    d.routing.expert_ids.push_back(k < ids.size() ? ids.at(k).toInt(-1) : -1);
                    d.routing.weights.push_back(k < ws.size() ? float(ws.at(k).toDouble()) : 0.0f);
                }
            }
        }
        if (c.value("stats").isObject()) d.stats = statsFromJson(c.value("stats").toObject());
        // The token's log-probability and its step's most likely tokens (OpenAI's entry,
        // sent in the extension for every token, the end-of-sequence token too).
        const QJsonValue lv = c.value("logprobs");
        if (lv.isObject() && lv.toObject().value("logprob").isDouble()) d.probabilities = oneToken(parseEntry(lv.toObject()));
        d.n_moe_layers = c.value("n_moe_layers").toInt();
        d.n_routed_experts = c.value("n_routed_experts").toInt();
        d.cetus_finish = c.value("finish").toString();
    }
    return d;
}

// ---- RemoteGenerationService ----

RemoteGenerationService::RemoteGenerationService(QObject* parent) : GenerationService(parent), m_net(new QNetworkAccessManager(this)) {
    m_flush.setSingleShot(true);
    m_flush.setInterval(k_flush_ms);
    connect(&m_flush, &QTimer::timeout, this, &RemoteGenerationService::flush);
}

RemoteGenerationService::~RemoteGenerationService() {
    for (QNetworkReply* r : {m_reply.data(), m_load_reply.data(), m_list_reply.data()}) {
        if (!r) continue;
        r->disconnect(this);
        r->abort();
    }
}

void RemoteGenerationService::setEndpoint(const RemoteEndpoint& endpoint) {
    if (endpoint == m_endpoint) return;
    m_endpoint = endpoint;
    m_has_model = false;
    m_cetus = false;
    m_n_moe_layers = m_n_routed_experts = m_top_k = 0;
}

QNetworkRequest RemoteGenerationService::request(const RemoteEndpoint& e, const QString& path) const {
    QNetworkRequest r(e.url(path));
    r.setHeader(QNetworkRequest::ContentTypeHeader, QStringLiteral("application/json"));
    if (!e.api_key.isEmpty()) r.setRawHeader("Authorization", "Bearer " + e.api_key.toUtf8());
    r.setAttribute(QNetworkRequest::Http2AllowedAttribute, false);
    return r;
}

void RemoteGenerationService::listModels(const RemoteEndpoint& endpoint) {
    if (m_list_reply) {
        m_list_reply->disconnect(this);
        m_list_reply->abort();
    }
    QNetworkRequest r = request(endpoint, QStringLiteral("/models"));
    r.setTransferTimeout(k_list_timeout_ms);
    QNetworkReply* reply = m_net->get(r);
    m_list_reply = reply;
    connect(reply, &QNetworkReply::finished, this, [this, reply] {
        reply->deleteLater();
        if (m_list_reply == reply) m_list_reply = nullptr;
        const QByteArray body = reply->readAll();
        if (reply->error() != QNetworkReply::NoError) {
            emit modelsListed({}, false, httpErrorText(reply, body));
            return;
        }
        const QJsonObject o = QJsonDocument::fromJson(body.trimmed()).object();
        QStringList ids;
        bool cetus = false;
        for (const QJsonValue& v : o.value("data").toArray()) {
            const QJsonObject m = v.toObject();
            if (m.value("id").isString()) ids << m.value("id").toString();
            cetus = cetus || m.value("owned_by").toString() == QLatin1String("cetus");
        }
        if (ids.isEmpty()) emit modelsListed({}, false, tr("%1 lists no models.").arg(reply->url().toString(QUrl::RemoveUserInfo)));
        else emit modelsListed(ids, cetus, QString());
    });
}

void RemoteGenerationService::loadModel(const LoadRequest&) {
    cancelLoad();
    if (m_endpoint.base_url.trimmed().isEmpty() || !m_endpoint.url(QString()).isValid()) {
        QMetaObject::invokeMethod(this, [this] { emit loadFailed(tr("The endpoint has no valid base URL."), false); }, Qt::QueuedConnection);
        return;
    }
    QNetworkRequest r = request(m_endpoint, QStringLiteral("/models"));
    r.setTransferTimeout(k_list_timeout_ms);
    QNetworkReply* reply = m_net->get(r);
    m_load_reply = reply;
    emit loadProgress(0.0, tr("connecting to %1").arg(m_endpoint.label()));
    connect(reply, &QNetworkReply::finished, this, [this, reply] {
        reply->deleteLater();
        if (m_load_reply != reply) return;
        m_load_reply = nullptr;
        const QByteArray body = reply->readAll();
        if (reply->error() == QNetworkReply::OperationCanceledError) {
            emit loadFailed(tr("cancelled"), true);
            return;
        }
        if (reply->error() != QNetworkReply::NoError) {
            emit loadFailed(httpErrorText(reply, body), false);
            return;
        }
        QStringList ids;
        bool cetus = false;
        for (const QJsonValue& v : QJsonDocument::fromJson(body.trimmed()).object().value("data").toArray()) {
            const QJsonObject m = v.toObject();
            ids << m.value("id").toString();
            if (m.value("id").toString() == m_endpoint.model) cetus = m.value("owned_by").toString() == QLatin1String("cetus");
        }
        if (m_endpoint.model.isEmpty() && !ids.isEmpty()) m_endpoint.model = ids.first();
        if (!ids.contains(m_endpoint.model)) {
            emit loadFailed(tr("%1 does not serve the model “%2” (it has: %3).").arg(m_endpoint.url(QString()).toString(), m_endpoint.model, ids.join(QStringLiteral(", "))), false);
            return;
        }
        m_cetus = cetus;
        m_has_model = true;
        logger()->info("remote endpoint {} model {}{}", m_endpoint.url(QString()).toString().toStdString(), m_endpoint.model.toStdString(),
                       cetus ? " (Cetus server)" : "");
        emit modelLoaded(describe());
    });
}

void RemoteGenerationService::cancelLoad() {
    if (QNetworkReply* r = m_load_reply) r->abort();
}

ModelDescription RemoteGenerationService::describe() const {
    ModelDescription m;
    m.remote = true;
    m.remote_reports_routing = m_cetus;
    m.remote_continues = m_cetus || m_endpoint.continues_answers;
    m.model_dir = m_endpoint.url(QString()).toString(QUrl::RemoveUserInfo);
    m.name = m_endpoint.model;
    m.backend = m_cetus ? tr("remote Cetus server") : tr("remote");
    m.routing = m_n_moe_layers > 0 ? QStringLiteral("moe") : QString();
    m.n_moe_layers = m_n_moe_layers;
    m.n_routed_experts = m_n_routed_experts;
    m.n_active_experts = m_top_k;
    return m;
}

quint64 RemoteGenerationService::generate(const GenerationParams& params) {
    const quint64 id = m_next_id++;
    auto refuse = [this, id](const QString& why) {
        GenerationOutcome o;
        o.request_id = id;
        o.finish = FinishKind::Error;
        o.error = why;
        QMetaObject::invokeMethod(this, [this, o] { emit generationFinished(o); }, Qt::QueuedConnection);
        return id;
    };
    if (m_reply) return refuse(tr("Another answer is still being generated."));
    if (!m_has_model) return refuse(tr("Not connected to the endpoint."));

    QJsonArray messages;
    for (const ChatTurn& t : params.turns) {
        QJsonObject m{{"role", t.role}, {"content", t.content}};
        if (m_endpoint.send_reasoning && t.role == QLatin1String("assistant") && !t.reasoning.isEmpty()) m.insert("reasoning_content", t.reasoning);
        messages.append(m);
    }
    const SamplingSettings& s = params.sampling;
    QJsonObject body{{"model", m_endpoint.model},
                     {"messages", messages},
                     {"stream", true},
                     {"stream_options", QJsonObject{{"include_usage", true}}},
                     {"temperature", s.temperature},
                     {"top_p", s.top_p},
                     {"max_tokens", s.max_new_tokens}};
    if (s.seed) body.insert("seed", qint64(s.seed));
    if (s.top_k > 0) body.insert("top_k", s.top_k);
    // Sent only when set: OpenAI takes the last two, vLLM, SGLang and Cetus all four.
    if (s.min_p > 0) body.insert("min_p", s.min_p);
    if (s.repetition_penalty != 1.0) body.insert("repetition_penalty", s.repetition_penalty);
    if (s.frequency_penalty != 0.0) body.insert("frequency_penalty", s.frequency_penalty);
    if (s.presence_penalty != 0.0) body.insert("presence_penalty", s.presence_penalty);
    if (s.json_object) body.insert("response_format", QJsonObject{{"type", "json_object"}});  // OpenAI's JSON mode
    // Continue the final answer: vLLM's and SGLang's extras, which Cetus's server takes too.
    if (params.continue_final) {
        body.insert("continue_final_message", true);
        body.insert("add_generation_prompt", false);
    }
    if (m_cetus) {
        QJsonObject cetus{{"routing", true}, {"stats", true}, {"mtp", s.mtp}};
        if (s.lookup) cetus.insert("lookup", true);
        if (s.mtp || s.lookup) cetus.insert("n_draft", s.lookup ? std::max(s.n_draft, int(::cetus::k_lookup_default_drafts)) : s.n_draft);  // read inside "cetus" (serve_api.cpp)
        body.insert("cetus", cetus);
    }
    // Token probabilities: a Cetus server sends one entry per token inside its extension;
    // another endpoint is asked only when its entry says so (some refuse the field).
    if (params.token_alternatives >= 0 && (m_cetus || m_endpoint.ask_logprobs)) {
        body.insert("logprobs", true);
        body.insert("top_logprobs", std::min(params.token_alternatives, 20));
    }
    QNetworkRequest r = request(m_endpoint, QStringLiteral("/chat/completions"));
    r.setRawHeader("Accept", "text/event-stream");

    m_running_id = id;
    m_stopping = m_done = m_got_finish = false;
    m_sse = SseParser{};
    m_body.clear();
    m_pending = GenerationChunk{};
    m_pending.request_id = id;
    m_outcome = GenerationOutcome{};
    m_outcome.request_id = id;
    m_outcome.lookup_used = m_cetus && s.lookup;  // a Cetus server takes it (its drafts' figures come back)
    m_stats = StepStats{};
    m_finish_reason.clear();
    m_cetus_finish.clear();
    m_error.clear();
    m_counts.clear();
    m_routing = RoutingData{};
    m_first_token_ms = -1;
    m_clock.start();
    QNetworkReply* reply = m_net->post(r, QJsonDocument(body).toJson(QJsonDocument::Compact));
    m_reply = reply;
    connect(reply, &QNetworkReply::readyRead, this, &RemoteGenerationService::onReadyRead);
    connect(reply, &QNetworkReply::finished, this, &RemoteGenerationService::onReplyFinished);
    return id;
}

void RemoteGenerationService::stop(quint64 request_id) {
    if (request_id != m_running_id || !m_reply) return;
    m_stopping = true;
    m_reply->abort();  // closes the connection; finished follows (synchronously)
}

void RemoteGenerationService::onReadyRead() {
    QNetworkReply* reply = m_reply;
    if (!reply || sender() != reply) return;
    const QByteArray bytes = reply->readAll();
    const int status = reply->attribute(QNetworkRequest::HttpStatusCodeAttribute).toInt();
    const bool sse = reply->header(QNetworkRequest::ContentTypeHeader).toString().contains(QLatin1String("event-stream"));
    if (status >= 300 || !sse) {
        m_body += bytes;  // an error object or a whole (non-streamed) answer: read at the end
        return;
    }
    for (const QByteArray& p : m_sse.feed(bytes)) handlePayload(p);
}

void RemoteGenerationService::handlePayload(const QByteArray& payload) {
    if (m_done) return;
    if (payload.trimmed() == "[DONE]") {
        m_done = true;
        return;
    }
    const RemoteDelta d = parseChatChunk(payload);
    if (!d.valid) {
        logger()->warn("remote stream: ignoring a payload that is not JSON: {}", payload.left(200).toStdString());
        return;
    }
    applyDelta(d);
}

void RemoteGenerationService::applyDelta(const RemoteDelta& d) {
    if (!d.error.isEmpty()) m_error = d.error;
    // Another endpoint's logprobs entries are tokens even in a delta without text (a
    // character held back until its last byte comes, the end-of-sequence token), except
    // in a reasoning-only delta: those are the reasoning's.
    const bool entries = !d.has_cetus && !d.logprob_entries.empty() && (!d.content.isEmpty() || d.reasoning.isEmpty());
    if (!d.content.isEmpty() || !d.reasoning.isEmpty() || d.cetus_token || entries) {
        if (m_first_token_ms < 0) m_first_token_ms = m_clock.elapsed();
        m_pending.text += d.content;
        m_pending.reasoning += d.reasoning;
        // One entry per token for a Cetus server (its chunks are tokens; text after the
        // last token belongs to it), else per delta.
        if (d.has_cetus && !d.cetus_token) {
            if (!m_pending.token_text_ends.empty()) m_pending.token_text_ends.back() = int(m_pending.text.size());
        } else if (entries) {
            addTokensFromEntries(d);
        } else if (!d.content.isEmpty() || d.cetus_token) {
            m_pending.token_text_ends.push_back(int(m_pending.text.size()));
            m_pending.drafted.push_back(false);
            if (!d.has_cetus) ++m_stats.generated_tokens;
        }
        if (d.routing.n_layers > 0) {
            if (m_top_k == 0) m_top_k = d.routing.top_k;
            if (m_routing.n_layers == 0 || (m_routing.n_layers == d.routing.n_layers && m_routing.top_k == d.routing.top_k)) {
                m_pending.routing.append(d.routing);
                m_routing.append(d.routing);
            }
        }
        if (d.cetus_token && d.probabilities.nTokens() == 1) m_pending.probabilities.append(d.probabilities);
    }
    if (d.stats) m_stats = *d.stats;
    if (d.prompt_tokens) m_stats.prompt_tokens = *d.prompt_tokens;
    if (d.completion_tokens) m_stats.generated_tokens = *d.completion_tokens;
    if (!d.has_cetus && m_first_token_ms >= 0 && m_stats.generated_tokens > 1) {
        const double s = double(m_clock.elapsed() - m_first_token_ms) / 1000.0;
        if (s > 0) m_stats.decode_tokens_per_s = double(m_stats.generated_tokens - 1) / s;
    }
    if (!d.finish_reason.isEmpty()) {
        m_finish_reason = d.finish_reason;
        m_got_finish = true;
    }
    if (!d.cetus_finish.isEmpty()) m_cetus_finish = d.cetus_finish;
    if (d.n_moe_layers > 0 && d.n_routed_experts > 0 && (d.n_moe_layers != m_n_moe_layers || d.n_routed_experts != m_n_routed_experts)) {
        // The model's MoE shape, learnt from the first finished answer: the panels need it.
        flush();
        m_n_moe_layers = d.n_moe_layers;
        m_n_routed_experts = d.n_routed_experts;
        emit modelLoaded(describe());
    }
    if (!m_flush.isActive()) m_flush.start();
}

namespace {

// Token ends inside `content` (UTF-16 offsets) for a delta's logprobs entries, or nothing
// when they cannot spell it. An entry's text is its bytes decoded (else its token): a token
// that holds part of a character decodes with U+FFFD (vLLM and SGLang even send the bytes of
// U+FFFD for it), so such a "partial" entry matches its text before the U+FFFD, then up to
// its text after the last U+FFFD; when nothing follows, the delta's last entry takes the
// rest of the content (the character completes there) and another takes nothing (a later
// token completes it). A whole entry that is not there is allowed only where the text
// cannot show it: in a delta without text, or after the text at the answer's end (the
// end-of-sequence token).
std::optional<std::vector<int>> alignEntries(const std::vector<RemoteDelta::Entry>& entries, size_t first,
                                             const QString& content, bool finishing) {
    static const QChar replacement(0xFFFD);
    std::vector<int> ends;
    qsizetype pos = 0;
    for (size_t i = first; i < entries.size(); ++i) {
        const RemoteDelta::Entry& e = entries[i];
        const QString text = QString::fromUtf8(e.bytes);
        const qsizetype bad = text.indexOf(replacement);
        if (bad < 0) {
            if (QStringView(content).mid(pos).startsWith(text)) pos += text.size();
            else if (!(content.isEmpty() || (finishing && pos == content.size()))) return std::nullopt;
        } else {
            const QString before = text.left(bad), after = text.mid(text.lastIndexOf(replacement) + 1);
            if (!QStringView(content).mid(pos).startsWith(before)) return std::nullopt;
            pos += before.size();
            if (!after.isEmpty()) {
                const qsizetype at = content.indexOf(after, pos);
                if (at < 0) return std::nullopt;
                pos = at + after.size();
            } else if (i + 1 == entries.size()) {
                pos = content.size();
            }
        }
        ends.push_back(int(pos));
    }
    if (pos != content.size()) return std::nullopt;
    return ends;
}

}  // namespace

void RemoteGenerationService::addTokensFromEntries(const RemoteDelta& d) {
    const int base = int(m_pending.text.size() - d.content.size());
    const bool finishing = !d.finish_reason.isEmpty();
    // A delta that carries the end of the reasoning and the start of the answer has the
    // reasoning's entries first: the fewest leading ones are left out for the rest to spell it.
    std::optional<std::vector<int>> ends;
    size_t first = 0;
    for (; first < d.logprob_entries.size() && !ends; ++first) {
        ends = alignEntries(d.logprob_entries, first, d.content, finishing);
        if (d.reasoning.isEmpty() || ends) break;
    }
    if (!ends) {
        // Entries that do not spell the text (a stop string, skipped special tokens): one
        // token for the delta without figures, so the answer keeps none.
        if (d.content.isEmpty()) return;
        m_pending.token_text_ends.push_back(int(m_pending.text.size()));
        m_pending.drafted.push_back(false);
        ++m_stats.generated_tokens;
        return;
    }
    for (size_t i = 0; i < ends->size(); ++i) {
        const RemoteDelta::Entry& e = d.logprob_entries[first + i];
        m_pending.token_text_ends.push_back(base + (*ends)[i]);
        m_pending.drafted.push_back(false);
        ++m_stats.generated_tokens;
        m_pending.probabilities.append(oneToken(e));
    }
}

void RemoteGenerationService::flush() {
    m_flush.stop();
    if (m_running_id == 0) return;
    m_pending.stats = m_stats;
    if (m_pending.text.isEmpty() && m_pending.reasoning.isEmpty() && m_pending.token_text_ends.empty()) return;
    GenerationChunk c = std::exchange(m_pending, GenerationChunk{});
    m_pending.request_id = m_running_id;
    emit generationChunk(c);
}

void RemoteGenerationService::onReplyFinished() {
    QNetworkReply* reply = m_reply;
    if (!reply || sender() != reply) return;
    reply->deleteLater();
    const QNetworkReply::NetworkError err = reply->error();
    if (!m_stopping) {
        const QByteArray rest = reply->readAll();
        const int status = reply->attribute(QNetworkRequest::HttpStatusCodeAttribute).toInt();
        const bool sse = reply->header(QNetworkRequest::ContentTypeHeader).toString().contains(QLatin1String("event-stream"));
        if (!sse && status < 300 && (m_body + rest).startsWith("data:")) {  // an event stream with the wrong content type
            for (const QByteArray& p : m_sse.feed(std::exchange(m_body, {}) + rest)) handlePayload(p);
            for (const QByteArray& p : m_sse.finish()) handlePayload(p);
        } else if (status >= 300 || !sse) {
            m_body += rest;
        } else {
            for (const QByteArray& p : m_sse.feed(rest)) handlePayload(p);
            for (const QByteArray& p : m_sse.finish()) handlePayload(p);
        }
        if (err == QNetworkReply::NoError && !m_body.trimmed().isEmpty()) {
            // A whole answer (a server that ignores "stream"), or an error object with status 200.
            const RemoteDelta d = parseChatChunk(m_body.trimmed());
            if (d.valid) applyDelta(d);
            else m_error = tr("The endpoint answered something that is neither an event stream nor JSON: %1").arg(QString::fromUtf8(m_body.left(200)));
        }
        if (err != QNetworkReply::NoError && err != QNetworkReply::OperationCanceledError && m_error.isEmpty()) m_error = httpErrorText(reply, m_body);
    }
    flush();
    m_reply = nullptr;
    FinishKind kind = FinishKind::Eos;
    if (m_stopping) kind = FinishKind::Cancelled;
    else if (!m_error.isEmpty()) kind = FinishKind::Error;
    // A Cetus server says "length" for a full context too; its own reason tells them apart.
    else if (m_cetus_finish == QLatin1String("context_full") || m_finish_reason == QLatin1String("context_full"))
        kind = FinishKind::ContextFull;
    else if (m_finish_reason == QLatin1String("length")) kind = FinishKind::Length;
    else if (m_cetus_finish == QLatin1String("stop")) kind = FinishKind::Stop;  // a stop string (OpenAI says "stop" for both)
    finish(kind, m_error);
}

void RemoteGenerationService::finish(FinishKind kind, const QString& error) {
    m_outcome.finish = kind;
    m_outcome.error = error;
    m_outcome.stats = m_stats;
    m_outcome.elapsed_ms = m_clock.elapsed();
    // Expert counts of the whole answer [n_moe_layers x n_routed_experts], as the engine reports them.
    const RoutingData& r = m_routing;
    if (m_n_moe_layers > 0 && m_n_routed_experts > 0 && r.n_layers == m_n_moe_layers && r.top_k > 0) {
        m_counts.assign(size_t(m_n_moe_layers) * size_t(m_n_routed_experts), 0);
        for (size_t i = 0; i < r.expert_ids.size(); ++i) {
            const size_t layer = (i / size_t(r.top_k)) % size_t(r.n_layers);
            if (r.expert_ids[i] >= 0 && r.expert_ids[i] < m_n_routed_experts) m_counts[layer * size_t(m_n_routed_experts) + size_t(r.expert_ids[i])]++;
        }
    }
    if (m_n_moe_layers > 0 && !m_counts.empty()) {
        m_outcome.n_moe_layers = m_n_moe_layers;
        m_outcome.n_routed_experts = m_n_routed_experts;
        m_outcome.expert_counts = m_counts;
    }
    m_running_id = 0;
    // Queued, as the engine's: stop() never answers inside the caller's own call.
    QMetaObject::invokeMethod(this, [this, o = m_outcome] { emit generationFinished(o); }, Qt::QueuedConnection);
}

// ---- SwitchingGenerationService ----

SwitchingGenerationService::SwitchingGenerationService(GenerationService& local, RemoteGenerationService& remote, QObject* parent)
    : GenerationService(parent), m_local(local), m_remote(remote), m_active(&local) {
    attach(local);
    attach(remote);
    connect(&local, &GenerationService::modelLoaded, this, [this](const ModelDescription& m) { m_local_model = m; });
    connect(&local, &GenerationService::tokensCounted, this, [this](quint64 id, qint64 n) {
        if (m_active == &m_local) emit tokensCounted(id, n);
    });
}

void SwitchingGenerationService::attach(GenerationService& s) {
    GenerationService* p = &s;
    connect(p, &GenerationService::loadProgress, this, [this, p](double f, const QString& stage) {
        if (m_active == p) emit loadProgress(f, stage);
    });
    connect(p, &GenerationService::modelLoaded, this, [this, p](const ModelDescription& m) {
        if (m_active == p) emit modelLoaded(m);
    });
    connect(p, &GenerationService::loadFailed, this, [this, p](const QString& message, bool cancelled) {
        if (m_active == p) emit loadFailed(message, cancelled);
    });
    connect(p, &GenerationService::generationChunk, this, [this, p](const GenerationChunk& c) {
        if (m_running_on != p || c.request_id != m_inner_id) return;
        GenerationChunk out = c;
        out.request_id = m_running_id;
        emit generationChunk(out);
    });
    connect(p, &GenerationService::generationFinished, this, [this, p](const GenerationOutcome& o) {
        if (m_running_on != p || o.request_id != m_inner_id) return;
        GenerationOutcome out = o;
        out.request_id = m_running_id;
        m_running_id = m_inner_id = 0;
        m_running_on = nullptr;
        emit generationFinished(out);
    });
}

void SwitchingGenerationService::stopRunning() {
    if (m_running_on) m_running_on->stop(m_inner_id);
}

void SwitchingGenerationService::useRemote(const RemoteEndpoint& endpoint) {
    stopRunning();
    m_remote.setEndpoint(endpoint);
    const bool changed = m_active != &m_remote;
    m_active = &m_remote;
    if (changed) emit activeChanged(true);
    m_remote.loadModel({});
}

void SwitchingGenerationService::useLocal() {
    if (m_active == &m_local) return;
    stopRunning();
    m_remote.cancelLoad();
    m_active = &m_local;
    emit activeChanged(false);
    if (m_local.hasModel() && m_local_model) emit modelLoaded(*m_local_model);
}

void SwitchingGenerationService::loadModel(const LoadRequest& request) {
    if (!request.model_dir.isEmpty() && m_active != &m_local) {
        stopRunning();
        m_remote.cancelLoad();
        m_active = &m_local;
        emit activeChanged(false);
    }
    m_active->loadModel(request);
}

quint64 SwitchingGenerationService::generate(const GenerationParams& params) {
    const quint64 id = m_next_id++;
    if (m_running_id != 0) {
        refuseWhileBusy(id);
        return id;
    }
    m_running_id = id;
    m_running_on = m_active;
    m_inner_id = m_active->generate(params);
    return id;
}

void SwitchingGenerationService::stop(quint64 request_id) {
    if (request_id == m_running_id) stopRunning();
}

}  // namespace cetus::ui
