// Experts panel: a layers x experts heatmap of routing counts, for the current answer
// or the whole conversation. Shared experts (always active) sit in marked columns on the
// left. Colour is the share of a layer's choices, square-root scaled so rare experts
// still show; 60 layers x 256 experts stays readable because cells shrink to 1-2 px and
// the tooltip gives exact numbers.
#include "cetus/ui/panels.h"

#include <QComboBox>
#include <QHelpEvent>
#include <QHBoxLayout>
#include <QLabel>
#include <QPainter>
#include <QToolTip>
#include <QVBoxLayout>

#include <cmath>
#include <numeric>

namespace cetus::ui {

namespace {
constexpr int k_left = 30, k_top = 4, k_bottom = 16;
}

ExpertHeatmap::ExpertHeatmap(QWidget* parent) : QWidget(parent) {
    setMouseTracking(true);
    setSizePolicy(QSizePolicy::Expanding, QSizePolicy::Expanding);
}

QSize ExpertHeatmap::sizeHint() const { return {300, std::max(120, m_layers * 8 + k_top + k_bottom)}; }

QColor ExpertHeatmap::colorFor(double t) {
    // Viridis, sampled at five stops: dark blue -> teal -> green -> yellow.
    static const QColor stops[] = {QColor(68, 1, 84), QColor(59, 82, 139), QColor(33, 145, 140), QColor(94, 201, 98), QColor(253, 231, 37)};
    t = std::clamp(t, 0.0, 1.0) * 4.0;
    const int i = std::min(3, int(t));
    const double f = t - i;
    const QColor& a = stops[i];
    const QColor& b = stops[i + 1];
    return QColor(int(a.red() + f * (b.red() - a.red())), int(a.green() + f * (b.green() - a.green())),
                  int(a.blue() + f * (b.blue() - a.blue())));
}

void ExpertHeatmap::setData(int n_layers, int n_experts, int n_shared, int first_layer, std::vector<qint64> counts) {
    m_layers = n_layers;
    m_experts = n_experts;
    m_shared = n_shared;
    m_first = first_layer;
    m_counts = std::move(counts);
    if (m_counts.size() != size_t(n_layers) * size_t(n_experts)) m_counts.assign(size_t(n_layers) * size_t(n_experts), 0);
    updateGeometry();
    update();
}

qint64 ExpertHeatmap::total() const { return std::accumulate(m_counts.begin(), m_counts.end(), qint64(0)); }

QRectF ExpertHeatmap::cellArea() const {
    return QRectF(k_left, k_top, std::max(1, width() - k_left - 4), std::max(1, height() - k_top - k_bottom));
}

void ExpertHeatmap::paintEvent(QPaintEvent*) {
    QPainter p(this);
    p.fillRect(rect(), palette().color(QPalette::Base));
    if (m_layers == 0 || m_experts == 0) {
        p.setPen(palette().color(QPalette::PlaceholderText));
        p.drawText(rect(), Qt::AlignCenter | Qt::TextWordWrap, tr("Expert activity appears here while the model answers (MoE models only)."));
        return;
    }
    const QRectF area = cellArea();
    const int columns = m_shared + m_experts;
    const double cw = area.width() / columns, ch = area.height() / m_layers;
    for (int l = 0; l < m_layers; ++l) {
        const qint64* row = m_counts.data() + size_t(l) * size_t(m_experts);
        const qint64 layer_total = std::accumulate(row, row + m_experts, qint64(0));
        const qint64 layer_max = *std::max_element(row, row + m_experts);
        for (int s = 0; s < m_shared; ++s) {
            const QRectF cell(area.left() + s * cw, area.top() + l * ch, cw, ch);
            p.fillRect(cell, layer_total > 0 ? QColor(200, 80, 60) : palette().color(QPalette::Mid));
        }
        for (int e = 0; e < m_experts; ++e) {
            const QRectF cell(area.left() + (m_shared + e) * cw, area.top() + l * ch, cw + 0.5, ch + 0.5);
            const double t = layer_max > 0 ? std::sqrt(double(row[e]) / double(layer_max)) : 0.0;
            p.fillRect(cell, row[e] == 0 ? QColor(30, 30, 40) : colorFor(t));
        }
    }
    p.setPen(palette().color(QPalette::Text));
    QFont f = font();
    f.setPointSizeF(std::max(6.0, f.pointSizeF() * 0.75));
    p.setFont(f);
    const int label_every = std::max(1, int(std::ceil(12.0 / std::max(1.0, ch))));
    for (int l = 0; l < m_layers; l += label_every)
        p.drawText(QRectF(0, area.top() + l * ch, k_left - 3, std::max(ch, 10.0)), Qt::AlignRight | Qt::AlignTop, QString::number(m_first + l));
    if (m_shared > 0) p.drawText(QRectF(area.left(), area.bottom() + 1, std::max(cw * m_shared, 12.0), k_bottom), Qt::AlignLeft, QStringLiteral("S"));
    p.drawText(QRectF(area.left() + m_shared * cw, area.bottom() + 1, area.width() - m_shared * cw, k_bottom), Qt::AlignCenter,
               tr("routed experts 0–%1").arg(m_experts - 1));
}

bool ExpertHeatmap::event(QEvent* e) {
    if (e->type() != QEvent::ToolTip) return QWidget::event(e);
    auto* he = static_cast<QHelpEvent*>(e);
    const QRectF area = cellArea();
    if (m_layers == 0 || !area.contains(he->pos())) {
        QToolTip::hideText();
        return true;
    }
    const int columns = m_shared + m_experts;
    const int col = std::clamp(int((he->pos().x() - area.left()) / (area.width() / columns)), 0, columns - 1);
    const int l = std::clamp(int((he->pos().y() - area.top()) / (area.height() / m_layers)), 0, m_layers - 1);
    const qint64* row = m_counts.data() + size_t(l) * size_t(m_experts);
    const qint64 layer_total = std::accumulate(row, row + m_experts, qint64(0));
    QString text;
    if (col < m_shared) {
        text = tr("Layer %1, shared expert %2: active for every token").arg(m_first + l).arg(col);
    } else {
        const int ex = col - m_shared;
        const double share = layer_total > 0 ? 100.0 * double(row[ex]) / double(layer_total) : 0.0;
        text = tr("Layer %1, expert %2: chosen %3 times (%4 % of this layer's choices)")
                   .arg(m_first + l).arg(ex).arg(row[ex]).arg(share, 0, 'f', 1);
    }
    QToolTip::showText(he->globalPos(), text, this);
    return true;
}

ExpertPanel::ExpertPanel(QWidget* parent) : QWidget(parent) {
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(4, 4, 4, 4);
    auto* top = new QHBoxLayout;
    m_scope = new QComboBox;
    m_scope->setObjectName(QStringLiteral("expertScope"));
    m_scope->addItems({tr("This answer"), tr("Whole conversation")});
    top->addWidget(new QLabel(tr("Show:")));
    top->addWidget(m_scope);
    top->addStretch();
    layout->addLayout(top);
    m_map = new ExpertHeatmap;
    m_map->setObjectName(QStringLiteral("expertHeatmap"));
    layout->addWidget(m_map, 1);
    m_label = new QLabel;
    m_label->setWordWrap(true);
    layout->addWidget(m_label);
    connect(m_scope, &QComboBox::currentIndexChanged, this, &ExpertPanel::scopeChanged);
}

void ExpertPanel::setModel(const std::optional<ModelDescription>& model) {
    m_model = model;
    setCounts({}, {});
}

bool ExpertPanel::showsConversation() const { return m_scope->currentIndex() == 1; }

void ExpertPanel::setCounts(const std::vector<qint64>& answer, const std::vector<qint64>& conversation) {
    if (!m_model || m_model->n_moe_layers == 0) {
        m_map->setData(0, 0, 0, 0, {});
        m_label->setText(!m_model ? QString()
                         : m_model->remote_reports_routing ? tr("The remote Cetus server reports expert routing; the map appears after its first answer.")
                         : m_model->remote ? tr("A remote engine does not report expert routing; this panel shows the local engine only.")
                                           : tr("This model has no MoE layers."));
        return;
    }
    m_map->setData(int(m_model->n_moe_layers), int(m_model->n_routed_experts), int(m_model->n_shared_experts),
                   int(m_model->first_k_dense_replace), showsConversation() ? conversation : answer);
    const qint64 n = m_map->total();
    const qint64 per_token = m_model->n_moe_layers * std::max<qint64>(1, m_model->n_active_experts);
    m_label->setText(tr("%1 routing choices (%2 tokens). Columns marked S are shared experts, used by every token. "
                        "Brighter = chosen more often within its layer.")
                         .arg(n).arg(per_token > 0 ? n / per_token : 0));
}

}  // namespace cetus::ui
