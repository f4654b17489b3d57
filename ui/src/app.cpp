// Assembles the app: database (with its damaged-file notice), engine worker, window.
#include "cetus/ui/app.h"

#include "cetus/ui/engine_service.h"
#include "cetus/ui/main_window.h"
#include "cetus/ui/remote_service.h"
#include "cetus/ui/sqlite_history_store.h"
#include "cetus/ui/theme.h"
#include "log.h"

#include <QApplication>
#include <QDir>
#include <QMessageBox>
#include <QSettings>
#include <QStandardPaths>
#include <QTimer>
#include <QTranslator>

namespace cetus::ui {

QString appDataDir() {
    const QString dir = QStandardPaths::writableLocation(QStandardPaths::AppDataLocation);
    QDir().mkpath(dir);
    return dir;
}

QString logDir() {
    const QString dir = appDataDir() + QStringLiteral("/logs");
    QDir().mkpath(dir);
    return dir;
}

QString versionText() {
    return QStringLiteral("cetus %1\nQt %2 (built with %3)\n")
        .arg(QStringLiteral(CETUS_VERSION), QString::fromLatin1(qVersion()), QStringLiteral(QT_VERSION_STR));
}

bool installTranslations() {
    static QTranslator* installed = nullptr;
    if (installed) return true;
    auto* t = new QTranslator(QCoreApplication::instance());
    if (!t->load(QStringLiteral(":/i18n/cetus_en.qm")) || !QCoreApplication::installTranslator(t)) {
        logger()->warn("the app's English plural forms did not load; counts read \"(s)\"");
        delete t;
        return false;
    }
    installed = t;
    return true;
}

int runApp(QApplication& app) {
    installTranslations();
    applyTheme(themeFromKey(QSettings().value(QStringLiteral("view/theme")).toString()));  // View > Theme
    const QString db = appDataDir() + QStringLiteral("/conversations.sqlite3");
    QString notice, error;
    auto store = SqliteHistoryStore::open(db, &notice, &error);
    if (!store) {
        logger()->error("cannot open {}: {}", db.toStdString(), error.toStdString());
        QMessageBox::critical(nullptr, QObject::tr("Cetus"), QObject::tr("Cannot open the conversation database %1:\n%2").arg(db, error));
        return 1;
    }
    logger()->info("conversations in {}", db.toStdString());
    EngineGenerationService engine;
    RemoteGenerationService remote;
    SwitchingGenerationService service(engine, remote);  // Model → Remote endpoint… / Use local model
    MainWindow window(*store, service);
    window.show();
    if (!notice.isEmpty()) QTimer::singleShot(0, &window, [&window, notice] { QMessageBox::information(&window, QObject::tr("Cetus"), notice); });
    window.restoreLastConversation();
    window.restoreLastModel();
    return app.exec();
}

}  // namespace cetus::ui
