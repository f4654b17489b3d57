// The main window: layout, menus and shortcuts, and the wiring between widgets, the
// ChatController and the model-loading signals. No engine or storage type appears here.
#include "cetus/ui/local_server.h"
#include "cetus/ui/main_window.h"

#include "cetus/ui/app_icon.h"
#include "cetus/ui/chat_view.h"
#include "cetus/ui/conversation_list_model.h"
#include "cetus/ui/endpoint_dialog.h"
#include "cetus/ui/panels.h"
#include "cetus/ui/theme.h"
#include "log.h"

#include <QAction>
#include <QActionGroup>
#include <QApplication>
#include <QCheckBox>
#include <QCloseEvent>
#include <QDesktopServices>
#include <QDialog>
#include <QDialogButtonBox>
#include <QDir>
#include <QDockWidget>
#include <QDragEnterEvent>
#include <QDropEvent>
#include <QDoubleSpinBox>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QKeyEvent>
#include <QLocale>
#include <QLabel>
#include <QLineEdit>
#include <QListView>
#include <QListWidget>
#include <QMenu>
#include <QMimeData>
#include <QSignalBlocker>
#include <QMenuBar>
#include <QMessageBox>
#include <QProgressBar>
#include <QPushButton>
#include <QInputDialog>
#include <QScrollBar>
#include <QSettings>
#include <QTimer>
#include <QSpinBox>
#include <QSplitter>
#include <QStackedWidget>
#include <QStandardPaths>
#include <QStatusBar>
#include <QStyledItemDelegate>
#include <QThread>
#include <QToolButton>
#include <QUrl>
#include <QVBoxLayout>

#include <algorithm>
#include <climits>

namespace cetus::ui {

namespace {
// A title that does not fit ends in "…" (the whole title is the tooltip) instead of
// widening the list past its column with a horizontal scroll bar: items ask for no width
// of their own, so each is as wide as the view.
class ElidingDelegate : public QStyledItemDelegate {
public:
    using QStyledItemDelegate::QStyledItemDelegate;
    QSize sizeHint(const QStyleOptionViewItem& option, const QModelIndex& index) const override {
        QSize s = QStyledItemDelegate::sizeHint(option, index);
        s.setWidth(1);
        return s;
    }
};
// The local files a drop or paste carries; empty when it carries anything else.
QStringList localFiles(const QMimeData* mime) {
    QStringList paths;
    if (!mime || !mime->hasUrls()) return paths;
    for (const QUrl& url : mime->urls()) {
        if (!url.isLocalFile()) return {};
        paths << url.toLocalFile();
    }
    return paths;
}

QString byteSize(qint64 bytes) {
    return QLocale().formattedDataSize(bytes, 1, QLocale::DataSizeTraditionalFormat);
}
}  // namespace

bool Composer::canInsertFromMimeData(const QMimeData* source) const {
    return !localFiles(source).isEmpty() || QPlainTextEdit::canInsertFromMimeData(source);
}

void Composer::insertFromMimeData(const QMimeData* source) {
    const QStringList files = localFiles(source);
    if (files.isEmpty()) QPlainTextEdit::insertFromMimeData(source);
    else emit filesDropped(files);
}

void Composer::keyPressEvent(QKeyEvent* e) {
    if ((e->key() == Qt::Key_Return || e->key() == Qt::Key_Enter) && !(e->modifiers() & Qt::ShiftModifier)) {
        emit submitted();
        return;
    }
    QPlainTextEdit::keyPressEvent(e);
}

MainWindow::MainWindow(HistoryStore& store, GenerationService& service, QWidget* parent)
    : QMainWindow(parent), m_controller(std::make_unique<ChatController>(store, service)), m_service(service),
      m_switch(qobject_cast<SwitchingGenerationService*>(&service)) {
    setObjectName(QStringLiteral("mainWindow"));
    setAcceptDrops(true);  // files dropped on the chat (or any part that takes no drops) are attached
    setWindowIcon(appIcon());
    m_confirm = [this](const QString& question) {
        return QMessageBox::question(this, tr("Cetus"), question, QMessageBox::Yes | QMessageBox::Cancel) == QMessageBox::Yes;
    };
    auto* split = new QSplitter;
    split->addWidget(buildLeft());
    split->addWidget(buildCenter());
    split->setStretchFactor(0, 0);
    split->setStretchFactor(1, 1);
    split->setSizes({260, 700});
    setCentralWidget(split);
    buildDocks();
    buildMenus();

    m_load_bar = new QWidget;
    auto* lb = new QHBoxLayout(m_load_bar);
    lb->setContentsMargins(0, 0, 0, 0);
    m_load_label = new QLabel;
    m_progress = new QProgressBar;
    m_progress->setRange(0, 1000);
    m_progress->setMaximumWidth(220);
    auto* cancel = new QPushButton(tr("Cancel"));
    cancel->setObjectName(QStringLiteral("cancelLoadButton"));
    lb->addWidget(m_load_label);
    lb->addWidget(m_progress);
    lb->addWidget(cancel);
    m_load_bar->hide();
    m_model_status = new QLabel(tr("No model"));
    m_context_usage = new QLabel;
    m_context_usage->setObjectName(QStringLiteral("contextUsage"));
    m_context_usage->hide();
    statusBar()->addWidget(m_load_bar);
    statusBar()->addPermanentWidget(m_context_usage);
    statusBar()->addPermanentWidget(m_model_status);
    connect(cancel, &QPushButton::clicked, &m_service, &GenerationService::cancelLoad);

    connect(&m_service, &GenerationService::loadProgress, this, [this](double f, const QString& stage) {
        m_progress->setValue(int(f * 1000));
        m_load_label->setText(tr("Loading %1: %2").arg(QFileInfo(m_loading_dir).fileName(), stage));
    });
    connect(&m_service, &GenerationService::modelLoaded, this, [this](const ModelDescription& m) {
        m_load_bar->hide();
        if (m.remote) {
            m_model_status->setText(tr("Remote: %1 @ %2").arg(m.name, QUrl(m.model_dir).authority()));
            m_model_status->setToolTip(tr("%1 at %2 (%3)").arg(m.name, m.model_dir, m.backend));
            statusBar()->showMessage(tr("Connected to %1").arg(m.model_dir), 5000);
        } else {
            QSettings().setValue(QStringLiteral("model/lastDir"), m.model_dir);
            rememberRecentModel(m.model_dir);
            m_loaded_request = m_loading_request;
            if (m_switch) rememberActiveEndpoint(std::nullopt);
            m_model_status->setText(tr("Local: %1 · %2").arg(m.name, m.backend));
            m_model_status->setToolTip(m.model_dir);
            statusBar()->showMessage(tr("Loaded %1").arg(m.name), 5000);
        }
        showBanner(QString(), false);
    });
    connect(&m_service, &GenerationService::loadFailed, this, [this](const QString& message, bool cancelled) {
        m_load_bar->hide();
        if (cancelled) statusBar()->showMessage(tr("Loading cancelled."), 5000);
        else showBanner(tr("Could not load %1: %2%3").arg(m_loading_dir, message,
                                                           m_service.hasModel() ? tr(" The previous model stays loaded.") : QString()), true);
        // No GPU, no driver, or not enough GPU memory: the CPU can still run it.
        m_cpu_fallback->setVisible(!cancelled && m_loading_device == DeviceChoice::Gpu);
        // Too little GPU memory for a BF16 model: the engine's error says FP8 would
        // need about half (engine.cpp, Engine::make_backend); one click retries so.
        m_fp8_retry->setVisible(!cancelled && !m_fp8_action->isChecked() &&
                                message.contains(QLatin1String("FP8 weights need about half the memory")));
        refreshEnabled();
    });
    connect(m_controller.get(), &ChatController::modelChanged, this, [this] {
        const auto m = m_controller->model();
        m_kv->setModel(m);
        m_experts->setModel(m);
        m_spec->setModel(m);
        m_model_panel->setModel(m);
        refreshContextMenu();
        m_routing->clear();
        refreshExperts();
        refreshEnabled();
        refreshChat();
        refreshContextUsage();
        countComposerTokens();  // another tokenizer, or none
    });
    connect(m_controller.get(), &ChatController::conversationListChanged, this, &MainWindow::refreshList);
    connect(m_controller.get(), &ChatController::conversationChanged, this, [this] {
        if (!m_controller->isGenerating()) showBanner(QString(), false);
        refreshChat();
        refreshTitle();
        refreshContextUsage();
        const auto id = m_controller->currentConversation();
        if (id) QSettings().setValue(QStringLiteral("chat/lastConversation"), *id);
        const int row = id ? m_list_model->rowOf(*id) : -1;
        m_list->setCurrentIndex(row >= 0 ? m_list_model->index(row) : QModelIndex());
    });
    connect(m_controller.get(), &ChatController::streamUpdated, m_chat, &ChatView::updateStreaming);
    connect(m_controller.get(), &ChatController::reasoningUpdated, m_chat, &ChatView::updateReasoning);
    if (m_switch) {
        connect(m_switch, &SwitchingGenerationService::activeChanged, this, [this](bool remote) {
            if (!remote && !m_service.hasModel()) m_model_status->setText(tr("Local: no model"));
            refreshEnabled();
        });
    }
    connect(m_controller.get(), &ChatController::generationStateChanged, this, [this](bool) { refreshEnabled(); });
    connect(m_controller.get(), &ChatController::statsUpdated, this, [this](const StepStats& s) {
        m_kv->setStats(s);
        m_spec->setHistory(m_controller->answerStatsHistory());
        refreshContextUsage();
    });
    connect(m_controller.get(), &ChatController::expertCountsChanged, this, &MainWindow::refreshExperts);
    connect(m_experts, &ExpertPanel::scopeChanged, this, &MainWindow::refreshExperts);
    connect(m_controller.get(), &ChatController::inspectedAnswerChanged, this, &MainWindow::refreshExperts);
    connect(m_experts, &ExpertPanel::timelineTokenClicked, this,
            [this](int t) { m_controller->selectTokenAt(m_controller->inspectedAnswer(), t); });
    connect(m_controller.get(), &ChatController::tokenSelected, this,
            [this](const QString& label, const RoutingData& r, const TokenProbabilityData& p) {
        m_routing->showToken(label, r, p);
        if (auto* dock = qobject_cast<QDockWidget*>(m_routing->parentWidget())) dock->raise();
    });
    connect(m_controller.get(), &ChatController::errorOccurred, this, [this](const QString& e) { showBanner(e, true); });

    connect(m_chat, &ChatView::regenerateRequested, m_controller.get(), &ChatController::regenerate);
    connect(m_chat, &ChatView::continueRequested, m_controller.get(), &ChatController::continueAnswer);
    connect(m_chat, &ChatView::editRequested, m_controller.get(), &ChatController::editAndResend);
    connect(m_chat, &ChatView::branchRequested, m_controller.get(), &ChatController::switchBranch);
    connect(m_chat, &ChatView::tokenClicked, m_controller.get(), &ChatController::selectToken);
    connect(m_controller.get(), &ChatController::messageRevealed, m_chat, &ChatView::revealMessage);
    connect(m_list_model, &ConversationListModel::renameRequested, m_controller.get(), &ChatController::renameConversation);

    QSettings settings;
    restoreGeometry(settings.value(QStringLiteral("window/geometry")).toByteArray());
    restoreState(settings.value(QStringLiteral("window/state")).toByteArray());
    if (!settings.contains(QStringLiteral("window/geometry"))) resize(1400, 900);
    refreshList();
    refreshChat();
    refreshTitle();
    refreshEnabled();
}

MainWindow::~MainWindow() {
    if (m_controller->isGenerating()) m_controller->stop();
}

void MainWindow::closeEvent(QCloseEvent* e) {
    QSettings settings;
    settings.setValue(QStringLiteral("window/geometry"), saveGeometry());
    settings.setValue(QStringLiteral("window/state"), saveState());
    if (m_controller->isGenerating()) m_controller->stop();
    QMainWindow::closeEvent(e);
}

QWidget* MainWindow::buildLeft() {
    auto* left = new QWidget;
    auto* layout = new QVBoxLayout(left);
    layout->setContentsMargins(6, 6, 0, 6);
    auto* new_chat = new QPushButton(tr("New chat"));
    new_chat->setObjectName(QStringLiteral("newChatButton"));
    connect(new_chat, &QPushButton::clicked, m_controller.get(), &ChatController::newConversation);
    layout->addWidget(new_chat);
    m_search = new QLineEdit;
    m_search->setObjectName(QStringLiteral("searchField"));
    m_search->setPlaceholderText(tr("Search all messages (Ctrl+K)"));
    m_search->setClearButtonEnabled(true);
    layout->addWidget(m_search);
    m_left_stack = new QStackedWidget;
    m_list_model = new ConversationListModel(this);
    m_list = new QListView;
    m_list->setObjectName(QStringLiteral("conversationList"));
    m_list->setModel(m_list_model);
    m_list->setEditTriggers(QAbstractItemView::EditKeyPressed | QAbstractItemView::SelectedClicked);
    m_list->setContextMenuPolicy(Qt::CustomContextMenu);
    m_list->setItemDelegate(new ElidingDelegate(m_list));
    m_list->setHorizontalScrollBarPolicy(Qt::ScrollBarAlwaysOff);
    m_list->setTextElideMode(Qt::ElideRight);
    m_left_stack->addWidget(m_list);
    m_results = new QListWidget;
    m_results->setObjectName(QStringLiteral("searchResults"));
    m_results->setWordWrap(true);
    m_left_stack->addWidget(m_results);
    layout->addWidget(m_left_stack, 1);

    connect(m_list, &QListView::clicked, this, [this](const QModelIndex& i) {
        const QVariant id = i.data(ConversationListModel::IdRole);
        if (id.isValid()) m_controller->openConversation(id.toLongLong());
    });
    connect(m_list, &QListView::customContextMenuRequested, this, [this](const QPoint& pos) {
        const QModelIndex i = m_list->indexAt(pos);
        const QVariant id = i.data(ConversationListModel::IdRole);
        if (!id.isValid()) return;
        QMenu menu;
        menu.addAction(tr("Rename"), this, [this, i] { m_list->edit(i); });
        const bool pinned = i.data(ConversationListModel::PinnedRole).toBool();
        menu.addAction(pinned ? tr("Unpin") : tr("Pin"), this, [this, id, pinned] { m_controller->setPinned(id.toLongLong(), !pinned); });
        const bool archived = i.data(ConversationListModel::ArchivedRole).toBool();
        menu.addAction(archived ? tr("Unarchive") : tr("Archive"), this,
                       [this, id, archived] { m_controller->setArchived(id.toLongLong(), !archived); });
        menu.addAction(tr("Delete…"), this, [this, id] { deleteConversation(id.toLongLong()); });
        menu.exec(m_list->viewport()->mapToGlobal(pos));
    });
    // Scrolled to the end of what is listed: the next page.
    connect(m_list->verticalScrollBar(), &QScrollBar::valueChanged, this, [this](int value) {
        const int end = m_list->verticalScrollBar()->maximum();
        if (m_refreshing_list || !m_list_may_have_more || end == 0 || value < end) return;
        m_list_limit += k_list_page;
        refreshList();
    });
    connect(m_search, &QLineEdit::textChanged, this, &MainWindow::runSearch);
    // A search hit opens its conversation at the matching message (on its branch).
    const auto open_hit = [this](QListWidgetItem* item) {
        m_controller->revealMessage(item->data(Qt::UserRole).toLongLong(), item->data(Qt::UserRole + 1).toLongLong());
    };
    connect(m_results, &QListWidget::itemActivated, this, open_hit);
    connect(m_results, &QListWidget::itemClicked, this, open_hit);
    return left;
}

QWidget* MainWindow::buildCenter() {
    auto* center = new QWidget;
    auto* layout = new QVBoxLayout(center);
    layout->setContentsMargins(0, 6, 6, 6);
    m_banner = new QLabel;
    m_banner->setObjectName(QStringLiteral("banner"));
    m_banner->setWordWrap(true);
    m_banner->setTextInteractionFlags(Qt::TextSelectableByMouse);
    m_banner->hide();
    layout->addWidget(m_banner);
    m_cpu_fallback = new QPushButton(tr("Load it on the CPU instead"));
    m_cpu_fallback->setObjectName(QStringLiteral("cpuFallback"));
    m_cpu_fallback->hide();
    connect(m_cpu_fallback, &QPushButton::clicked, this, [this] { openModel(m_loading_dir, DeviceChoice::Cpu); });
    m_fp8_retry = new QPushButton(tr("Load it with FP8 weights (half the memory)"));
    m_fp8_retry->setObjectName(QStringLiteral("fp8Retry"));
    m_fp8_retry->hide();
    connect(m_fp8_retry, &QPushButton::clicked, this, [this] {
        m_fp8_action->setChecked(true);  // saved, as if chosen in the Model menu
        openModel(m_loading_dir, m_loading_device);
    });
    auto* retry_row = new QHBoxLayout;
    retry_row->addWidget(m_fp8_retry);
    retry_row->addWidget(m_cpu_fallback);
    retry_row->addStretch();
    layout->addLayout(retry_row);
    m_center_stack = new QStackedWidget;
    auto* empty = new QWidget;
    auto* el = new QVBoxLayout(empty);
    el->addStretch();
    auto* logo = new QLabel;
    logo->setPixmap(appIcon().pixmap(96, 96));
    logo->setAlignment(Qt::AlignCenter);
    el->addWidget(logo);
    m_empty_label = new QLabel;
    m_empty_label->setObjectName(QStringLiteral("emptyStateLabel"));
    m_empty_label->setAlignment(Qt::AlignCenter);
    m_empty_label->setWordWrap(true);
    el->addWidget(m_empty_label);
    m_empty_open = new QPushButton(tr("Open a model…"));
    m_empty_open->setObjectName(QStringLiteral("openModelButton"));
    auto* row = new QHBoxLayout;
    row->addStretch();
    row->addWidget(m_empty_open);
    row->addStretch();
    el->addLayout(row);
    el->addStretch();
    connect(m_empty_open, &QPushButton::clicked, this, &MainWindow::chooseAndOpenModel);
    m_center_stack->addWidget(empty);
    m_chat = new ChatView;
    m_chat->setObjectName(QStringLiteral("chatView"));
    m_center_stack->addWidget(m_chat);
    layout->addWidget(m_center_stack, 1);

    // The files attached to the message being written, one chip each.
    m_attachment_bar = new QWidget;
    m_attachment_bar->setObjectName(QStringLiteral("attachmentBar"));
    auto* chips = new QHBoxLayout(m_attachment_bar);
    chips->setContentsMargins(0, 0, 0, 0);
    chips->addStretch();
    m_attachment_bar->hide();
    layout->addWidget(m_attachment_bar);

    auto* composer_row = new QHBoxLayout;
    m_composer = new Composer;
    m_composer->setObjectName(QStringLiteral("composer"));
    m_composer->setPlaceholderText(tr("Message Cetus (Enter sends, Shift+Enter breaks the line)"));
    m_composer->setFixedHeight(72);
    composer_row->addWidget(m_composer, 1);
    auto* buttons = new QVBoxLayout;
    m_send = new QPushButton(tr("Send"));
    m_send->setObjectName(QStringLiteral("sendButton"));
    m_send->setDefault(true);
    m_stop = new QPushButton(tr("Stop"));
    m_stop->setObjectName(QStringLiteral("stopButton"));
    m_attach = new QPushButton(tr("Attach…"));
    m_attach->setObjectName(QStringLiteral("attachButton"));
    m_attach->setToolTip(tr("Attach text files (code, notes, logs) to this message; files can also be dropped "
                            "onto the message box or the conversation"));
    buttons->addWidget(m_send);
    buttons->addWidget(m_stop);
    buttons->addWidget(m_attach);
    m_composer_tokens = new QLabel;
    m_composer_tokens->setObjectName(QStringLiteral("composerTokens"));
    m_composer_tokens->setEnabled(false);  // the palette's quieter text
    m_composer_tokens->setAlignment(Qt::AlignCenter);
    m_composer_tokens->setToolTip(tr("Tokens of this message under the model's tokenizer (its turn in the chat "
                                     "template adds a few)"));
    m_composer_tokens->hide();
    buttons->addWidget(m_composer_tokens);
    composer_row->addLayout(buttons);
    layout->addLayout(composer_row);
    // Counted a moment after typing stops, on the engine's thread.
    m_count_timer = new QTimer(this);
    m_count_timer->setSingleShot(true);
    m_count_timer->setInterval(300);
    connect(m_count_timer, &QTimer::timeout, this, &MainWindow::countComposerTokens);
    connect(m_composer, &QPlainTextEdit::textChanged, this, [this] {
        if (composerEmpty()) countComposerTokens();  // at once: nothing to count
        else m_count_timer->start();
    });
    connect(&m_service, &GenerationService::tokensCounted, this, [this](quint64 id, qint64 n) {
        if (id != m_count_id || composerEmpty()) return;  // the message changed since
        m_composer_tokens->setText(tr("%n token(s)", nullptr, int(std::min<qint64>(n, INT_MAX))));
        m_composer_tokens->show();
    });
    auto send = [this] {
        if (m_controller->send(composedMessage())) {
            m_composer->clear();
            m_attachments.clear();
            refreshAttachments();
            showBanner(QString(), false);
        }
    };
    connect(m_attach, &QPushButton::clicked, this, &MainWindow::chooseAttachments);
    connect(m_composer, &Composer::filesDropped, this, [this](const QStringList& paths) { attachFiles(paths); });
    connect(m_composer, &Composer::submitted, this, send);
    connect(m_send, &QPushButton::clicked, this, send);
    connect(m_stop, &QPushButton::clicked, m_controller.get(), &ChatController::stop);
    return center;
}

void MainWindow::buildDocks() {
    auto dock = [this](const QString& title, const QString& name, QWidget* w) {
        auto* d = new QDockWidget(title, this);
        d->setObjectName(name);
        d->setWidget(w);
        d->setAllowedAreas(Qt::LeftDockWidgetArea | Qt::RightDockWidgetArea | Qt::BottomDockWidgetArea);
        addDockWidget(Qt::RightDockWidgetArea, d);
        return d;
    };
    m_kv = new KvCachePanel;
    m_experts = new ExpertPanel;
    m_routing = new RoutingPanel;
    m_spec = new SpeculativePanel;
    m_model_panel = new ModelPanel;
    auto* kv = dock(tr("KV cache"), QStringLiteral("kvDock"), m_kv);
    auto* model = dock(tr("Model"), QStringLiteral("modelDock"), m_model_panel);
    dock(tr("Experts"), QStringLiteral("expertsDock"), m_experts);
    auto* routing = dock(tr("Routing"), QStringLiteral("routingDock"), m_routing);
    auto* spec = dock(tr("Speculative decoding"), QStringLiteral("speculativeDock"), m_spec);
    tabifyDockWidget(kv, model);
    tabifyDockWidget(routing, spec);
    kv->raise();
    routing->raise();
}

void MainWindow::buildMenus() {
    QMenu* file = menuBar()->addMenu(tr("&File"));
    file->addAction(tr("&New conversation"), QKeySequence::New, m_controller.get(), &ChatController::newConversation);
    file->addAction(tr("&Open model…"), QKeySequence::Open, this, &MainWindow::chooseAndOpenModel);
    m_recent_menu = file->addMenu(tr("Open &recent model"));
    m_recent_menu->setObjectName(QStringLiteral("recentModelsMenu"));
    connect(m_recent_menu, &QMenu::aboutToShow, this, &MainWindow::refreshRecentModels);  // a folder may have gone
    refreshRecentModels();
    file->addSeparator();
    QAction* attach = file->addAction(tr("A&ttach files…"), QKeySequence(Qt::CTRL | Qt::SHIFT | Qt::Key_A), this,
                                      &MainWindow::chooseAttachments);
    attach->setObjectName(QStringLiteral("attachAction"));
    file->addSeparator();
    file->addAction(tr("&Import conversations…"), this, [this] {
        const QString f = QFileDialog::getOpenFileName(this, tr("Import conversations"), QString(), tr("Cetus JSON (*.json)"));
        if (!f.isEmpty()) importConversations(f);
    });
    file->addAction(tr("Export conversation as &JSON…"), this, [this] {
        const QString f = QFileDialog::getSaveFileName(this, tr("Export conversation"), m_controller->currentTitle() + QStringLiteral(".json"), tr("JSON (*.json)"));
        if (!f.isEmpty()) exportConversation(f, false);
    });
    file->addAction(tr("Export conversation as &Markdown…"), this, [this] {
        const QString f = QFileDialog::getSaveFileName(this, tr("Export conversation"), m_controller->currentTitle() + QStringLiteral(".md"), tr("Markdown (*.md)"));
        if (!f.isEmpty()) exportConversation(f, true);
    });
    file->addAction(tr("Export &all conversations…"), this, [this] {
        const QString f = QFileDialog::getSaveFileName(this, tr("Export all conversations"), QStringLiteral("cetus-conversations.json"), tr("JSON (*.json)"));
        if (!f.isEmpty() && m_controller->store().exportJson(f, std::nullopt)) statusBar()->showMessage(tr("Exported to %1").arg(f), 5000);
    });
    file->addSeparator();
    file->addAction(tr("&Quit"), QKeySequence::Quit, this, &QWidget::close);

    QMenu* chat = menuBar()->addMenu(tr("&Conversation"));
    QAction* find = chat->addAction(tr("&Search…"), this, [this] { m_search->setFocus(); m_search->selectAll(); });
    find->setShortcuts({QKeySequence::Find, QKeySequence(Qt::CTRL | Qt::Key_K)});
    QAction* rename = chat->addAction(tr("&Rename"), QKeySequence(Qt::Key_F2), this, [this] {
        const auto id = m_controller->currentConversation();
        if (!id) return;
        const int row = m_list_model->rowOf(*id);
        if (row >= 0) {
            m_list->edit(m_list_model->index(row));
            return;
        }
        // Not among the rows listed (archived, or beyond the pages read): ask here.
        bool ok = false;
        const QString title = QInputDialog::getText(this, tr("Rename conversation"), tr("Title:"), QLineEdit::Normal,
                                                    m_controller->currentTitle(), &ok);
        if (ok && !title.trimmed().isEmpty()) m_controller->renameConversation(*id, title.trimmed());
    });
    rename->setObjectName(QStringLiteral("renameAction"));
    // Both read the open conversation's own flags (it may not be among the rows listed).
    chat->addAction(tr("&Pin / unpin"), this, [this] {
        if (const auto id = m_controller->currentConversation()) m_controller->setPinned(*id, !m_controller->currentPinned());
    });
    m_archive_action = chat->addAction(tr("&Archive / unarchive"), this, [this] {
        if (const auto id = m_controller->currentConversation()) m_controller->setArchived(*id, !m_controller->currentArchived());
    });
    m_archive_action->setObjectName(QStringLiteral("archiveAction"));
    m_archive_action->setToolTip(tr("Moves the open conversation into the archive, or out of it"));
    QAction* show_archived = chat->addAction(tr("Show archi&ved conversations"));
    show_archived->setObjectName(QStringLiteral("showArchivedAction"));
    show_archived->setCheckable(true);
    show_archived->setToolTip(tr("The list shows the archived conversations instead"));
    connect(show_archived, &QAction::toggled, this, [this](bool on) {
        m_show_archived = on;
        m_list_limit = k_list_page;
        m_list->verticalScrollBar()->setValue(0);  // the other list starts at its top
        refreshList();
    });
    chat->addAction(tr("&Delete…"), this, [this] {
        if (const auto id = m_controller->currentConversation()) deleteConversation(*id);
    });
    chat->addSeparator();
    chat->addAction(tr("S&ettings (system prompt, sampling)…"), this, &MainWindow::editSettings)
        ->setObjectName(QStringLiteral("settingsAction"));

    QMenu* model = menuBar()->addMenu(tr("&Model"));
    model->addAction(tr("&Open model folder…"), this, &MainWindow::chooseAndOpenModelFolder);
    // Exclusive choices for the next load: each action's data is saved under key.
    auto load_choices = [this](const QString& key, const QString& what) {
        auto* g = new QActionGroup(this);
        connect(g, &QActionGroup::triggered, this, [this, key, what](QAction* a) {
            QSettings().setValue(key, a->data());
            statusBar()->showMessage(appliesOnReload(what), 5000);
        });
        return g;
    };
    auto add_choice = [](QMenu* menu, QActionGroup* g, const QString& text, const QString& name, const QVariant& data,
                         bool checked) {
        QAction* a = menu->addAction(text);
        if (!name.isEmpty()) a->setObjectName(name);
        a->setCheckable(true);
        a->setData(data);
        a->setChecked(checked);
        g->addAction(a);
    };
    QMenu* device = model->addMenu(tr("&Device"));
    m_device_group = load_choices(QStringLiteral("model/device"), tr("The device"));
    const QString saved = QSettings().value(QStringLiteral("model/device"), QStringLiteral("auto")).toString();
    for (const auto& [key, label] : {std::pair{QStringLiteral("auto"), tr("&Auto")}, std::pair{QStringLiteral("cpu"), tr("&CPU")},
                                     std::pair{QStringLiteral("gpu"), tr("&GPU (CUDA)")}})
        add_choice(device, m_device_group, label, QString(), key, key == saved);
    // Context length: the latent cache's capacity, reserved at load. MLA keeps it
    // small, so each choice shows what the cache takes with the loaded model.
    m_context_menu = model->addMenu(tr("&Context length"));
    m_context_menu->setObjectName(QStringLiteral("contextMenu"));
    m_context_group = load_choices(QStringLiteral("model/context"), tr("The context length"));
    const qint64 saved_context = savedContextLength();
    for (const qint64 n : k_context_choices)  // labels: refreshContextMenu
        add_choice(m_context_menu, m_context_group, QString(), QStringLiteral("context%1Action").arg(n), n, n == saved_context);
    QMenu* threads = model->addMenu(tr("CPU &threads"));
    threads->setObjectName(QStringLiteral("threadsMenu"));
    m_threads_group = load_choices(QStringLiteral("model/threads"), tr("The thread count"));
    const int saved_threads = savedThreads();
    for (const int n : threadChoices())
        add_choice(threads, m_threads_group,
                   n == 0 ? tr("&Automatic (all %n core(s))", nullptr, std::max(1, QThread::idealThreadCount())) : QString::number(n),
                   QStringLiteral("threads%1Action").arg(n), n, n == saved_threads);
    model->setToolTipsVisible(true);
    // A checkable choice for the next load, saved under key.
    auto saved_option = [this, model](const QString& text, const char* name, const QString& key, const QString& tip,
                                      const QString& what, bool on_by_default = false) {
        QAction* a = model->addAction(text);
        a->setObjectName(QLatin1String(name));
        a->setCheckable(true);
        a->setChecked(QSettings().value(key, on_by_default).toBool());
        a->setToolTip(tip);
        connect(a, &QAction::toggled, this, [this, key, what](bool on) {
            QSettings().setValue(key, on);
            refreshContextMenu();  // the cache's size per token depends on its precision
            statusBar()->showMessage(appliesOnReload(what), 5000);
        });
        return a;
    };
    m_fp8_action = saved_option(tr("&FP8 weights (half the memory)"), "fp8WeightsAction", QStringLiteral("model/fp8"),
                                tr("Quantise a BF16 checkpoint's attention, MLP and expert weights to FP8 while "
                                   "loading, as DeepSeek-V3's FP8 release stores them: about half the memory, at a "
                                   "small loss of precision. FP8 checkpoints load as they are."),
                                tr("FP8 weights"));
    m_kv_bf16_action = saved_option(tr("&BF16 latent cache (half the cache memory)"), "kvCacheBf16Action",
                                    QStringLiteral("model/kv_cache_bf16"),
                                    tr("Keep the attention cache in bf16, as DeepSeek's own inference does: twice the "
                                       "context in the same memory and less to read per token, each cached value "
                                       "rounded to bf16. Off: the cache keeps full fp32 precision."),
                                    tr("The cache precision"));
    m_int8_action = saved_option(
        tr("&Integer products for GGUF on the CPU (faster)"), "int8ActivationsAction",
        QStringLiteral("model/int8_activations"),
        tr("On the CPU, multiply a GGUF model's quantised weights with integer dot products, each token's "
           "activations rounded to 8 bits per block of values, as llama.cpp does: decoding runs about twice as fast, "
           "and the results differ slightly from the exact products (off). No effect on the GPU or on other weight "
           "types."),
        tr("Integer products"), /*on_by_default=*/true);
    m_tune_action = saved_option(
        tr("&Tune GPU decode steps when loading"), "tuneStepsAction", QStringLiteral("model/tune_steps"),
        tr("After loading on the GPU, time the engine's alternative ways of running a decode step on this card "
           "(the shared experts on a second stream, weights asked of the cache ahead, programmatic launch, staged "
           "GGUF rows) and keep the fastest that gives the same results. Takes a second or so; no effect on the "
           "CPU."),
        tr("Tuning the GPU's decode steps"));
    m_disk_cache_action = saved_option(
        tr("Keep conversation caches on &disk"), "diskCacheAction", QStringLiteral("model/disk_cache"),
        tr("Write each conversation's attention cache to disk (small with multi-head latent attention), so that a "
           "conversation opened again after a restart goes on at once instead of reading it all again. Up to 2 GiB "
           "in %1, least recently used first to go; a deleted conversation's go with it.")
            .arg(QDir::toNativeSeparators(conversationCacheFolder())),
        tr("Conversation caches on disk"), /*on_by_default=*/true);
    m_service.setConversationCacheFolder(conversationCacheFolder());
    QAction* clear_caches = model->addAction(tr("C&lear conversation caches"), this, [this] {
        m_service.clearConversationCaches();
        statusBar()->showMessage(tr("Clearing the conversation caches on disk."), 5000);
    });
    clear_caches->setObjectName(QStringLiteral("clearCachesAction"));
    clear_caches->setToolTip(tr("Removes every conversation's cache from disk, whichever model wrote it"));
    m_reload_action = model->addAction(tr("&Reload model"), this, [this] {
        const auto m = m_controller->model();
        if (m && !m->remote && !m->model_dir.isEmpty() && !m_service.isLoading()) openModel(m->model_dir);
    });
    m_reload_action->setObjectName(QStringLiteral("reloadModelAction"));
    m_reload_action->setShortcut(QKeySequence(Qt::CTRL | Qt::SHIFT | Qt::Key_R));
    m_reload_action->setToolTip(tr("Loads the model again with the options above"));
    refreshContextMenu();
    // Not a load option: it applies to the next answer.
    QAction* probabilities = model->addAction(tr("Record token &probabilities"));
    probabilities->setObjectName(QStringLiteral("tokenProbabilitiesAction"));
    probabilities->setCheckable(true);
    probabilities->setChecked(QSettings().value(QStringLiteral("model/token_probabilities"), true).toBool());
    probabilities->setToolTip(tr("Keep each generated token's probability and the %1 most likely tokens of its step "
                                 "with the answer, shown when you click a token. Off: a little faster on a GPU, where "
                                 "each step's logits are otherwise not copied back.").arg(k_token_alternatives));
    auto apply_probabilities = [this](bool on) { m_controller->setTokenAlternatives(on ? k_token_alternatives : -1); };
    apply_probabilities(probabilities->isChecked());
    connect(probabilities, &QAction::toggled, this, [apply_probabilities](bool on) {
        QSettings().setValue(QStringLiteral("model/token_probabilities"), on);
        apply_probabilities(on);
    });
    if (m_switch) {
        model->addSeparator();
        QAction* remote = model->addAction(tr("&Remote endpoint…"), this, &MainWindow::chooseEndpoint);
        remote->setObjectName(QStringLiteral("remoteEndpointAction"));
        QAction* local = model->addAction(tr("Use &local model"), this, &MainWindow::useLocalModel);
        local->setObjectName(QStringLiteral("useLocalAction"));
    }

    model->addSeparator();
    m_server = new LocalServer(this);
    m_serve_action = model->addAction(tr("&Serve this model on localhost (OpenAI API)"));
    m_serve_action->setCheckable(true);
    m_serve_action->setToolTip(tr("Runs cetus-cli serve on 127.0.0.1 over the loaded model folder; it loads its own copy"));
    connect(m_serve_action, &QAction::toggled, this, [this](bool on) {
        if (!on) {
            m_server->stop();
            return;
        }
        const auto m = m_controller->model();
        if (!m || m->remote || m->model_dir.isEmpty()) {
            showBanner(tr("Load a local model first, then serve it."), true);
            QSignalBlocker block(m_serve_action);
            m_serve_action->setChecked(false);
            return;
        }
        // The server loads its own copy with the loaded model's context, cache precision,
        // weights and threads (as that model was loaded, not as the menu says for the next load).
        QStringList args{QStringLiteral("--context"), QString::number(std::max<qint64>(1, m->context_length))};
        if (!m->kv_cache_type.isEmpty()) args << QStringLiteral("--kv-cache") << m->kv_cache_type;
        if (m_loaded_request.fp8_on_load) args << QStringLiteral("--fp8");
        // (the menu's integer products are the CPU's: the flag would also give a server on the
        // GPU the CUDA backend's int8 form)
        if (m_loaded_request.int8_activations && m->backend.startsWith(QLatin1String("cpu")))
            args << QStringLiteral("--int8-activations");
        if (m_loaded_request.tune_steps) args << QStringLiteral("--tune-steps");
        if (m_loaded_request.n_threads > 0) args << QStringLiteral("--threads") << QString::number(m_loaded_request.n_threads);
        // Its clients' conversations go on after a restart too, in the same folder (one
        // budget; Clear conversation caches removes them with the app's).
        if (!m_loaded_request.prefix_cache_dir.isEmpty())
            args << QStringLiteral("--prefix-cache") << m_loaded_request.prefix_cache_dir;
        m_server->start(m->model_dir, QSettings().value(QStringLiteral("server/port"), 8765).toInt(), args);
    });
    connect(m_server, &LocalServer::started, this, [this](const QString& url) {
        showBanner(tr("Serving the model at %1 (OpenAI API, this computer only).").arg(url), false);
    });
    connect(m_server, &LocalServer::failed, this, [this](const QString& message) {
        showBanner(message, true);
        QSignalBlocker block(m_serve_action);
        m_serve_action->setChecked(false);
    });

    QMenu* view = menuBar()->addMenu(tr("&View"));
    for (QDockWidget* d : findChildren<QDockWidget*>()) view->addAction(d->toggleViewAction());
    view->addSeparator();
    QMenu* theme = view->addMenu(tr("&Theme"));
    auto* themes = new QActionGroup(this);
    const Theme saved_theme = themeFromKey(QSettings().value(QStringLiteral("view/theme")).toString());
    for (const auto& [t, label] : {std::pair{Theme::System, tr("&System")}, std::pair{Theme::Light, tr("&Light")},
                                   std::pair{Theme::Dark, tr("&Dark")}}) {
        QAction* a = theme->addAction(label);
        a->setObjectName(QStringLiteral("theme_%1").arg(themeKey(t)));
        a->setCheckable(true);
        a->setChecked(t == saved_theme);
        a->setData(themeKey(t));
        themes->addAction(a);
    }
    connect(themes, &QActionGroup::triggered, this, [this](QAction* a) {
        QSettings().setValue(QStringLiteral("view/theme"), a->data().toString());
        applyTheme(themeFromKey(a->data().toString()));
        if (m_banner->isVisible()) styleBanner();  // its colours
    });

    QMenu* help = menuBar()->addMenu(tr("&Help"));
    help->addAction(tr("Open &log folder"), this, [] {
        const QString dir = QStandardPaths::writableLocation(QStandardPaths::AppDataLocation) + QStringLiteral("/logs");
        QDir().mkpath(dir);
        QDesktopServices::openUrl(QUrl::fromLocalFile(dir));
    });
    help->addAction(tr("&About Cetus"), this, &MainWindow::showAbout);
}

qint64 MainWindow::savedContextLength() {
    const qint64 n = QSettings().value(QStringLiteral("model/context"), k_default_context).toLongLong();
    return std::find(k_context_choices.begin(), k_context_choices.end(), n) != k_context_choices.end() ? n : k_default_context;
}

QList<int> MainWindow::threadChoices() {
    const int cores = std::max(1, QThread::idealThreadCount());
    QList<int> choices{0};
    for (int n = 1; n < cores; n *= 2) choices << n;
    choices << cores;
    return choices;
}

int MainWindow::savedThreads() {
    const int n = QSettings().value(QStringLiteral("model/threads"), 0).toInt();
    return threadChoices().contains(n) ? n : 0;
}

QString MainWindow::appliesOnReload(const QString& what) const {
    const auto m = m_controller->model();
    return m && !m->remote ? tr("%1: applies when the model is loaded again (Model → Reload model).").arg(what)
                           : tr("%1: applies the next time a model is loaded.").arg(what);
}

// Each choice's label, and with a local model loaded the memory its cache would take
// at the precision chosen for the next load; choices beyond the model's own limit say so.
void MainWindow::refreshContextMenu() {
    if (!m_context_group) return;
    const auto m = m_controller->model();
    const QLocale locale;
    quint64 per_token = 0;
    qint64 model_max = 0;
    if (m && !m->remote && m->kv_bytes_per_token_held > 0) {
        per_token = m->kv_bytes_per_token_held;
        const bool bf16_next = m_kv_bf16_action && m_kv_bf16_action->isChecked();
        if (m->kv_cache_type == QLatin1String("f32") && bf16_next) per_token /= 2;
        else if (m->kv_cache_type == QLatin1String("bf16") && !bf16_next) per_token *= 2;
        model_max = m->max_context_length;
    }
    for (QAction* a : m_context_group->actions()) {
        const qint64 n = a->data().toLongLong();
        const qint64 tokens = n == 0 ? model_max : (model_max > 0 ? std::min(n, model_max) : n);
        QString text = n == 0 ? (model_max > 0 ? tr("&Model's maximum (%1 tokens)").arg(locale.toString(model_max))
                                               : tr("&Model's maximum"))
                              : tr("%1 tokens").arg(locale.toString(n));
        if (n > 0 && model_max > 0 && n > model_max)
            text += tr(" — this model holds %1").arg(locale.toString(model_max));
        else if (per_token > 0 && tokens > 0)
            text += tr(" — cache %1").arg(locale.formattedDataSize(qint64(per_token) * tokens, 1));
        a->setText(text);
    }
}

namespace {
// Where the open dialogs start: the last model's folder (the folder of a GGUF file).
QString lastModelFolder() {
    const QString last = QSettings().value(QStringLiteral("model/lastDir")).toString();
    return QFileInfo(last).isFile() ? QFileInfo(last).absolutePath() : last;
}
}  // namespace

void MainWindow::chooseAndOpenModel() {
    // A GGUF file, or the config.json of a model folder (which opens the folder).
    const QString file = QFileDialog::getOpenFileName(
        this, tr("Open a model"), lastModelFolder(),
        tr("Models (config.json *.gguf);;GGUF files (*.gguf);;Model folders' config.json (config.json);;All files (*)"));
    if (file.isEmpty()) return;
    openModel(file.endsWith(QStringLiteral(".gguf"), Qt::CaseInsensitive) ? file : QFileInfo(file).absolutePath());
}

void MainWindow::chooseAndOpenModelFolder() {
    const QString dir = QFileDialog::getExistingDirectory(this, tr("Open a model folder"), lastModelFolder());
    if (!dir.isEmpty()) openModel(dir);
}

namespace {
constexpr int k_max_recent_models = 8;
const QString k_recent_models_key = QStringLiteral("model/recent");

// The saved list, first_dir (if any) in front: clean paths, each once, none empty, at
// most k_max_recent_models (the setting may have been edited by hand).
QStringList recentModelList(const QString& first_dir = QString()) {
    QStringList out;
    QStringList saved = QSettings().value(k_recent_models_key).toStringList();
    if (!first_dir.isEmpty()) saved.prepend(first_dir);
    for (const QString& dir : saved) {
        if (dir.trimmed().isEmpty()) continue;
        const QString clean = QDir::cleanPath(dir);
        if (!out.contains(clean)) out << clean;
        if (out.size() == k_max_recent_models) break;
    }
    return out;
}
}  // namespace

void MainWindow::rememberRecentModel(const QString& dir) {
    QSettings().setValue(k_recent_models_key, recentModelList(dir));
    refreshRecentModels();
}

void MainWindow::refreshRecentModels() {
    if (!m_recent_menu) return;
    m_recent_menu->clear();
    int n = 0;
    for (const QString& dir : recentModelList()) {
        ++n;
        const bool there = QFileInfo(dir).isDir() || QFileInfo(dir).isFile();  // a folder or a GGUF file
        // "&1 name — path": the digit picks it from the keyboard; a '&' of the name shows as one.
        auto shown = [](QString t) { return t.replace(QLatin1Char('&'), QStringLiteral("&&")); };
        QString text = QStringLiteral("&%1 %2 — %3").arg(n).arg(shown(QFileInfo(dir).fileName()), shown(QDir::toNativeSeparators(dir)));
        if (!there) text += QLatin1Char(' ') + tr("(not found)");
        QAction* a = m_recent_menu->addAction(text, this, [this, dir] { openModel(dir); });
        a->setData(dir);
        a->setEnabled(there);
        a->setStatusTip(there ? tr("Load %1").arg(dir) : tr("%1 is not there any more").arg(dir));
    }
    if (n == 0) {
        m_recent_menu->addAction(tr("No recent models"))->setEnabled(false);
        return;
    }
    m_recent_menu->addSeparator();
    QAction* clear = m_recent_menu->addAction(tr("&Clear the list"), this, [this] {
        QSettings().remove(k_recent_models_key);
        // The menu is rebuilt once this action's signal is over (clear() deletes it).
        QTimer::singleShot(0, this, &MainWindow::refreshRecentModels);
    });
    clear->setObjectName(QStringLiteral("clearRecentModelsAction"));
}

void MainWindow::countComposerTokens() {
    ++m_count_id;  // an answer to an earlier request no longer counts
    m_count_timer->stop();
    if (composerEmpty() || !m_service.hasModel()) {
        m_composer_tokens->hide();
        return;
    }
    m_service.countTokens(m_count_id, composedMessage());
}

QString MainWindow::composedMessage() const {
    // As ChatController::send keeps it: the typed text trimmed, after the files.
    return composeMessage(m_attachments, m_composer->toPlainText().trimmed());
}

bool MainWindow::composerEmpty() const { return m_attachments.isEmpty() && m_composer->document()->isEmpty(); }

qint64 MainWindow::attachmentsLimitBytes() { return 4 * attachmentLimitBytes(); }

bool MainWindow::attachFiles(const QStringList& paths) {
    QStringList problems;
    qint64 total = 0;
    for (const Attachment& a : std::as_const(m_attachments)) total += a.text.toUtf8().size();
    for (const QString& path : paths) {
        QString error;
        const auto file = readAttachment(path, &error);
        if (!file) {
            problems << error;
            continue;
        }
        if (m_attachments.contains(*file)) continue;  // the same file again
        const qint64 bytes = file->text.toUtf8().size();
        if (total + bytes > attachmentsLimitBytes()) {
            problems << tr("%1 was not attached: the message's files would come to more than %2")
                            .arg(file->name, byteSize(attachmentsLimitBytes()));
            continue;
        }
        total += bytes;
        m_attachments.append(*file);
        QSettings().setValue(QStringLiteral("attach/folder"), QFileInfo(path).absolutePath());
    }
    refreshAttachments();
    if (!problems.isEmpty()) {
        m_attach_problems = problems.join(QLatin1Char('\n'));
        showBanner(m_attach_problems, true);
    } else if (!m_attach_problems.isEmpty() && m_banner->text() == m_attach_problems) {
        showBanner(QString(), false);  // the files refused before; any other banner stays
    }
    return problems.isEmpty();
}

void MainWindow::chooseAttachments() {
    const QString folder = QSettings().value(QStringLiteral("attach/folder"), QDir::homePath()).toString();
    const QStringList paths = QFileDialog::getOpenFileNames(
        this, tr("Attach text files"), folder,
        tr("Text files (*.txt *.md *.log *.csv *.json *.yaml *.yml *.xml *.html *.c *.h *.cpp *.hpp *.cc *.cu *.py "
           "*.rs *.go *.java *.js *.ts *.sh *.sql *.toml *.ini *.tex);;All files (*)"));
    if (!paths.isEmpty()) attachFiles(paths);
    m_composer->setFocus();
}

void MainWindow::refreshAttachments() {
    auto* chips = static_cast<QHBoxLayout*>(m_attachment_bar->layout());
    while (chips->count() > 1) {  // the stretch stays last
        QLayoutItem* item = chips->takeAt(0);
        item->widget()->hide();
        item->widget()->deleteLater();
        delete item;
    }
    for (int i = 0; i < m_attachments.size(); ++i) {
        const Attachment& a = m_attachments.at(i);
        auto* chip = new QFrame;
        chip->setObjectName(QStringLiteral("attachmentChip"));
        chip->setFrameShape(QFrame::StyledPanel);
        auto* row = new QHBoxLayout(chip);
        row->setContentsMargins(6, 1, 1, 1);
        row->setSpacing(2);
        auto* label = new QLabel(attachmentLabel(a));
        label->setObjectName(QStringLiteral("attachmentName"));
        label->setToolTip(tr("%1, %2, sent with the message").arg(a.name, byteSize(a.text.toUtf8().size())));
        auto* remove = new QToolButton;
        remove->setObjectName(QStringLiteral("removeAttachment"));
        remove->setText(QStringLiteral("✕"));
        remove->setAutoRaise(true);
        remove->setToolTip(tr("Remove %1 from the message").arg(a.name));
        connect(remove, &QToolButton::clicked, this, [this, name = a.name, text = a.text] {
            m_attachments.removeOne(Attachment{name, text});
            refreshAttachments();
        });
        row->addWidget(label);
        row->addWidget(remove);
        chips->insertWidget(i, chip);
    }
    m_attachment_bar->setVisible(!m_attachments.isEmpty());
    countComposerTokens();
}

void MainWindow::dragEnterEvent(QDragEnterEvent* e) {
    if (!localFiles(e->mimeData()).isEmpty()) e->acceptProposedAction();
    else QMainWindow::dragEnterEvent(e);
}

void MainWindow::dropEvent(QDropEvent* e) {
    const QStringList files = localFiles(e->mimeData());
    if (files.isEmpty()) {
        QMainWindow::dropEvent(e);
        return;
    }
    e->acceptProposedAction();
    attachFiles(files);
}

void MainWindow::refreshContextUsage() {
    const auto use = m_controller->contextUse();
    const auto model = m_controller->model();
    if (!use || !model) {
        m_context_usage->hide();
        return;
    }
    const QLocale locale;
    const qint64 length = model->context_length;  // 0: not known (some endpoints)
    QString text = length > 0 ? tr("Context: %1 / %2 tokens").arg(locale.toString(use->tokens), locale.toString(length))
                              : tr("Context: %1 tokens").arg(locale.toString(use->tokens));
    QString tip = tr("Tokens the conversation's last prompt and answer took of the model's context.");
    if (length > 0) {
        tip += QLatin1Char(' ') + tr("When a conversation grows past the context, its oldest messages are left out of the prompt "
                                     "(never the system prompt or the newest question).");
    }
    if (use->messages_left_out > 0) {
        text += QStringLiteral(" · ") + tr("%n earlier message(s) left out", nullptr, use->messages_left_out);
    } else if (length > 0 && use->tokens > length) {  // counted with a longer context than now
        text += QStringLiteral(" · ") + tr("over the context: earlier messages will be left out");
    } else if (length > 0 && use->tokens * 10 >= length * 9) {
        text += QStringLiteral(" · ") + tr("nearly full");
    }
    m_context_usage->setText(text);
    m_context_usage->setToolTip(tip);
    m_context_usage->show();
}

QString MainWindow::conversationCacheFolder() {
    const QString cache = QStandardPaths::writableLocation(QStandardPaths::CacheLocation);
    return cache.isEmpty() ? QString() : cache + QStringLiteral("/conversation-cache");  // none without a cache folder
}

void MainWindow::openModel(const QString& dir) {
    const QString device = m_device_group && m_device_group->checkedAction() ? m_device_group->checkedAction()->data().toString() : QStringLiteral("auto");
    openModel(dir, device == QLatin1String("cpu")   ? DeviceChoice::Cpu
                   : device == QLatin1String("gpu") ? DeviceChoice::Gpu
                                                    : DeviceChoice::Auto);
}

void MainWindow::openModel(const QString& dir, DeviceChoice device) {
    LoadRequest r;
    r.model_dir = dir;
    r.device = device;
    r.fp8_on_load = m_fp8_action && m_fp8_action->isChecked();
    r.kv_cache_bf16 = m_kv_bf16_action && m_kv_bf16_action->isChecked();
    r.int8_activations = m_int8_action && m_int8_action->isChecked();
    r.tune_steps = m_tune_action && m_tune_action->isChecked();
    if (m_disk_cache_action && m_disk_cache_action->isChecked())
        r.prefix_cache_dir = conversationCacheFolder();  // empty: none
    r.max_context = savedContextLength();
    if (r.max_context == 0) r.max_context = k_model_maximum_context;  // the engine caps it at the model's limit
    r.n_threads = savedThreads();
    m_loading_request = r;
    m_loading_dir = dir;
    m_loading_device = device;
    m_cpu_fallback->hide();
    m_fp8_retry->hide();
    m_progress->setValue(0);
    m_load_label->setText(tr("Loading %1…").arg(QFileInfo(dir).fileName()));
    m_load_bar->show();
    logger()->info("loading model {}", dir.toStdString());
    m_service.loadModel(r);
    refreshEnabled();
}

void MainWindow::chooseEndpoint() {
    if (!m_switch) return;
    EndpointDialog dialog(m_switch->remote(), this);
    if (m_switch->remoteActive()) dialog.setEndpoint(m_switch->remote().endpoint());
    if (dialog.exec() == QDialog::Accepted) connectEndpoint(dialog.endpoint());
}

bool MainWindow::connectEndpoint(const RemoteEndpoint& endpoint) {
    if (!m_switch) return false;
    rememberActiveEndpoint(endpoint);
    m_loading_dir = endpoint.url(QString()).toString(QUrl::RemoveUserInfo);
    m_progress->setValue(0);
    m_load_label->setText(tr("Connecting to %1…").arg(endpoint.label()));
    m_load_bar->show();
    m_model_status->setText(tr("Remote: connecting to %1…").arg(endpoint.label()));
    logger()->info("connecting to remote endpoint {}", m_loading_dir.toStdString());
    m_switch->useRemote(endpoint);
    refreshEnabled();
    return true;
}

void MainWindow::useLocalModel() {
    if (!m_switch || !m_switch->remoteActive()) return;
    rememberActiveEndpoint(std::nullopt);
    m_switch->useLocal();
    if (!m_service.hasModel() && !restoreLastModel()) chooseAndOpenModel();
}

bool MainWindow::restoreLastModel() {
    if (m_switch && !m_switch->remoteActive()) {
        if (const auto e = activeEndpoint()) return connectEndpoint(*e);
    }
    const QString dir = QSettings().value(QStringLiteral("model/lastDir")).toString();
    if (dir.isEmpty() || !QFileInfo::exists(dir)) return false;  // a folder or a GGUF file
    openModel(dir);
    return true;
}

void MainWindow::restoreLastConversation() {
    const QVariant id = QSettings().value(QStringLiteral("chat/lastConversation"));
    if (id.isValid() && m_list_model->rowOf(id.toLongLong()) >= 0) m_controller->openConversation(id.toLongLong());
}

void MainWindow::deleteConversation(qint64 id) {
    const int row = m_list_model->rowOf(id);
    const QString title = row >= 0 ? m_list_model->index(row).data(Qt::EditRole).toString() : QString();
    if (!m_confirm(tr("Delete “%1” with all its messages? This cannot be undone.").arg(title))) return;
    m_controller->deleteConversation(id);
}

bool MainWindow::exportConversation(const QString& file, bool markdown) {
    const auto id = m_controller->currentConversation();
    if (!id) return false;
    const bool ok = markdown ? m_controller->store().exportMarkdown(file, *id) : m_controller->store().exportJson(file, *id);
    if (ok) statusBar()->showMessage(tr("Exported to %1").arg(file), 5000);
    return ok;
}

bool MainWindow::importConversations(const QString& file) {
    const auto n = m_controller->store().importJson(file);
    if (!n) return false;
    statusBar()->showMessage(tr("Imported %n conversation(s).", nullptr, *n), 5000);
    refreshList();
    return true;
}

void MainWindow::refreshList() {
    const auto current = m_controller->currentConversation();
    m_refreshing_list = true;
    const int scrolled = m_list->verticalScrollBar()->value();
    const auto rows = m_controller->store().listConversations(m_show_archived, m_list_limit);
    m_list_may_have_more = int(rows.size()) >= m_list_limit;
    m_list_model->setConversations(rows);
    if (current) {
        const int row = m_list_model->rowOf(*current);
        if (row >= 0) m_list->setCurrentIndex(m_list_model->index(row));
    }
    m_list->verticalScrollBar()->setValue(scrolled);  // a refresh (or the next page) keeps the place
    m_refreshing_list = false;
    if (!m_search->text().isEmpty()) runSearch();
}

void MainWindow::refreshChat() {
    const bool has_messages = !m_controller->messages().empty();
    if (!m_service.hasModel() && !has_messages) {
        m_empty_label->setText(m_service.isLoading() ? tr("<h3>Loading the model…</h3>")
                                                     : tr("<h3>No model loaded</h3>Open a DeepSeek-architecture model folder "
                                                          "(config.json, *.safetensors, tokenizer.json) or a GGUF file "
                                                          "to start chatting."));
        m_empty_open->setVisible(!m_service.isLoading());
        m_center_stack->setCurrentIndex(0);
        return;
    }
    if (!has_messages) {
        const auto m = m_controller->model();
        m_empty_label->setText(tr("<h3>Start a conversation</h3>Type a message below%1.")
                                   .arg(m ? tr(" to chat with %1").arg(m->name.toHtmlEscaped()) : QString()));
        m_empty_open->setVisible(false);
        m_center_stack->setCurrentIndex(0);
        return;
    }
    m_center_stack->setCurrentIndex(1);
    m_chat->setMessages(m_controller->messages(), m_controller->isGenerating());
}

void MainWindow::refreshTitle() {
    const QString title = m_controller->currentTitle();
    setWindowTitle(title.isEmpty() ? tr("Cetus") : tr("%1 — Cetus").arg(title));
}

void MainWindow::refreshEnabled() {
    const bool generating = m_controller->isGenerating();
    const bool can_send = m_service.hasModel() && !generating;
    m_send->setEnabled(can_send);
    m_send->setToolTip(m_service.hasModel() ? QString() : tr("Open a model first (File → Open model…)"));
    m_stop->setEnabled(generating);
    m_stop->setVisible(generating);
    if (m_reload_action) {
        const auto m = m_controller->model();
        m_reload_action->setEnabled(m && !m->remote && !m->model_dir.isEmpty() && !m_service.isLoading());
    }
    m_send->setVisible(!generating);
    if (!m_controller->currentConversation()) refreshChat();
}

void MainWindow::refreshExperts() {
    m_experts->setCounts(m_controller->answerExpertCounts(), m_controller->conversationExpertCounts());
    m_experts->setTimeline(m_controller->inspectedRouting(), m_controller->inspectedToken());
}

void MainWindow::showBanner(const QString& text, bool error) {
    m_banner->setVisible(!text.isEmpty());
    if (text.isEmpty()) {
        m_cpu_fallback->hide();
        m_fp8_retry->hide();
    }
    m_banner->setText(text);
    m_banner_error = error;
    styleBanner();
    if (error) logger()->warn("shown to the user: {}", text.toStdString());
}

void MainWindow::styleBanner() {
    const bool dark = isDarkPalette(palette());
    m_banner->setStyleSheet(
        !m_banner_error ? QStringLiteral("QLabel { padding: 6px; }")
        : dark ? QStringLiteral("QLabel { background: #4a2327; color: #ffc9c4; border: 1px solid #7d3a3f; padding: 6px; border-radius: 4px; }")
               : QStringLiteral("QLabel { background: #fdecea; color: #8a1f11; border: 1px solid #e6b0aa; padding: 6px; border-radius: 4px; }"));
}

void MainWindow::runSearch() {
    const QString text = m_search->text().trimmed();
    if (text.isEmpty()) {
        m_left_stack->setCurrentIndex(0);
        return;
    }
    m_results->clear();
    const auto hits = m_controller->store().search(text);
    for (const SearchResult& h : hits) {
        auto* item = new QListWidgetItem(m_results);
        item->setData(Qt::UserRole, h.conversation_id);
        item->setData(Qt::UserRole + 1, h.message_id);
        auto* label = new QLabel(QStringLiteral("<b>%1</b><br><span>%2</span>").arg(h.conversation_title.toHtmlEscaped(), h.snippet_html));
        label->setObjectName(QStringLiteral("searchHit"));
        label->setWordWrap(true);
        label->setContentsMargins(4, 3, 4, 3);
        label->setAttribute(Qt::WA_TransparentForMouseEvents);
        item->setSizeHint(QSize(200, label->heightForWidth(m_results->viewport()->width() - 8) + 8));
        m_results->setItemWidget(item, label);
    }
    if (hits.empty()) {
        auto* item = new QListWidgetItem(tr("No messages match “%1”.").arg(text), m_results);
        item->setFlags(Qt::NoItemFlags);
    }
    m_left_stack->setCurrentIndex(1);
}

void MainWindow::editSettings() {
    const ConversationSettings s = m_controller->settings();
    QDialog dialog(this);
    dialog.setWindowTitle(tr("Conversation settings"));
    auto* form = new QFormLayout(&dialog);
    auto* system = new QPlainTextEdit(s.system_prompt);
    // A number field: its range, step, value, and the name tests find it by.
    auto real = [](const char* name, double lo, double hi, double step, double value, int decimals = 2) {
        auto* box = new QDoubleSpinBox;
        box->setObjectName(QLatin1String(name));
        box->setDecimals(decimals);
        box->setRange(lo, hi);
        box->setSingleStep(step);
        box->setValue(value);
        return box;
    };
    auto* temperature = real("temperatureSetting", 0, 2, 0.05, s.sampling.temperature);
    auto* top_p = real("topPSetting", 0.01, 1, 0.05, s.sampling.top_p);
    auto* top_k = new QSpinBox;
    top_k->setRange(0, 1000);
    top_k->setValue(s.sampling.top_k);
    auto* min_p = real("minPSetting", 0, 1, 0.01, s.sampling.min_p, 3);
    auto* repetition = real("repetitionPenaltySetting", 0.01, 10, 0.05, s.sampling.repetition_penalty);
    repetition->setToolTip(tr("Divides the logits of every token already in the conversation (prompt and answer)"));
    auto* frequency = real("frequencyPenaltySetting", -2, 2, 0.1, s.sampling.frequency_penalty);
    frequency->setToolTip(tr("Subtracted from a token's logit once for each time the answer has used it"));
    auto* presence = real("presencePenaltySetting", -2, 2, 0.1, s.sampling.presence_penalty);
    presence->setToolTip(tr("Subtracted from a token's logit once the answer has used it"));
    auto* max_tokens = new QSpinBox;
    max_tokens->setRange(1, 32768);
    max_tokens->setValue(s.sampling.max_new_tokens);
    auto* mtp = new QCheckBox(tr("Speculative decoding with the model's MTP module"));
    mtp->setChecked(s.sampling.mtp);
    // A switch: its text, the name tests find it by, its tooltip and state.
    auto check = [](const QString& text, const char* name, const QString& tip, bool checked) {
        auto* box = new QCheckBox(text);
        box->setObjectName(QLatin1String(name));
        box->setToolTip(tip);
        box->setChecked(checked);
        return box;
    };
    auto* lookup = check(tr("Speculative decoding with drafts from the conversation's own text"), "lookupSetting",
                         tr("Guesses the next tokens from what followed the last few tokens earlier in the "
                            "conversation, and checks them in one step: faster where the answer repeats text "
                            "(code being edited, quotes, lists); the same answers when greedy, equally likely ones when "
                            "sampling. For any model, instead of MTP"),
                         s.sampling.lookup);
    auto* json_object =
        check(tr("Answer with one JSON object"), "jsonObjectSetting",
              tr("JSON mode: every token keeps the answer the start of one JSON object, and it ends once the object "
                 "is closed. Ask for the keys you want in the message; OpenAI's own API also wants the word "
                 "\u201cJSON\u201d in it"),
              s.sampling.json_object);
    form->addRow(tr("System prompt"), system);
    form->addRow(tr("Temperature (0 = greedy)"), temperature);
    form->addRow(tr("Top-p"), top_p);
    form->addRow(tr("Top-k (0 = off)"), top_k);
    form->addRow(tr("Min-p (0 = off)"), min_p);
    form->addRow(tr("Repetition penalty (1 = off)"), repetition);
    form->addRow(tr("Frequency penalty (0 = off)"), frequency);
    form->addRow(tr("Presence penalty (0 = off)"), presence);
    form->addRow(tr("Max new tokens"), max_tokens);
    form->addRow(QString(), mtp);
    form->addRow(QString(), lookup);
    form->addRow(QString(), json_object);
    auto* box = new QDialogButtonBox(QDialogButtonBox::Ok | QDialogButtonBox::Cancel);
    form->addRow(box);
    connect(box, &QDialogButtonBox::accepted, &dialog, &QDialog::accept);
    connect(box, &QDialogButtonBox::rejected, &dialog, &QDialog::reject);
    if (dialog.exec() != QDialog::Accepted) return;
    ConversationSettings n = s;
    n.system_prompt = system->toPlainText();
    n.sampling.temperature = temperature->value();
    n.sampling.top_p = top_p->value();
    n.sampling.top_k = top_k->value();
    n.sampling.min_p = min_p->value();
    n.sampling.repetition_penalty = repetition->value();
    n.sampling.frequency_penalty = frequency->value();
    n.sampling.presence_penalty = presence->value();
    n.sampling.max_new_tokens = max_tokens->value();
    n.sampling.mtp = mtp->isChecked();
    n.sampling.lookup = lookup->isChecked();
    n.sampling.json_object = json_object->isChecked();
    m_controller->applySettings(n);
}

void MainWindow::showAbout() {
    const auto m = m_controller->model();
    QMessageBox::about(this, tr("About Cetus"),
                       tr("<h3>Cetus %1</h3><p>A desktop chat app for DeepSeek-architecture models, with a built-in engine "
                          "(MLA, DeepSeekMoE, MTP speculative decoding).</p>"
                          "<p>Qt %2<br>Backend: %3<br>Model: %4<br>Conversations: %5</p>")
                           .arg(QStringLiteral(CETUS_VERSION), QString::fromLatin1(qVersion()),
                                m ? m->backend : tr("none loaded"), m ? m->name.toHtmlEscaped() : tr("none"),
                                m_controller->store().location().toHtmlEscaped()));
}

std::optional<qint64> MainWindow::selectedConversation() const {
    const QVariant id = m_list->currentIndex().data(ConversationListModel::IdRole);
    return id.isValid() ? std::optional<qint64>(id.toLongLong()) : std::nullopt;
}

}  // namespace cetus::ui
