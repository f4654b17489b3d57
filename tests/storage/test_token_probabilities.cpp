// Token probabilities encoding: exact round trips (texts cut to 255 bytes at a character
// boundary), refused inputs, and every damaged blob (truncated, bit-flipped, lying
// header) ends in StorageError(Corrupt); the store keeps them beside the trace.
#include "cetus/storage/error.h"
#include "cetus/storage/store.h"
#include "cetus/storage/token_probabilities.h"

#include <QtTest>

#include <zlib.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

using namespace cetus::storage;

namespace {

TokenProbabilities make(int n_tokens, int top_n, unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> lp(-12.0f, 0.0f);
    const char* words[] = {" the", "Paris", " é", "\n", "", " 東京", "<｜end▁of▁sentence｜>", " x"};
    TokenProbabilities tp;
    tp.top_n = top_n;
    for (int t = 0; t < n_tokens; ++t) {
        tp.logprobs.push_back(t % 17 == 3 ? 0.0f : lp(rng));
        for (int k = 0; k < top_n; ++k)
            tp.alternatives.push_back({words[rng() % 8], k == top_n - 1 && t % 5 == 0 ? -std::numeric_limits<float>::infinity() : lp(rng)});
    }
    return tp;
}

void same(const TokenProbabilities& a, const TokenProbabilities& b) {
    QCOMPARE(a.top_n, b.top_n);
    QCOMPARE(a.logprobs, b.logprobs);
    QCOMPARE(a.alternatives.size(), b.alternatives.size());
    for (size_t i = 0; i < a.alternatives.size(); ++i) {
        QCOMPARE(a.alternatives[i].text, b.alternatives[i].text);
        QCOMPARE(a.alternatives[i].logprob, b.alternatives[i].logprob);
    }
}

}  // namespace

class TestTokenProbabilities : public QObject {
    Q_OBJECT

private slots:
    void round_trip_data() {
        QTest::addColumn<int>("tokens");
        QTest::addColumn<int>("top_n");
        QTest::newRow("empty") << 0 << 5;
        QTest::newRow("one token, no alternatives") << 1 << 0;
        QTest::newRow("short answer (stored)") << 3 << 2;
        QTest::newRow("long answer (deflated)") << 2000 << 5;
        QTest::newRow("twenty alternatives") << 300 << 20;
    }
    void round_trip() {
        QFETCH(int, tokens);
        QFETCH(int, top_n);
        const TokenProbabilities tp = make(tokens, top_n, unsigned(tokens * 31 + top_n));
        const auto blob = encode_token_probabilities(tp);
        same(decode_token_probabilities(blob), tp);
        uint32_t raw_size;
        std::memcpy(&raw_size, &blob[12], 4);
        if (tokens >= 2000) QVERIFY(blob[5] == 1 && blob.size() - 24 < raw_size);  // deflated
    }

    void long_texts_keep_whole_characters() {
        TokenProbabilities tp;
        tp.top_n = 2;
        tp.logprobs = {-0.5f};
        std::string ascii(300, 'a'), wide;
        for (int i = 0; i < 100; ++i) wide += "\xE6\x9D\xB1";  // 東, 3 bytes: 255 is a boundary, 254 is not
        wide = "x" + wide;  // now byte 255 starts inside a character
        tp.alternatives = {{ascii, -1.0f}, {wide, -2.0f}};
        const auto back = decode_token_probabilities(encode_token_probabilities(tp));
        QCOMPARE(back.alternatives[0].text, std::string(255, 'a'));
        QCOMPARE(back.alternatives[1].text, wide.substr(0, 253));  // "x" and 84 whole characters
    }

    void refuses_invalid_input_data() {
        QTest::addColumn<int>("kind");
        QTest::newRow("NaN") << 0;
        QTest::newRow("above zero") << 1;
        QTest::newRow("alternatives do not fit the tokens") << 2;
        QTest::newRow("top_n 21") << 3;
        QTest::newRow("NaN alternative") << 4;
    }
    void refuses_invalid_input() {
        QFETCH(int, kind);
        TokenProbabilities tp = make(4, 2, 3);
        if (kind == 0) tp.logprobs[1] = std::nanf("");
        if (kind == 1) tp.logprobs[2] = 0.25f;
        if (kind == 2) tp.alternatives.pop_back();
        if (kind == 3) tp.top_n = 21;
        if (kind == 4) tp.alternatives[3].logprob = std::nanf("");
        try {
            encode_token_probabilities(tp);
            QFAIL("encoded an invalid input");
        } catch (const StorageError& e) {
            QCOMPARE(e.code(), StorageErrorCode::InvalidArgument);
        }
    }

    void every_truncation_is_reported() {
        for (int tokens : {5, 400}) {  // stored and deflated
            const auto blob = encode_token_probabilities(make(tokens, 3, 5));
            for (size_t n = 0; n < blob.size(); ++n) {
                try {
                    decode_token_probabilities(std::span(blob.data(), n));
                    QFAIL(qPrintable(QString("accepted a blob cut to %1 bytes").arg(n)));
                } catch (const StorageError& e) {
                    QCOMPARE(e.code(), StorageErrorCode::Corrupt);
                }
            }
        }
    }

    // A flipped bit is reported, or (in the padding bits of the deflate stream's last
    // byte) changes nothing that decodes: altered data never comes back.
    void bit_flips_are_reported() {
        for (int tokens : {0, 5, 400}) {  // 0: the CRC covers the header alone
            const TokenProbabilities tp = make(tokens, 3, 9);
            const auto blob = encode_token_probabilities(tp);
            std::mt19937 rng(11);
            for (int i = 0; i < 2000; ++i) {
                auto damaged = blob;
                const size_t at = rng() % damaged.size();
                damaged[at] ^= uint8_t(1u << (rng() % 8));
                try {
                    same(decode_token_probabilities(damaged), tp);
                    if (QTest::currentTestFailed()) QFAIL(qPrintable(QString("a flipped bit at byte %1 changed the data").arg(at)));
                } catch (const StorageError& e) {
                    QCOMPARE(e.code(), StorageErrorCode::Corrupt);
                }
            }
        }
    }

    // Headers that lie, with the CRC made right again, so the checks behind it must notice:
    // more tokens than the payload holds, a raw size past the limit (an inflation bomb is
    // refused before it is inflated), a top_n past 20.
    void lying_headers_are_reported() {
        const TokenProbabilities tp = make(400, 3, 4);
        const auto good = encode_token_probabilities(tp);
        QCOMPARE(int(good[5]), 1);
        auto reseal = [](std::vector<uint8_t>& blob) {
            uint32_t raw_size;
            std::memcpy(&raw_size, &blob[12], 4);
            std::vector<uint8_t> raw(raw_size);
            uLongf got = raw_size;
            if (::uncompress(raw.data(), &got, blob.data() + 24, uLong(blob.size() - 24)) != Z_OK) return;
            uLong crc = ::crc32(::crc32(0L, Z_NULL, 0), blob.data(), 20);
            crc = ::crc32(crc, raw.data(), uInt(raw.size()));
            for (int i = 0; i < 4; ++i) blob[size_t(20 + i)] = uint8_t(crc >> (8 * i));
        };
        for (int kind = 0; kind < 3; ++kind) {
            auto blob = good;
            if (kind == 0) {
                const uint32_t more = 401;
                std::memcpy(&blob[8], &more, 4);
            }
            if (kind == 1) {
                const uint32_t huge = 0x7FFFFFFF;
                std::memcpy(&blob[12], &huge, 4);
            }
            if (kind == 2) blob[4] = 21;
            if (kind != 1) reseal(blob);
            try {
                decode_token_probabilities(blob);
                QFAIL(qPrintable(QString("accepted lying header %1").arg(kind)));
            } catch (const StorageError& e) {
                QCOMPARE(e.code(), StorageErrorCode::Corrupt);
            }
        }
    }

    void store_keeps_them_with_the_answer() {
        Store store = Store::open_memory();
        const int64_t c = store.create_conversation({});
        const int64_t q = store.add_message({c, std::nullopt, Role::User, "Hi", MessageState::Complete, "{}"});
        const int64_t a = store.add_message({c, q, Role::Assistant, "Hello", MessageState::Complete, "{}"});
        QVERIFY(!store.token_probabilities(a));
        const TokenProbabilities tp = make(30, 5, 1);
        store.set_token_probabilities(a, tp);
        same(*store.token_probabilities(a), tp);
        store.set_token_probabilities(a, make(2, 1, 2));  // replaced
        QCOMPARE(store.token_probabilities(a)->n_tokens(), size_t(2));
        store.delete_token_probabilities(a);
        QVERIFY(!store.token_probabilities(a));
        store.delete_token_probabilities(a);  // none: not an error
        try {
            store.set_token_probabilities(a + 100, tp);
            QFAIL("stored for a message that does not exist");
        } catch (const StorageError& e) {
            QCOMPARE(e.code(), StorageErrorCode::NotFound);
        }
        store.set_token_probabilities(a, tp);
        store.delete_conversation(c);  // they go with their message (ON DELETE CASCADE)
        QVERIFY(!store.token_probabilities(a));
    }
};

QTEST_GUILESS_MAIN(TestTokenProbabilities)
#include "test_token_probabilities.moc"
