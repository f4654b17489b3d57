// The chat controller: the one place that turns user actions (send, stop, regenerate,
// edit and resend, switch branch, open/rename/pin/delete) into HistoryStore writes and
// GenerationService requests, and the services' answers into signals for the views.
// Lives on the GUI thread; knows no widget, no engine and no storage type.
#pragma once

#include "cetus/ui/generation_service.h"
#include "cetus/ui/history_store.h"

#include <QElapsedTimer>
#include <QObject>

#include <optional>
#include <vector>

namespace cetus::ui {

// A message as the chat view shows it: where it sits among its siblings, and, for an
// answer, where each generated token's text ends (for clicks on tokens).
struct DisplayMessage {
    MessageRecord record;
    int branch_index = 0, branch_count = 1;
    std::vector<int> token_text_ends;
    int token_text_begin = 0;  // where the first token of token_text_ends starts (a continued answer's text before it has none)
    QString error;        // for MessageStatus::Error
    QString stats_line;   // "42 tokens · 18.3 tok/s · MTP 71 % accepted"
    QString reasoning;    // an R1-style model's reasoning, shown collapsed above the answer
    // The last answer, cut by the length limit, stopped or interrupted: it can go on.
    bool can_continue = false;
    // Answered in JSON mode: shown as its text, in a fixed-pitch font (not as Markdown,
    // which would fold its lines and indentation).
    bool json = false;
};

struct ConversationSettings {
    QString system_prompt;
    SamplingSettings sampling;
};

class ChatController : public QObject {
    Q_OBJECT
public:
    ChatController(HistoryStore& store, GenerationService& service, QObject* parent = nullptr);

    HistoryStore& store() { return m_store; }
    GenerationService& service() { return m_service; }

    std::optional<qint64> currentConversation() const { return m_conversation ? std::optional<qint64>(m_conversation->id) : std::nullopt; }
    QString currentTitle() const { return m_conversation ? m_conversation->title : QString(); }
    bool currentPinned() const { return m_conversation && m_conversation->pinned; }
    bool currentArchived() const { return m_conversation && m_conversation->archived; }
    const std::vector<DisplayMessage>& messages() const { return m_display; }
    bool isGenerating() const { return m_request_id != 0; }
    std::optional<ModelDescription> model() const { return m_model; }
    ConversationSettings settings() const;
    // Counts [n_moe_layers x n_routed_experts] of the streaming/last answer, and of the conversation.
    const std::vector<qint64>& answerExpertCounts() const { return m_answer_counts; }
    std::vector<qint64> conversationExpertCounts() const;
    const std::vector<StepStats>& answerStatsHistory() const { return m_stats_history; }
    // What the shown conversation takes of the model's context: the prompt and answer
    // tokens of the last answer on its path (live while one is generated), and how many
    // earlier messages that answer's prompt left out. nullopt before any answer with figures.
    struct ContextUse {
        qint64 tokens = 0;
        int messages_left_out = 0;
    };
    std::optional<ContextUse> contextUse() const;
    // The answer the experts panel's token timeline shows: the one being generated, else
    // the one whose token was clicked last (0: none); its routing, and the clicked token.
    qint64 inspectedAnswer() const { return m_inspected_id; }
    const RoutingData& inspectedRouting() const;
    int inspectedToken() const { return m_inspected_token; }

    void setDefaultSettings(const ConversationSettings& s) { m_defaults = s; }
    void setDebugTokenDelayMs(int ms) { m_debug_delay_ms = ms; }
    // Alternatives recorded per token with each answer's token probabilities (0..20);
    // -1 records none (Model > Record token probabilities).
    void setTokenAlternatives(int n) { m_token_alternatives = n; }
    int tokenAlternatives() const { return m_token_alternatives; }

public slots:
    void newConversation();
    void openConversation(qint64 id);
    // Opens the conversation of a message (a search hit) with the message on the shown
    // path, switching to its branch (that branch's latest state) when it is on another
    // one, then asks the view to bring it into sight (messageRevealed).
    void revealMessage(qint64 conversation_id, qint64 message_id);
    bool send(const QString& text);
    void stop();
    void regenerate(qint64 assistant_message_id);
    // Extends the last answer in place (when DisplayMessage::can_continue): the model
    // goes on from its text; tokens, routing and expert counts add up (the speed
    // figures are the continuation's). On an error the answer is left as it was.
    void continueAnswer(qint64 assistant_message_id);
    void editAndResend(qint64 user_message_id, const QString& text);
    void switchBranch(qint64 message_id, int delta);
    void renameConversation(qint64 id, const QString& title);
    void setPinned(qint64 id, bool pinned);
    // Out of the list and into the archive, or back; an open conversation stays open.
    void setArchived(qint64 id, bool archived);
    void deleteConversation(qint64 id);
    // The tag a conversation's requests carry (GenerationParams::cache_tag): the
    // database's location and the conversation's id.
    QString cacheTag(qint64 conversation_id) const;
    void applySettings(const cetus::ui::ConversationSettings& s);
    void selectToken(qint64 message_id, int text_offset);
    // The same for token `index` of the answer (the experts panel's timeline).
    void selectTokenAt(qint64 message_id, int index);

signals:
    void conversationListChanged();
    void conversationChanged();                       // rebuild the whole chat view
    void messageRevealed(qint64 message_id);          // scroll to it and mark it for a moment
    void streamUpdated(qint64 message_id, const QString& text);
    void reasoningUpdated(qint64 message_id, const QString& reasoning);
    void generationStateChanged(bool generating);
    void statsUpdated(const cetus::ui::StepStats& stats);
    void expertCountsChanged();
    // token_probabilities: the token's own (empty when the answer has none).
    void tokenSelected(const QString& label, const cetus::ui::RoutingData& token_routing,
                       const cetus::ui::TokenProbabilityData& token_probabilities);
    void inspectedAnswerChanged();  // another answer or token for the timeline
    void errorOccurred(const QString& message);
    void modelChanged();

private:
    void onModelLoaded(const ModelDescription& m);
    void onChunk(const GenerationChunk& chunk);
    void onFinished(const GenerationOutcome& outcome);
    void reload(std::optional<qint64> id);
    void rebuildDisplay();
    void rebuildMessages();  // m_display from the conversation's active path
    void recountHistory();
    // continued: the answer's record when it is continued (its text and trace go on).
    void startAnswer(qint64 assistant_id, const MessageRecord* continued = nullptr);
    std::vector<ChatTurn> turnsBefore(qint64 message_id) const;
    const MessageRecord* find(qint64 id) const;
    const DisplayMessage* displayed(qint64 id) const;  // on the shown path, else null
    qint64 latestLeaf(qint64 id) const;
    QString statsJson(const GenerationOutcome& o) const;
    void addCounts(std::vector<qint64>& counts, const RoutingData& r) const;
    // The answer's probabilities cover every token so far, one entry each.
    bool answerProbabilitiesComplete() const {
        return m_probabilities_aligned && m_answer_probabilities.consistent() &&
               m_answer_probabilities.nTokens() == m_answer_ends.size();
    }

    HistoryStore& m_store;
    GenerationService& m_service;
    std::optional<ConversationRecord> m_conversation;
    std::vector<DisplayMessage> m_display;
    std::optional<ModelDescription> m_model;
    ConversationSettings m_defaults;
    int m_debug_delay_ms = 0;
    int m_token_alternatives = 5;

    // The answer being generated.
    quint64 m_request_id = 0;
    qint64 m_answer_id = 0;
    QString m_answer_text;
    QString m_answer_reasoning;
    std::vector<int> m_answer_ends;
    RoutingData m_answer_routing;
    TokenProbabilityData m_answer_probabilities;
    qint64 m_inspected_id = 0;
    int m_inspected_token = -1;
    RoutingData m_inspected_routing;  // a stored answer's (the live one reads m_answer_routing)
    // One entry per token of the answer so far (a continued answer without them, or a
    // chunk without them, ends that: the answer then keeps none).
    bool m_probabilities_aligned = true;
    StepStats m_answer_stats;
    std::vector<StepStats> m_stats_history;
    std::vector<qint64> m_answer_counts;
    qint64 m_continued_tokens = 0;  // tokens the continued answer had before
    std::vector<qint64> m_continued_counts;  // and their expert counts
    std::optional<MessageRecord> m_continued;  // the continued answer as it was (restored on an error)
    int m_answer_text_begin = 0;  // DisplayMessage::token_text_begin of the answer being generated
    bool m_answer_json = false;   // the answer being generated is in JSON mode
    QElapsedTimer m_since_checkpoint;
    std::vector<qint64> m_history_counts;  // expert counts of the conversation's stored answers
};

}  // namespace cetus::ui

