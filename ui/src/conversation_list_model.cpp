// The conversation list's item model; GUI thread only, refreshed wholesale from the
// store (a few hundred rows at most per page), with group headers between the days.
#include "cetus/ui/conversation_list_model.h"

#include <QFont>
#include <QLocale>

namespace cetus::ui {

ConversationListModel::ConversationListModel(QObject* parent) : QAbstractListModel(parent) {}

bool ConversationListModel::valid(const QModelIndex& index) const {
    return index.isValid() && !index.parent().isValid() && index.model() == this && index.row() >= 0 &&
           size_t(index.row()) < m_rows.size();
}

QString ConversationListModel::groupOf(const ConversationSummaryRecord& c, const QDateTime& now) {
    if (c.archived) return tr("Archived");
    if (c.pinned) return tr("Pinned");
    const QDate day = QDateTime::fromMSecsSinceEpoch(c.updated_ms).date();
    const qint64 age = day.daysTo(now.date());
    if (age <= 0) return tr("Today");
    if (age == 1) return tr("Yesterday");
    if (age < 7) return tr("Previous 7 days");
    if (age < 30) return tr("Previous 30 days");
    return QLocale().toString(day, QStringLiteral("MMMM yyyy"));
}

void ConversationListModel::setConversations(const std::vector<ConversationSummaryRecord>& rows, const QDateTime& now) {
    beginResetModel();
    m_rows.clear();
    std::vector<ConversationSummaryRecord> sorted = rows;
    std::stable_sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) {
        if (a.pinned != b.pinned) return a.pinned;
        return a.updated_ms > b.updated_ms;
    });
    QString group;
    for (const auto& c : sorted) {
        const QString g = groupOf(c, now);
        if (g != group) {
            m_rows.push_back({true, g, {}});
            group = g;
        }
        m_rows.push_back({false, c.title, c});
    }
    endResetModel();
}

int ConversationListModel::rowOf(qint64 id) const {
    for (size_t i = 0; i < m_rows.size(); ++i)
        if (!m_rows[i].header && m_rows[i].c.id == id) return int(i);
    return -1;
}

int ConversationListModel::rowCount(const QModelIndex& parent) const {
    return parent.isValid() ? 0 : int(m_rows.size());
}

QVariant ConversationListModel::data(const QModelIndex& index, int role) const {
    if (!valid(index)) return {};
    const Row& r = m_rows[size_t(index.row())];
    switch (role) {
    case Qt::DisplayRole:
        if (r.header) return r.text;
        return r.text.isEmpty() ? tr("New conversation") : r.text;  // pinned ones sit under "Pinned"
    case Qt::EditRole: return r.text;
    case Qt::ToolTipRole:
        if (r.header) return {};
        return tr("%1\n%n message(s), last active %2", nullptr, int(r.c.n_messages))
            .arg(r.text, QLocale().toString(QDateTime::fromMSecsSinceEpoch(r.c.updated_ms), QLocale::ShortFormat));
    case Qt::FontRole:
        if (r.header) {
            QFont f;
            f.setBold(true);
            f.setPointSizeF(f.pointSizeF() * 0.85);
            return f;
        }
        return {};
    case IdRole: return r.header ? QVariant() : QVariant(r.c.id);
    case IsHeaderRole: return r.header;
    case PinnedRole: return r.c.pinned;
    case ArchivedRole: return r.c.archived;
    default: return {};
    }
}

bool ConversationListModel::setData(const QModelIndex& index, const QVariant& value, int role) {
    if (!valid(index) || role != Qt::EditRole) return false;
    Row& r = m_rows[size_t(index.row())];
    const QString title = value.toString().trimmed();
    if (r.header || title.isEmpty() || title == r.text) return false;
    r.text = title;
    emit dataChanged(index, index, {Qt::DisplayRole, Qt::EditRole});
    emit renameRequested(r.c.id, title);
    return true;
}

Qt::ItemFlags ConversationListModel::flags(const QModelIndex& index) const {
    if (!valid(index)) return Qt::NoItemFlags;
    if (m_rows[size_t(index.row())].header) return Qt::ItemIsEnabled;
    return Qt::ItemIsEnabled | Qt::ItemIsSelectable | Qt::ItemIsEditable;
}

}  // namespace cetus::ui
