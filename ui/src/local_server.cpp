// The child process is told where to listen and reports the bound address on
// stderr ("listening on http://..."); that line is what "started" means.
#include "cetus/ui/local_server.h"

#include <QCoreApplication>
#include <QFileInfo>
#include <QRegularExpression>
#include <QStandardPaths>

namespace cetus::ui {

LocalServer::LocalServer(QObject* parent) : QObject(parent) {
    m_proc.setProcessChannelMode(QProcess::SeparateChannels);
    connect(&m_proc, &QProcess::readyReadStandardError, this, [this] {
        m_log += m_proc.readAllStandardError();
        if (!m_url.isEmpty()) {
            if (m_log.size() > 65536) m_log = m_log.right(16384);
            return;
        }
        static const QRegularExpression re(QStringLiteral("listening on (http://[^ ]+/v1)"));
        const auto m = re.match(QString::fromUtf8(m_log));
        if (m.hasMatch()) {
            m_url = m.captured(1);
            emit started(m_url);
        }
    });
    connect(&m_proc, &QProcess::errorOccurred, this, [this](QProcess::ProcessError e) {
        if (e == QProcess::FailedToStart) emit failed(tr("Cannot start %1: %2").arg(cliPath(), m_proc.errorString()));
    });
    connect(&m_proc, &QProcess::finished, this, [this](int code, QProcess::ExitStatus) {
        const bool was_listening = !m_url.isEmpty();
        m_url.clear();
        if (!m_stopping && (code != 0 || !was_listening)) {
            // The last line the server logged says why (e.g. port in use).
            QString why = QString::fromUtf8(m_log).trimmed().section(QLatin1Char('\n'), -1);
            emit failed(tr("The local server stopped: %1").arg(why.isEmpty() ? tr("exit code %1").arg(code) : why));
        }
        m_stopping = false;
        emit stopped();
    });
}

LocalServer::~LocalServer() { stop(); }

QString LocalServer::cliPath() {
    const QString forced = qEnvironmentVariable("CETUS_CLI");
    if (!forced.isEmpty()) return forced;
    const QString beside = QCoreApplication::applicationDirPath() + QStringLiteral("/cetus-cli");
    if (QFileInfo(beside).isExecutable()) return beside;
    const QString found = QStandardPaths::findExecutable(QStringLiteral("cetus-cli"));
    return found.isEmpty() ? beside : found;
}

void LocalServer::start(const QString& model_dir, int port, const QStringList& extra_args) {
    if (running()) stop();
    m_log.clear();
    m_url.clear();
    m_stopping = false;
    m_proc.start(cliPath(), QStringList{QStringLiteral("serve"), QStringLiteral("--model"), model_dir, QStringLiteral("--host"),
                                        QStringLiteral("127.0.0.1"), QStringLiteral("--port"), QString::number(port)}
                                + extra_args);
}

void LocalServer::stop() {
    if (!running()) return;
    m_stopping = true;
    m_proc.terminate();  // SIGTERM: the server cancels its requests and exits
    if (!m_proc.waitForFinished(5000)) {
        m_proc.kill();
        m_proc.waitForFinished(2000);
    }
}

}  // namespace cetus::ui
