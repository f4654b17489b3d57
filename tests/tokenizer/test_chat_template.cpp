// Chat templates: our native renderers against transformers' apply_chat_template running
// the Jinja templates (fixture chat_templates.json: V3's own template, R1, R1-0528, V2,
// Moonlight), both the text and, for DeepSeek families, the ids with V3's tokenizer;
// plus family detection and the logged fallback for unknown templates.
#include "cetus/tokenizer.h"

#include <QFile>
#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QtTest>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <sstream>

namespace {

const QString k_data = QStringLiteral(CETUS_TEST_DATA "/tokenizer");

QJsonObject read_json(const QString& path) {
    QFile f(path);
    if (!f.open(QIODevice::ReadOnly)) qFatal("cannot open %s", qPrintable(path));
    return QJsonDocument::fromJson(f.readAll()).object();
}

std::vector<cetus::ChatMessage> to_messages(const QJsonArray& a) {
    std::vector<cetus::ChatMessage> out;
    for (const auto& v : a) {
        const QJsonObject m = v.toObject();
        out.push_back({m["role"].toString().toStdString(), m["content"].toString().toStdString()});
    }
    return out;
}

// Captures what the engine logs while alive.
class LogCapture {
  public:
    LogCapture() {
        spdlog::drop("engine");
        m_logger = std::make_shared<spdlog::logger>(
            "engine", std::make_shared<spdlog::sinks::ostream_sink_mt>(m_out));
        spdlog::register_logger(m_logger);
    }
    ~LogCapture() { spdlog::drop("engine"); }
    std::string text() const { return m_out.str(); }

  private:
    std::ostringstream m_out;
    std::shared_ptr<spdlog::logger> m_logger;
};

} // namespace

class TestChatTemplate : public QObject {
    Q_OBJECT

  private:
    std::unique_ptr<cetus::Tokenizer> m_v3;
    QJsonObject m_fixture;

  private slots:
    void initTestCase() {
        m_v3 = std::make_unique<cetus::Tokenizer>(
            cetus::Tokenizer::load((k_data + "/deepseek-v3").toStdString()));
        m_fixture = read_json(k_data + "/chat_templates.json");
    }

    void v3_folder_is_detected() {
        const cetus::ChatTemplate& t = m_v3->chat_template();
        QCOMPARE(t.family, cetus::ChatFamily::DeepSeekV3);
        QVERIFY(t.recognized);
        QVERIFY(t.joins_system);
        QVERIFY(!t.opens_think);
        QCOMPARE(t.bos_token, std::string("<｜begin▁of▁sentence｜>"));
    }

    void families_are_detected_data() {
        QTest::addColumn<QString>("name");
        QTest::addColumn<int>("family");
        QTest::addColumn<bool>("opens_think");
        QTest::addColumn<bool>("assistant_after_user");
        QTest::newRow("v3") << "v3" << int(cetus::ChatFamily::DeepSeekV3) << false << false;
        QTest::newRow("r1") << "r1" << int(cetus::ChatFamily::DeepSeekR1) << true << false;
        QTest::newRow("r1_0528") << "r1_0528" << int(cetus::ChatFamily::DeepSeekR1) << false
                                 << true;
        QTest::newRow("v2") << "v2" << int(cetus::ChatFamily::DeepSeekV2) << false << false;
        QTest::newRow("moonlight")
            << "moonlight" << int(cetus::ChatFamily::Moonlight) << false << false;
    }
    void families_are_detected() {
        QFETCH(QString, name);
        QFETCH(int, family);
        QFETCH(bool, opens_think);
        QFETCH(bool, assistant_after_user);
        const auto t = cetus::detect_chat_template(
            m_fixture["templates"].toObject()[name].toString().toStdString());
        QVERIFY(t.recognized);
        QCOMPARE(int(t.family), family);
        QCOMPARE(t.opens_think, opens_think);
        QCOMPARE(t.assistant_after_user, assistant_after_user);
    }

    void render_matches_jinja_data() {
        QTest::addColumn<QString>("tmpl");
        QTest::addColumn<QString>("conversation");
        QTest::addColumn<bool>("add_generation_prompt");
        QTest::addColumn<QString>("text");
        QTest::addColumn<QJsonArray>("ids");
        for (const auto& v : m_fixture["renders"].toArray()) {
            const QJsonObject r = v.toObject();
            const QString row = QStringLiteral("%1/%2/%3")
                                    .arg(r["template"].toString(), r["conversation"].toString(),
                                         r["add_generation_prompt"].toBool() ? "gen" : "nogen");
            QTest::newRow(qPrintable(row))
                << r["template"].toString() << r["conversation"].toString()
                << r["add_generation_prompt"].toBool() << r["text"].toString()
                << r["ids"].toArray();
        }
    }
    void render_matches_jinja() {
        QFETCH(QString, tmpl);
        QFETCH(QString, conversation);
        QFETCH(bool, add_generation_prompt);
        QFETCH(QString, text);
        QFETCH(QJsonArray, ids);
        cetus::ChatTemplate t = cetus::detect_chat_template(
            m_fixture["templates"].toObject()[tmpl].toString().toStdString());
        t.bos_token = std::string(m_v3->token_piece(m_v3->bos_id()));
        t.eos_token = std::string(m_v3->token_piece(m_v3->eos_id()));
        const auto messages =
            to_messages(m_fixture["conversations"].toObject()[conversation].toArray());
        const std::string rendered = cetus::render_chat(t, messages, add_generation_prompt);
        QCOMPARE(QString::fromStdString(rendered), text);
        if (!ids.isEmpty()) {
            std::vector<int32_t> want;
            for (const auto& id : ids) want.push_back(id.toInt());
            QVERIFY2(m_v3->encode(rendered, true) == want,
                     "ids of the rendered prompt differ from transformers'; regenerate with "
                     "python3 tests/tokenizer/make_tokenizer_fixtures.py");
        }
    }

    void empty_conversation_is_bos_only() {
        const std::vector<cetus::ChatMessage> none;
        QCOMPARE(m_v3->apply_chat_template(none, false), std::string("<｜begin▁of▁sentence｜>"));
        QCOMPARE(m_v3->apply_chat_template(none, true),
                 std::string("<｜begin▁of▁sentence｜><｜Assistant｜>"));
    }

    void unknown_template_falls_back_with_warning() {
        LogCapture log;
        const auto t =
            cetus::detect_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ "
                                        "m['content'] }}<|im_end|>\n{% endfor %}");
        QVERIFY(!t.recognized);
        QCOMPARE(t.family, cetus::ChatFamily::DeepSeekV3);
        QVERIFY2(log.text().find("not recognised") != std::string::npos, log.text().c_str());
        const std::vector<cetus::ChatMessage> m{{"user", "Hi"}};
        QCOMPARE(cetus::render_chat(t, m, true),
                 std::string("<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜>"));
    }

    void missing_template_falls_back_with_warning() {
        LogCapture log;
        const auto t = cetus::detect_chat_template("");
        QVERIFY(!t.recognized);
        QVERIFY2(log.text().find("no chat_template") != std::string::npos, log.text().c_str());
    }

    void no_logger_means_no_crash() {
        spdlog::drop("engine");
        QVERIFY(!cetus::detect_chat_template("garbage").recognized);
    }
};

QTEST_GUILESS_MAIN(TestChatTemplate)
#include "test_chat_template.moc"
