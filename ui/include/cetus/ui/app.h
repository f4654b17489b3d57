// The GUI application assembled from the ui library: opens the conversation database
// in the app-data folder, starts the engine worker, shows the main window and restores
// the last model and conversation. The cetus main only sets up logging and Qt.
#pragma once

#include <QString>

class QApplication;

namespace cetus::ui {

QString appDataDir();  // QStandardPaths::AppDataLocation, created
QString logDir();      // appDataDir()/logs, created
QString versionText(); // Cetus, Qt, engine build, for --version and About

// Installs the app's English texts for counts ("1 token", "2 tokens"; the sources say
// "%n token(s)"), from resources/translations/cetus_en.ts. Returns whether they loaded.
bool installTranslations();

// Runs the main window until it closes; returns the exit code (installs the translations).
int runApp(QApplication& app);

}  // namespace cetus::ui
