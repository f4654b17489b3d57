// The chat column: one MessageWidget per message of the active branch, Markdown
// rendered by Qt (QTextDocument::setMarkdown), the streaming answer updated in place.
#pragma once

#include "cetus/ui/chat_controller.h"

#include <QScrollArea>
#include <QTextBrowser>

class QLabel;
class QPlainTextEdit;
class QPushButton;
class QToolButton;
class QVBoxLayout;

namespace cetus::ui {

// A read-only Markdown view as tall as its text; a click reports the offset into the
// Markdown source of the character under the mouse.
class MarkdownView : public QTextBrowser {
    Q_OBJECT
public:
    explicit MarkdownView(QWidget* parent = nullptr);
    void setSource(const QString& markdown, bool plain);
    const QString& source() const { return m_source; }
    int sourceOffsetAt(const QPoint& pos) const;

signals:
    void clickedAt(int source_offset);

protected:
    void resizeEvent(QResizeEvent* e) override;
    void mouseReleaseEvent(QMouseEvent* e) override;
    void changeEvent(QEvent* e) override;  // a new palette: code blocks shaded again

private:
    void fitHeight();
    QString m_source;
    bool m_plain = false;
};

class MessageWidget : public QFrame {
    Q_OBJECT
public:
    explicit MessageWidget(const DisplayMessage& message, bool streaming, QWidget* parent = nullptr);
    qint64 messageId() const { return m_id; }
    void setStreamingText(const QString& text);
    void setStreamingReasoning(const QString& reasoning);
    MarkdownView* view() const { return m_view; }
    // The reasoning of R1-style models: a collapsed toggle above the answer.
    QToolButton* reasoningToggle() const { return m_reasoning_toggle; }
    QLabel* reasoningText() const { return m_reasoning; }
    // A user message's attached files: a toggle each that shows the file's text.
    QList<QToolButton*> attachmentToggles() const { return m_file_toggles; }

signals:
    void regenerateRequested(qint64 id);
    void continueRequested(qint64 id);
    void editRequested(qint64 id, const QString& text);
    void branchRequested(qint64 id, int delta);
    void tokenClicked(qint64 id, int offset);

private:
    void startEdit();
    void updateCodeButtons(const QString& text);

    qint64 m_id = 0;
    MarkdownView* m_view = nullptr;
    QToolButton* m_reasoning_toggle = nullptr;
    QLabel* m_reasoning = nullptr;
    QPlainTextEdit* m_editor = nullptr;
    QWidget* m_edit_bar = nullptr;
    QWidget* m_code_bar = nullptr;
    int m_n_code_blocks = -1;
    bool m_plain = false;              // shown as plain text (a user's message, a JSON answer)
    QString m_content;                 // the whole message, files included (Copy)
    QList<Attachment> m_files;         // a user message's attached files
    QList<QWidget*> m_file_rows;       // one per file: its toggle (Remove while editing) and text
    QList<QToolButton*> m_file_toggles;
    QList<bool> m_file_removed;        // removed in the edit under way
};

class ChatView : public QScrollArea {
    Q_OBJECT
public:
    explicit ChatView(QWidget* parent = nullptr);
    void setMessages(const std::vector<DisplayMessage>& messages, bool streaming_last);
    void updateStreaming(qint64 message_id, const QString& text);
    void updateReasoning(qint64 message_id, const QString& reasoning);
    QList<MessageWidget*> messageWidgets() const;
    // Scrolls the message into sight and marks it for a moment (a search hit).
    void revealMessage(qint64 message_id);
    qint64 markedMessage() const { return m_marked; }

signals:
    void regenerateRequested(qint64 id);
    void continueRequested(qint64 id);
    void editRequested(qint64 id, const QString& text);
    void branchRequested(qint64 id, int delta);
    void tokenClicked(qint64 id, int offset);

private:
    void scrollToEndIfFollowing(bool following);
    qint64 m_marked = 0;
    QWidget* m_content = nullptr;
    QVBoxLayout* m_layout = nullptr;
    QList<MessageWidget*> m_widgets;  // in display order
};

// Fenced code blocks of a Markdown text (the copy buttons' contents).
QStringList fencedCodeBlocks(const QString& markdown);
// "notes.txt · 42 lines": an attached file as its chip names it.
QString attachmentLabel(const Attachment& file);

}  // namespace cetus::ui
