// Malformed tokenizer.json and tokenizer_config.json: each damage, applied to a small valid
// tokenizer (tests/data/tokenizer/synthetic/split_merged), must end in a cetus::Error with
// the expected code whose message names the file and the problem (docs/bad-inputs.md).
#include "cetus/error.h"
#include "cetus/tokenizer.h"

#include <QTemporaryDir>
#include <QtTest>

#include <nlohmann/json.hpp>

#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>

using cetus::ErrorCode;
using nlohmann::json;

namespace {

const std::string k_base_dir = CETUS_TEST_DATA "/tokenizer/synthetic/split_merged";

std::string read_text(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

struct Damage {
    std::function<void(json&)> apply; // on tokenizer.json
    ErrorCode code;
    std::string message_part;
};

const std::map<std::string, Damage>& damages() {
    static const std::map<std::string, Damage> table = {
        {"top_level_array",
         {[](json& j) { j = json::array(); }, ErrorCode::BadFormat, "not a JSON object"}},
        {"missing_model",
         {[](json& j) { j.erase("model"); }, ErrorCode::BadFormat, "model: missing"}},
        {"model_unigram",
         {[](json& j) { j["model"]["type"] = "Unigram"; }, ErrorCode::Unsupported, "only BPE"}},
        {"vocab_not_object",
         {[](json& j) { j["model"]["vocab"] = json::array(); }, ErrorCode::BadFormat,
          "model.vocab"}},
        {"vocab_id_negative",
         {[](json& j) { j["model"]["vocab"]["zzz_new"] = -1; }, ErrorCode::BadFormat, "outside"}},
        {"vocab_id_huge",
         {[](json& j) { j["model"]["vocab"]["zzz_new"] = 4000000000LL; }, ErrorCode::BadFormat,
          "outside"}},
        {"vocab_id_not_integer",
         {[](json& j) { j["model"]["vocab"]["zzz_new"] = "7"; }, ErrorCode::BadFormat, "integer"}},
        {"vocab_duplicate_id",
         {[](json& j) { j["model"]["vocab"]["zzz_new"] = 5; }, ErrorCode::BadFormat,
          "duplicate id 5"}},
        {"missing_byte_token",
         {[](json& j) {
              j["model"]["vocab"].erase("Ġ");
              j["model"]["merges"] = json::array();
          },
          ErrorCode::BadFormat, "no token for byte 0x20"}},
        {"merge_three_parts",
         {[](json& j) { j["model"]["merges"].push_back("a b c"); }, ErrorCode::BadFormat,
          "merges["}},
        {"merge_no_space",
         {[](json& j) { j["model"]["merges"].push_back("ab"); }, ErrorCode::BadFormat,
          "one space"}},
        {"merge_unknown_token",
         {[](json& j) {
              j["model"]["merges"].push_back(json::array({"a", "NOT_A_TOKEN"}));
          },
          ErrorCode::BadFormat, "\"NOT_A_TOKEN\" is not in the vocab"}},
        {"merge_result_missing",
         {[](json& j) { j["model"]["merges"].push_back("Q Z"); }, ErrorCode::BadFormat,
          "\"QZ\" is not in the vocab"}},
        {"merge_wrong_type",
         {[](json& j) { j["model"]["merges"].push_back(42); }, ErrorCode::BadFormat,
          "expected \"a b\""}},
        {"merges_not_array",
         {[](json& j) { j["model"]["merges"] = "a b"; }, ErrorCode::BadFormat, "model.merges"}},
        {"byte_fallback",
         {[](json& j) { j["model"]["byte_fallback"] = true; }, ErrorCode::Unsupported,
          "byte_fallback"}},
        {"dropout",
         {[](json& j) { j["model"]["dropout"] = 0.1; }, ErrorCode::Unsupported, "dropout"}},
        {"unknown_pre_tokenizer",
         {[](json& j) {
              j["pre_tokenizer"]["pretokenizers"][0] = {{"type", "Frobnicate"}};
          },
          ErrorCode::BadFormat, "unknown pre-tokenizer type \"Frobnicate\""}},
        {"unsupported_pre_tokenizer",
         {[](json& j) {
              j["pre_tokenizer"] = {{"type", "Metaspace"}};
          },
          ErrorCode::Unsupported, "\"Metaspace\" is not supported"}},
        {"pre_tokenizer_without_type",
         {[](json& j) { j["pre_tokenizer"] = json::object(); }, ErrorCode::BadFormat,
          "missing \"type\""}},
        {"bad_regex",
         {[](json& j) {
              j["pre_tokenizer"]["pretokenizers"][1]["pattern"] = {{"Regex", "(unclosed"}};
          },
          ErrorCode::BadFormat, "does not compile"}},
        {"bad_split_behavior",
         {[](json& j) { j["pre_tokenizer"]["pretokenizers"][1]["behavior"] = "Sideways"; },
          ErrorCode::BadFormat, "unknown split behavior"}},
        {"no_byte_level",
         {[](json& j) { j["pre_tokenizer"]["pretokenizers"].erase(3); }, ErrorCode::Unsupported,
          "no ByteLevel"}},
        {"step_after_byte_level",
         {[](json& j) {
              j["pre_tokenizer"]["pretokenizers"].push_back({{"type", "Digits"}});
          },
          ErrorCode::Unsupported, "after ByteLevel"}},
        {"normalizer_nfkc",
         {[](json& j) {
              j["normalizer"] = {{"type", "NFKC"}};
          },
          ErrorCode::Unsupported, "\"NFKC\""}},
        {"decoder_missing",
         {[](json& j) { j.erase("decoder"); }, ErrorCode::Unsupported, "decoder"}},
        {"decoder_wordpiece",
         {[](json& j) {
              j["decoder"] = {{"type", "WordPiece"}};
          },
          ErrorCode::Unsupported, "\"WordPiece\""}},
        {"added_token_id_clash",
         {[](json& j) { j["added_tokens"][0]["id"] = 5; }, ErrorCode::BadFormat, "duplicate id 5"}},
        {"added_token_vocab_mismatch",
         {[](json& j) {
              j["added_tokens"].push_back({{"id", 999}, {"content", "a"}});
          },
          ErrorCode::BadFormat, "already token"}},
        {"added_token_id_out_of_range",
         {[](json& j) { j["added_tokens"][0]["id"] = -3; }, ErrorCode::BadFormat, "outside"}},
        {"added_token_without_content",
         {[](json& j) { j["added_tokens"][0].erase("content"); }, ErrorCode::BadFormat, "content"}},
        {"added_token_flag_not_bool",
         {[](json& j) { j["added_tokens"][0]["lstrip"] = "yes"; }, ErrorCode::BadFormat, "lstrip"}},
    };
    return table;
}

} // namespace

class TestTokenizerLoad : public QObject {
    Q_OBJECT

  private slots:
    void damaged_tokenizer_json_is_rejected_data() {
        QTest::addColumn<QString>("damage");
        for (const auto& [name, d] : damages())
            QTest::newRow(name.c_str()) << QString::fromStdString(name);
    }
    void damaged_tokenizer_json_is_rejected() {
        QFETCH(QString, damage);
        const Damage& d = damages().at(damage.toStdString());
        json j = json::parse(read_text(k_base_dir + "/tokenizer.json"));
        d.apply(j);
        try {
            (void)cetus::Tokenizer::from_json(j.dump(), "", "damaged/tokenizer.json");
            QFAIL("loading succeeded");
        } catch (const cetus::Error& e) {
            const std::string what = e.what();
            QVERIFY2(what.rfind("damaged/tokenizer.json: ", 0) == 0, e.what());
            QVERIFY2(what.find(d.message_part) != std::string::npos, e.what());
            QVERIFY2(e.code() == d.code, cetus::error_code_name(e.code()));
        }
    }

    void invalid_json_is_rejected_data() {
        QTest::addColumn<QByteArray>("text");
        QTest::newRow("empty") << QByteArray();
        QTest::newRow("truncated") << QByteArray("{\"model\": {\"vocab\": {");
        QTest::newRow("invalid_utf8") << QByteArray("{\"model\": \"\xff\"}");
        QTest::newRow("duplicate_vocab_key")
            << QByteArray("{\"model\": {\"vocab\": {\"a\": 1, \"a\": 2}}}");
    }
    void invalid_json_is_rejected() {
        QFETCH(QByteArray, text);
        try {
            (void)cetus::Tokenizer::from_json(text.toStdString(), "", "x/tokenizer.json");
            QFAIL("loading succeeded");
        } catch (const cetus::Error& e) {
            QCOMPARE(e.code(), ErrorCode::BadFormat);
            QVERIFY2(std::string(e.what()).rfind("x/tokenizer.json: ", 0) == 0, e.what());
        }
    }

    void missing_folder_is_an_io_error() {
        try {
            (void)cetus::Tokenizer::load("/nonexistent/cetus-model");
            QFAIL("loading succeeded");
        } catch (const cetus::Error& e) {
            QCOMPARE(e.code(), ErrorCode::Io);
            QVERIFY2(std::string(e.what()).find("/nonexistent/cetus-model/tokenizer.json") !=
                         std::string::npos,
                     e.what());
        }
    }

    void bad_tokenizer_config_names_its_file_data() {
        QTest::addColumn<QByteArray>("config");
        QTest::addColumn<QString>("message_part");
        QTest::newRow("bos_not_a_token")
            << QByteArray(R"({"bos_token": "<nope>"})") << "\"<nope>\" is not a token";
        QTest::newRow("eos_wrong_type") << QByteArray(R"({"eos_token": 3})") << "eos_token";
        QTest::newRow("template_wrong_type")
            << QByteArray(R"({"chat_template": 7})") << "chat_template";
        QTest::newRow("not_json") << QByteArray("{") << "invalid JSON";
    }
    void bad_tokenizer_config_names_its_file() {
        QFETCH(QByteArray, config);
        QFETCH(QString, message_part);
        QTemporaryDir dir;
        QVERIFY(dir.isValid());
        const std::string d = dir.path().toStdString();
        std::ofstream(d + "/tokenizer.json") << read_text(k_base_dir + "/tokenizer.json");
        std::ofstream(d + "/tokenizer_config.json") << config.toStdString();
        try {
            (void)cetus::Tokenizer::load(d);
            QFAIL("loading succeeded");
        } catch (const cetus::Error& e) {
            const std::string what = e.what();
            QVERIFY2(what.find(d + "/tokenizer_config.json") != std::string::npos, e.what());
            QVERIFY2(what.find(message_part.toStdString()) != std::string::npos, e.what());
        }
    }

    // Merges may be "a b" strings or ["a", "b"] pairs; both give the same tokenizer.
    void merge_forms_are_equivalent() {
        json pairs = json::parse(read_text(k_base_dir + "/tokenizer.json"));
        json strings = pairs;
        for (auto& m : strings["model"]["merges"])
            m = m[0].get<std::string>() + " " + m[1].get<std::string>();
        const auto a = cetus::Tokenizer::from_json(pairs.dump(), "");
        const auto b = cetus::Tokenizer::from_json(strings.dump(), "");
        const std::string text = "the quick brown fox jumps over the lazy dog, hello-world 2024";
        QVERIFY(a.encode(text, true) == b.encode(text, true));
        QVERIFY(a.encode(text, true).size() < text.size()); // merges did apply
    }

    void folder_without_config_uses_defaults() {
        const auto tok = cetus::Tokenizer::load(k_base_dir);
        QCOMPARE(tok.bos_id(), -1); // the synthetic vocabulary has no DeepSeek BOS
        QVERIFY(!tok.chat_template().recognized);
        QCOMPARE(tok.chat_template().family, cetus::ChatFamily::DeepSeekV3);
    }
};

QTEST_GUILESS_MAIN(TestTokenizerLoad)
#include "test_tokenizer_load.moc"
