// Routing panel: for one clicked token, each MoE layer's chosen experts as bars whose
// length is the gate weight (relative to the token's largest weight).
#include "cetus/ui/panels.h"

#include <QLabel>
#include <QPainter>
#include <QScrollArea>
#include <QVBoxLayout>

namespace cetus::ui {

namespace {
constexpr int k_row = 18, k_label = 34;
}

RoutingBars::RoutingBars(QWidget* parent) : QWidget(parent) {}

void RoutingBars::setRouting(const RoutingData& one) {
    m_r = one;
    setMinimumHeight(std::max(40, m_r.n_layers * k_row + 4));
    updateGeometry();
    update();
}

QSize RoutingBars::sizeHint() const { return {280, std::max(40, m_r.n_layers * k_row + 4)}; }

void RoutingBars::paintEvent(QPaintEvent*) {
    QPainter p(this);
    if (m_r.n_layers == 0 || m_r.top_k == 0) {
        p.setPen(palette().color(QPalette::PlaceholderText));
        p.drawText(rect(), Qt::AlignCenter | Qt::TextWordWrap, tr("Click a generated token in the chat to see its experts."));
        return;
    }
    float max_w = 0;
    for (float w : m_r.weights) max_w = std::max(max_w, w);
    if (max_w <= 0) max_w = 1;
    const double slot = double(width() - k_label - 4) / m_r.top_k;
    QFont f = font();
    f.setPointSizeF(std::max(6.0, f.pointSizeF() * 0.8));
    p.setFont(f);
    for (int l = 0; l < m_r.n_layers; ++l) {
        const int y = 2 + l * k_row;
        p.setPen(palette().color(QPalette::Text));
        p.drawText(QRect(0, y, k_label - 4, k_row), Qt::AlignRight | Qt::AlignVCenter, QStringLiteral("L%1").arg(m_r.first_layer + l));
        for (int k = 0; k < m_r.top_k; ++k) {
            const size_t i = size_t(l) * size_t(m_r.top_k) + size_t(k);
            const float w = m_r.weights[i];
            const double x = k_label + k * slot;
            const QRectF bar(x, y + 2, std::max(2.0, (slot - 3) * double(w / max_w)), k_row - 4);
            p.fillRect(QRectF(x, y + 2, slot - 3, k_row - 4), palette().color(QPalette::AlternateBase));
            p.fillRect(bar, ExpertHeatmap::colorFor(0.25 + 0.75 * double(w / max_w)));
            p.setPen(w / max_w > 0.6f ? Qt::black : palette().color(QPalette::Text));
            p.drawText(QRectF(x + 2, y, slot - 5, k_row), Qt::AlignLeft | Qt::AlignVCenter,
                       QStringLiteral("e%1 %2").arg(m_r.expert_ids[i]).arg(double(w), 0, 'f', 2));
        }
    }
}

RoutingPanel::RoutingPanel(QWidget* parent) : QWidget(parent) {
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(4, 4, 4, 4);
    m_label = new QLabel(tr("No token selected."));
    m_label->setObjectName(QStringLiteral("routingTitle"));
    m_label->setTextFormat(Qt::PlainText);
    layout->addWidget(m_label);
    auto* scroll = new QScrollArea;
    scroll->setWidgetResizable(true);
    scroll->setFrameShape(QFrame::NoFrame);
    m_bars = new RoutingBars;
    m_bars->setObjectName(QStringLiteral("routingBars"));
    scroll->setWidget(m_bars);
    layout->addWidget(scroll, 1);
}

void RoutingPanel::showToken(const QString& label, const RoutingData& one) {
    m_label->setText(label);
    m_label->setToolTip(tr("%1: the routed experts each MoE layer chose for this token, with their gate weights").arg(label));
    m_bars->setRouting(one);
}

void RoutingPanel::clear() {
    m_label->setText(tr("No token selected."));
    m_bars->setRouting({});
}

QString RoutingPanel::title() const { return m_label->text(); }

}  // namespace cetus::ui
