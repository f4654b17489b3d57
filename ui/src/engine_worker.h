// The engine worker: a plain QObject moved to the service's QThread. It owns the
// cetus::Engine; nothing else touches it. Slots run blocking engine calls; output
// leaves as signals with plain values, batched to about 30 per second.
#pragma once

#include "cetus/ui/types.h"

#include <QObject>

#include <atomic>
#include <memory>

namespace cetus {
class Engine;
}

namespace cetus::ui {

class EngineWorker : public QObject {
    Q_OBJECT
public:
    EngineWorker();
    ~EngineWorker() override;

    static constexpr qint64 k_emit_interval_ms = 33;

public slots:
    void load(const cetus::ui::LoadRequest& request, std::shared_ptr<std::atomic<bool>> cancel);
    void forgetConversation(const QString& folder, const QString& cache_tag);
    void clearConversationCaches(const QString& folder);
    // The tokens of a text under the model's tokenizer (none without one).
    void countTokens(quint64 id, const QString& text);
    void generate(quint64 request_id, const cetus::ui::GenerationParams& params,
                  std::shared_ptr<std::atomic<bool>> cancel);

signals:
    void loadProgress(double fraction, const QString& stage);
    void modelLoaded(const cetus::ui::ModelDescription& model);
    void loadFailed(const QString& message, bool cancelled);
    void generationChunk(const cetus::ui::GenerationChunk& chunk);
    void generationFinished(const cetus::ui::GenerationOutcome& outcome);
    void tokensCounted(quint64 id, qint64 tokens);

private:
    std::unique_ptr<cetus::Engine> m_engine;
};

}  // namespace cetus::ui
