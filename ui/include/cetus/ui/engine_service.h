// The real GenerationService: owns a QThread and an EngineWorker living on it, which
// owns the cetus::Engine. Requests go over as queued calls, results come back as the
// worker's batched signals. The destructor cancels whatever runs, then quit() + wait().
#pragma once

#include "cetus/ui/generation_service.h"

#include <QThread>

#include <atomic>
#include <memory>

namespace cetus::ui {

class EngineWorker;

class EngineGenerationService : public GenerationService {
    Q_OBJECT
public:
    explicit EngineGenerationService(QObject* parent = nullptr);
    ~EngineGenerationService() override;

    void loadModel(const LoadRequest& request) override;
    void cancelLoad() override;
    bool isLoading() const override { return m_loading; }
    bool hasModel() const override { return m_has_model; }
    quint64 generate(const GenerationParams& params) override;
    void stop(quint64 request_id) override;
    bool isGenerating() const override { return m_running_id != 0; }
    void setConversationCacheFolder(const QString& folder) override { m_cache_folder = folder; }
    void forgetConversation(const QString& cache_tag) override;
    void clearConversationCaches() override;
    void countTokens(quint64 id, const QString& text) override;

private:
    QThread m_thread;
    EngineWorker* m_worker = nullptr;  // lives on m_thread; deleted through finished -> deleteLater
    std::shared_ptr<std::atomic<bool>> m_load_cancel;
    std::shared_ptr<std::atomic<bool>> m_gen_cancel;
    quint64 m_next_id = 1;
    quint64 m_running_id = 0;
    bool m_loading = false;
    bool m_has_model = false;
    QString m_cache_folder;
};

}  // namespace cetus::ui
