// The window's colours (View > Theme): the platform's own, or Qt's Fusion style with a
// light or a dark palette, applied to the whole application at once. Widgets that
// paint with the palette follow by themselves; the charts follow through chartTheme().
#pragma once

#include <QChart>
#include <QPalette>
#include <QString>

namespace cetus::ui {

enum class Theme { System, Light, Dark };

QString themeKey(Theme t);             // "system", "light", "dark" (saved as view/theme)
Theme themeFromKey(const QString& key);  // unknown keys: System
// Applies t to the running application (call after QApplication exists). The first call
// remembers the platform's style and palette, which System restores.
void applyTheme(Theme t);
// Whether p reads light on dark (window text lighter than the window).
bool isDarkPalette(const QPalette& p);
// The chart theme that matches p, and a chart styled with it (the theme resets the
// series' pens: callers restyle theirs after).
QChart::ChartTheme chartTheme(const QPalette& p);
void styleChart(QChart* chart, const QPalette& p);

}  // namespace cetus::ui
