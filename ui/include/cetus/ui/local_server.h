// Serving the loaded model to other programs (issue 9's in-app switch, off by
// default): runs `cetus-cli serve` on loopback as a child process over the same
// model folder. The child loads its own copy of the model, so memory use doubles
// while it runs; the window's engine is not shared across threads or processes.
#pragma once

#include <QObject>
#include <QProcess>
#include <QString>
#include <QStringList>

namespace cetus::ui {

class LocalServer : public QObject {
    Q_OBJECT
public:
    explicit LocalServer(QObject* parent = nullptr);
    ~LocalServer() override;  // stops the server

    // Starts serving model_dir on 127.0.0.1:port (0: any free port), with more of
    // cetus-cli serve's options in extra_args (the app passes its load options:
    // --context, --kv-cache, --fp8, --threads). Emits started(url) once it listens,
    // or failed(message).
    void start(const QString& model_dir, int port, const QStringList& extra_args = {});
    void stop();
    bool running() const { return m_proc.state() != QProcess::NotRunning; }
    QString url() const { return m_url; }
    // $CETUS_CLI when set, else cetus-cli next to this executable, else the one on PATH.
    static QString cliPath();

signals:
    void started(const QString& url);
    void stopped();
    void failed(const QString& message);

private:
    QProcess m_proc;
    QString m_url;
    QByteArray m_log;
    bool m_stopping = false;
};

}  // namespace cetus::ui
