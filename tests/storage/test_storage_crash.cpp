// The crash test: start storage_crash_writer, SIGKILL it at a random moment,
// reopen, and check that every commit it announced is there, that the answer it
// was streaming is now `interrupted` with at least its last checkpoint, that
// nothing is left `streaming`, and that PRAGMA integrity_check (and FTS5's own
// check) pass. Repeated over many kills on one growing database.
// CETUS_CRASH_ITERATIONS overrides the number of kills (default 120).
#include "cetus/storage/store.h"

#include <sqlite3.h>

#include <QProcess>
#include <QtTest>

#include <map>
#include <random>
#include <sstream>
#include <thread>

using namespace cetus::storage;

namespace {

uint64_t fnv1a(std::string_view text) {
    uint64_t h = 1469598103934665603ull;
    for (unsigned char c : text) h = (h ^ c) * 1099511628211ull;
    return h;
}

struct Expected {
    size_t bytes = 0;
    uint64_t hash = fnv1a("");
    bool final = false;  // no longer changes: complete, or interrupted after recovery
    MessageState state = MessageState::Complete;
};

int64_t count_streaming(const std::string& file) {
    sqlite3* db = nullptr;
    sqlite3_open_v2(file.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
    sqlite3_stmt* stmt = nullptr;
    sqlite3_prepare_v2(db, "SELECT count(*) FROM messages WHERE state = 'streaming'", -1, &stmt, nullptr);
    const int64_t n = sqlite3_step(stmt) == SQLITE_ROW ? sqlite3_column_int64(stmt, 0) : -1;
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return n;
}

}  // namespace

class TestStorageCrash : public QObject {
    Q_OBJECT

private slots:
    void sigkill_loses_nothing_committed() {
        const int iterations = qEnvironmentVariableIsSet("CETUS_CRASH_ITERATIONS")
                                   ? qEnvironmentVariableIntValue("CETUS_CRASH_ITERATIONS") : 120;
        QTemporaryDir dir;
        QVERIFY(dir.isValid());
        const QString file = dir.filePath("history.db");
        std::map<int64_t, Expected> expected;  // every message ever announced
        std::mt19937 rng(20240501);
        int n_interrupted = 0, n_before_ready = 0, n_checkpoints = 0;

        for (int i = 0; i < iterations; ++i) {
            QProcess writer;
            writer.setProgram(CETUS_CRASH_WRITER);
            writer.setArguments({file, QString::number(i)});
            writer.start();
            QVERIFY2(writer.waitForStarted(5000), qPrintable(writer.errorString()));
            if (rng() % 5 == 0) {
                // Sometimes kill while it is still opening, migrating or recovering.
                std::this_thread::sleep_for(std::chrono::microseconds(rng() % 15000));
                ++n_before_ready;
            } else {
                while (!writer.canReadLine() && writer.state() == QProcess::Running) writer.waitForReadyRead(50);
                std::this_thread::sleep_for(std::chrono::microseconds(rng() % 80000));
            }
            writer.kill();  // SIGKILL
            QVERIFY(writer.waitForFinished(5000));
            QVERIFY2(writer.exitStatus() == QProcess::CrashExit,
                     qPrintable("writer exited by itself: " + writer.readAllStandardError()));

            // Announcements: only whole lines count; each follows a finished commit.
            std::istringstream lines(writer.readAllStandardOutput().toStdString());
            for (std::string line; std::getline(lines, line);) {
                if (lines.eof()) break;  // no newline: cut by the kill
                std::istringstream f(line);
                char kind = 0;
                int64_t id = 0;
                f >> kind >> id;
                if (kind == 'S') {
                    expected[id] = Expected{};
                } else if (kind == 'P' || kind == 'F') {
                    Expected& e = expected[id];
                    f >> e.bytes >> e.hash;
                    e.final = kind == 'F';
                    n_checkpoints += kind == 'P';
                }
            }

            Store store = Store::open(file.toStdString());
            for (const auto& [id, want] : expected) {
                const Message m = store.message(id);
                if (want.final) {
                    QCOMPARE(m.state, want.state);
                    QCOMPARE(m.content.size(), want.bytes);
                    QCOMPARE(fnv1a(m.content), want.hash);
                    if (m.role == Role::Assistant && m.state == MessageState::Complete) {
                        QVERIFY(store.routing_trace(id).has_value());
                    }
                } else {
                    // The killed answer: at least its last announced checkpoint, which is
                    // a prefix of what it holds (a later checkpoint may have committed).
                    QVERIFY2(m.state == MessageState::Interrupted || m.state == MessageState::Complete,
                             qPrintable(QString("message %1 is %2").arg(id).arg(state_name(m.state))));
                    QVERIFY(m.content.size() >= want.bytes);
                    QCOMPARE(fnv1a(std::string_view(m.content).substr(0, want.bytes)), want.hash);
                    // Finished just before the kill (unannounced) or recovered: either
                    // way it must stay exactly so from now on.
                    n_interrupted += m.state == MessageState::Interrupted;
                    expected[id] = Expected{m.content.size(), fnv1a(m.content), true, m.state};
                }
            }
            // Anything committed but not announced is in a final state too.
            QCOMPARE(count_streaming(file.toStdString()), int64_t(0));
            const auto problems = store.check_integrity();
            QVERIFY2(problems.empty(), problems.empty() ? "" : problems.front().c_str());
        }
        Store store = Store::open(file.toStdString());
        for (const auto& [id, want] : expected) {
            const Message m = store.message(id);
            QCOMPARE(m.state, want.state);
            QCOMPARE(fnv1a(m.content), want.hash);
        }
        qInfo("%d kills (%d before READY), %zu messages announced, %d checkpoints, %d answers recovered as interrupted",
              iterations, n_before_ready, expected.size(), n_checkpoints, n_interrupted);
        QVERIFY(n_interrupted > iterations / 3);
    }
};

QTEST_GUILESS_MAIN(TestStorageCrash)
#include "test_storage_crash.moc"
