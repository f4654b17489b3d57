// A scripted GenerationService for UI tests: "loads" instantly, streams a fixed answer
// word by word on a timer (one batch per word), honours stop, and fails on request.
#pragma once

#include <cetus/ui/generation_service.h>

#include <QTimer>

#include <algorithm>

namespace cetus::ui::test {

class FakeGenerationService : public GenerationService {
    Q_OBJECT
public:
    QString answer = QStringLiteral("Hello **world**, here is code:\n\n```cpp\nint x = 1;\n```\n\nand the end.");
    int interval_ms = 5;
    QString fail_with;  // non-empty: the next request fails after its first word
    // Non-empty: after the last word, this text in a chunk of its own with no token (as
    // the engine releases held-back text when an answer stops).
    QString trailing_text;
    GenerationParams last_params;
    DeviceChoice last_device = DeviceChoice::Auto;
    bool last_fp8 = false;
    bool last_kv_bf16 = false;
    bool last_int8 = false;
    bool last_tune = false;
    qint64 last_context = 0;
    int last_threads = -1;
    int loads = 0;
    QStringList forgotten;  // forgetConversation's tags
    QString cache_folder;
    int clears = 0;

    void loadModel(const LoadRequest& r) override {
        m_loading = true;
        ++loads;
        last_device = r.device;
        last_fp8 = r.fp8_on_load;
        last_kv_bf16 = r.kv_cache_bf16;
        last_int8 = r.int8_activations;
        last_tune = r.tune_steps;
        last_context = r.max_context;
        last_threads = r.n_threads;
        QTimer::singleShot(0, this, [this, r] {
            m_loading = false;
            if (r.model_dir.contains(QStringLiteral("bad"))) {
                emit loadFailed(QStringLiteral("%1/config.json: cannot open").arg(r.model_dir), false);
                return;
            }
            if (r.model_dir.contains(QStringLiteral("big")) && r.device == DeviceChoice::Gpu && !r.fp8_on_load) {
                emit loadFailed(QStringLiteral("needs 31.4 GiB of GPU memory for weights + cache, GPU has 22.1 GiB "
                                               "free; FP8 weights need about half the memory (cetus-cli --fp8, or "
                                               "Model > FP8 weights in the app)"),
                                false);
                return;
            }
            if (r.device == DeviceChoice::Gpu && !r.model_dir.contains(QStringLiteral("big"))) {  // as without a GPU
                emit loadFailed(QStringLiteral("no usable GPU for the CUDA backend: no NVIDIA driver for CUDA 13.0"), false);
                return;
            }
            m_has_model = true;
            ModelDescription m;
            m.model_dir = r.model_dir;
            m.name = QStringLiteral("fake-moe");
            m.model_type = QStringLiteral("deepseek_v3");
            m.backend = QStringLiteral("cpu");
            m.n_layers = 5;
            m.n_moe_layers = 4;
            m.first_k_dense_replace = 1;
            m.n_routed_experts = 16;
            m.n_shared_experts = 1;
            m.n_active_experts = 2;
            m.max_context_length = 16384;
            m.context_length = std::min<qint64>(r.max_context, m.max_context_length);
            m.kv_bytes_per_token_mla = m.kv_bytes_per_token_held = 576 * 2 * 5;
            if (r.kv_cache_bf16) m.kv_cache_type = QStringLiteral("bf16");  // else unknown
            m.kv_bytes_per_token_mha = 2 * 16 * 128 * 2 * 5;
            m.kv_bytes_per_token_gqa8 = 2 * 8 * 128 * 2 * 5;
            // An endpoint that does not take continue_final_message.
            if (r.model_dir.contains(QStringLiteral("remote-nocontinue"))) {
                m.remote = true;
                m.remote_continues = false;
                m.backend = QStringLiteral("remote");
            }
            emit modelLoaded(m);
        });
    }
    void setConversationCacheFolder(const QString& folder) override { cache_folder = folder; }
    void forgetConversation(const QString& cache_tag) override { forgotten << cache_tag; }
    // One token per word, answered after a turn of the event loop (as the worker does).
    int counts_asked = 0;
    void countTokens(quint64 id, const QString& text) override {
        ++counts_asked;
        if (!m_has_model) return;
        const qint64 n = text.split(QLatin1Char(' '), Qt::SkipEmptyParts).size();
        QTimer::singleShot(0, this, [this, id, n] { emit tokensCounted(id, n); });
    }
    void clearConversationCaches() override { ++clears; }
    void cancelLoad() override {}
    bool isLoading() const override { return m_loading; }
    bool hasModel() const override { return m_has_model; }

    quint64 generate(const GenerationParams& params) override {
        last_params = params;
        const quint64 id = ++m_next;
        m_running = id;
        m_words = answer.split(QLatin1Char(' '));
        m_pos = 0;
        m_stats = StepStats{};
        m_stats.prompt_tokens = 12;
        m_timer.disconnect();
        m_timer.setInterval(interval_ms);
        connect(&m_timer, &QTimer::timeout, this, [this, id] { step(id); });
        m_timer.start();
        return id;
    }
    void stop(quint64 id) override {
        if (id == m_running) m_stop = true;
    }
    bool isGenerating() const override { return m_running != 0; }
    int chunksSent() const { return m_chunks; }

private:
    void step(quint64 id) {
        GenerationOutcome o;
        o.request_id = id;
        if (m_pos >= m_words.size() && !trailing_text.isEmpty() && !m_stop) {
            GenerationChunk c;
            c.request_id = id;
            c.text = trailing_text;
            c.stats = m_stats;
            trailing_text.clear();
            emit generationChunk(c);
            return;
        }
        if (m_stop || m_pos >= m_words.size() || (!fail_with.isEmpty() && m_pos == 1)) {
            m_timer.stop();
            o.finish = m_stop ? FinishKind::Cancelled : !fail_with.isEmpty() ? FinishKind::Error : FinishKind::Eos;
            o.error = fail_with;
            o.stats = m_stats;
            fail_with.clear();
            m_stop = false;
            m_running = 0;
            emit generationFinished(o);
            return;
        }
        GenerationChunk c;
        c.request_id = id;
        const QString space = m_pos ? QStringLiteral(" ") : QString();
        c.text = space + m_words[m_pos];
        ++m_pos;
        c.token_text_ends = {int(c.text.size())};
        c.drafted = {m_pos % 2 == 0};
        c.routing.n_layers = 4;
        c.routing.top_k = 2;
        c.routing.first_layer = 1;
        for (int l = 0; l < 4; ++l) {
            c.routing.expert_ids.insert(c.routing.expert_ids.end(), {(l + m_pos) % 16, (l * 3 + 5) % 16});
            c.routing.weights.insert(c.routing.weights.end(), {0.7f, 0.3f});
        }
        if (last_params.token_alternatives >= 0) {  // each word's figures, and as many alternatives
            c.probabilities.top_n = last_params.token_alternatives;
            c.probabilities.logprobs = {-0.125f * float(m_pos)};
            for (int k = 0; k < last_params.token_alternatives; ++k) {
                c.probabilities.alt_texts.push_back(k == 0 ? c.text : QStringLiteral("alt%1").arg(k));
                c.probabilities.alt_logprobs.push_back(-0.125f * float(m_pos) - float(k));
            }
        }
        m_stats.generated_tokens = m_pos;
        m_stats.verify_steps = (m_pos + 1) / 2;
        m_stats.drafts_proposed = m_stats.verify_steps;
        m_stats.drafts_accepted = m_pos / 2;
        m_stats.tokens_cached = m_stats.prompt_tokens + m_pos;
        m_stats.kv_bytes_used = quint64(m_stats.tokens_cached) * 576 * 2 * 5;
        m_stats.decode_tokens_per_s = 123.4;
        m_stats.reused_prefix_tokens = 8;  // as if the prompt came back from the prefix store
        m_stats.prefix_restored = true;
        m_stats.stored_prefixes = 2;
        m_stats.stored_prefix_bytes = 3 << 20;
        m_stats.prefill_tokens_per_s = 456.7;
        c.stats = m_stats;
        ++m_chunks;
        emit generationChunk(c);
    }

    QTimer m_timer;
    QStringList m_words;
    int m_pos = 0, m_chunks = 0;
    quint64 m_next = 0, m_running = 0;
    bool m_stop = false, m_loading = false, m_has_model = false;
    StepStats m_stats;
};

}  // namespace cetus::ui::test
