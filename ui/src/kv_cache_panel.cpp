// KV cache panel: bytes the MLA cache holds against the tokens in it, beside the lines
// standard multi-head attention and GQA-8 would need for the same model, plus the
// compression ratio in words. Lines are straight (bytes/token x tokens), so two points
// each suffice; the dot is the live cache.
#include "cetus/ui/panels.h"
#include "cetus/ui/theme.h"

#include <QChart>
#include <QEvent>
#include <QChartView>
#include <QLabel>
#include <QLineSeries>
#include <QScatterSeries>
#include <QValueAxis>
#include <QVBoxLayout>

#include <algorithm>

namespace cetus::ui {

QString formatBytes(double b) {
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (b >= 1024.0 && u < 4) { b /= 1024.0; ++u; }
    return QStringLiteral("%1 %2").arg(b, 0, 'f', u == 0 ? 0 : (b < 10 ? 2 : 1)).arg(QLatin1String(units[u]));
}

QString formatCount(double n) {
    if (n >= 1e9) return QStringLiteral("%1 B").arg(n / 1e9, 0, 'f', 1);
    if (n >= 1e6) return QStringLiteral("%1 M").arg(n / 1e6, 0, 'f', 1);
    if (n >= 1e3) return QStringLiteral("%1 K").arg(n / 1e3, 0, 'f', 1);
    return QString::number(qint64(n));
}

KvCachePanel::KvCachePanel(QWidget* parent) : QWidget(parent) {
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(4, 4, 4, 4);
    m_chart = new QChart;
    m_chart->setMargins(QMargins(2, 2, 2, 2));
    m_chart->legend()->setAlignment(Qt::AlignBottom);
    m_mla = new QLineSeries;
    m_mla->setName(tr("MLA (held)"));
    m_mha = new QLineSeries;
    m_mha->setName(tr("Multi-head attention"));
    m_gqa = new QLineSeries;
    m_gqa->setName(tr("GQA-8"));
    m_now = new QScatterSeries;
    m_now->setName(tr("now"));
    m_now->setMarkerSize(9);
    for (auto* s : {static_cast<QXYSeries*>(m_mla), static_cast<QXYSeries*>(m_mha), static_cast<QXYSeries*>(m_gqa), static_cast<QXYSeries*>(m_now)})
        m_chart->addSeries(s);
    m_x = new QValueAxis;
    m_x->setTitleText(tr("tokens in cache"));
    m_x->setLabelFormat(QStringLiteral("%d"));
    m_y = new QValueAxis;
    m_chart->addAxis(m_x, Qt::AlignBottom);
    m_chart->addAxis(m_y, Qt::AlignLeft);
    for (auto* s : m_chart->series()) {
        s->attachAxis(m_x);
        s->attachAxis(m_y);
    }
    m_view = new QChartView(m_chart);
    m_view->setRenderHint(QPainter::Antialiasing);
    m_view->setMinimumHeight(180);
    layout->addWidget(m_view, 1);
    m_label = new QLabel;
    m_label->setObjectName(QStringLiteral("kvSummary"));
    m_label->setWordWrap(true);
    layout->addWidget(m_label);
    applyChartTheme();
    setModel(std::nullopt);
}

void KvCachePanel::applyChartTheme() {
    styleChart(m_chart, palette());  // resets the series' pens
    QPen dashed = m_mha->pen();
    dashed.setStyle(Qt::DashLine);
    m_mha->setPen(dashed);
}

void KvCachePanel::changeEvent(QEvent* e) {
    QWidget::changeEvent(e);
    if (e->type() == QEvent::PaletteChange && m_chart) applyChartTheme();
}

// The engine's cache may use another element size than the BF16 figures of the
// model description (the CPU backend holds fp32) and also holds the MTP layers;
// the comparison lines are scaled the same way, so the ratios are like for like.
static double precisionFactor(const ModelDescription& m) {
    if (!m.kv_bytes_per_token_held || !m.kv_bytes_per_token_mla) return 1.0;
    return double(m.kv_bytes_per_token_held) / double(m.kv_bytes_per_token_mla);
}

void KvCachePanel::setModel(const std::optional<ModelDescription>& model) {
    m_model = model;
    m_mla->clear();
    m_mha->clear();
    m_gqa->clear();
    m_now->clear();
    if (!model || model->context_length <= 0) {
        m_chart->setTitle(tr("KV cache"));
        m_label->setText(!model ? tr("Load a model to see its cache against standard attention.")
                         : model->remote_reports_routing ? tr("The remote Cetus server reports its cache use while it answers.")
                         : model->remote ? tr("A remote engine does not report its KV cache; this panel shows the local engine only.")
                                         : tr("Load a model to see its cache against standard attention."));
        m_x->setRange(0, 1);
        m_y->setRange(0, 1);
        return;
    }
    const double n = double(model->context_length);
    const double held = double(model->kv_bytes_per_token_held ? model->kv_bytes_per_token_held : model->kv_bytes_per_token_mla);
    const double f = precisionFactor(*model);
    const double top = std::max({double(model->kv_bytes_per_token_mha) * f, double(model->kv_bytes_per_token_gqa8) * f, held}) * n;
    m_unit = top >= 1024.0 * 1024.0 * 1024.0 ? 1024.0 * 1024.0 * 1024.0 : top >= 1024.0 * 1024.0 ? 1024.0 * 1024.0 : 1024.0;
    const QString unit = m_unit >= 1024.0 * 1024.0 * 1024.0 ? QStringLiteral("GiB") : m_unit >= 1024.0 * 1024.0 ? QStringLiteral("MiB") : QStringLiteral("KiB");
    m_mla->append(0, 0);
    m_mla->append(n, held * n / m_unit);
    m_mha->append(0, 0);
    m_mha->append(n, double(model->kv_bytes_per_token_mha) * f * n / m_unit);
    m_gqa->append(0, 0);
    m_gqa->append(n, double(model->kv_bytes_per_token_gqa8) * f * n / m_unit);
    m_x->setRange(0, n);
    m_y->setRange(0, std::max(1e-9, top / m_unit) * 1.05);
    m_y->setTitleText(unit);
    m_chart->setTitle(model->kv_cache_type.isEmpty()
                          ? tr("KV cache, %1 per token").arg(formatBytes(held))
                          : tr("KV cache (%1), %2 per token").arg(model->kv_cache_type, formatBytes(held)));
    setStats(StepStats{});
}

void KvCachePanel::setStats(const StepStats& s) {
    if (!m_model) return;
    if (m_model->remote) {  // no per-token figures of the remote model: the served numbers only
        if (m_model->remote_reports_routing && s.tokens_cached > 0)
            m_label->setText(tr("Remote Cetus server: %1 tokens in cache hold %2 of %3.")
                                 .arg(s.tokens_cached).arg(formatBytes(double(s.kv_bytes_used)), formatBytes(double(s.kv_bytes_capacity))));
        return;
    }
    const double held_per = double(m_model->kv_bytes_per_token_held ? m_model->kv_bytes_per_token_held : m_model->kv_bytes_per_token_mla);
    const double tokens = double(s.tokens_cached);
    const double used = s.kv_bytes_used ? double(s.kv_bytes_used) : held_per * tokens;
    m_now->clear();
    m_now->append(tokens, used / m_unit);
    const double f = precisionFactor(*m_model);
    const double mha = double(m_model->kv_bytes_per_token_mha) * f * tokens;
    const double gqa = double(m_model->kv_bytes_per_token_gqa8) * f * tokens;
    const double ratio_mha = held_per > 0 ? double(m_model->kv_bytes_per_token_mha) * f / held_per : 0;
    const double ratio_gqa = held_per > 0 ? double(m_model->kv_bytes_per_token_gqa8) * f / held_per : 0;
    auto compare = [](double ratio) {
        return ratio >= 1.0 ? tr("%1× what MLA holds").arg(ratio, 0, 'f', 1)
                            : tr("only %1× of what MLA holds: this model has very few heads").arg(ratio, 0, 'f', 1);
    };
    QString text = tr("%1 tokens in cache hold %2. Standard multi-head attention would need %3 (%4); GQA-8 %5 (%6).")
                       .arg(s.tokens_cached)
                       .arg(formatBytes(used), formatBytes(mha), compare(ratio_mha), formatBytes(gqa), compare(ratio_gqa));
    // Where the prompt came from: the cache kept from the last request, the prefix
    // store (this conversation's rows, kept while others ran) or its files on disk
    // (kept from an earlier run).
    if (s.prompt_tokens > 0 && s.reused_prefix_tokens > 0)
        text += QLatin1Char(' ') + (s.prefix_from_disk   ? tr("%1 of the prompt's %2 tokens were read back from the cache on disk.")
                                    : s.prefix_restored ? tr("%1 of the prompt's %2 tokens came back from the prefix store.")
                                                        : tr("%1 of the prompt's %2 tokens were already in the cache."))
                                       .arg(s.reused_prefix_tokens)
                                       .arg(s.prompt_tokens);
    if (s.stored_prefixes > 0)
        text += QLatin1Char(' ') + tr("Kept for other conversations: %n prefix(es), %1.", nullptr, int(s.stored_prefixes))
                                       .arg(formatBytes(double(s.stored_prefix_bytes)));
    if (s.disk_prefixes > 0)
        text += QLatin1Char(' ') + tr("On disk for this model: %n conversation(s), %1.", nullptr, int(s.disk_prefixes))
                                       .arg(formatBytes(double(s.disk_prefix_bytes)));
    m_label->setText(text);
}

QString KvCachePanel::summary() const { return m_label->text(); }
int KvCachePanel::pointsShown() const { return int(m_now->count()); }

ModelPanel::ModelPanel(QWidget* parent) : QWidget(parent) {
    auto* layout = new QVBoxLayout(this);
    m_label = new QLabel;
    m_label->setObjectName(QStringLiteral("modelInfo"));
    m_label->setWordWrap(true);
    m_label->setTextInteractionFlags(Qt::TextSelectableByMouse);
    m_label->setAlignment(Qt::AlignTop | Qt::AlignLeft);
    layout->addWidget(m_label);
    layout->addStretch();
    setModel(std::nullopt);
}

void ModelPanel::setModel(const std::optional<ModelDescription>& m) {
    if (!m) {
        m_label->setText(tr("No model loaded. Use <b>File → Open model…</b> to pick a model folder or GGUF file."));
        return;
    }
    QString rows;
    auto row = [&rows](const QString& k, const QString& v) { rows += QStringLiteral("<tr><td><b>%1</b></td><td>%2</td></tr>").arg(k, v.toHtmlEscaped()); };
    row(tr("Model"), m->name);
    if (m->remote) {
        row(tr("Endpoint"), m->model_dir);
        row(tr("Engine"), m->backend);
        if (m->n_moe_layers > 0) row(tr("Experts"), tr("%1 MoE layers of %2 routed experts, %3 per token").arg(m->n_moe_layers).arg(m->n_routed_experts).arg(m->n_active_experts));
        m_label->setText(QStringLiteral("<table cellspacing=3>%1</table><p>%2</p>")
                             .arg(rows, m->remote_reports_routing ? tr("A Cetus server: routing and statistics come with every token.")
                                                                  : tr("A remote engine describes only its model's name.")));
        return;
    }
    row(tr("Architecture"), m->model_type);
    row(tr("Parameters"), tr("%1 total, %2 active per token").arg(formatCount(double(m->n_params_total)), formatCount(double(m->n_params_active))));
    row(tr("Layers"), tr("%1 (%2 dense, %3 MoE)").arg(m->n_layers).arg(m->first_k_dense_replace).arg(m->n_moe_layers));
    row(tr("Experts"), tr("%1 routed + %2 shared, %3 per token").arg(m->n_routed_experts).arg(m->n_shared_experts).arg(m->n_active_experts));
    row(tr("Routing"), m->routing);
    row(tr("MTP layers"), QString::number(m->n_mtp_layers));
    row(tr("Context"), tr("%1 tokens").arg(m->context_length));
    row(tr("Weights"), tr("%1, %2").arg(m->weight_dtype, formatBytes(double(m->weight_bytes))));
    row(tr("Backend"), m->backend);
    row(tr("Chat template"), m->chat_template);
    row(tr("Folder"), m->model_dir);
    m_label->setText(QStringLiteral("<table cellspacing=3>%1</table>").arg(rows));
}

QString ModelPanel::text() const { return m_label->text(); }

}  // namespace cetus::ui
