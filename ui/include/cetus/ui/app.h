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

// Runs the main window until it closes; returns the exit code.
int runApp(QApplication& app);

}  // namespace cetus::ui
