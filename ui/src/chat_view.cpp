// The chat column. Each message is a MessageWidget: a header (who, branch switcher,
// statistics), the Markdown body, inline errors and the actions (copy, regenerate, continue,
// edit and resend, copy code). The streaming answer re-renders at most ~30 times/s,
// because that is how often the controller hears from the worker.
#include "cetus/ui/chat_view.h"

#include <QAbstractTextDocumentLayout>
#include <QApplication>
#include <QClipboard>
#include <QEvent>
#include <QFontDatabase>
#include <QHBoxLayout>
#include <QLabel>
#include <QMouseEvent>
#include <QPlainTextEdit>
#include <QPushButton>
#include <QRegularExpression>
#include <QPointer>
#include <QScrollBar>
#include <QTimer>
#include <QTextBlock>
#include <QToolButton>
#include <QVBoxLayout>

#include <climits>

namespace cetus::ui {

QStringList fencedCodeBlocks(const QString& markdown) {
    QStringList blocks;
    static const QRegularExpression fence(QStringLiteral("(?:^|\\n)(```|~~~)[^\\n]*\\n(.*?)(?:\\n\\1|$)"),
                                          QRegularExpression::DotMatchesEverythingOption);
    auto it = fence.globalMatch(markdown);
    while (it.hasNext()) blocks << it.next().captured(2);
    return blocks;
}

QString attachmentLabel(const Attachment& file) {
    const qsizetype n_lines = file.text.isEmpty() ? 0 : file.text.count(QLatin1Char('\n')) + (file.text.endsWith(QLatin1Char('\n')) ? 0 : 1);
    return QStringLiteral("%1 · %2").arg(file.name, MessageWidget::tr("%n line(s)", nullptr, int(std::min<qsizetype>(n_lines, INT_MAX))));
}

MarkdownView::MarkdownView(QWidget* parent) : QTextBrowser(parent) {
    setOpenExternalLinks(true);
    setVerticalScrollBarPolicy(Qt::ScrollBarAlwaysOff);
    setHorizontalScrollBarPolicy(Qt::ScrollBarAlwaysOff);
    setFrameShape(QFrame::NoFrame);
    setSizePolicy(QSizePolicy::Expanding, QSizePolicy::Fixed);
    viewport()->setAutoFillBackground(false);
    viewport()->setCursor(Qt::IBeamCursor);
}

void MarkdownView::changeEvent(QEvent* e) {
    QTextBrowser::changeEvent(e);
    if (e->type() == QEvent::PaletteChange && !m_plain && !m_source.isEmpty()) setSource(m_source, false);  // code shading
}

void MarkdownView::setSource(const QString& markdown, bool plain) {
    m_source = markdown;
    m_plain = plain;
    if (plain) {
        setPlainText(markdown);
    } else {
        setMarkdown(markdown);
        // Shade code blocks; Qt's importer already sets them in the fixed-pitch font.
        const QColor shade = palette().color(QPalette::AlternateBase);
        QTextCursor c(document());
        for (QTextBlock b = document()->begin(); b.isValid(); b = b.next()) {
            const QTextBlockFormat f = b.blockFormat();
            if (f.hasProperty(QTextFormat::BlockCodeFence) || f.hasProperty(QTextFormat::BlockCodeLanguage)) {
                QTextBlockFormat nf = f;
                nf.setBackground(shade);
                c.setPosition(b.position());
                c.setBlockFormat(nf);
            }
        }
    }
    fitHeight();
}

void MarkdownView::fitHeight() {
    document()->setTextWidth(viewport()->width() > 0 ? viewport()->width() : 600);
    const int h = int(std::ceil(document()->size().height())) + 2 * frameWidth() + 2;
    if (h != height()) setFixedHeight(h);
}

void MarkdownView::resizeEvent(QResizeEvent* e) {
    QTextBrowser::resizeEvent(e);
    fitHeight();
}

// The rendered text drops Markdown syntax but keeps the order of everything else, so a
// greedy walk along the source finds the source character of each rendered one.
int MarkdownView::sourceOffsetAt(const QPoint& pos) const {
    const int doc_pos = cursorForPosition(pos).position();
    const QString plain = document()->toPlainText();
    int s = 0;
    for (int p = 0; p < plain.size() && s < m_source.size(); ++p) {
        const QChar c = plain.at(p);
        int t = s;
        while (t < m_source.size() && !(m_source.at(t) == c || (c.isSpace() && m_source.at(t).isSpace()))) ++t;
        if (t == m_source.size()) continue;  // rendered-only character (a list number)
        if (p == doc_pos) return t;
        s = t + 1;
    }
    return std::max(0, std::min(s, int(m_source.size()) - 1));
}

void MarkdownView::mouseReleaseEvent(QMouseEvent* e) {
    QTextBrowser::mouseReleaseEvent(e);
    if (e->button() == Qt::LeftButton && !textCursor().hasSelection()) emit clickedAt(sourceOffsetAt(e->pos()));
}

MessageWidget::MessageWidget(const DisplayMessage& d, bool streaming, QWidget* parent)
    : QFrame(parent), m_id(d.record.id) {
    const bool assistant = d.record.role == ChatRole::Assistant;
    setObjectName(assistant ? QStringLiteral("assistantMessage") : QStringLiteral("userMessage"));
    setFrameShape(QFrame::StyledPanel);
    setAutoFillBackground(true);
    setBackgroundRole(assistant ? QPalette::Base : QPalette::AlternateBase);  // follows View > Theme
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(10, 6, 10, 6);
    layout->setSpacing(4);

    auto* header = new QHBoxLayout;
    auto* who = new QLabel(QStringLiteral("<b>%1</b>").arg(assistant ? tr("Cetus") : tr("You")));
    header->addWidget(who);
    if (d.branch_count > 1) {
        auto* prev = new QToolButton;
        prev->setObjectName(QStringLiteral("previousBranch"));
        prev->setText(QStringLiteral("‹"));
        prev->setToolTip(tr("Previous version"));
        prev->setEnabled(d.branch_index > 0 && !streaming);
        auto* next = new QToolButton;
        next->setObjectName(QStringLiteral("nextBranch"));
        next->setText(QStringLiteral("›"));
        next->setToolTip(tr("Next version"));
        next->setEnabled(d.branch_index + 1 < d.branch_count && !streaming);
        auto* where = new QLabel(QStringLiteral("%1/%2").arg(d.branch_index + 1).arg(d.branch_count));
        where->setObjectName(QStringLiteral("branchLabel"));
        header->addWidget(prev);
        header->addWidget(where);
        header->addWidget(next);
        connect(prev, &QToolButton::clicked, this, [this] { emit branchRequested(m_id, -1); });
        connect(next, &QToolButton::clicked, this, [this] { emit branchRequested(m_id, +1); });
    }
    header->addStretch();
    auto* stats = new QLabel(streaming ? tr("generating…") : d.stats_line);
    stats->setObjectName(QStringLiteral("statsLabel"));
    stats->setEnabled(false);
    // Wrapped, so that a long line (speeds, MTP, what was left out) never makes the
    // message, and so the whole chat, wider than the view.
    stats->setWordWrap(true);
    stats->setAlignment(Qt::AlignRight | Qt::AlignVCenter);
    header->addWidget(stats, 1);
    layout->addLayout(header);

    m_reasoning_toggle = new QToolButton;
    m_reasoning_toggle->setObjectName(QStringLiteral("reasoningToggle"));
    m_reasoning_toggle->setCheckable(true);
    m_reasoning_toggle->setAutoRaise(true);
    m_reasoning_toggle->setToolButtonStyle(Qt::ToolButtonTextOnly);
    m_reasoning = new QLabel;
    m_reasoning->setObjectName(QStringLiteral("reasoningText"));
    m_reasoning->setWordWrap(true);
    m_reasoning->setTextFormat(Qt::PlainText);
    m_reasoning->setTextInteractionFlags(Qt::TextSelectableByMouse);
    m_reasoning->setStyleSheet(QStringLiteral("QLabel { color: palette(mid); border-left: 3px solid palette(mid); padding-left: 6px; }"));
    m_reasoning->hide();
    layout->addWidget(m_reasoning_toggle);
    layout->addWidget(m_reasoning);
    connect(m_reasoning_toggle, &QToolButton::toggled, this, [this](bool open) {
        m_reasoning->setVisible(open);
        setStreamingReasoning(m_reasoning->text());
    });
    setStreamingReasoning(d.reasoning);

    // A user message's attached files: collapsed, each opened by its toggle.
    m_content = d.record.content;
    const MessageParts parts = assistant ? MessageParts{{}, d.record.content} : splitMessage(d.record.content);
    m_files = parts.files;
    for (qsizetype index = 0; index < m_files.size(); ++index) {
        const Attachment& file = m_files.at(index);
        auto* box = new QWidget;  // the toggle's row and, once opened, the file's text
        auto* box_layout = new QVBoxLayout(box);
        box_layout->setContentsMargins(0, 0, 0, 0);
        box_layout->setSpacing(2);
        auto* row = new QHBoxLayout;
        auto* toggle = new QToolButton;
        toggle->setObjectName(QStringLiteral("attachmentToggle"));
        toggle->setCheckable(true);
        toggle->setAutoRaise(true);
        toggle->setToolButtonStyle(Qt::ToolButtonTextOnly);
        toggle->setText(QStringLiteral("▸ ") + attachmentLabel(file));
        toggle->setToolTip(tr("An attached file: show its text"));
        auto* remove = new QToolButton;
        remove->setObjectName(QStringLiteral("removeAttachment"));
        remove->setText(tr("Remove"));
        remove->setToolTip(tr("Send the edited message without %1").arg(file.name));
        remove->hide();  // while editing
        row->addWidget(toggle);
        row->addWidget(remove);
        row->addStretch();
        box_layout->addLayout(row);
        layout->addWidget(box);
        m_file_rows.append(box);
        m_file_toggles.append(toggle);
        m_file_removed.append(false);
        // The text view is made when first opened: a conversation's files may come to megabytes.
        connect(toggle, &QToolButton::toggled, this, [this, index, box, box_layout, toggle](bool open) {
            const Attachment& f = m_files.at(index);
            toggle->setText((open ? QStringLiteral("▾ ") : QStringLiteral("▸ ")) + attachmentLabel(f));
            auto* text = box->findChild<QPlainTextEdit*>(QStringLiteral("attachmentText"));
            if (!text && open) {
                text = new QPlainTextEdit(f.text);
                text->setObjectName(QStringLiteral("attachmentText"));
                text->setReadOnly(true);
                text->setFont(QFontDatabase::systemFont(QFontDatabase::FixedFont));
                // As tall as the file, up to about fifteen lines (then it scrolls).
                const int n_lines = int(std::min<qsizetype>(f.text.count(QLatin1Char('\n')) + 1, 15));
                text->setFixedHeight(n_lines * text->fontMetrics().lineSpacing() + 2 * text->frameWidth() +
                                     int(2 * text->document()->documentMargin()) + 4);
                box_layout->addWidget(text);
            }
            if (text) text->setVisible(open);
        });
        connect(remove, &QToolButton::clicked, this, [this, index, toggle] {
            m_file_removed[index] = true;
            toggle->setChecked(false);
            m_file_rows[index]->hide();
        });
    }

    m_view = new MarkdownView;
    m_view->setObjectName(QStringLiteral("messageText"));
    m_plain = !assistant || d.json;  // an answer in JSON mode is shown as it is, fixed-pitch
    if (d.json) m_view->setFont(QFontDatabase::systemFont(QFontDatabase::FixedFont));
    m_view->setSource(parts.text, m_plain);
    m_view->setVisible(!parts.text.isEmpty() || m_files.isEmpty());
    layout->addWidget(m_view);
    connect(m_view, &MarkdownView::clickedAt, this, [this](int off) { emit tokenClicked(m_id, off); });

    QString problem;
    if (d.record.status == MessageStatus::Error) problem = tr("Error: %1").arg(d.error.isEmpty() ? tr("generation failed") : d.error);
    else if (d.record.status == MessageStatus::Interrupted) problem = tr("This answer was interrupted before it finished.");
    if (!problem.isEmpty()) {
        auto* err = new QLabel(problem);
        err->setObjectName(QStringLiteral("errorLabel"));
        err->setWordWrap(true);
        err->setTextInteractionFlags(Qt::TextSelectableByMouse);
        err->setStyleSheet(QStringLiteral("color: #c0392b;"));
        layout->addWidget(err);
    }

    m_code_bar = new QWidget;
    m_code_bar->setLayout(new QHBoxLayout);
    m_code_bar->layout()->setContentsMargins(0, 0, 0, 0);
    layout->addWidget(m_code_bar);
    updateCodeButtons(parts.text);

    m_editor = new QPlainTextEdit;
    m_editor->setObjectName(QStringLiteral("editEditor"));
    m_editor->hide();
    layout->addWidget(m_editor);
    m_edit_bar = new QWidget;
    auto* edit_layout = new QHBoxLayout(m_edit_bar);
    edit_layout->setContentsMargins(0, 0, 0, 0);
    edit_layout->addStretch();
    auto* cancel = new QPushButton(tr("Cancel"));
    cancel->setObjectName(QStringLiteral("cancelEditButton"));
    auto* resend = new QPushButton(tr("Save && send"));
    resend->setObjectName(QStringLiteral("resendButton"));
    edit_layout->addWidget(cancel);
    edit_layout->addWidget(resend);
    m_edit_bar->hide();
    layout->addWidget(m_edit_bar);
    connect(cancel, &QPushButton::clicked, this, [this] {
        m_editor->hide();
        m_edit_bar->hide();
        m_view->setVisible(!m_view->source().isEmpty() || m_files.isEmpty());
        for (qsizetype i = 0; i < m_files.size(); ++i) {  // the files are back as they were
            m_file_removed[i] = false;
            m_file_rows[i]->show();
            m_file_rows[i]->findChild<QToolButton*>(QStringLiteral("removeAttachment"))->hide();
        }
    });
    connect(resend, &QPushButton::clicked, this, [this] {
        QList<Attachment> kept;
        for (qsizetype i = 0; i < m_files.size(); ++i)
            if (!m_file_removed[i]) kept.append(m_files[i]);
        emit editRequested(m_id, composeMessage(kept, m_editor->toPlainText().trimmed()));
    });

    auto* actions = new QHBoxLayout;
    actions->addStretch();
    auto* copy = new QToolButton;
    copy->setObjectName(QStringLiteral("copyButton"));
    copy->setText(tr("Copy"));
    copy->setAutoRaise(true);
    copy->setToolTip(m_files.isEmpty() ? QString() : tr("Copy the message with its attached files"));
    // The whole message: for an answer being generated, the text streamed so far.
    connect(copy, &QToolButton::clicked, this, [this] {
        QApplication::clipboard()->setText(m_files.isEmpty() ? m_view->source() : m_content);
    });
    actions->addWidget(copy);
    if (assistant) {
        auto* regen = new QToolButton;
        regen->setObjectName(QStringLiteral("regenerateButton"));
        regen->setText(tr("Regenerate"));
        regen->setAutoRaise(true);
        regen->setEnabled(!streaming);
        connect(regen, &QToolButton::clicked, this, [this] { emit regenerateRequested(m_id); });
        actions->addWidget(regen);
        if (d.can_continue && !streaming) {  // cut by the length limit, stopped or interrupted
            auto* more = new QToolButton;
            more->setObjectName(QStringLiteral("continueButton"));
            more->setText(tr("Continue"));
            more->setToolTip(tr("Let the model go on from where this answer ends"));
            more->setAutoRaise(true);
            connect(more, &QToolButton::clicked, this, [this] { emit continueRequested(m_id); });
            actions->addWidget(more);
        }
    } else {
        auto* edit = new QToolButton;
        edit->setObjectName(QStringLiteral("editButton"));
        edit->setText(tr("Edit"));
        edit->setAutoRaise(true);
        edit->setEnabled(!streaming);
        connect(edit, &QToolButton::clicked, this, &MessageWidget::startEdit);
        actions->addWidget(edit);
    }
    layout->addLayout(actions);
}

void MessageWidget::startEdit() {
    for (qsizetype i = 0; i < m_files.size(); ++i)
        if (!m_file_removed[i]) m_file_rows[i]->findChild<QToolButton*>(QStringLiteral("removeAttachment"))->show();
    m_editor->setPlainText(m_view->source());
    m_editor->setFixedHeight(std::max(60, m_view->height() + 20));
    m_view->hide();
    m_editor->show();
    m_edit_bar->show();
    m_editor->setFocus();
}

void MessageWidget::updateCodeButtons(const QString& text) {
    const QStringList blocks = fencedCodeBlocks(text);
    if (int(blocks.size()) == m_n_code_blocks) return;
    m_n_code_blocks = int(blocks.size());
    qDeleteAll(m_code_bar->findChildren<QToolButton*>(QString(), Qt::FindDirectChildrenOnly));
    for (int i = 0; i < blocks.size(); ++i) {
        auto* b = new QToolButton(m_code_bar);
        b->setObjectName(QStringLiteral("copyCodeButton"));
        b->setText(blocks.size() == 1 ? tr("Copy code") : tr("Copy code %1").arg(i + 1));
        connect(b, &QToolButton::clicked, this, [this, i] {
            const QStringList now = fencedCodeBlocks(m_view->source());
            if (i < now.size()) QApplication::clipboard()->setText(now.at(i));
        });
        m_code_bar->layout()->addWidget(b);
    }
    m_code_bar->setVisible(!blocks.isEmpty());
}

void MessageWidget::setStreamingReasoning(const QString& reasoning) {
    m_reasoning->setText(reasoning);
    const int n_words = int(reasoning.split(QRegularExpression(QStringLiteral("\\s+")), Qt::SkipEmptyParts).size());
    m_reasoning_toggle->setText((m_reasoning_toggle->isChecked() ? QStringLiteral("▾ ") : QStringLiteral("▸ ")) +
                                tr("Reasoning (%n word(s))", nullptr, n_words));
    m_reasoning_toggle->setVisible(!reasoning.isEmpty());
}

void MessageWidget::setStreamingText(const QString& text) {
    m_view->setSource(text, m_plain);
    updateCodeButtons(text);
}

ChatView::ChatView(QWidget* parent) : QScrollArea(parent) {
    setWidgetResizable(true);
    setHorizontalScrollBarPolicy(Qt::ScrollBarAlwaysOff);
    m_content = new QWidget;
    m_layout = new QVBoxLayout(m_content);
    m_layout->setContentsMargins(12, 12, 12, 12);
    m_layout->setSpacing(10);
    m_layout->addStretch();
    setWidget(m_content);
}

QList<MessageWidget*> ChatView::messageWidgets() const { return m_widgets; }

void ChatView::setMessages(const std::vector<DisplayMessage>& messages, bool streaming_last) {
    // deleteLater: the request may come from a button inside one of these widgets.
    for (MessageWidget* w : std::as_const(m_widgets)) {
        m_layout->removeWidget(w);
        w->hide();
        w->deleteLater();
    }
    m_widgets.clear();
    for (size_t i = 0; i < messages.size(); ++i) {
        auto* w = new MessageWidget(messages[i], streaming_last && i + 1 == messages.size(), m_content);
        m_layout->insertWidget(m_layout->count() - 1, w);
        m_widgets.append(w);
        w->show();  // now, not when the layout gets round to it: tests and focus need it at once
        connect(w, &MessageWidget::regenerateRequested, this, &ChatView::regenerateRequested);
        connect(w, &MessageWidget::continueRequested, this, &ChatView::continueRequested);
        connect(w, &MessageWidget::editRequested, this, &ChatView::editRequested);
        connect(w, &MessageWidget::branchRequested, this, &ChatView::branchRequested);
        connect(w, &MessageWidget::tokenClicked, this, &ChatView::tokenClicked);
    }
    scrollToEndIfFollowing(true);
}

void ChatView::updateStreaming(qint64 message_id, const QString& text) {
    const auto widgets = messageWidgets();
    if (widgets.isEmpty() || widgets.back()->messageId() != message_id) return;
    QScrollBar* bar = verticalScrollBar();
    const bool following = bar->value() >= bar->maximum() - 40;
    widgets.back()->setStreamingText(text);
    scrollToEndIfFollowing(following);
}

void ChatView::updateReasoning(qint64 message_id, const QString& reasoning) {
    const auto widgets = messageWidgets();
    if (!widgets.isEmpty() && widgets.back()->messageId() == message_id) widgets.back()->setStreamingReasoning(reasoning);
}

void ChatView::revealMessage(qint64 message_id) {
    MessageWidget* target = nullptr;
    for (MessageWidget* w : std::as_const(m_widgets))
        if (w->messageId() == message_id) target = w;
    if (!target) return;
    m_marked = message_id;
    target->setStyleSheet(QStringLiteral("#%1 { border: 2px solid palette(highlight); border-radius: 6px; }").arg(target->objectName()));
    // After any queued scroll to the end (setMessages), and again whenever the scroll
    // range changes during the next second: new Markdown views get their real heights
    // only once laid out, which moves the message down.
    QPointer<MessageWidget> guard(target);
    const auto scroll = [this, guard] {
        if (guard) ensureWidgetVisible(guard, 0, 40);
    };
    QTimer::singleShot(0, this, scroll);
    auto* follow = new QObject(this);
    connect(verticalScrollBar(), &QScrollBar::rangeChanged, follow, scroll);
    QTimer::singleShot(1000, follow, &QObject::deleteLater);
    QTimer::singleShot(2500, this, [this, guard, message_id] {
        if (guard) guard->setStyleSheet(QString());
        if (m_marked == message_id) m_marked = 0;
    });
}

void ChatView::scrollToEndIfFollowing(bool following) {
    if (!following) return;
    // After the layout has taken the new heights into account.
    QMetaObject::invokeMethod(this, [this] { verticalScrollBar()->setValue(verticalScrollBar()->maximum()); }, Qt::QueuedConnection);
}

}  // namespace cetus::ui
