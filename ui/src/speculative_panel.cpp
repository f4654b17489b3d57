// Speculative decoding panel: MTP acceptance rate and tokens per main-model step over
// the answer, prefill and decode throughput, backend and memory in use.
#include "cetus/ui/panels.h"
#include "cetus/ui/theme.h"

#include <QChart>
#include <QEvent>
#include <QChartView>
#include <QLabel>
#include <QLineSeries>
#include <QValueAxis>
#include <QVBoxLayout>

namespace cetus::ui {

void SpeculativePanel::changeEvent(QEvent* e) {
    QWidget::changeEvent(e);
    if (e->type() != QEvent::PaletteChange || !m_chart) return;
    styleChart(m_chart, palette());
}

SpeculativePanel::SpeculativePanel(QWidget* parent) : QWidget(parent) {
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(4, 4, 4, 4);
    m_chart = new QChart;
    m_chart->setMargins(QMargins(2, 2, 2, 2));
    m_chart->setTitle(tr("Speculative decoding (MTP)"));
    m_chart->legend()->setAlignment(Qt::AlignBottom);
    m_accept = new QLineSeries;
    m_accept->setName(tr("acceptance %"));
    m_per_step = new QLineSeries;
    m_per_step->setName(tr("tokens per step"));
    m_chart->addSeries(m_accept);
    m_chart->addSeries(m_per_step);
    m_x = new QValueAxis;
    m_x->setTitleText(tr("tokens generated"));
    m_x->setLabelFormat(QStringLiteral("%d"));
    m_y_rate = new QValueAxis;
    m_y_rate->setRange(0, 100);
    m_y_rate->setLabelFormat(QStringLiteral("%d%%"));
    m_y_steps = new QValueAxis;
    m_y_steps->setRange(0, 2.5);
    m_chart->addAxis(m_x, Qt::AlignBottom);
    m_chart->addAxis(m_y_rate, Qt::AlignLeft);
    m_chart->addAxis(m_y_steps, Qt::AlignRight);
    m_accept->attachAxis(m_x);
    m_accept->attachAxis(m_y_rate);
    m_per_step->attachAxis(m_x);
    m_per_step->attachAxis(m_y_steps);
    styleChart(m_chart, palette());
    auto* view = new QChartView(m_chart);
    view->setRenderHint(QPainter::Antialiasing);
    view->setMinimumHeight(170);
    layout->addWidget(view, 1);
    m_label = new QLabel;
    m_label->setObjectName(QStringLiteral("speculativeSummary"));
    m_label->setWordWrap(true);
    layout->addWidget(m_label);
    setHistory({});
}

void SpeculativePanel::setModel(const std::optional<ModelDescription>& model) {
    m_model = model;
    setHistory({});
}

void SpeculativePanel::setHistory(const std::vector<StepStats>& history) {
    QList<QPointF> accept, steps;
    double max_steps = 2.0;
    for (const StepStats& s : history) {
        if (s.generated_tokens <= 0) continue;
        accept.append(QPointF(double(s.generated_tokens), 100.0 * s.acceptanceRate()));
        steps.append(QPointF(double(s.generated_tokens), s.tokensPerStep()));
        max_steps = std::max(max_steps, s.tokensPerStep());
    }
    m_accept->replace(accept);
    m_per_step->replace(steps);
    m_x->setRange(0, std::max(10.0, accept.isEmpty() ? 10.0 : accept.back().x()));
    m_y_steps->setRange(0, std::ceil(max_steps + 0.5));
    QStringList lines;
    if (!history.empty()) {
        const StepStats& s = history.back();
        lines << tr("Prefill %1 tok/s · decode %2 tok/s").arg(s.prefill_tokens_per_s, 0, 'f', 1).arg(s.decode_tokens_per_s, 0, 'f', 1);
        if (s.drafts_proposed > 0)
            lines << tr("Drafts: %1 of %2 accepted (%3 %), %4 tokens per step")
                         .arg(s.drafts_accepted).arg(s.drafts_proposed).arg(100.0 * s.acceptanceRate(), 0, 'f', 0)
                         .arg(s.tokensPerStep(), 0, 'f', 2);
        else
            lines << tr("No drafts in this answer.");
        lines << tr("Prompt %1 tokens (%2 reused from cache)").arg(s.prompt_tokens).arg(s.reused_prefix_tokens);
    } else {
        lines << tr("Statistics appear while the model answers.");
    }
    if (m_model && m_model->remote && !m_model->remote_reports_routing) {
        lines << tr("A remote engine reports no speculative decoding statistics; the speeds above are measured by the app.");
    } else if (m_model && m_model->remote) {
        lines << tr("Device: %1 (%2)").arg(m_model->backend, m_model->model_dir.toHtmlEscaped());
    } else if (m_model) {
        lines << tr("Device: %1 · memory: %2 weights + %3 KV cache capacity")
                     .arg(m_model->backend, formatBytes(double(m_model->weight_bytes)),
                          formatBytes(history.empty() ? 0.0 : double(history.back().kv_bytes_capacity)));
    }
    m_label->setText(lines.join(QStringLiteral("<br>")));
}

QString SpeculativePanel::summary() const { return m_label->text(); }
int SpeculativePanel::pointsShown() const { return int(m_accept->count()); }

}  // namespace cetus::ui
