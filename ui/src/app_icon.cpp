// The app icon. resources/cetus.svg is the source (desktop entry, installers); Debian's
// Qt may lack the SVG image plugin, so the same shapes are also painted here.
#include "cetus/ui/app_icon.h"

#include <QImageReader>
#include <QPainter>
#include <QPainterPath>

static void initCetusResources() { Q_INIT_RESOURCE(cetus); }

namespace cetus::ui {

namespace {

QPixmap paintIcon(int size) {
    QPixmap pm(size, size);
    pm.fill(Qt::transparent);
    QPainter p(&pm);
    p.setRenderHint(QPainter::Antialiasing);
    p.scale(size / 256.0, size / 256.0);
    QPainterPath bubble;
    bubble.moveTo(40, 28);
    bubble.lineTo(216, 28);
    bubble.arcTo(188, 28, 56, 56, 90, -90);
    bubble.lineTo(244, 172);
    bubble.arcTo(188, 144, 56, 56, 0, -90);
    bubble.lineTo(112, 200);
    bubble.lineTo(64, 236);
    bubble.lineTo(72, 200);
    bubble.lineTo(40, 200);
    bubble.arcTo(12, 144, 56, 56, 270, -90);
    bubble.lineTo(12, 56);
    bubble.arcTo(12, 28, 56, 56, 180, -90);
    bubble.closeSubpath();
    QLinearGradient bg(0, 28, 0, 236);
    bg.setColorAt(0, QColor(0x3b, 0x52, 0x8b));
    bg.setColorAt(1, QColor(0x21, 0x91, 0x8c));
    p.fillPath(bubble, bg);
    QPainterPath whale;
    whale.moveTo(52, 122);
    whale.cubicTo(60, 86, 104, 70, 140, 80);
    whale.cubicTo(170, 88, 188, 108, 196, 120);
    whale.cubicTo(206, 106, 214, 98, 228, 96);
    whale.cubicTo(222, 110, 220, 122, 224, 136);
    whale.cubicTo(212, 134, 204, 130, 196, 124);
    whale.cubicTo(190, 150, 160, 170, 120, 170);
    whale.cubicTo(82, 170, 56, 152, 52, 122);
    p.fillPath(whale, QColor(0xfd, 0xe7, 0x25));
    p.setBrush(QColor(0x44, 0x01, 0x54));
    p.setPen(Qt::NoPen);
    p.drawEllipse(QPointF(84, 114), 7, 7);
    QPen mouth(QColor(0x44, 0x01, 0x54), 6, Qt::SolidLine, Qt::RoundCap);
    QPainterPath smile;
    smile.moveTo(70, 140);
    smile.cubicTo(92, 152, 122, 154, 150, 146);
    p.strokePath(smile, mouth);
    QPainterPath spout;
    spout.moveTo(112, 76);
    spout.cubicTo(110, 60, 100, 50, 88, 46);
    spout.moveTo(112, 76);
    spout.cubicTo(118, 60, 128, 52, 140, 50);
    p.strokePath(spout, QPen(QColor(0xfd, 0xe7, 0x25), 6, Qt::SolidLine, Qt::RoundCap));
    const QColor dots[] = {QColor(0xfd, 0xe7, 0x25, 140), QColor(0x5e, 0xc9, 0x62), QColor(0xfd, 0xe7, 0x25, 217)};
    for (int i = 0; i < 3; ++i) {
        p.setBrush(dots[i]);
        p.drawEllipse(QPointF(172 + 24 * i, 54), 9, 9);
    }
    return pm;
}

}  // namespace

QIcon appIcon() {
    initCetusResources();
    if (QImageReader::supportedImageFormats().contains("svg")) return QIcon(QStringLiteral(":/cetus/cetus.svg"));
    QIcon icon;
    for (int s : {16, 24, 32, 48, 64, 128, 256}) icon.addPixmap(paintIcon(s));
    return icon;
}

}  // namespace cetus::ui
