// The UI's one door to the engine. The real implementation runs the engine on a worker
// thread (engine_service.h); tests substitute a fake. Every call returns at once and
// every result arrives later as a signal on the GUI thread, carrying plain values.
#pragma once

#include "cetus/ui/types.h"

#include <QObject>

namespace cetus::ui {

class GenerationService : public QObject {
    Q_OBJECT
public:
    using QObject::QObject;
    ~GenerationService() override = default;

    // Starts loading a model folder; the current model stays until the new one is in.
    virtual void loadModel(const LoadRequest& request) = 0;
    virtual void cancelLoad() = 0;
    virtual bool isLoading() const = 0;
    virtual bool hasModel() const = 0;

    // Starts an answer; returns its request id (> 0). At most one runs at a time:
    // a second call while one runs is refused with generationFinished(Error).
    virtual quint64 generate(const GenerationParams& params) = 0;
    // Asks the running request to stop; it finishes with FinishKind::Cancelled within one step.
    virtual void stop(quint64 request_id) = 0;
    virtual bool isGenerating() const = 0;

    // Conversations' cache rows kept outside the model's memory (the local engine's files
    // on disk; their token ids are the conversations' text). A service that keeps none
    // has nothing to do. forgetConversation: a deleted conversation's, by the tag its
    // requests carried (GenerationParams::cache_tag). clearConversationCaches: all of
    // them, whichever model wrote them. Both reach the folder (setConversationCacheFolder)
    // also when no model is loaded or the option is off.
    virtual void setConversationCacheFolder(const QString& folder) { Q_UNUSED(folder); }
    virtual void forgetConversation(const QString& cache_tag) { Q_UNUSED(cache_tag); }
    virtual void clearConversationCaches() {}

    // Counts the tokens of a message's text with the model's tokenizer (what it adds to
    // the prompt, besides its turn's few template tokens): tokensCounted(id, n) later. A
    // service without a tokenizer (no model, a remote endpoint) answers nothing.
    virtual void countTokens(quint64 id, const QString& text) {
        Q_UNUSED(id);
        Q_UNUSED(text);
    }

signals:
    void loadProgress(double fraction, const QString& stage);
    void modelLoaded(const cetus::ui::ModelDescription& model);
    void loadFailed(const QString& message, bool cancelled);
    void generationChunk(const cetus::ui::GenerationChunk& chunk);
    void generationFinished(const cetus::ui::GenerationOutcome& outcome);
    void tokensCounted(quint64 id, qint64 tokens);

protected:
    // Refuses request `id` because another one runs: generationFinished(Error), queued
    // so the caller sees it after generate() has returned the id.
    void refuseWhileBusy(quint64 id) {
        GenerationOutcome refused;
        refused.request_id = id;
        refused.finish = FinishKind::Error;
        refused.error = tr("Another answer is still being generated.");
        QMetaObject::invokeMethod(this, [this, refused] { emit generationFinished(refused); }, Qt::QueuedConnection);
    }
};

}  // namespace cetus::ui
