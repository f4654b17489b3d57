// Experts panel: a layers x experts heatmap of routing counts, for the current answer
// or the whole conversation, or one answer's tokens x experts timeline in one layer. Shared experts (always active) sit in marked columns on the
// left. Colour is the share of a layer's choices, square-root scaled so rare experts
// still show; 60 layers x 256 experts stays readable because cells shrink to 1-2 px and
// the tooltip gives exact numbers.
#include "cetus/ui/panels.h"

#include <QComboBox>
#include <QHelpEvent>
#include <QHBoxLayout>
#include <QLabel>
#include <QMouseEvent>
#include <QPainter>
#include <QScrollArea>
#include <QSpinBox>
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

ExpertTimeline::ExpertTimeline(QWidget* parent) : QWidget(parent) {
    setMouseTracking(true);
    setSizePolicy(QSizePolicy::Fixed, QSizePolicy::Expanding);
}

void ExpertTimeline::setData(const RoutingData& routing, int n_experts, int layer, int highlighted) {
    m_experts = n_experts;
    m_layer = std::clamp(layer, 0, std::max(0, routing.n_layers - 1));
    m_highlighted = highlighted;
    m_tokens = int(routing.nTokens());
    m_top_k = routing.top_k;
    m_first_layer = routing.first_layer;
    m_ids.clear();
    m_weights.clear();
    const size_t per_token = size_t(routing.n_layers) * size_t(routing.top_k);
    for (int t = 0; t < m_tokens; ++t) {
        const size_t at = size_t(t) * per_token + size_t(m_layer) * size_t(m_top_k);
        m_ids.insert(m_ids.end(), routing.expert_ids.begin() + std::ptrdiff_t(at), routing.expert_ids.begin() + std::ptrdiff_t(at + size_t(m_top_k)));
        m_weights.insert(m_weights.end(), routing.weights.begin() + std::ptrdiff_t(at), routing.weights.begin() + std::ptrdiff_t(at + size_t(m_top_k)));
    }
    setFixedWidth(sizeHint().width());
    update();
}

QSize ExpertTimeline::sizeHint() const {
    return {k_left + 4 + std::max(1, tokens()) * k_column, std::max(120, std::min(m_experts, 256) + k_top + k_bottom)};
}

QRectF ExpertTimeline::cellArea() const {
    return QRectF(k_left, k_top, double(tokens() * k_column), std::max(1.0, double(height() - k_top - k_bottom)));
}

int ExpertTimeline::tokenAt(const QPoint& p) const {
    const QRectF area = cellArea();
    if (tokens() == 0 || !area.contains(p)) return -1;
    return std::clamp(int((p.x() - area.left()) / k_column), 0, tokens() - 1);
}

void ExpertTimeline::paintEvent(QPaintEvent* event) {
    QPainter p(this);
    const int n = tokens();
    if (n == 0 || m_experts == 0 || m_top_k == 0) {
        p.setPen(palette().color(QPalette::PlaceholderText));
        p.drawText(rect().adjusted(4, 0, 0, 0), Qt::AlignLeft | Qt::AlignVCenter | Qt::TextWordWrap,
                   tr("Click a generated token to see its answer here."));
        return;
    }
    const QRectF area = cellArea();
    p.fillRect(area, ExpertHeatmap::colorFor(0.0));
    const double row = area.height() / m_experts;
    float max_w = 0;
    for (float w : m_weights) max_w = std::max(max_w, w);
    if (max_w <= 0) max_w = 1;
    // Only the columns in view (a long answer is wider than the panel by far).
    const int t0 = std::clamp(int((event->rect().left() - area.left()) / k_column) - 1, 0, n);
    const int t1 = std::clamp(int((event->rect().right() - area.left()) / k_column) + 2, 0, n);
    for (int t = t0; t < t1; ++t) {
        for (int k = 0; k < m_top_k; ++k) {
            const size_t i = size_t(t) * size_t(m_top_k) + size_t(k);
            const int e = m_ids[i];
            if (e < 0 || e >= m_experts) continue;
            const double w = double(m_weights[i] / max_w);
            p.fillRect(QRectF(area.left() + t * k_column, area.top() + e * row, k_column - 1, std::max(1.0, row)),
                       ExpertHeatmap::colorFor(0.3 + 0.7 * std::sqrt(std::max(0.0, w))));
        }
    }
    if (m_highlighted >= 0 && m_highlighted < n) {
        p.setPen(QPen(palette().color(QPalette::Highlight), 1.5));
        p.drawRect(QRectF(area.left() + m_highlighted * k_column - 1, area.top() - 2, k_column + 1, area.height() + 4));
    }
    QFont f = font();
    f.setPointSizeF(std::max(6.0, f.pointSizeF() * 0.8));
    p.setFont(f);
    p.setPen(palette().color(QPalette::Text));
    p.drawText(QRectF(0, area.top(), k_left - 4, 14), Qt::AlignRight | Qt::AlignTop, QStringLiteral("0"));
    p.drawText(QRectF(0, area.bottom() - 14, k_left - 4, 14), Qt::AlignRight | Qt::AlignBottom,
               QString::number(m_experts - 1));
    for (int t = t0 - t0 % 20; t < t1; t += 20)
        p.drawText(QRectF(area.left() + t * k_column, area.bottom() + 1, 40, k_bottom - 2), Qt::AlignLeft | Qt::AlignTop,
                   QString::number(t + 1));
}

bool ExpertTimeline::event(QEvent* e) {
    if (e->type() != QEvent::ToolTip) return QWidget::event(e);
    auto* he = static_cast<QHelpEvent*>(e);
    const int t = tokenAt(he->pos());
    if (t < 0) {
        QToolTip::hideText();
        return true;
    }
    QStringList chosen;
    for (int k = 0; k < m_top_k; ++k) {
        const size_t i = size_t(t) * size_t(m_top_k) + size_t(k);
        chosen << tr("e%1 %2").arg(m_ids[i]).arg(double(m_weights[i]), 0, 'f', 2);
    }
    QToolTip::showText(he->globalPos(), tr("Token %1, layer %2: %3").arg(t + 1).arg(m_first_layer + m_layer).arg(chosen.join(QStringLiteral(", "))), this);
    return true;
}

void ExpertTimeline::mousePressEvent(QMouseEvent* e) {
    const int t = tokenAt(e->position().toPoint());
    if (t >= 0 && e->button() == Qt::LeftButton) emit tokenClicked(t);
    QWidget::mousePressEvent(e);
}

ExpertPanel::ExpertPanel(QWidget* parent) : QWidget(parent) {
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(4, 4, 4, 4);
    auto* top = new QHBoxLayout;
    m_scope = new QComboBox;
    m_scope->setObjectName(QStringLiteral("expertScope"));
    m_scope->addItems({tr("This answer"), tr("Whole conversation"), tr("Tokens of one answer")});
    m_scope->setItemData(2, tr("One answer's tokens (columns) against the routed experts (rows) of one layer: which "
                               "experts each token chose, brighter for higher gate weights"), Qt::ToolTipRole);
    top->addWidget(new QLabel(tr("Show:")));
    top->addWidget(m_scope);
    m_layer_box = new QWidget;
    auto* layer_layout = new QHBoxLayout(m_layer_box);
    layer_layout->setContentsMargins(0, 0, 0, 0);
    layer_layout->addWidget(new QLabel(tr("Layer:")));
    m_layer = new QSpinBox;
    m_layer->setObjectName(QStringLiteral("timelineLayer"));
    layer_layout->addWidget(m_layer);
    m_layer_box->hide();
    top->addWidget(m_layer_box);
    top->addStretch();
    layout->addLayout(top);
    m_map = new ExpertHeatmap;
    m_map->setObjectName(QStringLiteral("expertHeatmap"));
    layout->addWidget(m_map, 1);
    m_timeline = new ExpertTimeline;
    m_timeline->setObjectName(QStringLiteral("expertTimeline"));
    m_timeline_scroll = new QScrollArea;
    m_timeline_scroll->setWidget(m_timeline);
    m_timeline_scroll->setWidgetResizable(false);
    m_timeline_scroll->setFrameShape(QFrame::NoFrame);
    m_timeline_scroll->setVerticalScrollBarPolicy(Qt::ScrollBarAlwaysOff);
    m_timeline_scroll->hide();
    m_timeline_scroll->viewport()->installEventFilter(this);
    layout->addWidget(m_timeline_scroll, 1);
    m_label = new QLabel;
    m_label->setWordWrap(true);
    layout->addWidget(m_label);
    connect(m_scope, &QComboBox::currentIndexChanged, this, [this] {
        m_map->setVisible(!showsTimeline());
        m_timeline_scroll->setVisible(showsTimeline());
        m_layer_box->setVisible(showsTimeline());
        emit scopeChanged();
    });
    connect(m_layer, &QSpinBox::valueChanged, this, &ExpertPanel::scopeChanged);
    connect(m_timeline, &ExpertTimeline::tokenClicked, this, &ExpertPanel::timelineTokenClicked);
}

bool ExpertPanel::showsTimeline() const { return m_scope->currentIndex() == 2; }

bool ExpertPanel::eventFilter(QObject* watched, QEvent* e) {
    if (watched == m_timeline_scroll->viewport() && e->type() == QEvent::Resize)
        m_timeline->setFixedHeight(std::max(80, m_timeline_scroll->viewport()->height()));
    return QWidget::eventFilter(watched, e);
}

QString ExpertPanel::summary() const { return m_label->text(); }

void ExpertPanel::setTimeline(const RoutingData& r, int highlighted) {
    if (!showsTimeline()) return;
    if (!m_model || m_model->n_moe_layers == 0) {
        m_timeline->setData({}, 0, 0, -1);
        return;
    }
    const int first = int(m_model->first_k_dense_replace);
    m_layer->setRange(first, first + int(m_model->n_moe_layers) - 1);
    const bool fits = r.n_layers == int(m_model->n_moe_layers) && r.nTokens() > 0;
    m_timeline->setData(fits ? r : RoutingData{}, int(m_model->n_routed_experts), m_layer->value() - first, highlighted);
    // As tall as the view (rows scale with it); wider than the view scrolls sideways.
    m_timeline->setFixedHeight(std::max(80, m_timeline_scroll->viewport()->height()));
    // Brought into view when another token is clicked, not at every streamed chunk.
    if (highlighted >= 0 && highlighted != m_shown_highlight)
        m_timeline_scroll->ensureVisible(ExpertTimeline::k_column * highlighted + 30, 0, 40, 0);
    m_shown_highlight = highlighted;
    m_label->setText(fits ? tr("Layer %1 · %2 tokens × %3 experts · click a column").arg(m_layer->value()).arg(r.nTokens()).arg(m_model->n_routed_experts)
                          : tr("Click a generated token in the chat to see its answer here."));
    m_label->setToolTip(tr("Which routed experts (rows) each of the answer's tokens (columns) chose in this layer; "
                           "brighter = higher gate weight. Click a column for that token's routing."));
}

void ExpertPanel::setModel(const std::optional<ModelDescription>& model) {
    m_model = model;
    setCounts({}, {});
}

bool ExpertPanel::showsConversation() const { return m_scope->currentIndex() == 1; }

void ExpertPanel::setCounts(const std::vector<qint64>& answer, const std::vector<qint64>& conversation) {
    if (showsTimeline() && m_model && m_model->n_moe_layers > 0) return;  // setTimeline writes the label
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
