// The main window against a scripted GenerationService and an in-memory store: the
// no-model state, Enter / Shift+Enter, streaming into the last message, Markdown and
// code copy buttons, Stop, inline errors, the panels, and the conversation list model.
#include "fake_generation_service.h"

#include <cetus/ui/app.h>
#include <cetus/ui/chat_view.h>
#include <cetus/ui/conversation_list_model.h>
#include <cetus/ui/main_window.h>
#include <cetus/ui/panels.h>
#include <cetus/ui/sqlite_history_store.h>
#include <cetus/ui/theme.h>

#include <QAbstractItemModelTester>
#include <QApplication>
#include <QChart>
#include <QChartView>
#include <QClipboard>
#include <QFile>
#include <QFontInfo>
#include <QLabel>
#include <QCheckBox>
#include <QDialog>
#include <QDoubleSpinBox>
#include <QDialogButtonBox>
#include <QJsonDocument>
#include <QJsonObject>
#include <QDirIterator>
#include <QLineEdit>
#include <QLocale>
#include <QMenu>
#include <QStatusBar>
#include <QScrollBar>
#include <QListView>
#include <QInputDialog>
#include <QTimer>
#include <QAction>
#include <QListWidget>
#include <QPushButton>
#include <QSettings>
#include <QSignalSpy>
#include <QStandardPaths>
#include <QTemporaryDir>
#include <QTest>
#include <QXmlStreamReader>
#include <QRegularExpression>

#include <cmath>
#include <limits>
#include <QToolButton>
#include <QClipboard>
#include <QMimeData>
#include <QDragEnterEvent>
#include <QDropEvent>
#include <QPlainTextEdit>
#include <QFile>
#include <QFontInfo>

using namespace cetus::ui;
using cetus::ui::test::FakeGenerationService;

class TestMainWindow : public QObject {
    Q_OBJECT

private slots:
    void init();
    void cleanup();
    void noModelRefusesToSend();
    void badFolderKeepsWorking();
    void gpuFailureOffersTheCpu();
    void fp8WeightsOption();
    void bf16CacheOption();
    void int8ActivationsOption();
    void tuneStepsOption();
    void gpuOutOfMemoryOffersFp8();
    void contextLengthAndThreads();
    void pluralsAreTranslated();
    void themes();
    void streamsIntoTheLastMessage();
    void stopEndsTheAnswer();
    void continueFollowsTheEngine();
    void conversationCachesFollowConversations();
    void errorsShowInline();
    void panelsReceiveData();
    void tokenProbabilitiesPanel();
    void trailingTextKeepsTokensAndProbabilities();
    void listModelGroupsByDay();
    void searchHitShowsItsMessage();
    void archiveAndLongLists();
    void storedSettingsOutOfRangeFallBack();
    void recentModels();
    void contextUsage();
    void longLinesStayInTheView();
    void composerCountsTokens();
    void settingsDialogSetsSampling();
    void attachFilesToAMessage();
    void attachmentsByDropAndPaste();

private:
    void loadFake();
    // A Model menu option saved under key: checked as on_by_default says on a first start,
    // sent with the next load after a click, remembered by the next window.
    void checkSavedLoadOption(const QString& action_name, const QString& key, const std::function<bool()>& sent,
                              bool on_by_default = false);
    // A new window started with the Model > Device choice saved as `device`.
    bool reopenWithDevice(const QString& device);
    // The window at 1200x800, its layouts settled, saved to the build folder as `file`.
    void screenshot(const char* file);
    std::unique_ptr<SqliteHistoryStore> m_store;
    std::unique_ptr<FakeGenerationService> m_service;
    std::unique_ptr<MainWindow> m_window;
};

void TestMainWindow::init() {
    QStandardPaths::setTestModeEnabled(true);
    QCoreApplication::setOrganizationName(QStringLiteral("CetusTest"));
    QCoreApplication::setApplicationName(QStringLiteral("cetus-fake"));
    QSettings().clear();
    m_store = SqliteHistoryStore::openInMemory();
    m_service = std::make_unique<FakeGenerationService>();
    m_window = std::make_unique<MainWindow>(*m_store, *m_service);
    m_window->resize(1200, 800);
    m_window->show();
    QVERIFY(QTest::qWaitForWindowExposed(m_window.get()));
}

bool TestMainWindow::reopenWithDevice(const QString& device) {
    m_window.reset();
    QSettings().setValue(QStringLiteral("model/device"), device);
    m_window = std::make_unique<MainWindow>(*m_store, *m_service);
    m_window->show();
    return QTest::qWaitForWindowExposed(m_window.get());
}

void TestMainWindow::screenshot(const char* file) {
    m_window->resize(1200, 800);
    QTest::qWait(50);
    m_window->grab().save(QStringLiteral(CETUS_TEST_BUILD_DIR "/") + QLatin1String(file));
}

void TestMainWindow::cleanup() {
    m_window.reset();
    m_service.reset();
    m_store.reset();
}

void TestMainWindow::loadFake() {
    QSignalSpy loaded(m_service.get(), &GenerationService::modelLoaded);
    m_window->openModel(QStringLiteral("/models/fake"));
    QVERIFY(loaded.wait(2000));
}

void TestMainWindow::noModelRefusesToSend() {
    QVERIFY(!m_window->sendButton()->isEnabled());
    QTest::keyClicks(m_window->composer(), QStringLiteral("hi"));
    QTest::keyClick(m_window->composer(), Qt::Key_Return);
    QVERIFY(!m_window->controller().isGenerating());
    QCOMPARE(m_window->composer()->toPlainText(), QStringLiteral("hi"));  // kept, not lost
    QVERIFY(m_window->banner()->isVisible());
    QVERIFY(m_window->banner()->text().contains(QStringLiteral("Open a model")));
    QVERIFY(m_store->listConversations().empty());
}

void TestMainWindow::badFolderKeepsWorking() {
    QSignalSpy failed(m_service.get(), &GenerationService::loadFailed);
    m_window->openModel(QStringLiteral("/models/bad"));
    QVERIFY(failed.wait(2000));
    QVERIFY(m_window->banner()->text().contains(QStringLiteral("config.json")));
    loadFake();
    QVERIFY(m_window->sendButton()->isEnabled());
    QVERIFY(!m_window->banner()->isVisible());
}

void TestMainWindow::gpuFailureOffersTheCpu() {
    // The device menu says GPU (a saved choice); loading fails as it does without a GPU.
    QVERIFY(reopenWithDevice(QStringLiteral("gpu")));
    QVERIFY(!m_window->cpuFallbackButton()->isVisible());
    QSignalSpy failed(m_service.get(), &GenerationService::loadFailed);
    m_window->openModel(QStringLiteral("/models/fake"));
    QVERIFY(failed.wait(2000));
    QCOMPARE(m_service->last_device, DeviceChoice::Gpu);
    QVERIFY(m_window->banner()->text().contains(QStringLiteral("NVIDIA driver")));
    QVERIFY(m_window->cpuFallbackButton()->isVisible());
    screenshot("ui-fake-gpu-failed.png");
    // One click loads the same folder on the CPU; the saved choice stays GPU.
    QSignalSpy loaded(m_service.get(), &GenerationService::modelLoaded);
    QTest::mouseClick(m_window->cpuFallbackButton(), Qt::LeftButton);
    QVERIFY(loaded.wait(2000));
    QCOMPARE(m_service->last_device, DeviceChoice::Cpu);
    QVERIFY(!m_window->cpuFallbackButton()->isVisible());
    QVERIFY(!m_window->banner()->isVisible());
    QVERIFY(m_window->sendButton()->isEnabled());
    QCOMPARE(QSettings().value(QStringLiteral("model/device")).toString(), QStringLiteral("gpu"));
    // Failures on the CPU or in auto mode offer nothing.
    m_window->openModel(QStringLiteral("/models/bad"), DeviceChoice::Cpu);
    QVERIFY(failed.wait(2000));
    QVERIFY(!m_window->cpuFallbackButton()->isVisible());
}

// A checkable Model-menu choice: off at first, saved under key when toggled, sent
// with the next load (sent(): the fake service's record of it), and a new window
// starts from the saved choice.
void TestMainWindow::checkSavedLoadOption(const QString& action_name, const QString& key,
                                          const std::function<bool()>& sent, bool on_by_default) {
    auto* action = m_window->findChild<QAction*>(action_name);
    QVERIFY(action);
    QVERIFY(action->isCheckable());
    QCOMPARE(action->isChecked(), on_by_default);
    QSignalSpy loaded(m_service.get(), &GenerationService::modelLoaded);
    m_window->openModel(QStringLiteral("/models/fake"));
    QVERIFY(loaded.wait(2000));
    QCOMPARE(sent(), on_by_default);
    action->trigger();
    QCOMPARE(QSettings().value(key).toBool(), !on_by_default);
    m_window->openModel(QStringLiteral("/models/fake"));
    QVERIFY(loaded.wait(2000));
    QCOMPARE(sent(), !on_by_default);
    m_window.reset();
    m_window = std::make_unique<MainWindow>(*m_store, *m_service);
    QCOMPARE(m_window->findChild<QAction*>(action_name)->isChecked(), !on_by_default);
    QSettings().remove(key);
}

void TestMainWindow::bf16CacheOption() {
    // Model > BF16 latent cache, separate from FP8 weights.
    checkSavedLoadOption(QStringLiteral("kvCacheBf16Action"), QStringLiteral("model/kv_cache_bf16"),
                         [this] { return m_service->last_kv_bf16; });
    QVERIFY(!m_service->last_fp8);
}

void TestMainWindow::int8ActivationsOption() {
    // Model > Integer products for GGUF on the CPU, on unless turned off (as llama.cpp
    // multiplies its blocks), separate from the other two.
    checkSavedLoadOption(QStringLiteral("int8ActivationsAction"), QStringLiteral("model/int8_activations"),
                         [this] { return m_service->last_int8; }, /*on_by_default=*/true);
    QVERIFY(!m_service->last_fp8);
    QVERIFY(!m_service->last_kv_bf16);
}

void TestMainWindow::tuneStepsOption() {
    // Model > Tune GPU decode steps when loading, off unless turned on.
    checkSavedLoadOption(QStringLiteral("tuneStepsAction"), QStringLiteral("model/tune_steps"),
                         [this] { return m_service->last_tune; });
    QVERIFY(!m_service->last_fp8);
}

void TestMainWindow::fp8WeightsOption() {
    // Model > FP8 weights.
    checkSavedLoadOption(QStringLiteral("fp8WeightsAction"), QStringLiteral("model/fp8"),
                         [this] { return m_service->last_fp8; });
}

void TestMainWindow::gpuOutOfMemoryOffersFp8() {
    // The GPU lacks memory for a BF16 model: the error names FP8, and one click
    // reloads the same folder on the same device with FP8 weights (then remembered).
    QVERIFY(reopenWithDevice(QStringLiteral("gpu")));
    QSignalSpy failed(m_service.get(), &GenerationService::loadFailed);
    m_window->openModel(QStringLiteral("/models/big"));
    QVERIFY(failed.wait(2000));
    QVERIFY(m_window->banner()->text().contains(QStringLiteral("GPU memory")));
    QVERIFY(m_window->fp8RetryButton()->isVisible());
    QVERIFY(m_window->cpuFallbackButton()->isVisible());
    screenshot("ui-fake-gpu-out-of-memory.png");
    QSignalSpy loaded(m_service.get(), &GenerationService::modelLoaded);
    QTest::mouseClick(m_window->fp8RetryButton(), Qt::LeftButton);
    QVERIFY(loaded.wait(2000));
    QVERIFY(m_service->last_fp8);
    QCOMPARE(m_service->last_device, DeviceChoice::Gpu);
    QVERIFY(!m_window->fp8RetryButton()->isVisible());
    QVERIFY(!m_window->banner()->isVisible());
    QVERIFY(QSettings().value(QStringLiteral("model/fp8")).toBool());
    QVERIFY(m_window->findChild<QAction*>(QStringLiteral("fp8WeightsAction"))->isChecked());
    // Other failures do not offer it.
    m_window->openModel(QStringLiteral("/models/bad"));
    QVERIFY(failed.wait(2000));
    QVERIFY(!m_window->fp8RetryButton()->isVisible());
    QSettings().remove(QStringLiteral("model/fp8"));
}

void TestMainWindow::contextLengthAndThreads() {
    // Model > Context length: 4,096 tokens and automatic threads until chosen otherwise.
    QMenu* menu = m_window->contextMenu();
    QVERIFY(menu);
    auto action = [this](const QString& name) { return m_window->findChild<QAction*>(name); };
    QVERIFY(action(QStringLiteral("context4096Action"))->isChecked());
    QVERIFY(action(QStringLiteral("threads0Action"))->isChecked());
    QVERIFY(!action(QStringLiteral("reloadModelAction"))->isEnabled());  // nothing loaded yet
    loadFake();
    QCOMPARE(m_service->last_context, qint64(4096));
    QCOMPARE(m_service->last_threads, 0);
    QVERIFY(action(QStringLiteral("reloadModelAction"))->isEnabled());
    // With a model loaded each choice shows its cache: the fake holds 5,760 bytes per
    // token (576 bf16 values in 5 layers) and at most 16,384 tokens.
    const QString l4096 = action(QStringLiteral("context4096Action"))->text();
    QVERIFY2(l4096.contains(QLocale().formattedDataSize(5760LL * 4096, 1)), qPrintable(l4096));
    const QString lmax = action(QStringLiteral("context0Action"))->text();
    QVERIFY2(lmax.contains(QLocale().toString(16384)) && lmax.contains(QLocale().formattedDataSize(5760LL * 16384, 1)),
             qPrintable(lmax));
    const QString l32k = action(QStringLiteral("context32768Action"))->text();
    QVERIFY2(l32k.contains(QStringLiteral("this model holds")), qPrintable(l32k));
    // Loaded with a bf16 cache (5,760 bytes per token), an fp32 cache for the next
    // load shows twice that.
    auto* bf16 = action(QStringLiteral("kvCacheBf16Action"));
    bf16->trigger();
    QSignalSpy reloaded(m_service.get(), &GenerationService::modelLoaded);
    action(QStringLiteral("reloadModelAction"))->trigger();
    QVERIFY(reloaded.wait(2000));
    QVERIFY(m_service->last_kv_bf16);
    QVERIFY(action(QStringLiteral("context4096Action"))->text().contains(QLocale().formattedDataSize(5760LL * 4096, 1)));
    bf16->trigger();
    QVERIFY(action(QStringLiteral("context4096Action"))->text().contains(QLocale().formattedDataSize(2 * 5760LL * 4096, 1)));
    // Choosing 8,192 tokens and one thread saves both; Reload model applies them.
    action(QStringLiteral("context8192Action"))->trigger();
    action(QStringLiteral("threads1Action"))->trigger();
    QCOMPARE(QSettings().value(QStringLiteral("model/context")).toLongLong(), qint64(8192));
    QCOMPARE(QSettings().value(QStringLiteral("model/threads")).toInt(), 1);
    QVERIFY(m_window->statusBar()->currentMessage().contains(QStringLiteral("Reload model")));
    const int loads = m_service->loads;
    QSignalSpy loaded(m_service.get(), &GenerationService::modelLoaded);
    action(QStringLiteral("reloadModelAction"))->trigger();
    QVERIFY(loaded.wait(2000));
    QCOMPARE(m_service->loads, loads + 1);
    QCOMPARE(m_service->last_context, qint64(8192));
    QCOMPARE(m_service->last_threads, 1);
    // The model's maximum: the engine caps what is sent at the model's own limit.
    action(QStringLiteral("context0Action"))->trigger();
    action(QStringLiteral("reloadModelAction"))->trigger();
    QVERIFY(loaded.wait(2000));
    QVERIFY(m_service->last_context >= (qint64(1) << 30));
    QCOMPARE(m_window->controller().model()->context_length, qint64(16384));
    // A new window starts from the saved choices; a stored value that is not a choice
    // falls back to the default.
    action(QStringLiteral("context16384Action"))->trigger();
    m_window.reset();
    m_window = std::make_unique<MainWindow>(*m_store, *m_service);
    QVERIFY(action(QStringLiteral("context16384Action"))->isChecked());
    QVERIFY(action(QStringLiteral("threads1Action"))->isChecked());
    QSettings().setValue(QStringLiteral("model/context"), 12345);
    QSettings().setValue(QStringLiteral("model/threads"), -3);
    m_window.reset();
    m_window = std::make_unique<MainWindow>(*m_store, *m_service);
    QVERIFY(action(QStringLiteral("context4096Action"))->isChecked());
    QVERIFY(action(QStringLiteral("threads0Action"))->isChecked());
    m_window->openModel(QStringLiteral("/models/fake"));
    QVERIFY(loaded.wait(2000));
    QCOMPARE(m_service->last_context, qint64(4096));
    QCOMPARE(m_service->last_threads, 0);
}

void TestMainWindow::pluralsAreTranslated() {
    // Every "%n" text of the ui sources has an English singular and plural in
    // resources/translations/cetus_en.ts, and the installed translator gives them.
    QVERIFY(installTranslations());
    QFile ts(QStringLiteral(CETUS_SOURCE_DIR "/resources/translations/cetus_en.ts"));
    QVERIFY(ts.open(QIODevice::ReadOnly));
    QXmlStreamReader xml(&ts);
    QList<QPair<QString, QString>> entries;  // (context, source)
    QString context;
    while (!xml.atEnd()) {
        if (xml.readNext() != QXmlStreamReader::StartElement) continue;
        if (xml.name() == QLatin1String("name")) context = xml.readElementText();
        else if (xml.name() == QLatin1String("source")) entries.append({context, xml.readElementText()});
    }
    QVERIFY2(!xml.hasError(), qPrintable(xml.errorString()));
    QVERIFY(entries.size() >= 9);
    QStringList sources;
    for (const auto& [ctx, src] : entries) {
        sources << src;
        const QString one = QCoreApplication::translate(ctx.toUtf8().constData(), src.toUtf8().constData(), nullptr, 1);
        const QString two = QCoreApplication::translate(ctx.toUtf8().constData(), src.toUtf8().constData(), nullptr, 2);
        QVERIFY2(!one.contains(QStringLiteral("(s)")) && !two.contains(QStringLiteral("(s)")) && one != two, qPrintable(src));
        QVERIFY2(one.contains(QLatin1Char('1')) && two.contains(QLatin1Char('2')), qPrintable(one + " / " + two));
    }
    // The texts in the sources (tr("...%n...") literals) are all there.
    static const QRegularExpression literal(QStringLiteral(R"re(tr\("((?:[^"\\]|\\.)*%n(?:[^"\\]|\\.)*)")re"));
    int found = 0;
    for (const char* dir : {CETUS_SOURCE_DIR "/ui/src", CETUS_SOURCE_DIR "/ui/include"}) {
        QDirIterator it(QString::fromUtf8(dir), {QStringLiteral("*.cpp"), QStringLiteral("*.h")}, QDir::Files,
                        QDirIterator::Subdirectories);
        while (it.hasNext()) {
            QFile f(it.next());
            QVERIFY(f.open(QIODevice::ReadOnly));
            const QString code = QString::fromUtf8(f.readAll());
            for (auto m = literal.globalMatch(code); m.hasNext();) {
                QString text = m.next().captured(1);
                text.replace(QStringLiteral("\\n"), QStringLiteral("\n")).replace(QStringLiteral("\\\""), QStringLiteral("\""));
                ++found;
                QVERIFY2(sources.contains(text), qPrintable(QStringLiteral("%1: \"%2\" has no English plural forms in "
                                                                           "cetus_en.ts (ui/CMakeLists.txt says how)")
                                                                .arg(f.fileName(), text)));
            }
        }
    }
    QVERIFY(found >= 9);
    // In the window: an answer's line counts its tokens in words.
    loadFake();
    QVERIFY(m_window->controller().send(QStringLiteral("count")));
    QVERIFY(QTest::qWaitFor([&] { return !m_window->controller().isGenerating(); }, 5000));
    const QString line = m_window->controller().messages().back().stats_line;
    QVERIFY2(line.contains(QStringLiteral(" tokens")) && !line.contains(QStringLiteral("(s)")), qPrintable(line));
}

void TestMainWindow::themes() {
    // View > Theme: dark and light palettes for the whole app (the charts follow), the
    // platform's own look back with System, the choice saved.
    const QColor platform_window = QApplication::palette().color(QPalette::Window);
    auto action = [this](const char* key) { return m_window->findChild<QAction*>(QStringLiteral("theme_%1").arg(key)); };
    QVERIFY(action("system")->isChecked());
    auto* chart_view = m_window->kvPanel()->findChild<QChartView*>();
    QVERIFY(chart_view);
    loadFake();
    QVERIFY(m_window->controller().send(QStringLiteral("colours")));
    QVERIFY(QTest::qWaitFor([&] { return !m_window->controller().isGenerating(); }, 5000));
    action("dark")->trigger();
    QTest::qWait(20);  // the new palette reaches the widgets through posted events
    QCOMPARE(QSettings().value(QStringLiteral("view/theme")).toString(), QStringLiteral("dark"));
    QVERIFY(isDarkPalette(QApplication::palette()));
    QVERIFY(isDarkPalette(m_window->chatView()->palette()));
    for (MessageWidget* w : m_window->chatView()->messageWidgets())  // built before the change
        QVERIFY(w->palette().color(w->backgroundRole()).lightness() < 100);
    QCOMPARE(chart_view->chart()->theme(), QChart::ChartThemeDark);
    QCOMPARE(m_window->speculativePanel()->findChild<QChartView*>()->chart()->theme(), QChart::ChartThemeDark);
    screenshot("ui-fake-dark.png");
    action("light")->trigger();
    QTest::qWait(20);
    QVERIFY(!isDarkPalette(QApplication::palette()));
    QCOMPARE(chart_view->chart()->theme(), QChart::ChartThemeLight);
    // A new window starts with the saved choice checked.
    m_window.reset();
    m_window = std::make_unique<MainWindow>(*m_store, *m_service);
    QVERIFY(action("light")->isChecked());
    action("system")->trigger();
    QCOMPARE(QApplication::palette().color(QPalette::Window), platform_window);
    QCOMPARE(QSettings().value(QStringLiteral("view/theme")).toString(), QStringLiteral("system"));
}

void TestMainWindow::streamsIntoTheLastMessage() {
    loadFake();
    QSignalSpy chunks(m_service.get(), &GenerationService::generationChunk);
    QTest::keyClicks(m_window->composer(), QStringLiteral("Show me code"));
    QTest::keyClick(m_window->composer(), Qt::Key_Return);
    QVERIFY(m_window->controller().isGenerating());
    QVERIFY(chunks.wait(2000));
    QVERIFY(QTest::qWaitFor([&] { return !m_window->controller().isGenerating(); }, 5000));
    const auto ws = m_window->chatView()->messageWidgets();
    QCOMPARE(ws.size(), 2);
    QCOMPARE(ws[1]->view()->source(), m_service->answer);
    // Markdown rendered: the bold markers are gone from the visible text.
    QVERIFY(!ws[1]->view()->toPlainText().contains(QStringLiteral("**")));
    QVERIFY(ws[1]->view()->toPlainText().contains(QStringLiteral("int x = 1;")));
    auto* copy_code = ws[1]->findChild<QToolButton*>(QStringLiteral("copyCodeButton"));
    QVERIFY(copy_code);
    QTest::mouseClick(copy_code, Qt::LeftButton);
    QCOMPARE(QApplication::clipboard()->text(), QStringLiteral("int x = 1;"));
    QVERIFY(ws[1]->findChild<QLabel*>(QStringLiteral("statsLabel"))->text().contains(QStringLiteral("tok/s")));
    // The request carried the user's turn.
    QCOMPARE(m_service->last_params.turns.back().content, QStringLiteral("Show me code"));
}

void TestMainWindow::stopEndsTheAnswer() {
    loadFake();
    m_service->interval_ms = 50;
    QSignalSpy chunks(m_service.get(), &GenerationService::generationChunk);
    QVERIFY(m_window->controller().send(QStringLiteral("long one")));
    QVERIFY(chunks.wait(2000));
    QVERIFY(m_window->stopButton()->isVisible());
    QTest::mouseClick(m_window->stopButton(), Qt::LeftButton);
    QVERIFY(QTest::qWaitFor([&] { return !m_window->controller().isGenerating(); }, 2000));
    const auto& last = m_window->controller().messages().back();
    QCOMPARE(last.record.status, MessageStatus::Complete);
    QVERIFY(last.record.content.size() < m_service->answer.size());
    QVERIFY(last.stats_line.contains(QStringLiteral("stopped")));
    QVERIFY(m_window->sendButton()->isVisible());

    // A stopped answer can be continued; a continuation that fails leaves it as it was
    // (text, state, statistics, Continue still offered) and says why.
    QVERIFY(last.can_continue);
    const MessageRecord before = last.record;
    m_service->interval_ms = 5;
    m_service->fail_with = QStringLiteral("the endpoint refused continue_final_message");
    m_window->controller().continueAnswer(before.id);
    QVERIFY(m_window->controller().isGenerating());
    QVERIFY(m_service->last_params.continue_final);
    QCOMPARE(m_service->last_params.turns.back().role, QStringLiteral("assistant"));
    QCOMPARE(m_service->last_params.turns.back().content, before.content);
    QVERIFY(QTest::qWaitFor([&] { return !m_window->controller().isGenerating(); }, 2000));
    const auto& after = m_window->controller().messages().back();
    QCOMPARE(after.record.id, before.id);
    QCOMPARE(after.record.content, before.content);
    QCOMPARE(after.record.status, MessageStatus::Complete);
    QCOMPARE(after.record.stats_json, before.stats_json);
    QVERIFY(after.can_continue);
    QVERIFY(m_window->banner()->isVisible());
    QVERIFY2(m_window->banner()->text().contains(QStringLiteral("refused")), qPrintable(m_window->banner()->text()));
    // Then it goes on: the same message, longer.
    m_window->controller().continueAnswer(before.id);
    QVERIFY(QTest::qWaitFor([&] { return !m_window->controller().isGenerating(); }, 2000));
    const auto& done = m_window->controller().messages().back();
    QCOMPARE(done.record.id, before.id);
    QVERIFY(done.record.content.startsWith(before.content) && done.record.content.size() > before.content.size());
    QCOMPARE(m_window->controller().messages().size(), size_t(2));
}

// Continue is offered by what the engine now in use takes: an endpoint that refuses
// continue_final_message takes it away from a stopped answer, the local model gives it back.
void TestMainWindow::continueFollowsTheEngine() {
    loadFake();
    m_service->interval_ms = 50;
    QSignalSpy chunks(m_service.get(), &GenerationService::generationChunk);
    QVERIFY(m_window->controller().send(QStringLiteral("long one")));
    QVERIFY(chunks.wait(2000));
    QTest::mouseClick(m_window->stopButton(), Qt::LeftButton);
    QVERIFY(QTest::qWaitFor([&] { return !m_window->controller().isGenerating(); }, 2000));
    auto last = [&] { return m_window->controller().messages().back(); };
    QVERIFY(last().can_continue);
    const QString text = last().record.content;
    QSignalSpy loaded(m_service.get(), &GenerationService::modelLoaded);
    m_window->openModel(QStringLiteral("/endpoints/remote-nocontinue"));
    QVERIFY(loaded.wait(2000));
    QVERIFY(!last().can_continue);
    auto* button = m_window->chatView()->messageWidgets().back()->findChild<QToolButton*>(QStringLiteral("continueButton"));
    QVERIFY(!button || !button->isVisible());
    m_window->controller().continueAnswer(last().record.id);  // refused here, not sent
    QVERIFY(!m_window->controller().isGenerating());
    QCOMPARE(last().record.content, text);
    m_window->openModel(QStringLiteral("/models/fake"));
    QVERIFY(loaded.wait(2000));
    QVERIFY(last().can_continue);
}

// Each request carries its conversation's tag; deleting a conversation asks the service
// to forget that tag's cache rows (the open one's too), and no other.
void TestMainWindow::conversationCachesFollowConversations() {
    m_window->setConfirmHandler([](const QString&) { return true; });
    loadFake();
    QCOMPARE(m_service->cache_folder, MainWindow::conversationCacheFolder());
    m_service->interval_ms = 1;
    QVERIFY(m_window->controller().send(QStringLiteral("first")));
    QVERIFY(QTest::qWaitFor([&] { return !m_window->controller().isGenerating(); }, 2000));
    const qint64 first = *m_window->controller().currentConversation();
    const QString tag = m_service->last_params.cache_tag;
    QCOMPARE(tag, m_window->controller().cacheTag(first));
    QVERIFY(tag.endsWith(QStringLiteral("#%1").arg(first)));
    m_window->controller().newConversation();
    QVERIFY(m_window->controller().send(QStringLiteral("second")));
    QVERIFY(QTest::qWaitFor([&] { return !m_window->controller().isGenerating(); }, 2000));
    const qint64 second = *m_window->controller().currentConversation();
    QVERIFY(m_service->last_params.cache_tag != tag);
    QVERIFY(m_service->forgotten.isEmpty());
    m_window->deleteConversation(first);
    QCOMPARE(m_service->forgotten, QStringList{tag});
    m_window->deleteConversation(second);  // the open one
    QCOMPARE(m_service->forgotten.size(), 2);
    QCOMPARE(m_service->forgotten.back(), m_window->controller().cacheTag(second));
    auto* clear = m_window->findChild<QAction*>(QStringLiteral("clearCachesAction"));
    QVERIFY(clear);
    clear->trigger();
    QCOMPARE(m_service->clears, 1);
}

void TestMainWindow::errorsShowInline() {
    loadFake();
    m_service->fail_with = QStringLiteral("out of GPU memory");
    QVERIFY(m_window->controller().send(QStringLiteral("boom")));
    QVERIFY(QTest::qWaitFor([&] { return !m_window->controller().isGenerating(); }, 2000));
    const auto ws = m_window->chatView()->messageWidgets();
    auto* err = ws.back()->findChild<QLabel*>(QStringLiteral("errorLabel"));
    QVERIFY(err);
    QVERIFY(err->text().contains(QStringLiteral("out of GPU memory")));
    QCOMPARE(m_window->controller().messages().back().record.status, MessageStatus::Error);
    screenshot("ui-fake-error.png");
}

void TestMainWindow::trailingTextKeepsTokensAndProbabilities() {
    // Text released after the last token in a chunk of its own (a stop or a full context)
    // belongs to that token: the answer's token ends cover all its text, and its token
    // probabilities (one entry per token) are kept.
    loadFake();
    m_service->trailing_text = QStringLiteral("!");
    QVERIFY(m_window->controller().send(QStringLiteral("hi")));
    QTRY_VERIFY(!m_window->controller().isGenerating());
    const DisplayMessage& d = m_window->controller().messages().back();
    QVERIFY(d.record.content.endsWith(QStringLiteral("end.!")));
    QCOMPARE(d.token_text_ends.back(), int(d.record.content.size()));
    const auto p = m_store->tokenProbabilities(d.record.id);
    QVERIFY(p);
    QCOMPARE(p->nTokens(), d.token_text_ends.size());
    QCOMPARE(p->top_n, MainWindow::k_token_alternatives);
    // The last token's click shows it with its figures.
    m_window->controller().selectToken(d.record.id, int(d.record.content.size()) - 1);
    QVERIFY2(m_window->routingPanel()->title().contains(QStringLiteral("end.!")), qPrintable(m_window->routingPanel()->title()));
    QVERIFY(m_window->routingPanel()->probabilitiesText().contains(QStringLiteral("Probability under the model")));
}

void TestMainWindow::tokenProbabilitiesPanel() {
    // The routing panel's probability lines: percentages at every scale (escaped: "<" is
    // text), tokens with their spaces and newlines made visible, markup in a token shown
    // as text, and a plain line when the answer has none.
    RoutingPanel panel;
    TokenProbabilityData p;
    p.top_n = 4;
    p.logprobs = {std::log(0.25f)};
    p.alt_texts = {QStringLiteral(" Paris"), QStringLiteral("<b>x</b>"), QStringLiteral("\n"), QString()};
    p.alt_logprobs = {std::log(0.5f), std::log(0.25f), std::log(0.0004f), -20.0f};
    RoutingData r;
    panel.showToken(QStringLiteral("Token 1"), r, p);
    const QString text = panel.probabilitiesText();
    QVERIFY2(text.contains(QStringLiteral("Probability under the model: 25.0 %")), qPrintable(text));
    QVERIFY2(text.contains(QStringLiteral("\u2423Paris")) && text.contains(QStringLiteral("50.0 %")), qPrintable(text));
    QVERIFY2(text.contains(QStringLiteral("<b>x</b>")), qPrintable(text));  // the token's own text, not markup
    QVERIFY2(text.contains(QStringLiteral("\u21B5")) && text.contains(QStringLiteral("0.04 %")), qPrintable(text));
    QVERIFY2(text.contains(QStringLiteral("(nothing)")) && text.contains(QStringLiteral("< 0.01 %")), qPrintable(text));
    QCOMPARE(RoutingPanel::percentText(-std::numeric_limits<float>::infinity()), QStringLiteral("0 %"));
    panel.showToken(QStringLiteral("Token 2"), r, {});
    QVERIFY(panel.probabilitiesText().contains(QStringLiteral("No token probabilities")));
    panel.clear();
    QVERIFY(panel.probabilitiesText().isEmpty());
}

void TestMainWindow::panelsReceiveData() {
    loadFake();
    QVERIFY(m_window->controller().send(QStringLiteral("panels")));
    QVERIFY(QTest::qWaitFor([&] { return !m_window->controller().isGenerating(); }, 5000));
    QVERIFY(m_window->kvPanel()->summary().contains(QStringLiteral("7.1× what MLA holds")));
    // Where the prompt came from, and what the prefix store keeps.
    QVERIFY2(m_window->kvPanel()->summary().contains(QStringLiteral("8 of the prompt's 12 tokens came back from the prefix store")),
             qPrintable(m_window->kvPanel()->summary()));
    QVERIFY(m_window->kvPanel()->summary().contains(QStringLiteral("Kept for other conversations: 2 prefix")));
    QCOMPARE(m_window->expertPanel()->heatmap()->total(), qint64(m_service->chunksSent() * 8));
    QVERIFY(m_window->speculativePanel()->summary().contains(QStringLiteral("accepted")));
    QTest::mouseClick(m_window->chatView()->messageWidgets().back()->view()->viewport(), Qt::LeftButton, {}, QPoint(4, 8));
    QVERIFY(m_window->routingPanel()->title().startsWith(QStringLiteral("Token 1")));
    QCOMPARE(m_window->routingPanel()->bars()->routing().n_layers, 4);
    screenshot("ui-fake-panels.png");
}

void TestMainWindow::listModelGroupsByDay() {
    ConversationListModel model;
    QAbstractItemModelTester tester(&model, QAbstractItemModelTester::FailureReportingMode::QtTest);
    const QDateTime now = QDateTime::currentDateTime();
    const qint64 day = 24 * 3600 * 1000;
    model.setConversations({{1, "old", false, now.toMSecsSinceEpoch() - 40 * day, 2},
                            {2, "today", false, now.toMSecsSinceEpoch(), 2},
                            {3, "pinned", true, now.toMSecsSinceEpoch() - 3 * day, 2},
                            {4, "yesterday", false, now.toMSecsSinceEpoch() - day, 2}},
                           now);
    QStringList rows;
    for (int i = 0; i < model.rowCount(); ++i) rows << model.index(i).data(Qt::EditRole).toString();
    QCOMPARE(rows.mid(0, 6), (QStringList{"Pinned", "pinned", "Today", "today", "Yesterday", "yesterday"}));
    QCOMPARE(rows.size(), 8);
    QVERIFY(!(model.flags(model.index(0)) & Qt::ItemIsSelectable));
    QSignalSpy rename(&model, &ConversationListModel::renameRequested);
    QVERIFY(model.setData(model.index(3), QStringLiteral("renamed"), Qt::EditRole));
    QCOMPARE(rename.count(), 1);
    QCOMPARE(rename.at(0).at(0).toLongLong(), 2);
    QVERIFY(!model.setData(model.index(0), QStringLiteral("header"), Qt::EditRole));
}

void TestMainWindow::archiveAndLongLists() {
    // More conversations than one page: the list reads 500, then the next 500 each time
    // it is scrolled to its end, keeping its place; archived ones leave it for the
    // archive's list (Conversation > Show archived conversations) and come back.
    const int n = 1203;
    std::vector<qint64> ids;
    for (int i = 0; i < n; ++i)
        ids.push_back(*m_store->createConversation(QString(), QString(), QStringLiteral("{}")));
    m_store->renameConversation(ids[0], QStringLiteral("The oldest"));
    ConversationListModel* model = m_window->conversationModel();
    auto listed = [&] {
        std::vector<qint64> out;
        for (int r = 0; r < model->rowCount(); ++r) {
            const QVariant id = model->index(r).data(ConversationListModel::IdRole);
            if (id.isValid()) out.push_back(id.toLongLong());
        }
        return out;
    };
    m_window->controller().setPinned(ids[5], false);  // any change refreshes the list
    QCOMPARE(listed().size(), size_t(500));
    auto* list = m_window->findChild<QListView*>(QStringLiteral("conversationList"));
    QVERIFY(list);
    QScrollBar* bar = list->verticalScrollBar();
    QTRY_VERIFY(bar->maximum() > 0);
    bar->setValue(bar->maximum());
    QCOMPARE(listed().size(), size_t(1000));
    QVERIFY(bar->value() > 0);  // still down there, not back at the top
    QTRY_VERIFY(bar->maximum() > bar->value());
    bar->setValue(bar->maximum());
    QCOMPARE(listed().size(), size_t(n));
    QTRY_VERIFY(bar->maximum() > 0);
    bar->setValue(bar->maximum());
    QCOMPARE(listed().size(), size_t(n));  // all there: nothing more to read

    // Archive the oldest (from its context menu's action, through the controller) and
    // the open one (Conversation > Archive).
    m_window->controller().setArchived(ids[0], true);
    auto has = [&](qint64 id) { const auto l = listed(); return std::find(l.begin(), l.end(), id) != l.end(); };
    QVERIFY(!has(ids[0]));
    QCOMPARE(listed().size(), size_t(n - 1));
    m_window->controller().openConversation(ids[7]);
    auto* archive = m_window->findChild<QAction*>(QStringLiteral("archiveAction"));
    auto* show = m_window->findChild<QAction*>(QStringLiteral("showArchivedAction"));
    QVERIFY(archive && show);
    archive->trigger();
    QVERIFY(!has(ids[7]));
    QCOMPARE(m_window->controller().currentConversation(), std::optional<qint64>(ids[7]));  // still open
    show->setChecked(true);
    QCOMPARE(listed().size(), size_t(2));
    QVERIFY(has(ids[0]) && has(ids[7]));
    QCOMPARE(model->index(0).data(Qt::DisplayRole).toString(), QStringLiteral("Archived"));
    archive->trigger();  // the open one is archived: back out of it
    QCOMPARE(listed(), std::vector<qint64>{ids[0]});
    show->setChecked(false);
    // An archived conversation opened while the list is shown (a search hit): the action
    // goes by its own flag, so it comes back out; and again into the archive.
    m_window->controller().openConversation(ids[0]);
    QVERIFY(m_window->controller().currentArchived());
    archive->trigger();
    QVERIFY(!m_window->controller().currentArchived());
    QVERIFY(m_store->listConversations(true).empty());
    archive->trigger();
    QVERIFY(m_window->controller().currentArchived());
    // Renamed while not listed: the title is asked for in a dialog.
    QTimer::singleShot(0, [] {
        auto* dialog = qobject_cast<QInputDialog*>(QApplication::activeModalWidget());
        QVERIFY(dialog);
        dialog->setTextValue(QStringLiteral("Kept for later"));
        dialog->accept();
    });
    m_window->findChild<QAction*>(QStringLiteral("renameAction"))->trigger();
    QCOMPARE(m_store->listConversations(true)[0].title, QStringLiteral("Kept for later"));
    QCOMPARE(listed().size(), size_t(500));  // the first page again
    const auto all = m_store->listConversations(false, 5000);
    QCOMPARE(all.size(), size_t(n - 1));
    QVERIFY(std::any_of(all.begin(), all.end(), [&](const auto& c) { return c.id == ids[7]; }));
    const auto archived = m_store->listConversations(true);
    QVERIFY(archived.size() == 1 && archived[0].id == ids[0] && archived[0].archived);
}

void TestMainWindow::searchHitShowsItsMessage() {
    // A long conversation (the view starts at its end) whose second turn was answered
    // twice; the first answer, now on an inactive branch, holds the searched word.
    const QString filler = QStringLiteral("A long answer line about nothing in particular.\n\n").repeated(12);
    const qint64 c = *m_store->createConversation(QStringLiteral("fake"), QString(), QStringLiteral("{}"));
    std::optional<qint64> parent;
    qint64 early_answer = 0, old_answer = 0;
    for (int turn = 0; turn < 8; ++turn) {
        parent = m_store->addMessage(c, parent, ChatRole::User, QStringLiteral("Question %1").arg(turn), MessageStatus::Complete);
        const QString answer = (turn == 1 ? QStringLiteral("The early answer mentions xylophones. ") : QString()) + filler;
        parent = m_store->addMessage(c, parent, ChatRole::Assistant, answer, MessageStatus::Complete);
        if (turn == 1) early_answer = *parent;
    }
    // A second answer to question 7 replaces the first (kept on its branch).
    const auto list = m_store->openConversation(c)->active_path;
    old_answer = list.back();
    QVERIFY(m_store->finishMessage(old_answer, QStringLiteral("The old answer talks about quinces. ") + filler,
                                   MessageStatus::Complete, QStringLiteral("{}")));
    const qint64 new_answer = *m_store->branchAt(old_answer, QStringLiteral("The new answer.") + filler, MessageStatus::Complete);
    QVERIFY(m_store->setActiveMessage(c, new_answer));
    m_window->openModel(QStringLiteral("/models/fake"));
    QVERIFY(QTest::qWaitFor([&] { return m_service->hasModel(); }, 2000));

    auto click_hit = [&](const QString& word) {
        QLineEdit* search = nullptr;
        for (QLineEdit* e : m_window->findChildren<QLineEdit*>())
            if (e->placeholderText().startsWith(QStringLiteral("Search"))) search = e;
        QVERIFY(search);
        search->setText(word);
        QListWidget* results = m_window->searchResults();
        QVERIFY(QTest::qWaitFor([&] { return results->count() > 0 && (results->item(0)->flags() & Qt::ItemIsEnabled); }, 2000));
        QTest::mouseClick(results->viewport(), Qt::LeftButton, {}, results->visualItemRect(results->item(0)).center());
    };
    auto visible = [&](qint64 id) {
        for (MessageWidget* w : m_window->chatView()->messageWidgets())
            if (w->messageId() == id) {
                const QRect r(w->mapTo(m_window->chatView()->viewport(), QPoint(0, 0)), w->size());
                return m_window->chatView()->viewport()->rect().intersects(r);
            }
        return false;
    };
    // On the shown path, far above the end: scrolled into sight and marked.
    click_hit(QStringLiteral("xylophones"));
    QCOMPARE(m_window->controller().currentConversation().value_or(0), c);
    QVERIFY(QTest::qWaitFor([&] { return visible(early_answer); }, 2000));
    QCOMPARE(m_window->chatView()->markedMessage(), early_answer);
    // Once the views have their real heights (the content is then far taller than the view).
    QVERIFY(QTest::qWaitFor([&] {
        return m_window->chatView()->verticalScrollBar()->maximum() > m_window->chatView()->viewport()->height() &&
               visible(early_answer);
    }, 3000));
    QVERIFY(!visible(new_answer));
    // On the other branch: the branch is switched, then the message shown.
    m_window->chatView()->verticalScrollBar()->setValue(0);
    click_hit(QStringLiteral("quinces"));
    QVERIFY(QTest::qWaitFor([&] { return visible(old_answer); }, 3000));
    const auto& shown = m_window->controller().messages();
    QVERIFY(std::any_of(shown.begin(), shown.end(), [&](const DisplayMessage& d) { return d.record.id == old_answer; }));
    QVERIFY(std::none_of(shown.begin(), shown.end(), [&](const DisplayMessage& d) { return d.record.id == new_answer; }));
    QCOMPARE(m_window->chatView()->markedMessage(), old_answer);
}

// An imported conversation whose sampling settings lie outside what the dialog
// offers (or the engine takes) opens with the defaults for those fields, keeping
// the others.
void TestMainWindow::storedSettingsOutOfRangeFallBack() {
    QTemporaryDir dir;
    QVERIFY(dir.isValid());
    const QString file = dir.filePath(QStringLiteral("odd.json"));
    {
        QFile f(file);
        QVERIFY(f.open(QIODevice::WriteOnly));
        f.write(R"({"format": "cetus-conversations", "format_version": 1, "conversations": [
            {"uuid": "0a1b2c3d-0000-4000-8000-0000000000aa", "title": "Odd settings", "model": "fake",
             "system_prompt": "", "pinned": false, "archived": false, "created_ms": 1764500000000,
             "updated_ms": 1764500000000, "active_message": 1,
             "sampling": {"temperature": 50, "top_p": 0.5, "top_k": -3, "min_p": 0.1, "repetition_penalty": 0,
                          "frequency_penalty": 5, "presence_penalty": -1.5,
                          "max_new_tokens": 100000, "mtp": false, "n_draft": 99},
             "messages": [{"id": 1, "parent": null, "role": "user", "state": "complete",
                           "created_ms": 1764500000000, "updated_ms": 1764500000000, "stats": {},
                           "content": "hello"}]}]})");
    }
    QCOMPARE(m_store->importJson(file), std::optional<int>(1));
    const auto list = m_store->listConversations();
    QCOMPARE(list.size(), size_t(1));
    const SamplingSettings defaults = m_window->controller().settings().sampling;
    m_window->controller().openConversation(list[0].id);
    const SamplingSettings s = m_window->controller().settings().sampling;
    QCOMPARE(s.temperature, defaults.temperature);               // 50: out of 0..2
    QCOMPARE(s.top_p, 0.5);                                      // kept
    QCOMPARE(s.top_k, defaults.top_k);                           // -3
    QCOMPARE(s.min_p, 0.1);                                      // kept
    QCOMPARE(s.repetition_penalty, defaults.repetition_penalty);  // 0
    QCOMPARE(s.frequency_penalty, defaults.frequency_penalty);    // 5: out of -2..2
    QCOMPARE(s.presence_penalty, -1.5);                          // kept
    QCOMPARE(s.max_new_tokens, defaults.max_new_tokens);         // 100000: over 32768
    QCOMPARE(s.mtp, false);                                      // kept
    QCOMPARE(s.n_draft, defaults.n_draft);                       // 99: over 8
}

// File > Open recent model: loaded folders, most recent first, each once, at most eight;
// kept for the next window; a folder that went is shown, not offered; choosing one
// loads it; Clear empties the list.
void TestMainWindow::recentModels() {
    auto* menu = m_window->findChild<QMenu*>(QStringLiteral("recentModelsMenu"));
    QVERIFY(menu);
    auto entries = [&] {
        QStringList dirs;
        for (QAction* a : menu->actions())
            if (a->data().isValid()) dirs << a->data().toString();
        return dirs;
    };
    auto entry = [&](const QString& dir) -> QAction* {
        for (QAction* a : menu->actions())
            if (a->data().toString() == dir) return a;
        return nullptr;
    };
    QCOMPARE(entries(), QStringList());
    QCOMPARE(menu->actions().size(), 1);
    QVERIFY(!menu->actions().first()->isEnabled());  // "No recent models"

    QTemporaryDir root;
    QStringList dirs;
    for (int i = 0; i < 10; ++i) {
        dirs << root.filePath(QStringLiteral("model %1 & co").arg(i));
        QVERIFY(QDir().mkpath(dirs.last()));
    }
    QSignalSpy loaded(m_service.get(), &GenerationService::modelLoaded);
    auto load = [&](const QString& dir) {
        m_window->openModel(dir);
        QVERIFY(loaded.wait(2000));
    };
    load(dirs[0]);
    load(dirs[1]);
    load(dirs[0]);
    QCOMPARE(entries(), (QStringList{dirs[0], dirs[1]}));
    QVERIFY(entry(dirs[0])->text().startsWith(QStringLiteral("&1 model 0 && co — ")));
    // A failed load is not remembered.
    QSignalSpy failed(m_service.get(), &GenerationService::loadFailed);
    m_window->openModel(root.filePath(QStringLiteral("bad")));
    QVERIFY(failed.wait(2000));
    QCOMPARE(entries().size(), 2);

    for (int i = 2; i < 10; ++i) load(dirs[i]);
    QStringList want;
    for (int i = 9; i >= 2; --i) want << dirs[i];
    QCOMPARE(entries(), want);  // eight, the newest first

    // The next window has the same list; a folder removed since cannot be chosen.
    QVERIFY(QDir(dirs[5]).removeRecursively());
    m_window.reset();
    m_window = std::make_unique<MainWindow>(*m_store, *m_service);
    menu = m_window->findChild<QMenu*>(QStringLiteral("recentModelsMenu"));
    QCOMPARE(entries(), want);
    QVERIFY(!entry(dirs[5])->isEnabled());
    QVERIFY(entry(dirs[5])->text().contains(QStringLiteral("(not found)")));
    QVERIFY(entry(dirs[4])->isEnabled());

    entry(dirs[4])->trigger();
    QVERIFY(loaded.wait(2000));
    QCOMPARE(loaded.last().first().value<ModelDescription>().model_dir, dirs[4]);
    QCOMPARE(entries().first(), dirs[4]);

    auto* clear = m_window->findChild<QAction*>(QStringLiteral("clearRecentModelsAction"));
    QVERIFY(clear);
    clear->trigger();
    QTRY_COMPARE(entries(), QStringList());
    QVERIFY(QSettings().value(QStringLiteral("model/recent")).toStringList().isEmpty());

    // A list edited by hand: empty entries dropped, paths cleaned, each once, eight at most.
    QStringList edited{QString(), dirs[0] + QStringLiteral("/"), QStringLiteral("  "), dirs[0]};
    for (int i = 1; i < 10; ++i) edited << dirs[i];
    QSettings().setValue(QStringLiteral("model/recent"), edited);
    m_window.reset();
    m_window = std::make_unique<MainWindow>(*m_store, *m_service);
    menu = m_window->findChild<QMenu*>(QStringLiteral("recentModelsMenu"));
    QCOMPARE(entries(), dirs.mid(0, 8));
    load(dirs[3]);
    QCOMPARE(entries(), (QStringList{dirs[3], dirs[0], dirs[1], dirs[2], dirs[4], dirs[5], dirs[6], dirs[7]}));

    // A GGUF file is a model too: offered while the file is there, restored at start.
    const QString gguf = root.filePath(QStringLiteral("model-q8.gguf"));
    {
        QFile f(gguf);
        QVERIFY(f.open(QIODevice::WriteOnly));
    }
    load(gguf);
    QCOMPARE(entries().first(), gguf);
    QVERIFY2(entry(gguf)->isEnabled(), qPrintable(entry(gguf)->text() + entry(gguf)->statusTip()));
    QVERIFY(entry(gguf)->text().startsWith(QStringLiteral("&1 model-q8.gguf — ")));
    m_window.reset();
    m_window = std::make_unique<MainWindow>(*m_store, *m_service);
    QVERIFY(m_window->restoreLastModel());
    QVERIFY(loaded.wait(2000));
    QCOMPARE(loaded.last().first().value<ModelDescription>().model_dir, gguf);
    QVERIFY(QFile::remove(gguf));
    menu = m_window->findChild<QMenu*>(QStringLiteral("recentModelsMenu"));
    emit menu->aboutToShow();
    QVERIFY(!entry(gguf)->isEnabled());
    QVERIFY(!m_window->restoreLastModel());
}

// The status bar's context usage: hidden before an answer; live while one streams; the
// stored answer's figures when a conversation is opened again; what it left out, or
// that it is nearly full; answers stored before n_context_tokens count prompt + answer.
void TestMainWindow::contextUsage() {
    QVERIFY(installTranslations());  // "1 earlier message", "3 earlier messages"
    const QLocale locale;
    auto expect = [&](qint64 used, const QString& more = QString()) {
        QString t = QStringLiteral("Context: %1 / %2 tokens").arg(locale.toString(used), locale.toString(4096));
        return more.isEmpty() ? t : t + QStringLiteral(" · ") + more;
    };
    QLabel* usage = m_window->contextUsage();
    QVERIFY(usage && !usage->isVisible());
    loadFake();
    QVERIFY(!usage->isVisible());  // no answer yet
    m_service->interval_ms = 20;
    QTest::keyClicks(m_window->composer(), QStringLiteral("Hello"));
    QTest::keyClick(m_window->composer(), Qt::Key_Return);
    // Live while it streams.
    QVERIFY(QTest::qWaitFor([&] { return usage->isVisible() && m_window->controller().isGenerating(); }, 2000));
    QVERIFY(usage->text().startsWith(QStringLiteral("Context: ")));
    QVERIFY(QTest::qWaitFor([&] { return !m_window->controller().isGenerating(); }, 5000));
    const auto& msgs = m_window->controller().messages();
    const QJsonObject stats = QJsonDocument::fromJson(msgs.back().record.stats_json.toUtf8()).object();
    const qint64 used = stats.value("n_context_tokens").toInteger();
    QCOMPARE(used, 12 + m_window->controller().answerStatsHistory().back().generated_tokens);  // the fake's prompt
    QCOMPARE(usage->text(), expect(used));
    const qint64 first = *m_window->controller().currentConversation();

    m_window->controller().newConversation();
    QVERIFY(!usage->isVisible());
    // Stored answers (an earlier one first when given).
    auto stored = [&](const QString& stats_json, const QString& earlier = QString()) {
        const qint64 c = *m_store->createConversation(QStringLiteral("fake"), QString(), QStringLiteral("{}"));
        std::optional<qint64> parent;
        for (const QString& j : {earlier, stats_json}) {
            if (j.isEmpty()) continue;
            const qint64 q = *m_store->addMessage(c, parent, ChatRole::User, QStringLiteral("Q"), MessageStatus::Complete);
            const qint64 a = *m_store->addMessage(c, q, ChatRole::Assistant, QString(), MessageStatus::Streaming);
            m_store->finishMessage(a, QStringLiteral("A"), MessageStatus::Complete, j);
            parent = a;
        }
        m_window->controller().openConversation(c);
        return usage->isVisible() ? usage->text() : QString();
    };
    QCOMPARE(stored(QStringLiteral(R"({"n_context_tokens": 4000, "n_turns_left_out": 3})")),
             expect(4000, QStringLiteral("3 earlier messages left out")));
    QCOMPARE(stored(QStringLiteral(R"({"n_context_tokens": 3700})")), expect(3700, QStringLiteral("nearly full")));
    QCOMPARE(stored(QStringLiteral(R"({"n_context_tokens": 5000})")),  // a longer context then
             expect(5000, QStringLiteral("over the context: earlier messages will be left out")));
    // Stored before n_context_tokens: the prompt and the answer.
    QCOMPARE(stored(QStringLiteral(R"({"n_prompt_tokens": 100, "n_generated_tokens": 20})")), expect(120));
    // Without the prompt's size (an error; an endpoint without usage): the answer before.
    QCOMPARE(stored(QStringLiteral(R"({"error": "failed"})")), QString());
    QCOMPARE(stored(QStringLiteral(R"({"n_prompt_tokens": 0, "n_generated_tokens": 57})"),
                    QStringLiteral(R"({"n_context_tokens": 900})")),
             expect(900));
    m_window->controller().openConversation(first);
    QCOMPARE(usage->text(), expect(used));
}

// A long stats line (speeds, MTP, the length limit, messages left out) wraps instead of
// widening its message, and with it the chat, past the view (the buttons were cut off);
// a long title does not widen the conversation list.
void TestMainWindow::longLinesStayInTheView() {
    loadFake();
    const qint64 c = *m_store->createConversation(QStringLiteral("fake"), QString(), QStringLiteral("{}"));
    const qint64 q = *m_store->addMessage(c, std::nullopt, ChatRole::User, QStringLiteral("Q"), MessageStatus::Complete);
    const qint64 a = *m_store->addMessage(c, q, ChatRole::Assistant, QString(), MessageStatus::Streaming);
    m_store->finishMessage(a, QStringLiteral("A short answer."), MessageStatus::Complete,
                           QStringLiteral(R"({"n_prompt_tokens": 4000, "n_generated_tokens": 96, "decode_tokens_per_s": 123.4,)"
                                          R"( "prefill_tokens_per_s": 4567.8, "n_draft_proposed": 80, "n_draft_accepted": 61,)"
                                          R"( "finish": "length", "n_turns_left_out": 12, "elapsed_ms": 2000})"));
    m_window->controller().openConversation(c);
    for (const int width : {1400, 1200, 1000}) {
        m_window->resize(width, 700);
        QTest::qWait(30);
        const auto ws = m_window->chatView()->messageWidgets();
        QCOMPARE(ws.size(), 2);
        const int room = m_window->chatView()->viewport()->width();
        auto* stats = ws[1]->findChild<QLabel*>(QStringLiteral("statsLabel"));
        QVERIFY(stats->text().contains(QStringLiteral("left out")));
        for (auto* w : ws) {
            QVERIFY2(w->geometry().right() < room, qPrintable(QStringLiteral("window %1: message ends at %2, view %3")
                                                                 .arg(width).arg(w->geometry().right()).arg(room)));
        }
        QVERIFY(stats->geometry().right() <= ws[1]->contentsRect().right());
    }
    // A long title in the list ends in "…" within the column (its tooltip has it whole).
    const QString title = QStringLiteral("A title far too long for the list of conversations on the left of the window");
    m_window->controller().renameConversation(c, title);
    m_window->resize(1200, 700);
    QTest::qWait(30);
    auto* list = m_window->findChild<QListView*>(QStringLiteral("conversationList"));
    QVERIFY(list);
    const int row = list->model()->rowCount() - 1;
    QModelIndex item;
    for (int r = 0; r <= row; ++r)
        if (list->model()->index(r, 0).data().toString() == title) item = list->model()->index(r, 0);
    QVERIFY(item.isValid());
    QCOMPARE(item.data(Qt::ToolTipRole).toString().contains(title), true);
    QVERIFY(list->fontMetrics().horizontalAdvance(title) > list->viewport()->width());
    QVERIFY(list->visualRect(item).right() < list->viewport()->width());
    QCOMPARE(list->horizontalScrollBar()->maximum(), 0);
}

// Under Send, the message's tokens: asked for a moment after typing stops (not per key),
// only with a model, the last answer only; hidden for an empty composer and after sending.
void TestMainWindow::composerCountsTokens() {
    QVERIFY(installTranslations());
    QLabel* label = m_window->composerTokens();
    QVERIFY(label && !label->isVisible());
    QTest::keyClicks(m_window->composer(), QStringLiteral("no model yet"));
    QTest::qWait(400);
    QVERIFY(!label->isVisible());  // nothing to count with
    m_window->composer()->clear();
    loadFake();
    const int asked = m_service->counts_asked;
    QTest::keyClicks(m_window->composer(), QStringLiteral("one two three"));
    QVERIFY(QTest::qWaitFor([&] { return label->isVisible(); }, 2000));
    QCOMPARE(label->text(), QStringLiteral("3 tokens"));
    QVERIFY(m_service->counts_asked - asked <= 2);  // after typing stopped, not per key
    QTest::keyClicks(m_window->composer(), QStringLiteral(" four"));
    QVERIFY(QTest::qWaitFor([&] { return label->text() == QStringLiteral("4 tokens"); }, 2000));
    // One word: the singular.
    m_window->composer()->setPlainText(QStringLiteral("one"));
    QVERIFY(QTest::qWaitFor([&] { return label->text() == QStringLiteral("1 token"); }, 2000));
    m_window->composer()->clear();
    QVERIFY(!label->isVisible());
    QTest::keyClicks(m_window->composer(), QStringLiteral("send this"));
    QVERIFY(QTest::qWaitFor([&] { return label->isVisible(); }, 2000));
    QTest::keyClick(m_window->composer(), Qt::Key_Return);
    QVERIFY(m_window->composer()->toPlainText().isEmpty());
    QVERIFY(!label->isVisible());
    QVERIFY(QTest::qWaitFor([&] { return !m_window->controller().isGenerating(); }, 5000));
}

// Conversation > Settings: min-p, the three penalties, JSON mode and looked-up drafts are
// offered beside the rest, kept with the conversation, and sent with its next request.
void TestMainWindow::settingsDialogSetsSampling() {
    loadFake();
    QTest::keyClicks(m_window->composer(), QStringLiteral("Hi"));
    QTest::keyClick(m_window->composer(), Qt::Key_Return);
    QVERIFY(QTest::qWaitFor([&] { return !m_window->controller().isGenerating(); }, 5000));
    auto* settings = m_window->findChild<QAction*>(QStringLiteral("settingsAction"));
    QVERIFY(settings);
    bool filled = false;
    QTimer::singleShot(0, this, [&] {
        QWidget* dialog = QApplication::activeModalWidget();
        if (!dialog) return;
        const std::pair<const char*, double> values[] = {{"minPSetting", 0.05},
                                                         {"repetitionPenaltySetting", 1.15},
                                                         {"frequencyPenaltySetting", 0.7},
                                                         {"presencePenaltySetting", -0.4}};
        for (const auto& [name, v] : values) {
            auto* box = dialog->findChild<QDoubleSpinBox*>(QLatin1String(name));
            if (!box) {
                qobject_cast<QDialog*>(dialog)->reject();  // the test fails below instead of waiting
                return;
            }
            box->setValue(v);
        }
        // Both switches found and off (else the dialog goes, and the test fails below).
        auto* json_object = dialog->findChild<QCheckBox*>(QStringLiteral("jsonObjectSetting"));
        auto* lookup = dialog->findChild<QCheckBox*>(QStringLiteral("lookupSetting"));
        if (!json_object || !lookup || json_object->isChecked() || lookup->isChecked()) {
            qobject_cast<QDialog*>(dialog)->reject();
            return;
        }
        json_object->setChecked(true);
        lookup->setChecked(true);
        filled = true;
        dialog->findChild<QDialogButtonBox*>()->button(QDialogButtonBox::Ok)->click();
    });
    settings->trigger();
    QVERIFY(filled);
    const SamplingSettings s = m_window->controller().settings().sampling;
    QCOMPARE(s.min_p, 0.05);
    QCOMPARE(s.repetition_penalty, 1.15);
    QCOMPARE(s.frequency_penalty, 0.7);
    QCOMPARE(s.presence_penalty, -0.4);
    QVERIFY(s.json_object);
    QVERIFY(s.lookup);
    // Kept: the conversation opened again has them.
    const qint64 id = *m_window->controller().currentConversation();
    m_window->controller().newConversation();
    m_window->controller().openConversation(id);
    QCOMPARE(m_window->controller().settings().sampling.frequency_penalty, 0.7);
    QTest::keyClicks(m_window->composer(), QStringLiteral("Again"));
    QTest::keyClick(m_window->composer(), Qt::Key_Return);
    QVERIFY(QTest::qWaitFor([&] { return !m_window->controller().isGenerating(); }, 5000));
    QCOMPARE(m_service->last_params.sampling.presence_penalty, -0.4);
    QCOMPARE(m_service->last_params.sampling.frequency_penalty, 0.7);
    QCOMPARE(m_service->last_params.sampling.repetition_penalty, 1.15);
    QCOMPARE(m_service->last_params.sampling.min_p, 0.05);
    QVERIFY(m_service->last_params.sampling.json_object);
    QVERIFY(m_service->last_params.sampling.lookup);
    // A JSON answer is shown as its text (not as Markdown), fixed-pitch; the first answer,
    // from before JSON mode, stays Markdown.
    const auto widgets = m_window->chatView()->messageWidgets();
    QCOMPARE(widgets.size(), 4);
    MarkdownView* before = widgets.at(1)->view();
    MarkdownView* json_answer = widgets.at(3)->view();
    QVERIFY(before->toPlainText() != before->source());  // "**world**" rendered bold
    QCOMPARE(json_answer->toPlainText(), json_answer->source());
    QVERIFY(json_answer->font().fixedPitch() || QFontInfo(json_answer->font()).fixedPitch());
    // So it is shown after the conversation is opened again, and a continued answer keeps it.
    m_window->controller().newConversation();
    m_window->controller().openConversation(id);
    QCOMPARE(m_window->chatView()->messageWidgets().at(3)->view()->toPlainText(),
             m_window->chatView()->messageWidgets().at(3)->view()->source());
}

namespace {
QString writeFile(const QTemporaryDir& dir, const QString& name, const QByteArray& bytes) {
    const QString path = dir.filePath(name);
    QFile f(path);
    if (!f.open(QIODevice::WriteOnly)) return QString();
    f.write(bytes);
    return path;
}
}  // namespace

// Text files attached to a message: chips above the composer, refused files named in the
// banner, the count and the request carry the files in the store's form, the sent
// message shows them collapsed, and Edit keeps or removes them.
void TestMainWindow::attachFilesToAMessage() {
    QVERIFY(installTranslations());
    QTemporaryDir dir;
    const QString notes = writeFile(dir, QStringLiteral("notes.txt"), "alpha beta\r\ngamma\r\n");
    const QString script = writeFile(dir, QStringLiteral("main.py"), "print('hi')");
    const QString image = writeFile(dir, QStringLiteral("image.png"), QByteArray("\x89PNG\r\n\x1A\n\0\0", 10));
    const QString big = writeFile(dir, QStringLiteral("big.log"), QByteArray(int(attachmentLimitBytes()) + 1, 'a'));
    // The form the model reads, written out by hand.
    const QString notes_block = QStringLiteral("File: notes.txt\n```text\nalpha beta\ngamma\n```");
    const QString script_block = QStringLiteral("File: main.py\n```python\nprint('hi')\n```");

    // Without a model the message cannot be sent, and its files stay.
    QVERIFY(m_window->attachFiles({notes}));
    QVERIFY(m_window->attachmentBar()->isVisible());
    QTest::keyClick(m_window->composer(), Qt::Key_Return);
    QCOMPARE(m_window->attachments().size(), 1);
    m_window->findChild<QToolButton*>(QStringLiteral("removeAttachment"))->click();
    QVERIFY(m_window->attachments().isEmpty());
    QVERIFY(!m_window->attachmentBar()->isVisible());

    loadFake();
    QVERIFY(m_window->attachFiles({notes, script}));
    QCOMPARE(m_window->attachments().size(), 2);
    QCOMPARE(m_window->attachments().at(0).text, QStringLiteral("alpha beta\ngamma\n"));  // CRLF read as LF
    QStringList chips;
    for (auto* label : m_window->attachmentBar()->findChildren<QLabel*>(QStringLiteral("attachmentName")))
        chips << label->text();
    QCOMPARE(chips, (QStringList{QStringLiteral("notes.txt · 2 lines"), QStringLiteral("main.py · 1 line")}));
    // Refused files are named with the reason; the ones attached stay; the same file twice is one.
    QVERIFY(!m_window->attachFiles({image, big, dir.filePath(QStringLiteral("gone.txt")), notes}));
    QCOMPARE(m_window->attachments().size(), 2);
    const QString banner = m_window->banner()->text();
    QVERIFY2(banner.contains(QStringLiteral("image.png is not")), qPrintable(banner));
    QVERIFY2(banner.contains(QStringLiteral("big.log is larger than 1 MiB")), qPrintable(banner));
    QVERIFY2(banner.contains(QStringLiteral("gone.txt: cannot be read")), qPrintable(banner));
    QVERIFY(m_window->banner()->isVisible());
    screenshot("ui-attachments-composer.png");
    QVERIFY(m_window->attachFiles({script}));  // attached already: nothing new, nothing wrong
    QCOMPARE(m_window->attachments().size(), 2);
    QVERIFY(!m_window->banner()->isVisible());  // the refusals' banner goes

    // The count covers the files (the fake counts space-separated words).
    const QString composed = notes_block + QStringLiteral("\n\n") + script_block + QStringLiteral("\n\nWhat do these say?");
    QTest::keyClicks(m_window->composer(), QStringLiteral("What do these say?"));
    const QString expected_count = QStringLiteral("%1 tokens").arg(composed.split(QLatin1Char(' '), Qt::SkipEmptyParts).size());
    QVERIFY(QTest::qWaitFor([&] { return m_window->composerTokens()->text() == expected_count; }, 2000));
    QTest::keyClick(m_window->composer(), Qt::Key_Return);
    QVERIFY(m_window->attachments().isEmpty());
    QVERIFY(!m_window->attachmentBar()->isVisible());
    QVERIFY(QTest::qWaitFor([&] { return !m_window->controller().isGenerating(); }, 5000));
    QCOMPARE(m_service->last_params.turns.back().content, composed);
    QCOMPARE(m_window->controller().currentTitle(), QStringLiteral("What do these say?"));

    // The sent message: the typed text, and a collapsed toggle per file.
    MessageWidget* user = m_window->chatView()->messageWidgets().at(0);
    QCOMPARE(user->view()->source(), QStringLiteral("What do these say?"));
    const auto toggles = user->attachmentToggles();
    QCOMPARE(toggles.size(), 2);
    QCOMPARE(toggles.at(0)->text(), QStringLiteral("▸ notes.txt · 2 lines"));
    QVERIFY(user->findChildren<QPlainTextEdit*>(QStringLiteral("attachmentText")).isEmpty());  // made when opened
    toggles.at(0)->click();
    auto texts = user->findChildren<QPlainTextEdit*>(QStringLiteral("attachmentText"));
    QCOMPARE(texts.size(), 1);
    QVERIFY(texts.at(0)->isVisible());
    QCOMPARE(texts.at(0)->toPlainText(), QStringLiteral("alpha beta\ngamma"));
    QCOMPARE(toggles.at(0)->text(), QStringLiteral("▾ notes.txt · 2 lines"));
    screenshot("ui-attachments-open.png");
    // Copy takes the whole message.
    user->findChild<QToolButton*>(QStringLiteral("copyButton"))->click();
    QCOMPARE(QApplication::clipboard()->text(), composed);

    // Edit and resend: the text is edited, a removed file is left out, the others kept.
    user->findChild<QToolButton*>(QStringLiteral("editButton"))->click();
    auto* editor = user->findChild<QPlainTextEdit*>(QStringLiteral("editEditor"));
    QCOMPARE(editor->toPlainText(), QStringLiteral("What do these say?"));
    const auto removes = user->findChildren<QToolButton*>(QStringLiteral("removeAttachment"));
    QCOMPARE(removes.size(), 2);
    QVERIFY(removes.at(1)->isVisible());
    // Cancel brings a removed file back, closed; Remove again for the resend.
    removes.at(0)->click();
    QVERIFY(!toggles.at(0)->isChecked());
    QVERIFY(!texts.at(0)->isVisible());
    QVERIFY(!toggles.at(0)->isVisible());
    user->findChild<QPushButton*>(QStringLiteral("cancelEditButton"))->click();
    QVERIFY(toggles.at(0)->isVisible());
    QVERIFY(!removes.at(0)->isVisible());
    QVERIFY(!texts.at(0)->isVisible());
    user->findChild<QToolButton*>(QStringLiteral("editButton"))->click();
    QVERIFY(removes.at(0)->isVisible() && removes.at(1)->isVisible());
    removes.at(1)->click();
    editor->setPlainText(QStringLiteral("Only the notes?"));
    user->findChild<QPushButton*>(QStringLiteral("resendButton"))->click();
    QVERIFY(QTest::qWaitFor([&] { return !m_window->controller().isGenerating(); }, 5000));
    QCOMPARE(m_service->last_params.turns.back().content, notes_block + QStringLiteral("\n\nOnly the notes?"));
    // Files alone, nothing typed: the title is their names.
    m_window->controller().newConversation();
    QVERIFY(m_window->attachFiles({script}));
    QTest::keyClick(m_window->composer(), Qt::Key_Return);
    QVERIFY(QTest::qWaitFor([&] { return !m_window->controller().isGenerating(); }, 5000));
    QCOMPARE(m_service->last_params.turns.back().content, script_block);
    QCOMPARE(m_window->controller().currentTitle(), QStringLiteral("main.py"));
    user = m_window->chatView()->messageWidgets().at(0);
    QVERIFY(!user->view()->isVisible());  // nothing typed to show
    QCOMPARE(user->attachmentToggles().size(), 1);
    screenshot("ui-attachments.png");
}

// Files dropped on the composer or anywhere on the chat, or pasted, are attached; text
// dropped or pasted is still typed.
void TestMainWindow::attachmentsByDropAndPaste() {
    loadFake();
    QTemporaryDir dir;
    const QString a = writeFile(dir, QStringLiteral("a.md"), "# A\n");
    const QString b = writeFile(dir, QStringLiteral("b.cpp"), "int b;\n");
    const QString c = writeFile(dir, QStringLiteral("c.txt"), "c\n");
    auto drop = [](QWidget* target, const QStringList& paths) {
        auto* mime = new QMimeData;
        QList<QUrl> urls;
        for (const QString& p : paths) urls << QUrl::fromLocalFile(p);
        mime->setUrls(urls);
        const QPoint at = target->rect().center();
        QDragEnterEvent enter(at, Qt::CopyAction, mime, Qt::LeftButton, Qt::NoModifier);
        QApplication::sendEvent(target, &enter);
        QDropEvent dropped(at, Qt::CopyAction, mime, Qt::LeftButton, Qt::NoModifier);
        QApplication::sendEvent(target, &dropped);
        delete mime;
        return dropped.isAccepted();
    };
    QVERIFY(drop(m_window->composer()->viewport(), {a}));
    QCOMPARE(m_window->attachments().size(), 1);
    QVERIFY(m_window->composer()->toPlainText().isEmpty());  // not the path typed in
    QVERIFY(drop(m_window->chatView()->viewport(), {b}));
    QCOMPARE(m_window->attachments().size(), 2);
    QCOMPARE(m_window->attachments().at(1).name, QStringLiteral("b.cpp"));
    // Pasting files copied in a file manager.
    auto* mime = new QMimeData;
    mime->setUrls({QUrl::fromLocalFile(c)});
    QApplication::clipboard()->setMimeData(mime);
    m_window->composer()->paste();
    QCOMPARE(m_window->attachments().size(), 3);
    QVERIFY(m_window->composer()->toPlainText().isEmpty());
    QApplication::clipboard()->setText(QStringLiteral("plain words"));
    m_window->composer()->paste();
    QCOMPARE(m_window->composer()->toPlainText(), QStringLiteral("plain words"));
    QCOMPARE(m_window->attachments().size(), 3);
}

QTEST_MAIN(TestMainWindow)
#include "test_main_window.moc"
