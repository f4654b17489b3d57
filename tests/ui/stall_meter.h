// The longest gap between ticks of a 1 ms timer on the GUI thread: how long the
// event loop was kept from running (bench_ui_stall and the end-to-end test).
#pragma once

#include <QElapsedTimer>
#include <QTimer>

#include <algorithm>

namespace cetus::ui::test {

class StallMeter {
public:
    StallMeter() {
        m_tick.setInterval(1);
        QObject::connect(&m_tick, &QTimer::timeout, [this] {
            const qint64 now = m_clock.elapsed();
            m_worst = std::max(m_worst, now - m_last);
            m_last = now;
        });
    }
    void start() {
        m_last = m_worst = 0;
        m_clock.start();
        m_tick.start();
    }
    void stop() {
        m_tick.stop();
        m_seconds = double(m_clock.elapsed()) / 1000.0;
    }
    qint64 longestGapMs() const { return m_worst; }
    double seconds() const { return m_seconds; }  // from start() to stop()

private:
    QElapsedTimer m_clock;
    QTimer m_tick;
    qint64 m_last = 0, m_worst = 0;
    double m_seconds = 0;
};

}  // namespace cetus::ui::test
