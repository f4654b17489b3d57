// End to end: the real main window, the real engine worker on the tiny random golden
// model (tests/data/golden/v3-noaux plus the byte-level tokenizer in tests/data/ui) and
// a real SQLite file. Sends, streams, stops, regenerates, edits and resends, renames,
// searches, deletes, restarts on the same database; checks the panels and token routing;
// saves screenshots of the main states into the build folder.
#include "cetus/engine.h"
#include <cetus/ui/chat_view.h>
#include <cetus/ui/conversation_list_model.h>
#include <cetus/ui/engine_service.h>
#include <cetus/ui/main_window.h>
#include <cetus/ui/panels.h>
#include <cetus/ui/sqlite_history_store.h>

#include "prefix_disk.h"
#include "stall_meter.h"

#include <QAbstractItemModelTester>
#include <QAction>
#include <QComboBox>
#include <QElapsedTimer>
#include <QJsonDocument>
#include <QJsonObject>
#include <QLabel>
#include <QLineEdit>
#include <QListView>
#include <QListWidget>
#include <QPushButton>
#include <QSettings>
#include <QSignalSpy>
#include <QSpinBox>
#include <QStandardPaths>
#include <QTemporaryDir>
#include <QTest>
#include <QTimer>

#include <algorithm>
#include <cmath>
#include <QToolButton>

using namespace cetus::ui;

class TestMainWindowE2e : public QObject {
    Q_OBJECT

private slots:
    void initTestCase();
    void emptyStateWithoutModel();
    void loadModelAndRejectBadFolder();
    void sendStreamsAndPersists();
    void composerCountsTokens();
    void stopWithinAStep();
    void measureEventLoopStall();
    void regenerateKeepsBranches();
    void editAndResendKeepsBranches();
    void panelsAndTokenRouting();
    void renameSearchDelete();
    void restartFindsHistory();
    void longConversationLeavesOutOldTurns();
    void continueExtendsTheAnswer();
    void diskCacheAcrossRestart();
    void penaltiesReachTheEngine();
    void cleanupTestCase();

private:
    void makeWindow();
    void destroyWindow();
    bool waitFinished(int timeout_ms = 60000);
    void shot(const QString& name);
    QList<MessageWidget*> widgets() { return m_window->chatView()->messageWidgets(); }

    QTemporaryDir m_dir;
    QString m_model_dir, m_db;
    std::unique_ptr<SqliteHistoryStore> m_store;
    std::unique_ptr<EngineGenerationService> m_service;
    std::unique_ptr<MainWindow> m_window;
};

void TestMainWindowE2e::initTestCase() {
    QStandardPaths::setTestModeEnabled(true);
    QCoreApplication::setOrganizationName(QStringLiteral("CetusTest"));
    QCoreApplication::setApplicationName(QStringLiteral("cetus-e2e"));
    QSettings().clear();
    // The conversation caches of earlier runs (the test-mode cache folder stays).
    QDir(MainWindow::conversationCacheFolder()).removeRecursively();
    QVERIFY(m_dir.isValid());
    m_model_dir = m_dir.filePath(QStringLiteral("tiny-v3"));
    QVERIFY(QDir().mkpath(m_model_dir));
    const QString golden = QStringLiteral(CETUS_TEST_DATA "/golden/v3-noaux/");
    const QString tok = QStringLiteral(CETUS_TEST_DATA "/ui/");
    QVERIFY(QFile::copy(golden + "config.json", m_model_dir + "/config.json"));
    QVERIFY(QFile::copy(golden + "model.safetensors", m_model_dir + "/model.safetensors"));
    QVERIFY(QFile::copy(tok + "tokenizer.json", m_model_dir + "/tokenizer.json"));
    QVERIFY(QFile::copy(tok + "tokenizer_config.json", m_model_dir + "/tokenizer_config.json"));
    m_db = m_dir.filePath(QStringLiteral("conversations.sqlite3"));
    makeWindow();
}

void TestMainWindowE2e::makeWindow() {
    QString notice, error;
    m_store = SqliteHistoryStore::open(m_db, &notice, &error);
    QVERIFY2(m_store, qPrintable(error));
    m_service = std::make_unique<EngineGenerationService>();
    m_window = std::make_unique<MainWindow>(*m_store, *m_service);
    m_window->setConfirmHandler([](const QString&) { return true; });
    ConversationSettings defaults;
    defaults.sampling.temperature = 0.8;
    defaults.sampling.seed = 7;
    defaults.sampling.max_new_tokens = 40;
    m_window->controller().setDefaultSettings(defaults);
    m_window->resize(1400, 900);
    m_window->show();
    QVERIFY(QTest::qWaitForWindowExposed(m_window.get()));
}

void TestMainWindowE2e::destroyWindow() {
    m_window.reset();
    m_service.reset();  // cancel, quit, wait
    m_store.reset();
}

bool TestMainWindowE2e::waitFinished(int timeout_ms) {
    return QTest::qWaitFor([this] { return !m_window->controller().isGenerating(); }, timeout_ms);
}

void TestMainWindowE2e::shot(const QString& name) {
    QCoreApplication::processEvents();
    const QString file = QStringLiteral(CETUS_TEST_BUILD_DIR "/ui-%1.png").arg(name);
    QVERIFY2(m_window->grab().save(file), qPrintable(file));
}

void TestMainWindowE2e::cleanupTestCase() { destroyWindow(); }

// The conversation's frequency and presence penalties reach the engine through the
// worker: the app's greedy answer equals an engine's own given the same request, and
// differs from the answer without them (the tiny random model repeats its tokens).
void TestMainWindowE2e::penaltiesReachTheEngine() {
    if (!m_service->hasModel()) m_window->openModel(m_model_dir);  // (run on its own)
    QVERIFY(QTest::qWaitFor([&] { return m_service->hasModel() && !m_service->isLoading(); }, 60000));
    cetus::EngineOptions o;
    o.model_dir = m_model_dir.toStdString();
    o.device = cetus::Device::Cpu;
    auto engine = cetus::Engine::load(o);
    cetus::GenerateRequest want;
    want.messages = {{"user", "abc abc abc"}};
    want.sampling.temperature = 0.0f;
    want.sampling.frequency_penalty = 2.0f;
    want.sampling.presence_penalty = 1.5f;
    want.max_new_tokens = 40;
    const std::string expected = engine->generate(want).text;
    cetus::GenerateRequest plain = want;
    plain.sampling.frequency_penalty = plain.sampling.presence_penalty = 0.0f;
    engine->reset_cache();
    QVERIFY(engine->generate(plain).text != expected);

    ConversationSettings defaults;
    defaults.sampling.temperature = 0.0;
    defaults.sampling.frequency_penalty = 2.0;
    defaults.sampling.presence_penalty = 1.5;
    defaults.sampling.max_new_tokens = 40;
    m_window->controller().setDefaultSettings(defaults);
    m_window->controller().newConversation();
    QTest::keyClicks(m_window->composer(), QStringLiteral("abc abc abc"));
    QTest::keyClick(m_window->composer(), Qt::Key_Return);
    QVERIFY(m_window->controller().isGenerating());
    QVERIFY(waitFinished());
    const auto& msgs = m_window->controller().messages();
    QCOMPARE(msgs.size(), size_t(2));
    QCOMPARE(msgs[1].record.content, QString::fromStdString(expected));

    // Settings > Answer with one JSON object reaches the engine as JSON mode.
    cetus::GenerateRequest json_mode = plain;
    json_mode.response_format = cetus::ResponseFormat::JsonObject;
    engine->reset_cache();
    const std::string object = engine->generate(json_mode).text;
    QVERIFY2(object.starts_with("{"), object.c_str());
    defaults.sampling.frequency_penalty = defaults.sampling.presence_penalty = 0.0;
    defaults.sampling.json_object = true;
    m_window->controller().setDefaultSettings(defaults);
    m_window->controller().newConversation();
    QTest::keyClicks(m_window->composer(), QStringLiteral("abc abc abc"));
    QTest::keyClick(m_window->composer(), Qt::Key_Return);
    QVERIFY(waitFinished());
    QCOMPARE(m_window->controller().messages().at(1).record.content, QString::fromStdString(object));
    m_window->controller().setDefaultSettings(ConversationSettings{});
}

void TestMainWindowE2e::emptyStateWithoutModel() {
    auto* label = m_window->findChild<QLabel*>(QStringLiteral("emptyStateLabel"));
    QVERIFY(label && label->isVisible());
    QVERIFY(label->text().contains(QStringLiteral("No model loaded")));
    QVERIFY(m_window->findChild<QPushButton*>(QStringLiteral("openModelButton"))->isVisible());
    QVERIFY(!m_window->sendButton()->isEnabled());
    QCOMPARE(m_window->windowTitle(), QStringLiteral("Cetus"));
    shot(QStringLiteral("01-no-model"));
}

void TestMainWindowE2e::loadModelAndRejectBadFolder() {
    QSignalSpy loaded(m_service.get(), &GenerationService::modelLoaded);
    m_window->openModel(m_model_dir);
    QVERIFY(m_window->loadBar()->isVisible());
    QVERIFY(loaded.wait(60000));
    QVERIFY(!m_window->loadBar()->isVisible());
    QVERIFY(m_window->sendButton()->isEnabled());
    QCOMPARE(QSettings().value(QStringLiteral("model/lastDir")).toString(), m_model_dir);
    QVERIFY(m_window->modelPanel()->text().contains(QStringLiteral("deepseek_v3")));

    // A folder that is not a model: a clear message, and the model stays loaded.
    QSignalSpy failed(m_service.get(), &GenerationService::loadFailed);
    m_window->openModel(m_dir.filePath(QStringLiteral("not-a-model")));
    QVERIFY(failed.wait(30000));
    QVERIFY(m_window->banner()->isVisible());
    QVERIFY2(m_window->banner()->text().contains(QStringLiteral("previous model stays loaded")), qPrintable(m_window->banner()->text()));
    QVERIFY(m_service->hasModel());
    QCOMPARE(QSettings().value(QStringLiteral("model/lastDir")).toString(), m_model_dir);
    shot(QStringLiteral("02-bad-folder"));

    // A GGUF file: without a vocabulary it cannot chat (and says what to add); with the
    // model's tokenizer.json beside it, it loads and is remembered as the file.
    const QString gguf_dir = m_dir.filePath(QStringLiteral("gguf"));
    QVERIFY(QDir().mkpath(gguf_dir));
    const QString gguf = gguf_dir + QStringLiteral("/tiny-v3.gguf");
    QVERIFY(QFile::copy(QStringLiteral(CETUS_TEST_DATA "/gguf/v3-noaux.gguf"), gguf));
    m_window->openModel(gguf);
    QVERIFY(failed.wait(30000));
    QVERIFY2(m_window->banner()->text().contains(QStringLiteral("holds no vocabulary")), qPrintable(m_window->banner()->text()));
    QVERIFY(m_service->hasModel());
    for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
        QVERIFY(QFile::copy(QStringLiteral(CETUS_TEST_DATA "/ui/") + f, gguf_dir + "/" + f));
    m_window->openModel(gguf);
    QVERIFY(loaded.wait(60000));
    QCOMPARE(loaded.last().first().value<ModelDescription>().name, QStringLiteral("tiny-v3"));
    QCOMPARE(QSettings().value(QStringLiteral("model/lastDir")).toString(), gguf);
    QVERIFY(m_window->sendButton()->isEnabled());
    m_window->openModel(m_model_dir);  // the folder again, for the tests that follow
    QVERIFY(loaded.wait(60000));
    QCOMPARE(QSettings().value(QStringLiteral("model/lastDir")).toString(), m_model_dir);
}

// The composer's count comes from the model's own tokenizer on the worker: the UI tests'
// tokenizer has no merges (tests/data/ui/README.md), so a text is one token per UTF-8 byte.
void TestMainWindowE2e::composerCountsTokens() {
    const QString text = QStringLiteral("Whales sing, ñ and 鯨");
    m_window->composer()->setPlainText(text);  // (keyClicks types ASCII only)
    QLabel* label = m_window->composerTokens();
    const QString want = QStringLiteral("%1 token(s)").arg(text.toUtf8().size());
    QVERIFY2(QTest::qWaitFor([&] { return label->isVisible() && label->text() == want; }, 10000),
             qPrintable(label->text() + QStringLiteral(" / ") + want));
    // An attached file is counted with the text, in the form the model reads.
    QTemporaryDir dir;
    QFile file(dir.filePath(QStringLiteral("song.txt")));
    QVERIFY(file.open(QIODevice::WriteOnly));
    file.write("la ``` la\n");
    file.close();
    QVERIFY(m_window->attachFiles({file.fileName()}));
    const QString composed = QStringLiteral("File: song.txt\n````text\nla ``` la\n````\n\n") + text;
    const QString with_file = QStringLiteral("%1 token(s)").arg(composed.toUtf8().size());
    QVERIFY2(QTest::qWaitFor([&] { return label->text() == with_file; }, 10000),
             qPrintable(label->text() + QStringLiteral(" / ") + with_file));
    m_window->attachmentBar()->findChild<QToolButton*>(QStringLiteral("removeAttachment"))->click();
    QVERIFY(QTest::qWaitFor([&] { return label->text() == want; }, 10000));
    m_window->composer()->clear();
    QVERIFY(!label->isVisible());
}

void TestMainWindowE2e::sendStreamsAndPersists() {
    QSignalSpy chunks(m_service.get(), &GenerationService::generationChunk);
    QTest::keyClicks(m_window->composer(), QStringLiteral("Hello whale"));
    QTest::keyClick(m_window->composer(), Qt::Key_Return, Qt::ShiftModifier);  // a line break, not a send
    QVERIFY(!m_window->controller().isGenerating());
    QTest::keyClicks(m_window->composer(), QStringLiteral("tell me about experts"));
    QTest::keyClick(m_window->composer(), Qt::Key_Return);
    QVERIFY(m_window->controller().isGenerating());
    QVERIFY(m_window->composer()->toPlainText().isEmpty());
    QVERIFY(m_window->stopButton()->isVisible());
    QVERIFY(waitFinished());
    QVERIFY(chunks.count() >= 1);
    const auto& msgs = m_window->controller().messages();
    QCOMPARE(msgs.size(), size_t(2));
    QCOMPARE(msgs[0].record.content, QStringLiteral("Hello whale\ntell me about experts"));
    QCOMPARE(msgs[1].record.status, MessageStatus::Complete);
    QVERIFY(!msgs[1].token_text_ends.empty());
    QVERIFY(m_window->windowTitle().startsWith(QStringLiteral("Hello whale")));
    QCOMPARE(widgets().size(), 2);
    QVERIFY(!widgets()[1]->findChild<QLabel*>(QStringLiteral("statsLabel"))->text().isEmpty());
    // Persisted: the store has the conversation with both messages and a routing trace.
    const auto list = m_store->listConversations();
    QCOMPARE(list.size(), size_t(1));
    const auto conv = m_store->openConversation(list[0].id);
    QVERIFY(conv);
    QCOMPARE(conv->messages.size(), size_t(2));
    QVERIFY(conv->messages[1].has_routing_trace);
    shot(QStringLiteral("03-answered"));
}

void TestMainWindowE2e::stopWithinAStep() {
    m_window->controller().setDebugTokenDelayMs(40);
    auto s = m_window->controller().settings();
    QSignalSpy chunks(m_service.get(), &GenerationService::generationChunk);
    QSignalSpy finished(m_service.get(), &GenerationService::generationFinished);
    QVERIFY(m_window->controller().send(QStringLiteral("Count slowly")));
    QVERIFY(chunks.wait(20000));
    shot(QStringLiteral("04-streaming"));
    QElapsedTimer t;
    t.start();
    QTest::mouseClick(m_window->stopButton(), Qt::LeftButton);
    QVERIFY(finished.wait(5000));
    const qint64 stop_ms = t.elapsed();
    const auto outcome = finished.last().at(0).value<GenerationOutcome>();
    QCOMPARE(outcome.finish, FinishKind::Cancelled);
    QVERIFY2(stop_ms < 2000, qPrintable(QString::number(stop_ms)));
    qInfo("stop took %lld ms (one step = 40 ms debug delay + compute)", stop_ms);
    QVERIFY(outcome.stats.generated_tokens < 40);
    m_window->controller().setDebugTokenDelayMs(0);
    const auto& last = m_window->controller().messages().back();
    QCOMPARE(last.record.status, MessageStatus::Complete);
    QVERIFY(last.stats_line.contains(QStringLiteral("stopped")));
    Q_UNUSED(s);
}

// The longest gap between ticks of a 1 ms timer on the GUI thread while answers stream.
void TestMainWindowE2e::measureEventLoopStall() {
    auto defaults = m_window->controller().settings();
    test::StallMeter meter;
    int n_chunks = 0;
    auto c = connect(m_service.get(), &GenerationService::generationChunk, this, [&] { ++n_chunks; });
    m_window->controller().setDebugTokenDelayMs(5);  // ~200 tok/s: a steady stream of batches
    meter.start();
    QVERIFY(m_window->controller().send(QStringLiteral("Go on")));
    QVERIFY(waitFinished());
    meter.stop();
    disconnect(c);
    m_window->controller().setDebugTokenDelayMs(0);
    const double seconds = meter.seconds();
    qInfo("event-loop stall: longest gap %lld ms over %.2f s of generation; %d batches (%.1f per s)", meter.longestGapMs(), seconds,
          n_chunks, n_chunks / std::max(seconds, 1e-3));
    QVERIFY(n_chunks / std::max(seconds, 1e-3) <= 40.0);  // batching holds (~30/s)
}

void TestMainWindowE2e::regenerateKeepsBranches() {
    const auto before = m_window->controller().messages();
    auto* regen = widgets().back()->findChild<QToolButton*>(QStringLiteral("regenerateButton"));
    QVERIFY(regen && regen->isEnabled());
    QTest::mouseClick(regen, Qt::LeftButton);
    QVERIFY(m_window->controller().isGenerating());
    QVERIFY(waitFinished());
    const auto& after = m_window->controller().messages();
    QCOMPARE(after.size(), before.size());
    QCOMPARE(after.back().branch_count, 2);
    QCOMPARE(after.back().branch_index, 1);
    auto* label = widgets().back()->findChild<QLabel*>(QStringLiteral("branchLabel"));
    QVERIFY(label);
    QCOMPARE(label->text(), QStringLiteral("2/2"));
    // Back to the first version and forward again.
    QTest::mouseClick(widgets().back()->findChild<QToolButton*>(QStringLiteral("previousBranch")), Qt::LeftButton);
    QCOMPARE(m_window->controller().messages().back().branch_index, 0);
    QCOMPARE(m_window->controller().messages().back().record.id, before.back().record.id);
    QTest::mouseClick(widgets().back()->findChild<QToolButton*>(QStringLiteral("nextBranch")), Qt::LeftButton);
    QCOMPARE(m_window->controller().messages().back().branch_index, 1);
}

void TestMainWindowE2e::editAndResendKeepsBranches() {
    const int n = int(widgets().size());
    MessageWidget* user = widgets()[n - 2];
    QTest::mouseClick(user->findChild<QToolButton*>(QStringLiteral("editButton")), Qt::LeftButton);
    auto* editor = user->findChild<QPlainTextEdit*>(QStringLiteral("editEditor"));
    QVERIFY(editor && editor->isVisible());
    editor->setPlainText(QStringLiteral("Go on, edited"));
    QTest::mouseClick(user->findChild<QPushButton*>(QStringLiteral("resendButton")), Qt::LeftButton);
    QVERIFY(waitFinished());
    const auto& msgs = m_window->controller().messages();
    QCOMPARE(msgs[msgs.size() - 2].record.content, QStringLiteral("Go on, edited"));
    QCOMPARE(msgs[msgs.size() - 2].branch_count, 2);
    QCOMPARE(msgs.back().record.status, MessageStatus::Complete);
    shot(QStringLiteral("05-branches"));
}

void TestMainWindowE2e::panelsAndTokenRouting() {
    QVERIFY2(m_window->kvPanel()->summary().contains(QStringLiteral("tokens in cache")), qPrintable(m_window->kvPanel()->summary()));
    QCOMPARE(m_window->kvPanel()->pointsShown(), 1);
    QVERIFY(m_window->expertPanel()->heatmap()->total() > 0);
    QVERIFY(m_window->speculativePanel()->pointsShown() > 0);
    QVERIFY(m_window->speculativePanel()->summary().contains(QStringLiteral("decode")));

    // Click the first character of the last answer: its token's routing appears.
    MarkdownView* view = widgets().back()->view();
    QVERIFY(!view->source().isEmpty());
    QTest::mouseClick(view->viewport(), Qt::LeftButton, {}, QPoint(6, 8));
    QVERIFY2(m_window->routingPanel()->title().startsWith(QStringLiteral("Token")), qPrintable(m_window->routingPanel()->title()));
    const RoutingData& r = m_window->routingPanel()->bars()->routing();
    QCOMPARE(r.n_layers, 2);  // 3 layers, the first dense
    QCOMPARE(r.top_k, 4);
    QCOMPARE(r.first_layer, 1);
    QCOMPARE(r.expert_ids.size(), size_t(8));
    // Its probability and its step's five most likely tokens, kept with the answer: one
    // entry per token, most likely first, each no likelier than certain.
    const QString live = m_window->routingPanel()->probabilitiesText();
    QVERIFY2(live.contains(QStringLiteral("Probability under the model")) && live.contains(QStringLiteral("Most likely")),
             qPrintable(live));
    auto last = [&] { return m_window->controller().messages().back(); };
    const qint64 answer = last().record.id;
    const auto stored = m_store->tokenProbabilities(answer);
    QVERIFY(stored);
    QCOMPARE(stored->top_n, 5);
    QCOMPARE(stored->nTokens(), last().token_text_ends.size());
    for (size_t t = 0; t < stored->nTokens(); ++t) {
        const TokenProbabilityData one = stored->token(t);
        double mass = 0.0;
        for (size_t k = 0; k < 5; ++k) {
            QVERIFY(one.alt_logprobs[k] <= 0.0f);
            if (k > 0) QVERIFY(one.alt_logprobs[k] <= one.alt_logprobs[k - 1]);
            mass += std::exp(double(one.alt_logprobs[k]));
        }
        QVERIFY(mass <= 1.0 + 1e-5);
        // A chosen token at least as likely as the fifth is one of the five, with its figure.
        if (one.logprobs[0] >= one.alt_logprobs[4])
            QVERIFY(std::find(one.alt_logprobs.begin(), one.alt_logprobs.end(), one.logprobs[0]) != one.alt_logprobs.end());
    }
    shot(QStringLiteral("06-token-routing"));

    // The same for an answer loaded from history (stored trace): open it afresh.
    const qint64 id = *m_window->controller().currentConversation();
    m_window->controller().newConversation();
    m_window->routingPanel()->clear();
    m_window->controller().openConversation(id);
    QTest::mouseClick(widgets().back()->view()->viewport(), Qt::LeftButton, {}, QPoint(6, 8));
    QVERIFY(m_window->routingPanel()->title().startsWith(QStringLiteral("Token 1")));
    QCOMPARE(m_window->routingPanel()->bars()->routing().expert_ids.size(), size_t(8));
    QCOMPARE(m_window->routingPanel()->probabilitiesText(), live);  // the same figures, from the store
    QVERIFY(m_window->expertPanel()->heatmap()->total() == 0);  // "this answer": none streaming
    m_window->findChild<QComboBox*>(QStringLiteral("expertScope"))->setCurrentIndex(1);
    QVERIFY(m_window->expertPanel()->heatmap()->total() > 0);  // the conversation, from traces
    shot(QStringLiteral("07-history-conversation-experts"));

    // Show: Tokens of one answer. The clicked token's answer, one layer at a time: each
    // column the experts the stored trace has for that token; a click on a column selects
    // that token.
    m_window->findChild<QComboBox*>(QStringLiteral("expertScope"))->setCurrentIndex(2);
    ExpertTimeline* timeline = m_window->expertPanel()->timeline();
    QVERIFY(timeline->isVisible() && !m_window->expertPanel()->heatmap()->isVisible());
    const auto trace = m_store->routingTrace(answer);
    QVERIFY(trace);
    QCOMPARE(size_t(timeline->tokens()), trace->nTokens());
    QCOMPARE(timeline->highlighted(), 0);  // token 1 was clicked
    auto* layer = m_window->findChild<QSpinBox*>(QStringLiteral("timelineLayer"));
    QVERIFY(layer && layer->minimum() == 1 && layer->maximum() == 2);
    for (int l : {1, 2}) {
        layer->setValue(l);
        QCOMPARE(timeline->layer(), l - 1);
        for (int t = 0; t < timeline->tokens(); ++t) {
            const size_t at = (size_t(t) * 2 + size_t(l - 1)) * 4;
            QCOMPARE(timeline->expertsAt(t), std::vector<int32_t>(trace->expert_ids.begin() + long(at), trace->expert_ids.begin() + long(at + 4)));
        }
    }
    QVERIFY(m_window->expertPanel()->summary().startsWith(QStringLiteral("Layer 2")));
    QTest::mouseClick(timeline, Qt::LeftButton, {}, QPoint(30 + ExpertTimeline::k_column * 3 + 2, 20));
    QVERIFY2(m_window->routingPanel()->title().startsWith(QStringLiteral("Token 4")), qPrintable(m_window->routingPanel()->title()));
    QCOMPARE(timeline->highlighted(), 3);
    shot(QStringLiteral("08-token-timeline"));
    m_window->findChild<QComboBox*>(QStringLiteral("expertScope"))->setCurrentIndex(0);

    // Model > Record token probabilities off: the next answer keeps none, and says so.
    auto* record = m_window->findChild<QAction*>(QStringLiteral("tokenProbabilitiesAction"));
    QVERIFY(record && record->isChecked());
    record->setChecked(false);
    QVERIFY(m_window->controller().send(QStringLiteral("And without them?")));
    QVERIFY(waitFinished());
    QVERIFY(!m_store->tokenProbabilities(last().record.id));
    QTest::mouseClick(widgets().back()->view()->viewport(), Qt::LeftButton, {}, QPoint(6, 8));
    QVERIFY2(m_window->routingPanel()->probabilitiesText().contains(QStringLiteral("No token probabilities")),
             qPrintable(m_window->routingPanel()->probabilitiesText()));
    QVERIFY(m_store->tokenProbabilities(answer));  // the earlier answer keeps its own
    record->setChecked(true);
}

void TestMainWindowE2e::renameSearchDelete() {
    QAbstractItemModelTester tester(m_window->conversationModel(), QAbstractItemModelTester::FailureReportingMode::QtTest);
    const qint64 id = *m_window->controller().currentConversation();
    ConversationListModel* model = m_window->conversationModel();
    const int row = model->rowOf(id);
    QVERIFY(row > 0);  // below its day header
    QVERIFY(model->data(model->index(row - 1), ConversationListModel::IsHeaderRole).toBool());
    QCOMPARE(model->data(model->index(row - 1), Qt::DisplayRole).toString(), QStringLiteral("Today"));
    QVERIFY(model->setData(model->index(model->rowOf(id)), QStringLiteral("Whale talk"), Qt::EditRole));
    QCOMPARE(m_store->openConversation(id)->title, QStringLiteral("Whale talk"));
    QCOMPARE(m_window->windowTitle(), QStringLiteral("Whale talk — Cetus"));

    // Search across all messages, with highlighted snippets.
    QTest::keyClicks(m_window->searchField(), QStringLiteral("experts"));
    QListWidget* results = m_window->searchResults();
    QVERIFY(results->isVisible());
    QVERIFY(results->count() >= 1);
    auto* hit = qobject_cast<QLabel*>(results->itemWidget(results->item(0)));
    QVERIFY(hit);
    QVERIFY2(hit->text().contains(QStringLiteral("<b>experts</b>")), qPrintable(hit->text()));
    shot(QStringLiteral("08-search"));
    m_window->searchField()->clear();
    QVERIFY(m_window->conversationList()->isVisible());

    // Pin, then a second conversation, then delete it (confirmation answered yes).
    m_window->controller().setPinned(id, true);
    QCOMPARE(model->data(model->index(0), Qt::DisplayRole).toString(), QStringLiteral("Pinned"));
    m_window->controller().newConversation();
    QVERIFY(m_window->controller().send(QStringLiteral("Temporary")));
    QVERIFY(waitFinished());
    const qint64 temp = *m_window->controller().currentConversation();
    QCOMPARE(m_store->listConversations().size(), size_t(2));
    shot(QStringLiteral("09-two-conversations"));
    m_window->deleteConversation(temp);
    QCOMPARE(m_store->listConversations().size(), size_t(1));
    QCOMPARE(model->rowOf(temp), -1);
    QVERIFY(!m_window->controller().currentConversation());
    m_window->controller().openConversation(id);

    // Export both ways.
    QVERIFY(m_window->exportConversation(m_dir.filePath(QStringLiteral("c.json")), false));
    QVERIFY(m_window->exportConversation(m_dir.filePath(QStringLiteral("c.md")), true));
    QFile md(m_dir.filePath(QStringLiteral("c.md")));
    QVERIFY(md.open(QIODevice::ReadOnly));
    QVERIFY(md.readAll().contains("Whale talk"));
}

void TestMainWindowE2e::restartFindsHistory() {
    const qint64 id = *m_window->controller().currentConversation();
    const size_t n_messages = m_window->controller().messages().size();
    m_window->close();
    destroyWindow();
    makeWindow();
    QCOMPARE(m_window->conversationModel()->rowOf(id), 1);  // under "Pinned"
    m_window->restoreLastConversation();
    QCOMPARE(m_window->controller().currentConversation().value_or(-1), id);
    QCOMPARE(m_window->controller().messages().size(), n_messages);
    QCOMPARE(m_window->windowTitle(), QStringLiteral("Whale talk — Cetus"));
    QSignalSpy loaded(m_service.get(), &GenerationService::modelLoaded);
    QVERIFY(m_window->restoreLastModel());
    QVERIFY(loaded.wait(60000));
    m_window->findChild<QComboBox*>(QStringLiteral("expertScope"))->setCurrentIndex(1);
    QVERIFY(m_window->expertPanel()->heatmap()->total() > 0);  // from the stored traces
    shot(QStringLiteral("10-after-restart"));
}

void TestMainWindowE2e::longConversationLeavesOutOldTurns() {
    // The tiny model holds 128 tokens (each byte about a token with this tokenizer).
    // A conversation longer than that still gets answers: its oldest messages are left
    // out of the prompt, and each such answer says how many.
    m_window->controller().newConversation();
    ConversationSettings s = m_window->controller().settings();
    s.sampling.max_new_tokens = 8;
    m_window->controller().applySettings(s);
    const QString text = QStringLiteral("whales sing long songs across the ocean at night, ").repeated(2).trimmed();
    for (int i = 0; i < 3; ++i) {
        QVERIFY(m_window->controller().send(QStringLiteral("%1. %2").arg(i + 1).arg(text)));
        QVERIFY(waitFinished());
    }
    const auto& msgs = m_window->controller().messages();
    QCOMPARE(msgs.size(), size_t(6));
    QVERIFY2(!msgs[1].stats_line.contains(QStringLiteral("left out")), qPrintable(msgs[1].stats_line));
    for (size_t i : {size_t(3), size_t(5)}) {
        QCOMPARE(msgs[i].record.status, MessageStatus::Complete);
        QVERIFY2(msgs[i].stats_line.contains(QStringLiteral("left out to fit the context")), qPrintable(msgs[i].stats_line));
        const QJsonObject stats = QJsonDocument::fromJson(msgs[i].record.stats_json.toUtf8()).object();
        // Two messages before each new question: the first answer drops at least the
        // first question, the last at least both of the first round.
        QVERIFY2(stats.value(QStringLiteral("n_turns_left_out")).toInt() >= (i == 3 ? 1 : 2), qPrintable(msgs[i].record.stats_json));
        QVERIFY(stats.value(QStringLiteral("n_generated_tokens")).toInt() > 0);
    }
    // The whole conversation's expert counts cover all three answers (each answer's
    // counts used to drop out of them once the next one started).
    qint64 stored = 0;
    for (const auto& d : msgs)
        if (d.record.role == ChatRole::Assistant)
            if (const auto t = m_store->routingTrace(d.record.id)) stored += qint64(t->expert_ids.size());
    qint64 counted = 0;
    for (qint64 n : m_window->controller().conversationExpertCounts()) counted += n;
    QCOMPARE(counted, stored);
    shot(QStringLiteral("11-left-out"));
}

void TestMainWindowE2e::continueExtendsTheAnswer() {
    // An answer cut by the length limit offers Continue; a click extends the same
    // message (no new branch) with its tokens, routing and counts adding up.
    m_window->controller().newConversation();
    ConversationSettings s = m_window->controller().settings();
    s.sampling.max_new_tokens = 6;
    s.sampling.temperature = 0.0;
    m_window->controller().applySettings(s);
    QVERIFY(m_window->controller().send(QStringLiteral("Tell me about whales")));
    QVERIFY(waitFinished());
    auto last = [&] { return m_window->controller().messages().back(); };
    QVERIFY2(last().stats_line.contains(QStringLiteral("length limit")), qPrintable(last().stats_line));
    QVERIFY(last().can_continue);
    const qint64 id = last().record.id;
    const QString first = last().record.content;
    QCOMPARE(last().token_text_ends.size(), size_t(6));
    auto* button = widgets().back()->findChild<QToolButton*>(QStringLiteral("continueButton"));
    QVERIFY(button && button->isVisible());
    QVERIFY(!widgets().front()->findChild<QToolButton*>(QStringLiteral("continueButton")));  // answers only
    QTest::mouseClick(button, Qt::LeftButton);
    QVERIFY(m_window->controller().isGenerating());
    QVERIFY(waitFinished());
    QCOMPARE(m_window->controller().messages().size(), size_t(2));
    QCOMPARE(last().record.id, id);
    QCOMPARE(last().branch_count, 1);
    QCOMPARE(last().record.status, MessageStatus::Complete);
    QVERIFY2(last().record.content.startsWith(first) && last().record.content.size() > first.size(),
             qPrintable(last().record.content));
    QCOMPARE(last().token_text_ends.size(), size_t(12));
    QCOMPARE(last().token_text_ends.back(), int(last().record.content.size()));
    const QJsonObject stats = QJsonDocument::fromJson(last().record.stats_json.toUtf8()).object();
    QCOMPARE(stats.value(QStringLiteral("n_generated_tokens")).toInt(), 12);
    const auto trace = m_store->routingTrace(id);
    QVERIFY(trace);
    QCOMPARE(trace->nTokens(), size_t(12));
    QVERIFY(last().can_continue);  // cut by the limit again
    // The answer's expert counts cover all 12 tokens: one choice per token, layer and slot.
    qint64 choices = 0;
    for (qint64 n : m_window->controller().answerExpertCounts()) choices += n;
    QCOMPARE(choices, qint64(12 * trace->n_layers * trace->top_k));
    // Its token probabilities went on too: one entry per token.
    QCOMPARE(m_store->tokenProbabilities(id)->nTokens(), size_t(12));
    shot(QStringLiteral("12-continued"));

    // Continued with Model > Record token probabilities off, the answer keeps none; and
    // continued again with it on, the new tokens' figures alone would not line up with
    // the answer's tokens, so it still has none (a click says so, never another token's).
    auto* record = m_window->findChild<QAction*>(QStringLiteral("tokenProbabilitiesAction"));
    QVERIFY(record);
    record->setChecked(false);
    m_window->controller().continueAnswer(id);
    QVERIFY(waitFinished());
    QCOMPARE(last().token_text_ends.size(), size_t(18));
    QVERIFY(!m_store->tokenProbabilities(id));
    record->setChecked(true);
    m_window->controller().continueAnswer(id);
    QVERIFY(waitFinished());
    QCOMPARE(last().token_text_ends.size(), size_t(24));
    QVERIFY(!m_store->tokenProbabilities(id));
    m_window->controller().selectToken(id, 0);
    QVERIFY2(m_window->routingPanel()->probabilitiesText().contains(QStringLiteral("No token probabilities")),
             qPrintable(m_window->routingPanel()->probabilitiesText()));
}

void TestMainWindowE2e::diskCacheAcrossRestart() {
    // Model > Keep conversation caches on disk (on by default): a conversation opened
    // again after a restart goes on from its rows on disk instead of a new prefill, and
    // deleting it removes every file it wrote (its token ids are its text).
    auto* option = m_window->findChild<QAction*>(QStringLiteral("diskCacheAction"));
    QVERIFY(option && option->isChecked());
    const QDir folder(MainWindow::conversationCacheFolder());
    // The tags of the files there (GenerationParams::cache_tag), read as the engine does.
    auto tags = [&] {
        QStringList out;
        for (const QString& name : folder.entryList({QStringLiteral("*.cpx")}, QDir::Files)) {
            QFile f(folder.filePath(name));
            if (!f.open(QIODevice::ReadOnly)) continue;
            const QByteArray bytes = f.readAll();
            cetus::cpx::Head h;
            try {
                cetus::cpx::decode(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), size_t(bytes.size())), &h);
            } catch (const std::exception& e) {
                qWarning("%s: %s", qPrintable(name), e.what());
                out << QStringLiteral("(damaged)");
                continue;
            }
            out << QString::fromStdString(h.tag);
        }
        return out;
    };
    m_window->controller().newConversation();
    ConversationSettings s = m_window->controller().settings();
    s.sampling.max_new_tokens = 8;
    s.sampling.temperature = 0.0;
    m_window->controller().applySettings(s);
    const QString question = QStringLiteral("Where do whales sing their longest songs?");
    QVERIFY(m_window->controller().send(question));
    QVERIFY(waitFinished());
    const qint64 id = *m_window->controller().currentConversation();
    const QString tag = m_window->controller().cacheTag(id);
    m_window->close();
    destroyWindow();  // the engine writes the conversation's rows as it goes
    QVERIFY2(tags().contains(tag), qPrintable(tags().join(QLatin1Char(' '))));
    makeWindow();
    QSignalSpy loaded(m_service.get(), &GenerationService::modelLoaded);
    QVERIFY(m_window->restoreLastModel());
    QVERIFY(loaded.wait(60000));
    m_window->controller().openConversation(id);
    QVERIFY(m_window->controller().send(QStringLiteral("Say more.")));
    QVERIFY(waitFinished());
    QVERIFY2(m_window->kvPanel()->summary().contains(QStringLiteral("were read back from the cache on disk")),
             qPrintable(m_window->kvPanel()->summary()));
    QVERIFY2(m_window->kvPanel()->summary().contains(QStringLiteral("On disk for this model")),
             qPrintable(m_window->kvPanel()->summary()));
    shot(QStringLiteral("13-disk-cache"));

    // Another conversation takes the cache: the deleted one's rows were stored (in memory
    // and queued to disk) and must go from both.
    m_window->controller().newConversation();
    QVERIFY(m_window->controller().send(QStringLiteral("Something else about dolphins, please.")));
    QVERIFY(waitFinished());
    QTRY_VERIFY_WITH_TIMEOUT(tags().contains(tag), 20000);  // written as the other one came
    QStringList others = tags();
    others.removeAll(tag);
    m_window->deleteConversation(id);
    QVERIFY(QTest::qWaitFor([&] { return !tags().contains(tag); }, 20000));  // queued to the worker
    for (const QString& other : others) QVERIFY2(tags().contains(other), qPrintable(other));  // the others stay
    // The same first question in a new conversation finds nothing kept of the deleted one.
    m_window->controller().newConversation();
    m_window->controller().applySettings(s);
    QVERIFY(m_window->controller().send(question));
    QVERIFY(waitFinished());
    QVERIFY2(!m_window->kvPanel()->summary().contains(QStringLiteral("came back")) &&
                 !m_window->kvPanel()->summary().contains(QStringLiteral("read back")),
             qPrintable(m_window->kvPanel()->summary()));

    // Model > Clear conversation caches removes every file.
    auto* clear = m_window->findChild<QAction*>(QStringLiteral("clearCachesAction"));
    QVERIFY(clear);
    clear->trigger();
    QVERIFY(QTest::qWaitFor([&] { return tags().isEmpty(); }, 20000));
    QVERIFY(!tags().contains(tag));
}

QTEST_MAIN(TestMainWindowE2e)
#include "test_main_window_e2e.moc"
