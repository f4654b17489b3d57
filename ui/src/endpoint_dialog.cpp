// The remote endpoint dialog and the endpoints' QSettings storage.
#include "cetus/ui/endpoint_dialog.h"

#include <QCheckBox>
#include <QComboBox>
#include <QDialogButtonBox>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QLabel>
#include <QLineEdit>
#include <QPushButton>
#include <QSettings>

namespace cetus::ui {

std::vector<RemoteEndpoint> savedEndpoints() {
    QSettings s;
    std::vector<RemoteEndpoint> out;
    const int n = s.beginReadArray(QStringLiteral("remote/endpoints"));
    for (int i = 0; i < n; ++i) {
        s.setArrayIndex(i);
        RemoteEndpoint e;
        e.base_url = s.value(QStringLiteral("url")).toString();
        e.api_key = s.value(QStringLiteral("key")).toString();
        e.model = s.value(QStringLiteral("model")).toString();
        e.send_reasoning = s.value(QStringLiteral("sendReasoning"), false).toBool();
        e.ask_logprobs = s.value(QStringLiteral("askLogprobs"), false).toBool();
        e.continues_answers = s.value(QStringLiteral("continuesAnswers"), false).toBool();
        if (!e.base_url.isEmpty()) out.push_back(e);
    }
    s.endArray();
    return out;
}

void saveEndpoints(const std::vector<RemoteEndpoint>& endpoints) {
    QSettings s;
    s.remove(QStringLiteral("remote/endpoints"));
    s.beginWriteArray(QStringLiteral("remote/endpoints"), int(endpoints.size()));
    for (int i = 0; i < int(endpoints.size()); ++i) {
        s.setArrayIndex(i);
        const RemoteEndpoint& e = endpoints[size_t(i)];
        s.setValue(QStringLiteral("url"), e.base_url);
        s.setValue(QStringLiteral("key"), e.api_key);  // plain text: a system keyring would be better
        s.setValue(QStringLiteral("model"), e.model);
        s.setValue(QStringLiteral("sendReasoning"), e.send_reasoning);
        s.setValue(QStringLiteral("askLogprobs"), e.ask_logprobs);
        s.setValue(QStringLiteral("continuesAnswers"), e.continues_answers);
    }
    s.endArray();
}

std::optional<RemoteEndpoint> activeEndpoint() {
    if (!QSettings().value(QStringLiteral("remote/active"), false).toBool()) return std::nullopt;
    const auto all = savedEndpoints();
    if (all.empty()) return std::nullopt;
    return all.front();
}

void rememberActiveEndpoint(const std::optional<RemoteEndpoint>& e) {
    QSettings().setValue(QStringLiteral("remote/active"), e.has_value());
    if (!e) return;
    auto all = savedEndpoints();
    std::erase_if(all, [&](const RemoteEndpoint& o) { return o.base_url == e->base_url && o.model == e->model; });
    all.insert(all.begin(), *e);
    saveEndpoints(all);
}

EndpointDialog::EndpointDialog(RemoteGenerationService& lister, QWidget* parent)
    : QDialog(parent), m_lister(lister), m_endpoints(savedEndpoints()) {
    setObjectName(QStringLiteral("endpointDialog"));
    setWindowTitle(tr("Remote endpoint"));
    auto* form = new QFormLayout(this);
    auto* intro = new QLabel(tr("Chat with a model served over the OpenAI API: vLLM, SGLang, another machine's "
                                "<tt>cetus-cli serve</tt>. History stays in this app's database."));
    intro->setWordWrap(true);
    form->addRow(intro);
    m_saved = new QComboBox;
    m_saved->setObjectName(QStringLiteral("savedEndpoints"));
    m_saved->addItem(tr("New endpoint"));
    for (const RemoteEndpoint& e : m_endpoints) m_saved->addItem(e.label() + QStringLiteral(" — ") + e.base_url);
    auto* forget = new QPushButton(tr("Forget"));
    forget->setObjectName(QStringLiteral("forgetEndpointButton"));
    auto* saved_row = new QHBoxLayout;
    saved_row->addWidget(m_saved, 1);
    saved_row->addWidget(forget);
    form->addRow(tr("Saved"), saved_row);
    m_url = new QLineEdit;
    m_url->setObjectName(QStringLiteral("endpointUrl"));
    m_url->setPlaceholderText(QStringLiteral("http://127.0.0.1:8765/v1"));
    form->addRow(tr("Base URL"), m_url);
    m_key = new QLineEdit;
    m_key->setObjectName(QStringLiteral("endpointKey"));
    m_key->setEchoMode(QLineEdit::PasswordEchoOnEdit);
    m_key->setPlaceholderText(tr("optional; stored in the settings file in plain text"));
    form->addRow(tr("API key"), m_key);
    m_model = new QComboBox;
    m_model->setObjectName(QStringLiteral("endpointModel"));
    m_model->setEditable(true);
    m_model->setMinimumWidth(260);
    auto* list = new QPushButton(tr("List models"));
    list->setObjectName(QStringLiteral("listModelsButton"));
    auto* model_row = new QHBoxLayout;
    model_row->addWidget(m_model, 1);
    model_row->addWidget(list);
    form->addRow(tr("Model"), model_row);
    m_reasoning = new QCheckBox(tr("Send earlier answers' reasoning back to the model (R1-style models)"));
    m_reasoning->setObjectName(QStringLiteral("endpointSendReasoning"));
    form->addRow(QString(), m_reasoning);
    m_logprobs = new QCheckBox(tr("Ask for token probabilities (logprobs; some reasoning models refuse them)"));
    m_logprobs->setObjectName(QStringLiteral("endpointAskLogprobs"));
    m_logprobs->setToolTip(tr("A Cetus server always sends them. Other endpoints (vLLM, SGLang, llama.cpp) send "
                              "them when asked; then a click on a token of their answers shows its probability."));
    form->addRow(QString(), m_logprobs);
    m_continues = new QCheckBox(tr("It continues cut answers (continue_final_message: vLLM, SGLang)"));
    m_continues->setObjectName(QStringLiteral("endpointContinues"));
    m_continues->setToolTip(tr("Offers Continue on an answer cut by the length limit or stopped. A Cetus server "
                               "always does; OpenAI's own API refuses the field."));
    form->addRow(QString(), m_continues);
    m_status = new QLabel;
    m_status->setObjectName(QStringLiteral("endpointStatus"));
    m_status->setWordWrap(true);
    m_status->setTextInteractionFlags(Qt::TextSelectableByMouse);
    form->addRow(m_status);
    auto* box = new QDialogButtonBox(QDialogButtonBox::Cancel);
    m_connect = box->addButton(tr("Connect"), QDialogButtonBox::AcceptRole);
    m_connect->setObjectName(QStringLiteral("connectEndpointButton"));
    form->addRow(box);

    connect(box, &QDialogButtonBox::accepted, this, [this] {
        if (m_url->text().trimmed().isEmpty() || m_model->currentText().trimmed().isEmpty()) {
            m_status->setText(tr("Enter the base URL and choose a model (List models asks the endpoint)."));
            return;
        }
        accept();
    });
    connect(box, &QDialogButtonBox::rejected, this, &QDialog::reject);
    connect(list, &QPushButton::clicked, this, &EndpointDialog::fetchModels);
    connect(m_saved, &QComboBox::currentIndexChanged, this, [this](int i) {
        if (i >= 1 && i - 1 < int(m_endpoints.size())) setEndpoint(m_endpoints[size_t(i - 1)]);
        else setEndpoint(RemoteEndpoint{});
    });
    connect(forget, &QPushButton::clicked, this, [this] {
        const int i = m_saved->currentIndex();
        if (i < 1 || i - 1 >= int(m_endpoints.size())) return;
        m_endpoints.erase(m_endpoints.begin() + (i - 1));
        saveEndpoints(m_endpoints);
        m_saved->removeItem(i);
    });
    connect(&m_lister, &RemoteGenerationService::modelsListed, this, [this](const QStringList& ids, bool cetus, const QString& error) {
        if (!error.isEmpty()) {
            m_status->setText(tr("<span style='color:#c0392b'>%1</span>").arg(error.toHtmlEscaped()));
            return;
        }
        const QString keep = m_model->currentText();
        m_model->clear();
        m_model->addItems(ids);
        if (ids.contains(keep)) m_model->setCurrentText(keep);
        m_status->setText(cetus ? tr("A Cetus server: %n model(s). Its routing and statistics will feed the panels.", nullptr, int(ids.size()))
                                : tr("%n model(s). A remote engine does not report KV cache or expert routing.", nullptr, int(ids.size())));
    });
    if (!m_endpoints.empty()) m_saved->setCurrentIndex(1);
}

RemoteEndpoint EndpointDialog::endpoint() const {
    RemoteEndpoint e;
    e.base_url = m_url->text().trimmed();
    e.api_key = m_key->text().trimmed();
    e.model = m_model->currentText().trimmed();
    e.send_reasoning = m_reasoning->isChecked();
    e.ask_logprobs = m_logprobs->isChecked();
    e.continues_answers = m_continues->isChecked();
    return e;
}

void EndpointDialog::setEndpoint(const RemoteEndpoint& e) {
    m_url->setText(e.base_url);
    m_key->setText(e.api_key);
    m_model->clear();
    if (!e.model.isEmpty()) m_model->addItem(e.model);
    m_reasoning->setChecked(e.send_reasoning);
    m_logprobs->setChecked(e.ask_logprobs);
    m_continues->setChecked(e.continues_answers);
    m_status->clear();
}

void EndpointDialog::fetchModels() {
    if (m_url->text().trimmed().isEmpty()) {
        m_status->setText(tr("Enter the base URL first."));
        return;
    }
    m_status->setText(tr("Asking %1 for its models…").arg(endpoint().url(QStringLiteral("/models")).toString()));
    m_lister.listModels(endpoint());
}

}  // namespace cetus::ui
