// Tokenizer parity: our ids against the Python `tokenizers` library's on DeepSeek-V3's real
// tokenizer.json and on two small synthetic tokenizers (fixtures from
// make_tokenizer_fixtures.py), plus round trips, the streaming detokenizer, long words
// and concurrent use. Fixture mismatches print the first differing token and how to regenerate.
#include "cetus/error.h"
#include "cetus/tokenizer.h"

#include <QFile>
#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QtTest>

#include <memory>
#include <string>
#include <thread>
#include <vector>

using cetus::Tokenizer;

namespace {

const QString k_data = QStringLiteral(CETUS_TEST_DATA "/tokenizer");
const char* k_regenerate =
    "regenerate fixtures with: python3 tests/tokenizer/make_tokenizer_fixtures.py";

QJsonObject read_json(const QString& path) {
    QFile f(path);
    if (!f.open(QIODevice::ReadOnly)) qFatal("cannot open %s", qPrintable(path));
    return QJsonDocument::fromJson(f.readAll()).object();
}

std::vector<int32_t> to_ids(const QJsonArray& a) {
    std::vector<int32_t> ids;
    ids.reserve(static_cast<size_t>(a.size()));
    for (const auto& v : a) ids.push_back(v.toInt());
    return ids;
}

std::string to_string(const QByteArray& b) {
    return std::string(b.constData(), static_cast<size_t>(b.size()));
}

// "" when equal, else where and how the sequences first differ, with the pieces.
QString describe_mismatch(const Tokenizer& tok, const std::vector<int32_t>& got,
                          const std::vector<int32_t>& want) {
    if (got == want) return {};
    size_t i = 0;
    while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
    auto at = [&](const std::vector<int32_t>& v) {
        if (i >= v.size()) return QStringLiteral("<end>");
        return QStringLiteral("%1 \"%2\"")
            .arg(v[i])
            .arg(QString::fromStdString(std::string(tok.token_piece(v[i]))));
    };
    return QStringLiteral(
               "first difference at token %1 of %2 (expected %3): got %4, expected %5; %6")
        .arg(i)
        .arg(got.size())
        .arg(want.size())
        .arg(at(got), at(want), QString::fromLatin1(k_regenerate));
}

// Well-formed UTF-8 per Unicode Table 3-7 (QString would drop a leading BOM).
bool is_valid_utf8(const std::string& s) {
    size_t i = 0;
    while (i < s.size()) {
        const auto b = static_cast<unsigned char>(s[i]);
        size_t n = b < 0x80                 ? 1
                   : b >= 0xC2 && b <= 0xDF ? 2
                   : b >= 0xE0 && b <= 0xEF ? 3
                   : b >= 0xF0 && b <= 0xF4 ? 4
                                            : 0;
        if (n == 0 || i + n > s.size()) return false;
        const auto b1 = static_cast<unsigned char>(s[i + (n > 1 ? 1 : 0)]);
        if ((b == 0xE0 && b1 < 0xA0) || (b == 0xED && b1 > 0x9F) || (b == 0xF0 && b1 < 0x90) ||
            (b == 0xF4 && b1 > 0x8F))
            return false;
        for (size_t k = 1; k < n; ++k) {
            if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
        }
        i += n;
    }
    return true;
}

int32_t id_of_byte(const Tokenizer& tok, unsigned char b) {
    for (int32_t id = 0; id < tok.vocab_size(); ++id) {
        const auto bytes = tok.token_bytes(id);
        if (bytes.size() == 1 && static_cast<unsigned char>(bytes[0]) == b && !tok.is_special(id))
            return id;
    }
    return -1;
}

} // namespace

class TestTokenizer : public QObject {
    Q_OBJECT

  private:
    std::unique_ptr<Tokenizer> m_v3;
    std::map<QString, std::unique_ptr<Tokenizer>> m_synthetic;

    const Tokenizer& tokenizer_for(const QString& set) {
        return set == "v3" ? *m_v3 : *m_synthetic.at(set);
    }

    void add_golden_rows() {
        QTest::addColumn<QString>("set");
        QTest::addColumn<QByteArray>("bytes");
        QTest::addColumn<bool>("valid_utf8");
        QTest::addColumn<QJsonArray>("ids");
        QTest::addColumn<QJsonArray>("ids_plain");
        QTest::addColumn<QByteArray>("decoded");
        const std::pair<QString, QString> sets[] = {
            {"v3", k_data + "/golden_v3.json"},
            {"split_merged", k_data + "/synthetic/split_merged/golden.json"},
            {"split_contiguous", k_data + "/synthetic/split_contiguous/golden.json"}};
        for (const auto& [set, path] : sets) {
            for (const auto& v : read_json(path)["cases"].toArray()) {
                const QJsonObject c = v.toObject();
                const QString name = set + "/" + c["name"].toString();
                QTest::newRow(qPrintable(name))
                    << set << QByteArray::fromBase64(c["bytes"].toString().toLatin1())
                    << c["valid_utf8"].toBool() << c["ids"].toArray() << c["ids_plain"].toArray()
                    << QByteArray::fromBase64(c["decoded"].toString().toLatin1());
            }
        }
    }

  private slots:
    void initTestCase() {
        m_v3 =
            std::make_unique<Tokenizer>(Tokenizer::load((k_data + "/deepseek-v3").toStdString()));
        for (const char* name : {"split_merged", "split_contiguous"}) {
            m_synthetic[name] = std::make_unique<Tokenizer>(
                Tokenizer::load((k_data + "/synthetic/" + name).toStdString()));
        }
    }

    void v3_metadata() {
        QCOMPARE(m_v3->vocab_size(), 128815);
        QCOMPARE(m_v3->bos_id(), 0);
        QCOMPARE(m_v3->eos_id(), 1);
        QVERIFY(m_v3->add_bos_token());
        QCOMPARE(m_v3->token_piece(223), std::string_view("Ġ"));
        QCOMPARE(m_v3->token_bytes(223), std::string_view(" "));
        QCOMPARE(m_v3->token_piece(128803), std::string_view("<｜User｜>"));
        QVERIFY(m_v3->is_special(0));
        QVERIFY(!m_v3->is_special(128803)); // the file flags <｜User｜> as not special
        QVERIFY(!m_v3->has_token(128815));
        QVERIFY(m_v3->token_piece(-1).empty());
    }

    // The vector quoted in the architecture doc, section 8.3.
    void doc_test_vector() {
        const auto ids = m_v3->encode("Hello! 毕老师！1 + 1 = 2 ", false);
        const std::vector<int32_t> head{19923, 3,   223, 5464, 5008, 1175, 19,
                                        940,   223, 19,  438,  223,  20};
        QVERIFY(ids.size() >= head.size());
        QVERIFY(std::equal(head.begin(), head.end(), ids.begin()));
    }

    void encode_matches_tokenizers_data() { add_golden_rows(); }
    void encode_matches_tokenizers() {
        QFETCH(QString, set);
        QFETCH(QByteArray, bytes);
        QFETCH(QJsonArray, ids);
        const Tokenizer& tok = tokenizer_for(set);
        const QString diff =
            describe_mismatch(tok, tok.encode(to_string(bytes), true), to_ids(ids));
        QVERIFY2(diff.isEmpty(), qPrintable(diff));
    }

    // allow_special = false: added-token strings are plain text (reference: pre-tokenizer
    // and model of `tokenizers` run without the added vocabulary).
    void encode_plain_matches_tokenizers_data() { add_golden_rows(); }
    void encode_plain_matches_tokenizers() {
        QFETCH(QString, set);
        QFETCH(QByteArray, bytes);
        QFETCH(QJsonArray, ids_plain);
        const Tokenizer& tok = tokenizer_for(set);
        const QString diff =
            describe_mismatch(tok, tok.encode(to_string(bytes), false), to_ids(ids_plain));
        QVERIFY2(diff.isEmpty(), qPrintable(diff));
    }

    void decode_round_trips_data() { add_golden_rows(); }
    void decode_round_trips() {
        QFETCH(QString, set);
        QFETCH(QByteArray, bytes);
        QFETCH(bool, valid_utf8);
        QFETCH(QJsonArray, ids);
        QFETCH(QByteArray, decoded);
        const Tokenizer& tok = tokenizer_for(set);
        const std::string text = tok.decode(to_ids(ids));
        QCOMPARE(QByteArray::fromStdString(text), decoded);
        if (valid_utf8 && set == "v3") QCOMPARE(QByteArray::fromStdString(text), bytes);
        // Our own ids too (the synthetic "Removed" split drops text, so only for V3).
        if (valid_utf8 && set == "v3") {
            QCOMPARE(QByteArray::fromStdString(tok.decode(tok.encode(to_string(bytes), true))),
                     bytes);
            QCOMPARE(QByteArray::fromStdString(tok.decode(tok.encode(to_string(bytes), false))),
                     bytes);
        }
    }

    void stream_gives_only_complete_utf8_data() { add_golden_rows(); }
    void stream_gives_only_complete_utf8() {
        QFETCH(QString, set);
        QFETCH(QJsonArray, ids);
        QFETCH(QByteArray, decoded);
        const Tokenizer& tok = tokenizer_for(set);
        cetus::StreamDetokenizer stream(tok);
        std::string all;
        for (const int32_t id : to_ids(ids)) {
            const std::string piece = stream.push(id);
            QVERIFY2(is_valid_utf8(piece), "a pushed piece is not complete UTF-8");
            all += piece;
        }
        all += stream.flush();
        QCOMPARE(QByteArray::fromStdString(all), decoded);
    }

    void stream_holds_split_characters() {
        const int32_t e2 = id_of_byte(*m_v3, 0xE2), x82 = id_of_byte(*m_v3, 0x82),
                      xac = id_of_byte(*m_v3, 0xAC);
        const int32_t xff = id_of_byte(*m_v3, 0xFF), a = id_of_byte(*m_v3, 'A');
        QVERIFY(e2 >= 0 && x82 >= 0 && xac >= 0 && xff >= 0 && a >= 0);
        cetus::StreamDetokenizer s(*m_v3);
        QCOMPARE(s.push(e2), std::string());
        QCOMPARE(s.push(x82), std::string());
        QCOMPARE(s.push(xac), std::string("€"));
        QCOMPARE(s.push(xff), std::string("\xEF\xBF\xBD")); // can never become valid
        QCOMPARE(s.push(e2), std::string());
        QCOMPARE(s.push(a), std::string("\xEF\xBF\xBD"
                                        "A")); // a broken sequence, then A
        QCOMPARE(s.push(e2), std::string());
        QCOMPARE(s.push(x82), std::string());
        QCOMPARE(s.flush(), std::string("\xEF\xBF\xBD")); // truncated at the end: one U+FFFD
        QCOMPARE(s.flush(), std::string());
        cetus::StreamDetokenizer skipping(*m_v3, true);
        QCOMPARE(skipping.push(0), std::string()); // BOS is special
        QCOMPARE(skipping.push(128803), std::string("<｜User｜>"));
    }

    void special_strings_are_plain_text_without_allow_special() {
        const std::string text = "<｜User｜>hi<｜begin▁of▁sentence｜>";
        const auto with = m_v3->encode(text, true);
        const auto without = m_v3->encode(text, false);
        QCOMPARE(with.front(), 128803);
        QVERIFY(std::find(with.begin(), with.end(), 0) != with.end());
        for (const int32_t id : without) QVERIFY(id != 128803 && id != 0);
        QCOMPARE(m_v3->decode(without), text);
    }

    void unknown_ids_are_rejected() {
        const std::vector<int32_t> bad{5, 128815};
        try {
            (void)m_v3->decode(bad);
            QFAIL("decode accepted an id outside the vocabulary");
        } catch (const cetus::Error& e) {
            QCOMPARE(e.code(), cetus::ErrorCode::BadRequest);
            QVERIFY(std::string(e.what()).find("128815") != std::string::npos);
        }
        cetus::StreamDetokenizer s(*m_v3);
        QVERIFY_THROWS_EXCEPTION(cetus::Error, s.push(-1));
    }

    // A quadratic merge loop or regex would not finish within the test timeout here.
    void long_words_encode_in_linear_time_data() {
        QTest::addColumn<QString>("unit");
        QTest::newRow("ascii_letter") << "a";
        QTest::newRow("cjk") << "的";
        QTest::newRow("space") << " ";
        QTest::newRow("digit") << "7";
        QTest::newRow("emoji") << "😀";
        QTest::newRow("combining_mark") << "\u0301";
        QTest::newRow("letter_pair") << "ab";
    }
    void long_words_encode_in_linear_time() {
        QFETCH(QString, unit);
        std::string text;
        const std::string u = unit.toStdString();
        while (text.size() < 200000) text += u;
        const auto ids = m_v3->encode(text, true);
        QVERIFY(!ids.empty());
        QCOMPARE(m_v3->decode(ids), text);
    }

    void empty_text_gives_no_ids() {
        QVERIFY(m_v3->encode("", true).empty());
        QVERIFY(m_v3->decode(std::vector<int32_t>{}).empty());
    }

    void concurrent_encoding_agrees() {
        const std::string text =
            "Concurrent 并发 encoding — ünïcödé 12345 <｜User｜> 😀 " + std::string(500, 'x');
        const auto expected = m_v3->encode(text, true);
        std::vector<std::vector<int32_t>> results(4);
        std::vector<std::thread> threads;
        for (size_t t = 0; t < results.size(); ++t) {
            threads.emplace_back([&, t] {
                for (int i = 0; i < 20; ++i) results[t] = m_v3->encode(text, true);
            });
        }
        for (auto& th : threads) th.join();
        for (const auto& r : results) QVERIFY(r == expected);
    }
};

QTEST_GUILESS_MAIN(TestTokenizer)
#include "test_tokenizer.moc"
