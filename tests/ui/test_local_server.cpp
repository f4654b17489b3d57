// The app's "serve this model" switch: the real cetus-cli serve starts on a free
// loopback port over a model folder with the app's options (a context length),
// answers /v1/models, and stops when asked;
// a folder that is not a model ends in a clear failure.
#include "cetus/ui/local_server.h"

#include <QNetworkAccessManager>
#include <QNetworkReply>
#include <QSignalSpy>
#include <QTemporaryDir>
#include <QtTest>

class TestLocalServer : public QObject {
    Q_OBJECT
private slots:
    void initTestCase() { qputenv("CETUS_CLI", CETUS_CLI_BINARY); }

    void servesAndStops() {
        QTemporaryDir tmp;
        const QString g = QStringLiteral(CETUS_TEST_DATA "/golden/v3-noaux/"), t = QStringLiteral(CETUS_TEST_DATA "/ui/");
        for (const char* f : {"config.json", "model.safetensors"}) QVERIFY(QFile::copy(g + f, tmp.filePath(f)));
        for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) QVERIFY(QFile::copy(t + f, tmp.filePath(f)));
        cetus::ui::LocalServer server;
        QSignalSpy started(&server, &cetus::ui::LocalServer::started);
        server.start(tmp.path(), 0, {QStringLiteral("--context"), QStringLiteral("64")});
        QVERIFY(started.wait(60000));
        const QString url = started.at(0).at(0).toString();
        QVERIFY2(url.startsWith(QStringLiteral("http://127.0.0.1:")), qPrintable(url));
        QNetworkAccessManager net;
        QNetworkReply* reply = net.get(QNetworkRequest(QUrl(url + QStringLiteral("/models"))));
        QSignalSpy done(reply, &QNetworkReply::finished);
        QVERIFY(done.wait(20000));
        QCOMPARE(reply->attribute(QNetworkRequest::HttpStatusCodeAttribute).toInt(), 200);
        const QByteArray body = reply->readAll();
        QVERIFY(body.contains(tmp.path().section(QLatin1Char('/'), -1).toUtf8()));
        QVERIFY2(body.contains("\"max_model_len\":64"), body.constData());  // the app's context reached it
        reply->deleteLater();
        QSignalSpy stopped(&server, &cetus::ui::LocalServer::stopped);
        QSignalSpy failed(&server, &cetus::ui::LocalServer::failed);
        server.stop();
        QVERIFY(!server.running());
        QVERIFY(stopped.count() == 1 || stopped.wait(5000));
        QCOMPARE(failed.count(), 0);  // a requested stop is not a failure
    }

    void notAModelFailsClearly() {
        QTemporaryDir empty;
        cetus::ui::LocalServer server;
        QSignalSpy failed(&server, &cetus::ui::LocalServer::failed);
        server.start(empty.path(), 0);
        QVERIFY(failed.wait(30000));
        QVERIFY2(failed.at(0).at(0).toString().contains(QStringLiteral("config.json")),
                 qPrintable(failed.at(0).at(0).toString()));
    }
};

QTEST_MAIN(TestLocalServer)
#include "test_local_server.moc"
