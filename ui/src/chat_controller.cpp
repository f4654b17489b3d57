// The chat controller: user actions become storage writes (one per message boundary,
// plus a checkpoint of the streaming answer about once a second) and engine requests.
#include "cetus/ui/chat_controller.h"

#include "log.h"

#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>

#include <algorithm>

namespace cetus::ui {

namespace {

constexpr qint64 k_checkpoint_ms = 1000;

QString roleName(ChatRole r) {
    switch (r) {
    case ChatRole::System: return QStringLiteral("system");
    case ChatRole::User: return QStringLiteral("user");
    case ChatRole::Assistant: return QStringLiteral("assistant");
    }
    return QStringLiteral("user");
}

QJsonObject samplingToJson(const SamplingSettings& s) {
    return QJsonObject{{"temperature", s.temperature},
                       {"top_p", s.top_p},
                       {"top_k", s.top_k},
                       {"min_p", s.min_p},
                       {"repetition_penalty", s.repetition_penalty},
                       {"frequency_penalty", s.frequency_penalty},
                       {"presence_penalty", s.presence_penalty},
                       {"max_new_tokens", s.max_new_tokens},
                       {"mtp", s.mtp},
                       {"n_draft", s.n_draft},
                       {"lookup", s.lookup},
                       {"json_object", s.json_object}};
}

// A conversation's stored settings. They may come from an imported file or an
// older build: a value outside the range the settings dialog offers (for the
// fields it does not show, the engine's or the server's range) falls back to the
// default, so one bad value cannot fail every message of the conversation.
SamplingSettings samplingFromJson(const QString& text, const SamplingSettings& defaults) {
    SamplingSettings s = defaults;
    const QJsonObject o = QJsonDocument::fromJson(text.toUtf8()).object();
    const auto real = [&](const char* key, double lo, double hi, double fallback) {
        const double v = o.value(QLatin1String(key)).toDouble(fallback);
        return v >= lo && v <= hi ? v : fallback;
    };
    const auto whole = [&](const char* key, int lo, int hi, int fallback) {
        const int v = o.value(QLatin1String(key)).toInt(fallback);
        return v >= lo && v <= hi ? v : fallback;
    };
    s.temperature = real("temperature", 0.0, 2.0, s.temperature);
    s.top_p = real("top_p", 0.01, 1.0, s.top_p);
    s.top_k = whole("top_k", 0, 1000, s.top_k);
    s.min_p = real("min_p", 0.0, 1.0, s.min_p);
    s.repetition_penalty = real("repetition_penalty", 0.01, 10.0, s.repetition_penalty);
    s.frequency_penalty = real("frequency_penalty", -2.0, 2.0, s.frequency_penalty);
    s.presence_penalty = real("presence_penalty", -2.0, 2.0, s.presence_penalty);
    s.max_new_tokens = whole("max_new_tokens", 1, 32768, s.max_new_tokens);
    s.mtp = o.value("mtp").toBool(s.mtp);
    s.n_draft = whole("n_draft", 1, 8, s.n_draft);
    s.lookup = o.value("lookup").toBool(s.lookup);
    s.json_object = o.value("json_object").toBool(s.json_object);
    return s;
}

QString statsLine(const QJsonObject& o) {
    QStringList parts;
    const int n = o.value("n_generated_tokens").toInt();
    if (n > 0) parts << ChatController::tr("%n token(s)", nullptr, n);
    if (const double tps = o.value("decode_tokens_per_s").toDouble(); tps > 0) parts << QStringLiteral("%1 tok/s").arg(tps, 0, 'f', 1);
    if (const int p = o.value("n_draft_proposed").toInt(); p > 0) {
        const double share = 100.0 * o.value("n_draft_accepted").toDouble() / p;
        if (o.value("drafts").toString() == QLatin1String("lookup"))
            parts << ChatController::tr("looked-up drafts %1 % accepted").arg(share, 0, 'f', 0);
        else
            parts << ChatController::tr("MTP %1 % accepted").arg(share, 0, 'f', 0);
    }
    const QString finish = o.value("finish").toString();
    if (finish == QLatin1String("stopped")) parts << ChatController::tr("stopped");
    else if (finish == QLatin1String("length")) parts << ChatController::tr("length limit");
    else if (finish == QLatin1String("context_full")) parts << ChatController::tr("context full");
    if (const int left_out = o.value("n_turns_left_out").toInt(); left_out > 0)
        parts << ChatController::tr("%n earlier message(s) left out to fit the context", nullptr, left_out);
    return parts.join(QStringLiteral(" · "));
}

}  // namespace

QString finishKindName(FinishKind kind) {
    switch (kind) {
    case FinishKind::Eos: return QStringLiteral("eos");
    case FinishKind::Stop: return QStringLiteral("stop");
    case FinishKind::Length: return QStringLiteral("length");
    case FinishKind::ContextFull: return QStringLiteral("context_full");
    case FinishKind::Cancelled: return QStringLiteral("stopped");
    case FinishKind::Error: return QStringLiteral("error");
    }
    return {};
}

ChatController::ChatController(HistoryStore& store, GenerationService& service, QObject* parent)
    : QObject(parent), m_store(store), m_service(service) {
    connect(&m_service, &GenerationService::modelLoaded, this, &ChatController::onModelLoaded);
    connect(&m_service, &GenerationService::generationChunk, this, &ChatController::onChunk);
    connect(&m_service, &GenerationService::generationFinished, this, &ChatController::onFinished);
    connect(&m_store, &HistoryStore::storageError, this, &ChatController::errorOccurred);
}

ConversationSettings ChatController::settings() const {
    if (!m_conversation) return m_defaults;
    return {m_conversation->system_prompt, samplingFromJson(m_conversation->sampling_json, m_defaults.sampling)};
}

void ChatController::onModelLoaded(const ModelDescription& m) {
    m_model = m;
    if (!isGenerating()) m_answer_counts.clear();  // the last answer's counts had the old model's shape
    recountHistory();  // counts are sized by the model's expert count
    emit modelChanged();
    emit expertCountsChanged();
    if (!isGenerating() && m_conversation) {
        rebuildDisplay();  // whether an answer can be continued depends on the engine
        emit conversationChanged();
    }
}

// Expert counts of the answers on the shown path, from their routing traces; the
// answer whose counts m_answer_counts holds (streaming, or the last one) is left to it.
void ChatController::recountHistory() {
    m_history_counts.clear();
    for (const auto& d : m_display) {
        if (!d.record.has_routing_trace || (d.record.id == m_answer_id && !m_answer_counts.empty())) continue;
        if (const auto r = m_store.routingTrace(d.record.id)) addCounts(m_history_counts, *r);
    }
}

const MessageRecord* ChatController::find(qint64 id) const {
    if (!m_conversation) return nullptr;
    for (const auto& m : m_conversation->messages)
        if (m.id == id) return &m;
    return nullptr;
}

const DisplayMessage* ChatController::displayed(qint64 id) const {
    const auto it = std::find_if(m_display.begin(), m_display.end(), [id](const DisplayMessage& d) { return d.record.id == id; });
    return it == m_display.end() ? nullptr : &*it;
}

void ChatController::newConversation() {
    if (isGenerating()) stop();
    m_conversation.reset();
    m_history_counts.clear();
    m_answer_counts.clear();
    m_stats_history.clear();
    rebuildDisplay();
    emit conversationChanged();
    emit expertCountsChanged();
}

void ChatController::openConversation(qint64 id) {
    if (m_conversation && m_conversation->id == id) return;
    if (isGenerating()) stop();
    reload(id);
    m_answer_counts.clear();
    m_stats_history.clear();
    recountHistory();
    emit conversationChanged();
    emit expertCountsChanged();
}

// The newest child, followed down to a leaf: the latest state of the branch through `id`.
qint64 ChatController::latestLeaf(qint64 id) const {
    for (bool descended = true; descended;) {
        descended = false;
        for (auto it = m_conversation->messages.rbegin(); it != m_conversation->messages.rend(); ++it)
            if (it->parent_id == id) {
                id = it->id;
                descended = true;
                break;
            }
    }
    return id;
}

void ChatController::revealMessage(qint64 conversation_id, qint64 message_id) {
    openConversation(conversation_id);
    if (!m_conversation || m_conversation->id != conversation_id) return;
    if (!displayed(message_id) && !isGenerating() && find(message_id)) {
        if (m_store.setActiveMessage(conversation_id, latestLeaf(message_id))) {  // another branch
            reload(conversation_id);
            m_answer_counts.clear();
            recountHistory();
            emit conversationChanged();
            emit expertCountsChanged();
        }
    }
    if (displayed(message_id)) emit messageRevealed(message_id);
}

void ChatController::reload(std::optional<qint64> id) {
    m_conversation.reset();
    if (id) m_conversation = m_store.openConversation(*id);
    rebuildDisplay();
}

void ChatController::rebuildDisplay() {
    m_display.clear();
    rebuildMessages();
    // The timeline's answer left the view (another conversation or branch): none.
    if (m_inspected_id != 0 && !displayed(m_inspected_id)) {
        m_inspected_id = 0;
        m_inspected_token = -1;
        m_inspected_routing = RoutingData{};
        emit inspectedAnswerChanged();
    }
}

void ChatController::rebuildMessages() {
    if (!m_conversation) return;
    for (qint64 id : m_conversation->active_path) {
        const MessageRecord* m = find(id);
        if (!m) continue;
        DisplayMessage d;
        d.record = *m;
        std::vector<qint64> siblings;
        for (const auto& o : m_conversation->messages)
            if (o.parent_id == m->parent_id) siblings.push_back(o.id);
        d.branch_count = int(siblings.size());
        d.branch_index = int(std::find(siblings.begin(), siblings.end(), id) - siblings.begin());
        const QJsonObject stats = QJsonDocument::fromJson(m->stats_json.toUtf8()).object();
        for (const auto& v : stats.value("token_text_ends").toArray()) d.token_text_ends.push_back(v.toInt());
        d.token_text_begin = stats.value("token_text_begin").toInt();
        d.error = stats.value("error").toString();
        d.stats_line = statsLine(stats);
        d.reasoning = stats.value("reasoning").toString();
        d.json = stats.value("json_object").toBool();
        const QString finish = stats.value("finish").toString();
        // The local engine and Cetus servers continue an answer (continue_final_message);
        // another endpoint might ignore the field and answer afresh.
        const bool continues = m_model && (!m_model->remote || m_model->remote_continues);
        d.can_continue = continues && m->role == ChatRole::Assistant && id == m_conversation->active_path.back() &&
                         (m->status == MessageStatus::Interrupted ||
                          (m->status == MessageStatus::Complete &&
                           (finish == QLatin1String("length") || finish == QLatin1String("stopped"))));
        if (id == m_answer_id && isGenerating()) {
            d.can_continue = false;
            d.token_text_begin = m_answer_text_begin;
            d.record.content = m_answer_text;
            d.reasoning = m_answer_reasoning;
            d.token_text_ends = m_answer_ends;
            d.json = m_answer_json;
        }
        m_display.push_back(std::move(d));
    }
}

std::vector<ChatTurn> ChatController::turnsBefore(qint64 message_id) const {
    std::vector<ChatTurn> turns;
    if (!m_conversation) return turns;
    if (!m_conversation->system_prompt.trimmed().isEmpty()) turns.push_back({QStringLiteral("system"), m_conversation->system_prompt, {}});
    for (qint64 id : m_conversation->active_path) {
        if (id == message_id) break;
        const MessageRecord* m = find(id);
        if (!m || (m->role == ChatRole::Assistant && m->content.isEmpty())) continue;
        ChatTurn t{roleName(m->role), m->content, {}};
        if (m->role == ChatRole::Assistant) t.reasoning = QJsonDocument::fromJson(m->stats_json.toUtf8()).object().value("reasoning").toString();
        turns.push_back(std::move(t));
    }
    return turns;
}

bool ChatController::send(const QString& raw) {
    const QString text = raw.trimmed();
    if (text.isEmpty() || isGenerating()) return false;
    if (!m_service.hasModel()) {
        emit errorOccurred(tr("No model is loaded. Open a model folder or GGUF file first (File → Open model…)."));
        return false;
    }
    if (!m_conversation) {
        const auto id = m_store.createConversation(m_model ? m_model->name : QString(), m_defaults.system_prompt,
                                                   QString::fromUtf8(QJsonDocument(samplingToJson(m_defaults.sampling)).toJson(QJsonDocument::Compact)));
        if (!id) return false;
        reload(*id);
        if (!m_conversation) return false;
    }
    std::optional<qint64> parent;
    if (!m_conversation->active_path.empty()) parent = m_conversation->active_path.back();
    const auto user_id = m_store.addMessage(m_conversation->id, parent, ChatRole::User, text, MessageStatus::Complete);
    if (!user_id) return false;
    const auto answer_id = m_store.addMessage(m_conversation->id, *user_id, ChatRole::Assistant, QString(), MessageStatus::Streaming);
    if (!answer_id) return false;
    startAnswer(*answer_id);
    return true;
}

void ChatController::regenerate(qint64 assistant_message_id) {
    if (isGenerating() || !m_conversation || !m_service.hasModel()) return;
    const auto id = m_store.branchAt(assistant_message_id, QString(), MessageStatus::Streaming);
    if (id) startAnswer(*id);
}

void ChatController::continueAnswer(qint64 assistant_message_id) {
    if (isGenerating() || !m_conversation || !m_service.hasModel()) return;
    if (!m_model || (m_model->remote && !m_model->remote_continues)) return;  // the engine now in use decides
    const DisplayMessage* shown = displayed(assistant_message_id);
    if (!shown || !shown->can_continue) return;
    const MessageRecord before = shown->record;
    if (!m_store.reopenMessage(assistant_message_id)) return;
    startAnswer(assistant_message_id, &before);
}

void ChatController::editAndResend(qint64 user_message_id, const QString& text) {
    if (isGenerating() || !m_conversation || text.trimmed().isEmpty() || !m_service.hasModel()) return;
    const auto user_id = m_store.branchAt(user_message_id, text.trimmed(), MessageStatus::Complete);
    if (!user_id) return;
    const auto answer_id = m_store.addMessage(m_conversation->id, *user_id, ChatRole::Assistant, QString(), MessageStatus::Streaming);
    if (answer_id) startAnswer(*answer_id);
}

void ChatController::startAnswer(qint64 assistant_id, const MessageRecord* continued) {
    const qint64 conversation_id = m_conversation->id;
    m_answer_id = assistant_id;
    m_inspected_id = assistant_id;  // the timeline follows the new answer
    m_inspected_token = -1;
    m_inspected_routing = RoutingData{};
    m_answer_text.clear();
    m_answer_reasoning.clear();
    m_answer_ends.clear();
    m_answer_routing = RoutingData{};
    m_answer_probabilities = TokenProbabilityData{};
    m_probabilities_aligned = true;
    m_answer_stats = StepStats{};
    m_stats_history.clear();
    m_answer_counts.clear();
    m_continued_tokens = 0;
    m_continued_counts.clear();
    m_continued.reset();
    m_answer_text_begin = 0;
    GenerationParams params;
    if (continued) {
        // The answer so far: its text, token ends and routing go on when they line up
        // (the same model's trace, one entry per token, the ends covering the text);
        // otherwise the new tokens' routing starts after the old text, which has none.
        m_continued = *continued;
        const QJsonObject stats = QJsonDocument::fromJson(continued->stats_json.toUtf8()).object();
        m_answer_text = continued->content;
        m_answer_reasoning = stats.value("reasoning").toString();
        m_continued_tokens = stats.value("n_generated_tokens").toInteger();
        std::vector<int> ends;
        for (const auto& v : stats.value("token_text_ends").toArray()) ends.push_back(v.toInt());
        const auto trace = continued->has_routing_trace ? m_store.routingTrace(assistant_id) : std::nullopt;
        const auto p = m_store.tokenProbabilities(assistant_id);
        const bool covered = !ends.empty() && ends.back() == int(m_answer_text.size());
        const bool lines_up = covered && trace && m_model && trace->n_layers == int(m_model->n_moe_layers) &&
                              trace->top_k == int(m_model->n_active_experts) && trace->nTokens() == ends.size();
        // Its token probabilities go on too when it has them for every token, as many
        // alternatives as are recorded now (else the continued answer keeps none).
        const bool figures_line_up = covered && p && p->consistent() && p->nTokens() == ends.size() &&
                                     p->top_n == m_token_alternatives;
        // An engine that reports no routing (another endpoint): its tokens are known from
        // their figures alone.
        const bool no_routing = m_model && m_model->remote && !m_model->remote_reports_routing && !trace;
        if (lines_up || (no_routing && figures_line_up)) {
            if (trace) m_answer_routing = *trace;
            m_answer_ends = std::move(ends);
            m_answer_text_begin = stats.value("token_text_begin").toInt();
            addCounts(m_answer_counts, m_answer_routing);
            m_probabilities_aligned = figures_line_up;
            if (m_probabilities_aligned) m_answer_probabilities = *p;
        } else {
            // The old trace no longer indexes the text: it goes when the continuation
            // succeeds (onFinished), and stays if it fails.
            m_answer_text_begin = int(m_answer_text.size());
        }
        m_continued_counts = m_answer_counts;
    }
    reload(conversation_id);
    recountHistory();
    params.turns = turnsBefore(assistant_id);
    if (continued) {
        params.turns.push_back({QStringLiteral("assistant"), m_answer_text, m_answer_reasoning});
        params.continue_final = true;
    }
    params.sampling = settings().sampling;
    // A continued answer keeps the mode it was written in, whatever the settings say now.
    m_answer_json = continued ? QJsonDocument::fromJson(continued->stats_json.toUtf8()).object().value("json_object").toBool()
                              : params.sampling.json_object;
    params.sampling.json_object = m_answer_json;
    params.debug_token_delay_ms = m_debug_delay_ms;
    params.token_alternatives = m_token_alternatives;
    params.cache_tag = cacheTag(conversation_id);
    m_request_id = m_service.generate(params);
    m_since_checkpoint.start();
    rebuildDisplay();
    emit conversationListChanged();
    emit conversationChanged();
    emit generationStateChanged(true);
    emit inspectedAnswerChanged();
    emit expertCountsChanged();
}

void ChatController::stop() {
    if (m_request_id) m_service.stop(m_request_id);
}

void ChatController::addCounts(std::vector<qint64>& counts, const RoutingData& r) const {
    if (!m_model || r.n_layers == 0) return;
    const qint64 n_experts = m_model->n_routed_experts;
    const size_t size = size_t(r.n_layers) * size_t(n_experts);
    if (counts.size() != size) counts.assign(size, 0);
    for (size_t i = 0; i < r.expert_ids.size(); ++i) {
        const size_t layer = (i / size_t(r.top_k)) % size_t(r.n_layers);
        const int32_t e = r.expert_ids[i];
        if (e >= 0 && e < n_experts) counts[layer * size_t(n_experts) + size_t(e)]++;
    }
}

std::vector<qint64> ChatController::conversationExpertCounts() const {
    std::vector<qint64> all = m_history_counts;
    if (all.empty()) return m_answer_counts;
    if (all.size() == m_answer_counts.size())
        for (size_t i = 0; i < all.size(); ++i) all[i] += m_answer_counts[i];
    return all;
}

void ChatController::onChunk(const GenerationChunk& chunk) {
    if (chunk.request_id != m_request_id) return;
    const int base = int(m_answer_text.size());
    m_answer_text += chunk.text;
    for (int e : chunk.token_text_ends) m_answer_ends.push_back(base + e);
    // Text after the last token (released when the answer stops) belongs to that token.
    if (chunk.token_text_ends.empty() && !chunk.text.isEmpty() && !m_answer_ends.empty())
        m_answer_ends.back() = int(m_answer_text.size());
    if (chunk.routing.n_layers > 0) {
        m_answer_routing.append(chunk.routing);
        // Counted only while its conversation is shown (opening another stops it, and
        // chunks already on their way still arrive).
        if (displayed(m_answer_id)) {
            addCounts(m_answer_counts, chunk.routing);
            emit expertCountsChanged();
        }
    }
    if (chunk.token_text_ends.empty()) {
        // No tokens in this chunk: nothing to line up.
    } else if (m_probabilities_aligned && chunk.probabilities.nTokens() == chunk.token_text_ends.size()) {
        m_answer_probabilities.append(chunk.probabilities);
    } else if (m_probabilities_aligned) {
        m_probabilities_aligned = false;  // a token without them: the answer keeps none
        m_answer_probabilities = TokenProbabilityData{};
    }
    m_answer_stats = chunk.stats;
    m_stats_history.push_back(chunk.stats);
    if (!m_display.empty() && m_display.back().record.id == m_answer_id) {
        m_display.back().record.content = m_answer_text;
        m_display.back().token_text_ends = m_answer_ends;
    }
    if (!chunk.reasoning.isEmpty()) {
        m_answer_reasoning += chunk.reasoning;
        if (!m_display.empty() && m_display.back().record.id == m_answer_id) m_display.back().reasoning = m_answer_reasoning;
        emit reasoningUpdated(m_answer_id, m_answer_reasoning);
    }
    emit streamUpdated(m_answer_id, m_answer_text);
    emit statsUpdated(chunk.stats);
    if (m_since_checkpoint.elapsed() >= k_checkpoint_ms) {
        m_store.checkpointMessage(m_answer_id, m_answer_text);
        m_since_checkpoint.restart();
    }
}

std::optional<ChatController::ContextUse> ChatController::contextUse() const {
    if (!m_conversation) return std::nullopt;
    if (isGenerating() && displayed(m_answer_id) && m_answer_stats.prompt_tokens > 0)
        return ContextUse{m_answer_stats.prompt_tokens + m_answer_stats.generated_tokens, 0};
    const auto& path = m_conversation->active_path;
    for (auto it = path.rbegin(); it != path.rend(); ++it) {
        const MessageRecord* m = find(*it);
        if (!m || m->role != ChatRole::Assistant) continue;
        const QJsonObject stats = QJsonDocument::fromJson(m->stats_json.toUtf8()).object();
        // n_context_tokens since it was stored; before, the prompt and the answer's tokens
        // (which count a continued answer's earlier part twice). Without the prompt's size
        // (an error, no usage from an endpoint) the answer before it tells.
        qint64 tokens = stats.value("n_context_tokens").toInteger();
        if (!stats.contains(QLatin1String("n_context_tokens")) && stats.value("n_prompt_tokens").toInteger() > 0)
            tokens = stats.value("n_prompt_tokens").toInteger() + stats.value("n_generated_tokens").toInteger();
        if (tokens <= 0) continue;
        return ContextUse{tokens, stats.value("n_turns_left_out").toInt()};
    }
    return std::nullopt;
}

QString ChatController::statsJson(const GenerationOutcome& o) const {
    QJsonObject j{{"n_prompt_tokens", o.stats.prompt_tokens},
                  {"n_generated_tokens", m_continued_tokens + o.stats.generated_tokens},

                  {"prefill_tokens_per_s", o.stats.prefill_tokens_per_s},
                  {"decode_tokens_per_s", o.stats.decode_tokens_per_s},
                  {"n_draft_proposed", o.stats.drafts_proposed},
                  {"n_draft_accepted", o.stats.drafts_accepted},
                  {"kv_cache_bytes", qint64(o.stats.kv_bytes_used)},
                  {"finish", finishKindName(o.finish)},
                  {"elapsed_ms", o.elapsed_ms}};
    // What the context holds after it, when the prompt's size is known (an endpoint that
    // sends no usage, or an answer stopped before its first token, leaves it out).
    if (o.stats.prompt_tokens > 0) j.insert("n_context_tokens", o.stats.prompt_tokens + o.stats.generated_tokens);
    if (m_model) j.insert("model", m_model->name);
    if (!o.error.isEmpty()) j.insert("error", o.error);
    if (!o.mtp_note.isEmpty()) j.insert("mtp_note", o.mtp_note);
    if (o.lookup_used) j.insert("drafts", QStringLiteral("lookup"));
    if (o.turns_left_out > 0) j.insert("n_turns_left_out", o.turns_left_out);
    if (m_answer_text_begin > 0) j.insert("token_text_begin", m_answer_text_begin);
    if (!m_answer_reasoning.isEmpty()) j.insert("reasoning", m_answer_reasoning);
    if (m_answer_json) j.insert("json_object", true);
    QJsonArray ends;
    for (int e : m_answer_ends) ends.append(e);
    j.insert("token_text_ends", ends);
    return QString::fromUtf8(QJsonDocument(j).toJson(QJsonDocument::Compact));
}

void ChatController::onFinished(const GenerationOutcome& outcome) {
    if (outcome.request_id != m_request_id) {
        if (outcome.finish == FinishKind::Error) emit errorOccurred(outcome.error);
        return;
    }
    if (m_continued && outcome.finish == FinishKind::Error) {
        // A continuation that failed (the prompt no longer fits, the endpoint refused):
        // the answer stays as it was, and the error shows above the composer.
        const MessageRecord before = *m_continued;
        m_continued.reset();
        m_store.finishMessage(m_answer_id, before.content, before.status, before.stats_json);
        m_answer_counts = m_continued_counts;  // without the failed part's tokens
        // The failed part's tokens go too: the answer's routing and figures are read
        // from the store again, as they were.
        m_answer_routing = RoutingData{};
        m_answer_ends.clear();
        m_answer_probabilities = TokenProbabilityData{};
        if (m_inspected_id == m_answer_id) {
            m_inspected_routing = m_store.routingTrace(m_answer_id).value_or(RoutingData{});
            emit inspectedAnswerChanged();
        }
        m_request_id = 0;
        logger()->warn("continuing answer {} failed: {}", m_answer_id, outcome.error.toStdString());
        if (m_conversation) reload(m_conversation->id);
        recountHistory();
        emit conversationChanged();
        emit generationStateChanged(false);
        emit expertCountsChanged();
        emit errorOccurred(tr("The answer could not be continued: %1").arg(outcome.error));
        return;
    }
    m_continued.reset();
    const MessageStatus status = outcome.finish == FinishKind::Error ? MessageStatus::Error : MessageStatus::Complete;
    // Its conversation may have been left (opening another stops the answer): its counts
    // are no longer the shown answer's.
    const bool shown = displayed(m_answer_id) != nullptr;
    if (shown && outcome.n_moe_layers > 0 && !outcome.expert_counts.empty()) {
        m_answer_counts = outcome.expert_counts;  // this generation's; a continued answer's earlier ones added
        if (m_continued_counts.size() == m_answer_counts.size())
            for (size_t i = 0; i < m_answer_counts.size(); ++i) m_answer_counts[i] += m_continued_counts[i];
    }
    if (outcome.finish != FinishKind::Error) {
        m_answer_stats = outcome.stats;
        emit statsUpdated(outcome.stats);
    }
    if (m_answer_routing.nTokens() > 0) m_store.setRoutingTrace(m_answer_id, m_answer_routing);
    else if (m_continued_tokens > 0) m_store.clearRoutingTrace(m_answer_id);  // an old one no longer lines up
    // Token probabilities are kept only when there is one entry per token of the answer
    // (a continuation recorded without them, or an endpoint that sent some, has none).
    if (answerProbabilitiesComplete() && m_answer_probabilities.nTokens() > 0)
        m_store.setTokenProbabilities(m_answer_id, m_answer_probabilities);
    else if (m_continued_tokens > 0)
        m_store.clearTokenProbabilities(m_answer_id);  // a continued answer's old ones no longer cover it
    m_store.finishMessage(m_answer_id, m_answer_text, status, statsJson(outcome));
    if (m_inspected_id == m_answer_id) m_inspected_routing = m_answer_routing;  // the timeline keeps it, now stored
    if (outcome.finish == FinishKind::Error) logger()->warn("answer {} failed: {}", m_answer_id, outcome.error.toStdString());
    m_request_id = 0;
    if (m_conversation) reload(m_conversation->id);
    recountHistory();
    emit conversationListChanged();
    emit conversationChanged();
    emit generationStateChanged(false);
    emit expertCountsChanged();
}

void ChatController::switchBranch(qint64 message_id, int delta) {
    if (!m_conversation || isGenerating()) return;
    const MessageRecord* m = find(message_id);
    if (!m) return;
    std::vector<qint64> siblings;
    for (const auto& o : m_conversation->messages)
        if (o.parent_id == m->parent_id) siblings.push_back(o.id);
    const auto at = std::find(siblings.begin(), siblings.end(), message_id) - siblings.begin();
    const qint64 target = at + delta;
    if (target < 0 || target >= qint64(siblings.size())) return;
    if (m_store.setActiveMessage(m_conversation->id, latestLeaf(siblings[size_t(target)]))) {
        reload(m_conversation->id);
        m_answer_counts.clear();  // the last answer may be off the shown path now
        recountHistory();
        emit conversationChanged();
        emit expertCountsChanged();
    }
}

void ChatController::renameConversation(qint64 id, const QString& title) {
    if (title.trimmed().isEmpty()) return;
    if (m_store.renameConversation(id, title.trimmed())) {
        if (m_conversation && m_conversation->id == id) m_conversation->title = title.trimmed();
        emit conversationListChanged();
        emit conversationChanged();
    }
}

void ChatController::setArchived(qint64 id, bool archived) {
    if (!m_store.setArchived(id, archived)) return;
    if (m_conversation && m_conversation->id == id) m_conversation->archived = archived;
    emit conversationListChanged();
}

void ChatController::setPinned(qint64 id, bool pinned) {
    if (!m_store.setPinned(id, pinned)) return;
    if (m_conversation && m_conversation->id == id) m_conversation->pinned = pinned;
    emit conversationListChanged();
}

QString ChatController::cacheTag(qint64 conversation_id) const {
    return m_store.location() + QStringLiteral("#") + QString::number(conversation_id);
}

void ChatController::deleteConversation(qint64 id) {
    if (m_conversation && m_conversation->id == id) {
        if (isGenerating()) return;
        newConversation();
    }
    if (!m_store.deleteConversation(id)) return;
    emit conversationListChanged();
    // Its cache rows (their token ids are its text) go too.
    m_service.forgetConversation(cacheTag(id));
}

void ChatController::applySettings(const ConversationSettings& s) {
    m_defaults = s;
    if (!m_conversation) return;
    const QString json = QString::fromUtf8(QJsonDocument(samplingToJson(s.sampling)).toJson(QJsonDocument::Compact));
    if (m_store.setSettings(m_conversation->id, m_conversation->model, s.system_prompt, json)) {
        m_conversation->system_prompt = s.system_prompt;
        m_conversation->sampling_json = json;
    }
}

const RoutingData& ChatController::inspectedRouting() const {
    if (m_inspected_id != 0 && m_inspected_id == m_answer_id && isGenerating()) return m_answer_routing;
    return m_inspected_routing;
}

void ChatController::selectToken(qint64 message_id, int text_offset) {
    const DisplayMessage* d = displayed(message_id);
    if (!d || d->record.role != ChatRole::Assistant || d->token_text_ends.empty()) return;
    const auto& ends = d->token_text_ends;
    if (text_offset < d->token_text_begin) return;  // text before the first token with routing
    selectTokenAt(message_id, int(std::upper_bound(ends.begin(), ends.end(), text_offset) - ends.begin()));
}

void ChatController::selectTokenAt(qint64 message_id, int index) {
    const DisplayMessage* d = displayed(message_id);
    if (!d || d->record.role != ChatRole::Assistant || index < 0) return;
    const auto& ends = d->token_text_ends;
    const size_t t = size_t(index);
    if (t >= ends.size()) return;
    RoutingData all;
    TokenProbabilityData probabilities;
    // The answer being generated is read from memory, the others (a finished one too) from the store.
    const bool live = message_id == m_answer_id && isGenerating();
    if (live) {
        all = m_answer_routing;
        if (answerProbabilitiesComplete()) probabilities = m_answer_probabilities;
    } else {
        if (const auto r = m_store.routingTrace(message_id)) all = *r;
        if (const auto p = m_store.tokenProbabilities(message_id)) probabilities = *p;
    }
    // A token with its routing, its probabilities, or both (an endpoint that reports no
    // routing may send probabilities).
    if (t >= all.nTokens() && t >= probabilities.nTokens()) return;
    RoutingData one;
    if (t < all.nTokens()) {
        one.n_layers = all.n_layers;
        one.top_k = all.top_k;
        one.first_layer = all.first_layer;
        const size_t per = size_t(all.n_layers) * size_t(all.top_k);
        one.expert_ids.assign(all.expert_ids.begin() + long(t * per), all.expert_ids.begin() + long((t + 1) * per));
        one.weights.assign(all.weights.begin() + long(t * per), all.weights.begin() + long((t + 1) * per));
    }
    const int begin = t == 0 ? d->token_text_begin : ends[t - 1];
    const QString piece = d->record.content.mid(begin, ends[t] - begin);
    emit tokenSelected(one.n_layers > 0 ? tr("Token %1 “%2”: experts and gate weights").arg(t + 1).arg(piece)
                                        : tr("Token %1 “%2”").arg(t + 1).arg(piece),
                       one, probabilities.token(t));
    m_inspected_routing = live ? RoutingData{} : std::move(all);
    m_inspected_id = message_id;
    m_inspected_token = int(t);
    emit inspectedAnswerChanged();
}

}  // namespace cetus::ui
