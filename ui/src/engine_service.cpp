// The worker thread's owner: starts it, forwards requests as queued calls, tracks which
// request runs, and shuts down in order (cancel, quit, wait) so no engine call outlives it.
#include "cetus/ui/engine_service.h"

#include "engine_worker.h"

namespace cetus::ui {

namespace {
void registerTypes() {
    qRegisterMetaType<LoadRequest>();
    qRegisterMetaType<ModelDescription>();
    qRegisterMetaType<GenerationParams>();
    qRegisterMetaType<GenerationChunk>();
    qRegisterMetaType<GenerationOutcome>();
    qRegisterMetaType<StepStats>();
    qRegisterMetaType<std::shared_ptr<std::atomic<bool>>>();
}
}  // namespace

EngineGenerationService::EngineGenerationService(QObject* parent) : GenerationService(parent) {
    registerTypes();
    m_thread.setObjectName(QStringLiteral("cetus-engine"));
    m_worker = new EngineWorker;
    m_worker->moveToThread(&m_thread);
    connect(&m_thread, &QThread::finished, m_worker, &QObject::deleteLater);
    connect(m_worker, &EngineWorker::loadProgress, this, &GenerationService::loadProgress);
    connect(m_worker, &EngineWorker::modelLoaded, this, [this](const ModelDescription& m) {
        m_loading = false;
        m_has_model = true;
        emit modelLoaded(m);
    });
    connect(m_worker, &EngineWorker::loadFailed, this, [this](const QString& message, bool cancelled) {
        m_loading = false;
        emit loadFailed(message, cancelled);
    });
    connect(m_worker, &EngineWorker::generationChunk, this, [this](const GenerationChunk& c) {
        if (c.request_id == m_running_id) emit generationChunk(c);
    });
    connect(m_worker, &EngineWorker::generationFinished, this, [this](const GenerationOutcome& o) {
        if (o.request_id == m_running_id) {
            m_running_id = 0;
            m_gen_cancel.reset();
        }
        emit generationFinished(o);
    });
    connect(m_worker, &EngineWorker::tokensCounted, this, &GenerationService::tokensCounted);
    m_thread.start();
}

EngineGenerationService::~EngineGenerationService() {
    if (m_load_cancel) m_load_cancel->store(true);
    if (m_gen_cancel) m_gen_cancel->store(true);
    m_thread.quit();
    m_thread.wait();
}

void EngineGenerationService::loadModel(const LoadRequest& request) {
    if (m_load_cancel) m_load_cancel->store(true);
    m_load_cancel = std::make_shared<std::atomic<bool>>(false);
    m_loading = true;
    QMetaObject::invokeMethod(
        m_worker, [worker = m_worker, request, cancel = m_load_cancel] { worker->load(request, cancel); },
        Qt::QueuedConnection);
}

void EngineGenerationService::cancelLoad() {
    if (m_load_cancel) m_load_cancel->store(true);
}

quint64 EngineGenerationService::generate(const GenerationParams& params) {
    const quint64 id = m_next_id++;
    if (m_running_id != 0) {
        refuseWhileBusy(id);
        return id;
    }
    m_running_id = id;
    m_gen_cancel = std::make_shared<std::atomic<bool>>(false);
    QMetaObject::invokeMethod(
        m_worker, [worker = m_worker, id, params, cancel = m_gen_cancel] { worker->generate(id, params, cancel); },
        Qt::QueuedConnection);
    return id;
}

// Queued behind whatever the worker does (an answer being generated finishes first).
void EngineGenerationService::forgetConversation(const QString& cache_tag) {
    QMetaObject::invokeMethod(
        m_worker, [worker = m_worker, folder = m_cache_folder, cache_tag] { worker->forgetConversation(folder, cache_tag); },
        Qt::QueuedConnection);
}

void EngineGenerationService::countTokens(quint64 id, const QString& text) {
    QMetaObject::invokeMethod(m_worker, [worker = m_worker, id, text] { worker->countTokens(id, text); }, Qt::QueuedConnection);
}

void EngineGenerationService::clearConversationCaches() {
    QMetaObject::invokeMethod(
        m_worker, [worker = m_worker, folder = m_cache_folder] { worker->clearConversationCaches(folder); }, Qt::QueuedConnection);
}

void EngineGenerationService::stop(quint64 request_id) {
    if (request_id == m_running_id && m_gen_cancel) m_gen_cancel->store(true);
}

}  // namespace cetus::ui
