// The cetus GUI main: logging (rotating file in the app data folder, plus stderr),
// --version, QApplication; everything else is the ui library's runApp.
#include "omp_env.h"
#include <cetus/ui/app.h>
#include <cetus/ui/app_icon.h>

#include "model_paths.h"

#include <QApplication>
#include <QCommandLineParser>
#include <QSettings>

#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstring>
#include <exception>

namespace {

void setUpLogging() {
    std::vector<spdlog::sink_ptr> sinks;
    sinks.push_back(std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
    try {
        const std::string file = (cetus::ui::logDir() + QStringLiteral("/cetus.log")).toStdString();
        sinks.push_back(std::make_shared<spdlog::sinks::rotating_file_sink_mt>(file, 5 * 1024 * 1024, 3));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "cetus: cannot open the log file: %s\n", e.what());
    }
    for (const char* name : {"ui", "engine", "storage"}) {
        auto logger = std::make_shared<spdlog::logger>(name, sinks.begin(), sinks.end());
        logger->set_level(spdlog::level::info);
        logger->flush_on(spdlog::level::warn);
        spdlog::register_logger(logger);
    }
    spdlog::flush_every(std::chrono::seconds(2));
}

// First start: when no model was ever opened (the window remembers the last one in
// model/lastDir and reopens it at start), point it at the bundled demo model so a new
// user can chat at once. A model the user chose is never replaced.
void preferBundledModel() {
    QSettings settings;
    if (!settings.value(QStringLiteral("model/lastDir")).toString().isEmpty()) return;
    const std::string dir = cetus::app::find_bundled_model();
    if (dir.empty()) {
        spdlog::get("ui")->info("no bundled model found (looked in {})", cetus::app::bundled_model_roots_text());
        return;
    }
    spdlog::get("ui")->info("first start: opening the bundled model {}", dir);
    settings.setValue(QStringLiteral("model/lastDir"), QString::fromStdString(dir));
}

}  // namespace

int main(int argc, char** argv) {
    cetus::app::ensure_passive_omp_wait(argv);
    // Before QApplication, so --version works without a display (CI, packaging checks).
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--version") == 0 || std::strcmp(argv[i], "-v") == 0) {
            std::fputs(cetus::ui::versionText().toUtf8().constData(), stdout);
            return 0;
        }
    }
    QApplication app(argc, argv);
    QApplication::setOrganizationName(QStringLiteral("Cetus"));
    QApplication::setApplicationName(QStringLiteral("cetus"));
    QApplication::setApplicationDisplayName(QStringLiteral("Cetus"));
    QApplication::setApplicationVersion(QStringLiteral(CETUS_VERSION));
    QApplication::setDesktopFileName(QStringLiteral("cetus"));

    QCommandLineParser parser;
    parser.setApplicationDescription(QStringLiteral("Chat with DeepSeek-architecture models on your own computer."));
    parser.addHelpOption();
    parser.addOption({{QStringLiteral("v"), QStringLiteral("version")}, QStringLiteral("Print versions and exit.")});
    parser.process(app);
    QApplication::setWindowIcon(cetus::ui::appIcon());
    try {
        setUpLogging();
        spdlog::get("ui")->info("Cetus {} starting (Qt {})", CETUS_VERSION, qVersion());
        preferBundledModel();
        return cetus::ui::runApp(app);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "cetus: fatal: %s\n", e.what());
        if (auto l = spdlog::get("ui")) l->critical("fatal: {}", e.what());
        return 1;
    }
}
