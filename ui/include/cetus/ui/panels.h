// The inspector's live panels (docked on the right): KV cache against standard
// attention, the layers x experts heatmap, one token's routing, speculative decoding
// and throughput, and the model's description. They only display what they are given.
#pragma once

#include "cetus/ui/types.h"

#include <QWidget>

#include <optional>

class QChart;
class QChartView;
class QComboBox;
class QLabel;
class QLineSeries;
class QScatterSeries;
class QScrollArea;
class QSpinBox;
class QValueAxis;

namespace cetus::ui {

QString formatBytes(double bytes);
QString formatCount(double n);  // 1.2 B, 37 M, 640 K

class KvCachePanel : public QWidget {
    Q_OBJECT
public:
    explicit KvCachePanel(QWidget* parent = nullptr);
    void setModel(const std::optional<ModelDescription>& model);
    void setStats(const StepStats& stats);
    QString summary() const;
    int pointsShown() const;

protected:
    void changeEvent(QEvent* e) override;  // a new palette: the chart's colours follow

private:
    void applyChartTheme();
    std::optional<ModelDescription> m_model;
    double m_unit = 1024.0;
    QChart* m_chart = nullptr;
    QChartView* m_view = nullptr;
    QLineSeries* m_mla = nullptr;
    QLineSeries* m_mha = nullptr;
    QLineSeries* m_gqa = nullptr;
    QScatterSeries* m_now = nullptr;
    QValueAxis* m_x = nullptr;
    QValueAxis* m_y = nullptr;
    QLabel* m_label = nullptr;
};

class ExpertHeatmap : public QWidget {
    Q_OBJECT
public:
    explicit ExpertHeatmap(QWidget* parent = nullptr);
    void setData(int n_layers, int n_experts, int n_shared, int first_layer, std::vector<qint64> counts);
    qint64 total() const;
    QSize sizeHint() const override;
    QSize minimumSizeHint() const override { return {160, 80}; }
    static QColor colorFor(double t);  // 0..1 -> a perceptually ordered dark-to-bright scale

protected:
    void paintEvent(QPaintEvent*) override;
    bool event(QEvent* e) override;

private:
    QRectF cellArea() const;
    int m_layers = 0, m_experts = 0, m_shared = 0, m_first = 0;
    std::vector<qint64> m_counts;
};

// One answer's routing in one MoE layer over time: a column per token, a row per routed
// expert, each chosen expert's cell coloured by its gate weight (relative to the
// answer's largest in that layer). A click on a column selects that token.
class ExpertTimeline : public QWidget {
    Q_OBJECT
public:
    explicit ExpertTimeline(QWidget* parent = nullptr);
    // layer: recorded MoE layer (0 .. routing.n_layers - 1); highlighted: a token or -1.
    void setData(const RoutingData& routing, int n_experts, int layer, int highlighted);
    int tokens() const { return m_tokens; }
    int layer() const { return m_layer; }
    int highlighted() const { return m_highlighted; }
    // The experts token t chose in the shown layer.
    std::vector<int32_t> expertsAt(int t) const {
        if (t < 0 || t >= m_tokens) return {};
        return {m_ids.begin() + std::ptrdiff_t(t) * m_top_k, m_ids.begin() + std::ptrdiff_t(t + 1) * m_top_k};
    }
    int tokenAt(const QPoint& p) const;  // -1 outside the columns
    QSize sizeHint() const override;
    QSize minimumSizeHint() const override { return {160, 80}; }
    static constexpr int k_column = 5;  // pixels per token

signals:
    void tokenClicked(int token);

protected:
    void paintEvent(QPaintEvent*) override;
    bool event(QEvent* e) override;
    void mousePressEvent(QMouseEvent* e) override;

private:
    QRectF cellArea() const;
    // The layer's choices only, [tokens x top_k] (the answer's whole trace stays with the controller).
    std::vector<int32_t> m_ids;
    std::vector<float> m_weights;
    int m_tokens = 0, m_top_k = 0, m_first_layer = 0;
    int m_experts = 0, m_layer = 0, m_highlighted = -1;
};

class ExpertPanel : public QWidget {
    Q_OBJECT
public:
    explicit ExpertPanel(QWidget* parent = nullptr);
    void setModel(const std::optional<ModelDescription>& model);
    void setCounts(const std::vector<qint64>& answer, const std::vector<qint64>& conversation);
    // The token timeline's data (shown with Show: "Tokens of one answer").
    void setTimeline(const RoutingData& answer_routing, int highlighted_token);
    bool showsConversation() const;
    bool showsTimeline() const;
    ExpertHeatmap* heatmap() const { return m_map; }
    ExpertTimeline* timeline() const { return m_timeline; }
    QString summary() const;

signals:
    void scopeChanged();
    void timelineTokenClicked(int token);

protected:
    bool eventFilter(QObject* watched, QEvent* e) override;  // the timeline follows its view's height

private:
    std::optional<ModelDescription> m_model;
    QComboBox* m_scope = nullptr;
    QWidget* m_layer_box = nullptr;
    QSpinBox* m_layer = nullptr;
    ExpertHeatmap* m_map = nullptr;
    QScrollArea* m_timeline_scroll = nullptr;
    ExpertTimeline* m_timeline = nullptr;
    int m_shown_highlight = -1;
    QLabel* m_label = nullptr;
};

class RoutingBars : public QWidget {
    Q_OBJECT
public:
    explicit RoutingBars(QWidget* parent = nullptr);
    void setRouting(const RoutingData& one_token);
    void setPlaceholder(const QString& text) { m_placeholder = text; update(); }  // shown without routing
    const RoutingData& routing() const { return m_r; }
    QSize sizeHint() const override;

protected:
    void paintEvent(QPaintEvent*) override;

private:
    RoutingData m_r;
    QString m_placeholder;
};

class RoutingPanel : public QWidget {
    Q_OBJECT
public:
    explicit RoutingPanel(QWidget* parent = nullptr);
    // probabilities: the token's own (TokenProbabilityData::token), empty when not recorded.
    void showToken(const QString& label, const RoutingData& one_token, const TokenProbabilityData& probabilities = {});
    void clear();
    RoutingBars* bars() const { return m_bars; }
    QString title() const;
    QString probabilitiesText() const;  // what the probability lines say, as plain text

    // "83.1 %", "0.04 %", "< 0.01 %", "0 %" for a natural-log probability.
    static QString percentText(float logprob);
    // A token as the panel shows it: spaces, tabs and newlines made visible.
    static QString visibleToken(const QString& text);

private:
    QLabel* m_label = nullptr;
    QLabel* m_probabilities = nullptr;
    RoutingBars* m_bars = nullptr;
};

class SpeculativePanel : public QWidget {
    Q_OBJECT
public:
    explicit SpeculativePanel(QWidget* parent = nullptr);
    void setModel(const std::optional<ModelDescription>& model);
    void setHistory(const std::vector<StepStats>& history);
    QString summary() const;
    int pointsShown() const;

protected:
    void changeEvent(QEvent* e) override;  // a new palette: the chart's colours follow

private:
    std::optional<ModelDescription> m_model;
    QChart* m_chart = nullptr;
    QLineSeries* m_accept = nullptr;
    QLineSeries* m_per_step = nullptr;
    QValueAxis* m_x = nullptr;
    QValueAxis* m_y_rate = nullptr;
    QValueAxis* m_y_steps = nullptr;
    QLabel* m_label = nullptr;
};

class ModelPanel : public QWidget {
    Q_OBJECT
public:
    explicit ModelPanel(QWidget* parent = nullptr);
    void setModel(const std::optional<ModelDescription>& model);
    QString text() const;

private:
    QLabel* m_label = nullptr;
};

}  // namespace cetus::ui
