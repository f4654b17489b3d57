// The conversation list: pinned conversations first, then the rest grouped by day
// ("Today", "Yesterday", "Previous 7 days", then by month), each group under a header
// row that cannot be selected; archived ones (the archive's list) under "Archived". Editing a title emits renameRequested; the controller
// persists it and the model is refreshed from the store.
#pragma once

#include "cetus/ui/types.h"

#include <QAbstractListModel>
#include <QDateTime>

#include <vector>

namespace cetus::ui {

class ConversationListModel : public QAbstractListModel {
    Q_OBJECT
public:
    enum Roles { IdRole = Qt::UserRole + 1, IsHeaderRole, PinnedRole, ArchivedRole };

    explicit ConversationListModel(QObject* parent = nullptr);
    void setConversations(const std::vector<ConversationSummaryRecord>& rows, const QDateTime& now = QDateTime::currentDateTime());
    int rowOf(qint64 id) const;

    int rowCount(const QModelIndex& parent = {}) const override;
    QVariant data(const QModelIndex& index, int role) const override;
    bool setData(const QModelIndex& index, const QVariant& value, int role) override;
    Qt::ItemFlags flags(const QModelIndex& index) const override;

    static QString groupOf(const ConversationSummaryRecord& c, const QDateTime& now);

signals:
    void renameRequested(qint64 id, const QString& title);

private:
    bool valid(const QModelIndex& index) const;
    struct Row {
        bool header = false;
        QString text;
        ConversationSummaryRecord c;
    };
    std::vector<Row> m_rows;
};

}  // namespace cetus::ui
