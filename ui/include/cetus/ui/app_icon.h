// The Cetus app icon for windows and the about box.
#pragma once

#include <QIcon>

namespace cetus::ui {
QIcon appIcon();
}
