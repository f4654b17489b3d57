// The main window: conversation list and search on the left, the chat and composer in
// the middle, the inspector docks on the right, the model loading bar at the bottom.
// It wires widgets to the ChatController and the GenerationService's load signals.
#pragma once

#include "cetus/ui/chat_controller.h"

#include <QMainWindow>
#include <QPlainTextEdit>

#include <array>

#include <functional>
#include <memory>

class QDragEnterEvent;
class QDropEvent;
class QLabel;
class QMimeData;
class QLineEdit;
class QListView;
class QListWidget;
class QMenu;
class QProgressBar;
class QPushButton;
class QStackedWidget;
class QActionGroup;
class QTimer;

namespace cetus::ui {

class ChatView;
class ConversationListModel;
class ExpertPanel;
class KvCachePanel;
class ModelPanel;
class RoutingPanel;
class SpeculativePanel;
class SwitchingGenerationService;
struct RemoteEndpoint;

// Enter sends, Shift+Enter breaks the line. Files dropped or pasted onto it are
// attached to the message instead of their paths being typed.
class Composer : public QPlainTextEdit {
    Q_OBJECT
public:
    using QPlainTextEdit::QPlainTextEdit;
signals:
    void submitted();
    void filesDropped(const QStringList& paths);
protected:
    void keyPressEvent(QKeyEvent* e) override;
    bool canInsertFromMimeData(const QMimeData* source) const override;
    void insertFromMimeData(const QMimeData* source) override;
};

class MainWindow : public QMainWindow {
    Q_OBJECT
public:
    // Where the local engine keeps conversations' cache rows between runs: the
    // platform's cache folder (Model > Keep conversation caches on disk).
    static QString conversationCacheFolder();
    MainWindow(HistoryStore& store, GenerationService& service, QWidget* parent = nullptr);
    ~MainWindow() override;

    // Loads a model folder with the device chosen in the Model menu.
    void openModel(const QString& dir);  // on the device chosen in Model > Device
    void openModel(const QString& dir, DeviceChoice device);
    // The last model or remote endpoint (QSettings) if any; returns whether a load started.
    bool restoreLastModel();
    // Remote endpoints: available when the service given is a SwitchingGenerationService
    // (the Model menu then has "Remote endpoint…" and "Use local model").
    bool connectEndpoint(const RemoteEndpoint& endpoint);
    void useLocalModel();
    void chooseEndpoint();
    QLabel* modelStatus() const { return m_model_status; }
    // The status bar's "Context: used / length tokens" of the shown conversation.
    QLabel* contextUsage() const { return m_context_usage; }
    // Under Send: the tokens of the message being written (counted by the model's
    // tokenizer on the worker, a moment after typing stops).
    QLabel* composerTokens() const { return m_composer_tokens; }
    // Text files attached to the message being written (the Attach button, File >
    // Attach files…, dropped on the message box or the chat, or pasted): shown as chips above the composer,
    // sent with the message, each removable. Returns whether every path was attached;
    // the others are named in the banner with the reason.
    bool attachFiles(const QStringList& paths);
    const QList<Attachment>& attachments() const { return m_attachments; }
    QWidget* attachmentBar() const { return m_attachment_bar; }
    QPushButton* attachButton() const { return m_attach; }
    // Attached files together may come to this much (four times one file's limit).
    static qint64 attachmentsLimitBytes();
    void restoreLastConversation();
    // Replaces the confirmation dialog (tests).
    void setConfirmHandler(std::function<bool(const QString&)> confirm) { m_confirm = std::move(confirm); }
    bool exportConversation(const QString& file, bool markdown);
    bool importConversations(const QString& file);
    void deleteConversation(qint64 id);

    ChatController& controller() { return *m_controller; }
    ChatView* chatView() const { return m_chat; }
    Composer* composer() const { return m_composer; }
    QPushButton* sendButton() const { return m_send; }
    QPushButton* stopButton() const { return m_stop; }
    QListView* conversationList() const { return m_list; }
    ConversationListModel* conversationModel() const { return m_list_model; }
    QLineEdit* searchField() const { return m_search; }
    QListWidget* searchResults() const { return m_results; }
    KvCachePanel* kvPanel() const { return m_kv; }
    ExpertPanel* expertPanel() const { return m_experts; }
    RoutingPanel* routingPanel() const { return m_routing; }
    SpeculativePanel* speculativePanel() const { return m_spec; }
    ModelPanel* modelPanel() const { return m_model_panel; }
    QLabel* banner() const { return m_banner; }
    // Shown after a model failed to load on the GPU: loads it on the CPU instead.
    QPushButton* cpuFallbackButton() const { return m_cpu_fallback; }
    QPushButton* fp8RetryButton() const { return m_fp8_retry; }
    QWidget* loadBar() const { return m_load_bar; }
    // Model > "Serve this model on localhost": off by default.
    QAction* serveAction() const { return m_serve_action; }
    // Model > Context length: the saved choice in tokens (0: the model's maximum),
    // one of k_context_choices; and Model > CPU threads (0: automatic).
    static constexpr std::array<qint64, 8> k_context_choices{2048, 4096, 8192, 16384, 32768, 65536, 131072, 0};
    static constexpr qint64 k_default_context = 4096;
    // Conversations the list reads at a time (more as it is scrolled to its end).
    static constexpr int k_list_page = 500;
    // Alternatives kept per token with Model > Record token probabilities.
    static constexpr int k_token_alternatives = 5;
    static constexpr qint64 k_model_maximum_context = qint64(1) << 40;  // sent for "the model's maximum"
    static qint64 savedContextLength();
    static int savedThreads();
    static QList<int> threadChoices();  // 0 (automatic), powers of two below the core count, the core count
    QMenu* contextMenu() const { return m_context_menu; }
    class LocalServer* localServer() const { return m_server; }

protected:
    void closeEvent(QCloseEvent* e) override;
    void dragEnterEvent(QDragEnterEvent* e) override;
    void dropEvent(QDropEvent* e) override;

private:
    void buildMenus();
    QWidget* buildLeft();
    QWidget* buildCenter();
    void buildDocks();
    void refreshList();
    void refreshChat();
    void refreshTitle();
    void refreshEnabled();
    void refreshExperts();
    void showBanner(const QString& text, bool error);
    void styleBanner();  // its colours for the palette in use
    void runSearch();
    void editSettings();
    void showAbout();
    // File > Open model: a GGUF file or a model folder's config.json; Model > Open model
    // folder: a folder.
    void chooseAndOpenModel();
    void chooseAndOpenModelFolder();
    void refreshContextMenu();
    // File > Open recent model: the local model folders and GGUF files loaded last
    // (model/recent), most recent first; one that is gone is shown but cannot be chosen.
    void refreshRecentModels();
    void refreshContextUsage();
    void countComposerTokens();  // asks for the composer's count (or hides it when empty)
    QString composedMessage() const;  // the attachments and the composer's text, as sent
    bool composerEmpty() const;       // no text and no attachments
    void chooseAttachments();
    void refreshAttachments();
    void rememberRecentModel(const QString& dir);
    QString appliesOnReload(const QString& what) const;
    std::optional<qint64> selectedConversation() const;

    class LocalServer* m_server = nullptr;
    QAction* m_serve_action = nullptr;
    std::unique_ptr<ChatController> m_controller;
    GenerationService& m_service;
    ConversationListModel* m_list_model = nullptr;
    QListView* m_list = nullptr;
    // The list shows the archive instead (Conversation > Show archived conversations).
    bool m_show_archived = false;
    QAction* m_archive_action = nullptr;
    // Conversations listed: a page more each time the list is scrolled to its end.
    int m_list_limit = k_list_page;
    bool m_list_may_have_more = false;
    bool m_refreshing_list = false;  // the scroll bar moves while the list is refilled: not the user
    QListWidget* m_results = nullptr;
    QStackedWidget* m_left_stack = nullptr;
    QLineEdit* m_search = nullptr;
    QStackedWidget* m_center_stack = nullptr;
    QLabel* m_empty_label = nullptr;
    QPushButton* m_empty_open = nullptr;
    ChatView* m_chat = nullptr;
    Composer* m_composer = nullptr;
    QPushButton* m_send = nullptr;
    QPushButton* m_stop = nullptr;
    QLabel* m_banner = nullptr;
    bool m_banner_error = false;
    QPushButton* m_cpu_fallback = nullptr;
    QPushButton* m_fp8_retry = nullptr;  // shown when the GPU lacks memory for a BF16 model
    DeviceChoice m_loading_device = DeviceChoice::Auto;
    QWidget* m_load_bar = nullptr;
    QProgressBar* m_progress = nullptr;
    QLabel* m_load_label = nullptr;
    QLabel* m_model_status = nullptr;
    QLabel* m_context_usage = nullptr;
    QLabel* m_composer_tokens = nullptr;
    QList<Attachment> m_attachments;
    QWidget* m_attachment_bar = nullptr;
    QPushButton* m_attach = nullptr;
    QString m_attach_problems;  // the banner's text about files refused last
    QTimer* m_count_timer = nullptr;
    quint64 m_count_id = 0;  // the last count asked for; older answers are dropped
    KvCachePanel* m_kv = nullptr;
    ExpertPanel* m_experts = nullptr;
    RoutingPanel* m_routing = nullptr;
    SpeculativePanel* m_spec = nullptr;
    ModelPanel* m_model_panel = nullptr;
    QActionGroup* m_device_group = nullptr;
    QMenu* m_context_menu = nullptr;
    QMenu* m_recent_menu = nullptr;
    QActionGroup* m_context_group = nullptr;  // Model > Context length (saved as model/context)
    QActionGroup* m_threads_group = nullptr;  // Model > CPU threads (saved as model/threads)
    QAction* m_reload_action = nullptr;
    QAction* m_fp8_action = nullptr;  // Model > FP8 weights (saved as model/fp8)
    QAction* m_kv_bf16_action = nullptr;  // Model > BF16 latent cache (saved as model/kv_cache_bf16)
    QAction* m_int8_action = nullptr;  // Model > Integer products for GGUF on the CPU (saved as model/int8_activations)
    QAction* m_tune_action = nullptr;  // Model > Tune GPU decode steps when loading (saved as model/tune_steps)
    QAction* m_disk_cache_action = nullptr;  // Model > Keep conversation caches on disk (model/disk_cache)
    std::function<bool(const QString&)> m_confirm;
    QString m_loading_dir;
    LoadRequest m_loading_request, m_loaded_request;  // the last load asked for, and the one that loaded
    SwitchingGenerationService* m_switch = nullptr;  // null: local engine only
};

}  // namespace cetus::ui
