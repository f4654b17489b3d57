// Benchmark, not a test: the real window on the bundled demo model answers a few
// prompts while a 1 ms GUI timer measures the longest gap in the event loop.
// Prints one JSON line; asserts only that the answers finished.
#include <cetus/ui/engine_service.h>
#include <cetus/ui/main_window.h>
#include <cetus/ui/sqlite_history_store.h>

#include "stall_meter.h"

#include <QElapsedTimer>
#include <QSettings>
#include <QSignalSpy>
#include <QStandardPaths>
#include <QTemporaryDir>
#include <QTest>
#include <QTimer>

#include <algorithm>

using namespace cetus::ui;

class BenchUiStall : public QObject {
    Q_OBJECT
private slots:
    void stallWhileGenerating() {
        const QString model = QStringLiteral(CETUS_SOURCE_DIR "/resources/models/cetus-demo");
        if (!QFile::exists(model + QStringLiteral("/config.json"))) QSKIP("no bundled model in this tree");
        QStandardPaths::setTestModeEnabled(true);
        QCoreApplication::setOrganizationName(QStringLiteral("CetusBench"));
        QCoreApplication::setApplicationName(QStringLiteral("cetus-bench"));
        QSettings().clear();
        QTemporaryDir dir;
        QString notice, error;
        auto store = SqliteHistoryStore::open(dir.filePath(QStringLiteral("b.sqlite3")), &notice, &error);
        QVERIFY2(store, qPrintable(error));
        EngineGenerationService service;
        MainWindow window(*store, service);
        window.resize(1400, 900);
        window.show();
        QVERIFY(QTest::qWaitForWindowExposed(&window));
        QSignalSpy loaded(&service, &GenerationService::modelLoaded);
        window.openModel(model);
        QVERIFY(loaded.wait(60000));
        ConversationSettings defaults;
        defaults.sampling.temperature = 0.0;
        defaults.sampling.max_new_tokens = 64;
        window.controller().setDefaultSettings(defaults);

        cetus::ui::test::StallMeter meter;
        int batches = 0;
        connect(&service, &GenerationService::generationChunk, this, [&] { ++batches; });
        meter.start();
        for (const char* q : {"Hello!", "Who are you?", "What is the weather today?", "What does generous mean?"}) {
            QVERIFY(window.controller().send(QString::fromUtf8(q)));
            QVERIFY(QTest::qWaitFor([&] { return !window.controller().isGenerating(); }, 60000));
        }
        meter.stop();
        const double s = meter.seconds();
        qInfo("{\"bench\":\"ui_event_loop_stall\",\"model\":\"cetus-demo\",\"longest_gap_ms\":%lld,"
              "\"seconds\":%.2f,\"batches\":%d,\"batches_per_s\":%.1f}",
              meter.longestGapMs(), s, batches, batches / std::max(s, 1e-3));
    }
};

QTEST_MAIN(BenchUiStall)
#include "bench_ui_stall.moc"
