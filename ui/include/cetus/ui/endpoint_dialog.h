// The Model menu's "Remote endpoint…" dialog: base URL, optional API key, the model
// picked from the endpoint's GET /models, and whether earlier reasoning is sent back.
// Endpoints are remembered in QSettings ("remote/endpoints"; the key in plain text).
#pragma once

#include "cetus/ui/remote_service.h"

#include <QDialog>

#include <optional>
#include <vector>

class QCheckBox;
class QComboBox;
class QLabel;
class QLineEdit;
class QPushButton;

namespace cetus::ui {

std::vector<RemoteEndpoint> savedEndpoints();
void saveEndpoints(const std::vector<RemoteEndpoint>& endpoints);
// The endpoint in use when the app last ran (QSettings "remote/active"), if it was remote.
std::optional<RemoteEndpoint> activeEndpoint();
// Remembers `e` (first in the list, replacing one with the same URL and model) as the active one;
// nullopt: the local engine is active.
void rememberActiveEndpoint(const std::optional<RemoteEndpoint>& e);

class EndpointDialog : public QDialog {
    Q_OBJECT
public:
    EndpointDialog(RemoteGenerationService& lister, QWidget* parent = nullptr);

    RemoteEndpoint endpoint() const;
    void setEndpoint(const RemoteEndpoint& e);
    // Asks the endpoint in the form for its models (also the "List models" button).
    void fetchModels();

    QComboBox* savedBox() const { return m_saved; }
    QLineEdit* urlField() const { return m_url; }
    QLineEdit* keyField() const { return m_key; }
    QComboBox* modelBox() const { return m_model; }
    QCheckBox* reasoningBox() const { return m_reasoning; }
    QCheckBox* logprobsBox() const { return m_logprobs; }
    QCheckBox* continuesBox() const { return m_continues; }
    QLabel* statusLabel() const { return m_status; }
    QPushButton* connectButton() const { return m_connect; }

private:
    RemoteGenerationService& m_lister;
    std::vector<RemoteEndpoint> m_endpoints;
    QComboBox* m_saved = nullptr;
    QLineEdit* m_url = nullptr;
    QLineEdit* m_key = nullptr;
    QComboBox* m_model = nullptr;
    QCheckBox* m_reasoning = nullptr;
    QCheckBox* m_logprobs = nullptr;
    QCheckBox* m_continues = nullptr;
    QLabel* m_status = nullptr;
    QPushButton* m_connect = nullptr;
};

}  // namespace cetus::ui
