// Routing panel: for one clicked token, its probability under the model and its step's
// most likely tokens, then each MoE layer's chosen experts as bars whose length is the
// gate weight (relative to the token's largest weight).
#include "cetus/ui/panels.h"

#include <QLabel>
#include <QPainter>
#include <QTextDocument>

#include <cmath>
#include <limits>
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
        p.drawText(rect(), Qt::AlignCenter | Qt::TextWordWrap,
                   m_placeholder.isEmpty() ? tr("Click a generated token in the chat to see its experts.") : m_placeholder);
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
    m_probabilities = new QLabel;
    m_probabilities->setObjectName(QStringLiteral("tokenProbabilities"));
    m_probabilities->setTextFormat(Qt::RichText);
    m_probabilities->setWordWrap(true);
    m_probabilities->setTextInteractionFlags(Qt::TextSelectableByMouse);
    m_probabilities->hide();
    layout->addWidget(m_probabilities);
    auto* scroll = new QScrollArea;
    scroll->setWidgetResizable(true);
    scroll->setFrameShape(QFrame::NoFrame);
    m_bars = new RoutingBars;
    m_bars->setObjectName(QStringLiteral("routingBars"));
    scroll->setWidget(m_bars);
    layout->addWidget(scroll, 1);
}

QString RoutingPanel::percentText(float logprob) {
    if (!(logprob > -std::numeric_limits<float>::infinity())) return QStringLiteral("0 %");
    const double p = std::exp(double(logprob)) * 100.0;
    if (p >= 0.1) return QStringLiteral("%1 %").arg(p, 0, 'f', 1);
    if (p >= 0.01) return QStringLiteral("%1 %").arg(p, 0, 'f', 2);
    return QStringLiteral("< 0.01 %");
}

QString RoutingPanel::visibleToken(const QString& text) {
    if (text.isEmpty()) return tr("(nothing)");
    QString v = text;
    v.replace(QLatin1Char(' '), QChar(0x2423)).replace(QLatin1Char('\n'), QChar(0x21B5)).replace(QLatin1Char('\t'), QChar(0x2192));
    return v;
}

void RoutingPanel::showToken(const QString& label, const RoutingData& one, const TokenProbabilityData& p) {
    m_label->setText(label);
    m_label->setToolTip(tr("%1: the routed experts each MoE layer chose for this token, with their gate weights").arg(label));
    m_bars->setRouting(one);
    m_bars->setPlaceholder(one.n_layers > 0 ? QString() : tr("The engine that wrote this answer reported no expert routing."));
    if (p.nTokens() != 1) {
        m_probabilities->setText(QStringLiteral("<i>%1</i>")
                                     .arg(tr("No token probabilities were recorded for this answer.").toHtmlEscaped()));
        m_probabilities->setToolTip(tr("Model → Record token probabilities records them with every new answer."));
        m_probabilities->show();
        return;
    }
    const float chosen = p.logprobs[0];
    QString html = QStringLiteral("<p>%1</p>").arg(tr("Probability under the model: <b>%1</b>").arg(percentText(chosen).toHtmlEscaped()));
    if (p.top_n > 0) {
        html += QStringLiteral("<table cellspacing=\"0\" cellpadding=\"1\">");
        html += QStringLiteral("<tr><td colspan=\"2\">%1</td></tr>").arg(tr("Most likely at this step:").toHtmlEscaped());
        bool marked = false;
        for (size_t k = 0; k < p.alt_texts.size() && k < p.alt_logprobs.size(); ++k) {
            // The chosen token in bold: the first with its figure (computed once, so equal;
            // a tie with another token would be equally likely anyway).
            const bool is_chosen = !marked && p.alt_logprobs[k] == chosen;
            marked = marked || is_chosen;
            const QString token = QStringLiteral("<code>%1</code>").arg(visibleToken(p.alt_texts[k]).toHtmlEscaped());
            const QString percent = percentText(p.alt_logprobs[k]).toHtmlEscaped();  // "< 0.01 %"
            html += is_chosen ? QStringLiteral("<tr><td><b>%1</b></td><td align=\"right\"><b>%2</b></td></tr>").arg(token, percent)
                              : QStringLiteral("<tr><td>%1</td><td align=\"right\">%2</td></tr>").arg(token, percent);
        }
        html += QStringLiteral("</table>");
    }
    m_probabilities->setText(html);
    m_probabilities->setToolTip(tr("The model's own probabilities (its raw logits), before temperature, top-k, top-p "
                                   "and the repetition penalty: a sampled token may be one the model found unlikely."));
    m_probabilities->show();
}

void RoutingPanel::clear() {
    m_label->setText(tr("No token selected."));
    m_bars->setRouting({});
    m_bars->setPlaceholder({});
    m_probabilities->clear();
    m_probabilities->hide();
}

QString RoutingPanel::probabilitiesText() const {
    if (m_probabilities->isHidden()) return {};
    QTextDocument doc;
    doc.setHtml(m_probabilities->text());
    return doc.toPlainText();
}

QString RoutingPanel::title() const { return m_label->text(); }

}  // namespace cetus::ui
