// Routing trace encoding: round trips within the documented tolerance, and every
// damaged blob (truncated, bit-flipped, lying header) ends in StorageError.
#include "cetus/storage/routing_trace.h"
#include "cetus/storage/error.h"

#include <QtTest>

#include <zlib.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <random>

using namespace cetus::storage;

namespace {

RoutingTrace make_trace(int n_tokens, int n_layers, int top_k, int n_experts, unsigned seed) {
    std::mt19937 rng(seed);
    RoutingTrace t;
    t.n_layers = n_layers;
    t.top_k = top_k;
    t.first_layer = 1;
    std::uniform_real_distribution<float> weight(0.0f, 1.0f);
    for (int tok = 0; tok < n_tokens; ++tok) {
        for (int l = 0; l < n_layers; ++l) {
            for (int k = 0; k < top_k; ++k) {
                // Skewed like real routing: a few experts per layer dominate.
                const int e = (rng() % 4 == 0) ? int(rng() % n_experts) : int((l * 7 + k * 3 + rng() % 5) % n_experts);
                t.expert_ids.push_back(uint16_t(e));
                t.weights.push_back(weight(rng) * 2.5f);
            }
        }
    }
    return t;
}

// Makes the CRC of a blob whose header was altered right again (it covers the
// header's first 28 bytes and the raw planes, inflated when deflated), so the
// checks behind the CRC are what must notice.
void reseal(std::vector<uint8_t>& blob, size_t raw_size) {
    std::vector<uint8_t> raw(blob.begin() + 32, blob.end());
    if (blob[6] == 1) {
        raw.resize(raw_size);
        uLongf got = raw_size;
        QCOMPARE(::uncompress(raw.data(), &got, blob.data() + 32, uLong(blob.size() - 32)), Z_OK);
    }
    uLong crc = ::crc32(::crc32(0L, Z_NULL, 0), blob.data(), 28);
    if (!raw.empty()) crc = ::crc32(crc, raw.data(), uInt(raw.size()));
    for (int i = 0; i < 4; ++i) blob[size_t(28 + i)] = uint8_t(crc >> (8 * i));
}

}  // namespace

class TestRoutingTrace : public QObject {
    Q_OBJECT

private slots:
    void round_trip_data() {
        QTest::addColumn<int>("n_tokens");
        QTest::addColumn<int>("n_layers");
        QTest::addColumn<int>("top_k");
        QTest::addColumn<int>("n_experts");
        QTest::newRow("v3_shape_u8_ids") << 200 << 58 << 8 << 256;
        QTest::newRow("v2_lite_shape") << 50 << 26 << 6 << 64;
        QTest::newRow("wide_u16_ids") << 20 << 4 << 2 << 4000;
        QTest::newRow("one_token_one_layer") << 1 << 1 << 1 << 8;
        QTest::newRow("no_tokens") << 0 << 3 << 2 << 8;
    }
    void round_trip() {
        QFETCH(int, n_tokens);
        QFETCH(int, n_layers);
        QFETCH(int, top_k);
        QFETCH(int, n_experts);
        const RoutingTrace t = make_trace(n_tokens, n_layers, top_k, n_experts, 7);
        const auto blob = encode_routing_trace(t);
        const RoutingTrace back = decode_routing_trace(blob);
        QCOMPARE(back.n_layers, t.n_layers);
        QCOMPARE(back.top_k, t.top_k);
        QCOMPARE(back.first_layer, t.first_layer);
        QCOMPARE(back.n_tokens(), size_t(n_tokens));
        QVERIFY(back.expert_ids == t.expert_ids);
        const float tolerance = routing_weight_tolerance(t);
        for (size_t i = 0; i < t.weights.size(); ++i) {
            if (std::fabs(back.weights[i] - t.weights[i]) > tolerance) {
                QFAIL(qPrintable(QString("weight %1: %2 vs %3").arg(i).arg(back.weights[i]).arg(t.weights[i])));
            }
        }
        // Re-encoding the decoded trace is stable: exports stay byte-identical.
        QVERIFY(encode_routing_trace(back) == blob);
    }

    void compact() {
        const RoutingTrace t = make_trace(1000, 58, 8, 256, 3);
        const auto blob = encode_routing_trace(t);
        // u8 ids + u8 weights before compression: 928 bytes per token.
        QVERIFY2(blob.size() <= 32 + 1000 * 928, qPrintable(QString::number(blob.size())));
        qInfo("V3-shaped trace, 1000 tokens: %zu bytes (%.0f per token)", blob.size(), blob.size() / 1000.0);
    }

    void rejects_invalid_traces_data() {
        QTest::addColumn<int>("which");
        QTest::newRow("zero_layers") << 0;
        QTest::newRow("zero_top_k") << 1;
        QTest::newRow("length_mismatch") << 2;
        QTest::newRow("not_multiple") << 3;
        QTest::newRow("negative_weight") << 4;
        QTest::newRow("nan_weight") << 5;
        QTest::newRow("infinite_weight") << 6;
        QTest::newRow("too_many_layers") << 7;
    }
    void rejects_invalid_traces() {
        QFETCH(int, which);
        RoutingTrace t = make_trace(3, 2, 2, 8, 1);
        switch (which) {
        case 0: t.n_layers = 0; break;
        case 1: t.top_k = 0; break;
        case 2: t.weights.pop_back(); break;
        case 3: t.expert_ids.push_back(1); t.weights.push_back(0.5f); break;
        case 4: t.weights[2] = -0.1f; break;
        case 5: t.weights[2] = std::nanf(""); break;
        case 6: t.weights[2] = INFINITY; break;
        case 7: t.n_layers = 5000; break;
        }
        try {
            encode_routing_trace(t);
            QFAIL("accepted an invalid trace");
        } catch (const StorageError& e) {
            QCOMPARE(e.code(), StorageErrorCode::InvalidArgument);
        }
    }

    void every_truncation_is_reported() {
        const auto blob = encode_routing_trace(make_trace(40, 6, 4, 64, 5));
        for (size_t n = 0; n < blob.size(); ++n) {
            try {
                decode_routing_trace(std::span(blob.data(), n));
                QFAIL(qPrintable(QString("accepted a blob cut to %1 bytes").arg(n)));
            } catch (const StorageError& e) {
                QCOMPARE(e.code(), StorageErrorCode::Corrupt);
            }
        }
    }

    void bit_flips_never_crash() {
        const auto blob = encode_routing_trace(make_trace(40, 6, 4, 64, 9));
        std::mt19937 rng(11);
        for (int i = 0; i < 3000; ++i) {
            auto damaged = blob;
            const size_t at = rng() % damaged.size();
            damaged[at] ^= uint8_t(1u << (rng() % 8));
            try {
                decode_routing_trace(damaged);
                QFAIL(qPrintable(QString("a flipped bit at byte %1 went unnoticed").arg(at)));
            } catch (const StorageError& e) {
                QCOMPARE(e.code(), StorageErrorCode::Corrupt);
            }
        }
    }

    void lying_headers_are_reported_data() {
        QTest::addColumn<int>("offset");
        QTest::addColumn<uint32_t>("value");
        QTest::newRow("huge_token_count") << 8 << 0xFFFFFFFFu;
        QTest::newRow("overflowing_product") << 8 << (1u << 24);
        QTest::newRow("bad_id_width") << 4 << 3u;
        QTest::newRow("bad_compression") << 6 << 9u;
        QTest::newRow("payload_size") << 24 << 0x7FFFFFFFu;
        QTest::newRow("zero_top_k") << 14 << 0u;
    }
    void lying_headers_are_reported() {
        QFETCH(int, offset);
        QFETCH(uint32_t, value);
        auto blob = encode_routing_trace(make_trace(10, 3, 2, 8, 2));
        if (offset == 8 || offset == 24) std::memcpy(&blob[size_t(offset)], &value, 4);
        else if (offset == 14) blob[14] = blob[15] = 0;
        else blob[size_t(offset)] = uint8_t(value);
        QVERIFY_THROWS_EXCEPTION(StorageError, decode_routing_trace(blob));
    }

    // A deflated payload far too small for the sizes in the header is refused
    // before the planes are allocated (2^28 entries would take 768 MiB).
    void inflation_bombs_are_refused_early() {
        std::vector<uint8_t> blob = encode_routing_trace(make_trace(64, 4, 4, 8, 6));
        QCOMPARE(int(blob[6]), 1);  // this trace deflates
        const uint32_t tokens = (1u << 28) / (4 * 4);
        std::memcpy(&blob[8], &tokens, 4);
        try {
            decode_routing_trace(blob);
            QFAIL("accepted a header 2^28 entries long");
        } catch (const StorageError& e) {
            QCOMPARE(e.code(), StorageErrorCode::Corrupt);
            QVERIFY2(QString(e.what()).contains("too small to inflate"), e.what());
        }
        // Real traces pass the bound, the most compressible one too (both planes
        // constant, which deflate packs near its limit).
        const RoutingTrace t = make_trace(2000, 58, 8, 256, 7);
        QCOMPARE(decode_routing_trace(encode_routing_trace(t)).expert_ids, t.expert_ids);
        RoutingTrace flat;
        flat.n_layers = 58;
        flat.top_k = 8;
        flat.expert_ids.assign(size_t(20000) * 58 * 8, 0);
        flat.weights.assign(flat.expert_ids.size(), 1.0f);
        const auto packed = encode_routing_trace(flat);
        QVERIFY(packed.size() < flat.expert_ids.size() * 2 / 900);  // near deflate's 1032:1
        QCOMPARE(decode_routing_trace(packed).weights, flat.weights);
    }

    // Weight scales whose largest code would not give a finite weight, in blobs
    // with a right CRC (found by fuzz_routing_trace: FLT_MAX decoded to infinite
    // weights). Decoding refuses them; encoding never writes one.
    void scales_must_give_finite_weights_data() {
        QTest::addColumn<float>("scale");
        QTest::newRow("flt_max") << FLT_MAX;
        QTest::newRow("just_too_large") << std::nextafter(FLT_MAX / 255.0f * 1.0001f, INFINITY);
        QTest::newRow("infinite") << float(INFINITY);
        QTest::newRow("zero") << 0.0f;
        QTest::newRow("negative") << -1.0f;
        // Found by fuzz_routing_trace: with a subnormal scale a decoded trace no
        // longer encoded again within the tolerance.
        QTest::newRow("subnormal") << std::nextafter(FLT_MIN, 0.0f);
        QTest::newRow("least_subnormal") << std::nextafter(0.0f, 1.0f);
    }
    void scales_must_give_finite_weights() {
        QFETCH(float, scale);
        const RoutingTrace t = make_trace(10, 3, 2, 8, 4);
        auto blob = encode_routing_trace(t);
        std::memcpy(&blob[20], &scale, 4);  // little-endian host, as the format
        reseal(blob, t.expert_ids.size() * 2);
        try {
            decode_routing_trace(blob);
            QFAIL("accepted a weight scale that gives weights out of range");
        } catch (const StorageError& e) {
            QCOMPARE(e.code(), StorageErrorCode::Corrupt);
        }
        // The same blob with its own scale back decodes (so the reseal is right).
        blob = encode_routing_trace(t);
        reseal(blob, t.expert_ids.size() * 2);
        QCOMPARE(decode_routing_trace(blob).expert_ids, t.expert_ids);

        RoutingTrace huge = t;
        huge.weights[0] = FLT_MAX;
        try {
            const RoutingTrace back = decode_routing_trace(encode_routing_trace(huge));
            for (float w : back.weights) QVERIFY(std::isfinite(w));
        } catch (const StorageError& e) {
            QCOMPARE(e.code(), StorageErrorCode::InvalidArgument);
        }
    }

    // Weights so small that max/255 is subnormal: the scale stops at the least
    // normal float, the error stays within the tolerance (which then is FLT_MIN/2),
    // and a second encoding gives the same bytes unless every weight became 0.
    void tiny_weights_round_trip() {
        for (const float largest : {255 * FLT_MIN * 0.9f, 3 * FLT_MIN, FLT_MIN, FLT_TRUE_MIN * 56 * 156}) {
            RoutingTrace t = make_trace(4, 2, 2, 8, 9);
            float max_weight = 0;
            for (float w : t.weights) max_weight = std::max(max_weight, w);
            for (float& w : t.weights) w = w / max_weight * largest;
            const auto blob = encode_routing_trace(t);
            const RoutingTrace back = decode_routing_trace(blob);
            const float tolerance = routing_weight_tolerance(t);
            QVERIFY(tolerance >= FLT_MIN / 2);
            for (size_t i = 0; i < t.weights.size(); ++i) {
                QVERIFY2(std::fabs(back.weights[i] - t.weights[i]) <= tolerance,
                         qPrintable(QString("largest %1, weight %2: %3 vs %4").arg(largest).arg(i).arg(back.weights[i]).arg(t.weights[i])));
                QVERIFY(std::isnormal(back.weights[i]) || back.weights[i] == 0);
            }
            // (The last one decodes to zeros, which encode with the scale 1.)
            if (largest >= FLT_MIN / 2) QVERIFY(encode_routing_trace(back) == blob);
        }
    }

    // A trace without tokens has an empty payload; its CRC still covers the
    // header, so a changed size or layer number is noticed. Blobs written before
    // that (CRC 0) are still read.
    void empty_trace_header_is_covered() {
        RoutingTrace t;
        t.n_layers = 3;
        t.top_k = 2;
        t.first_layer = 1;
        auto blob = encode_routing_trace(t);
        QCOMPARE(blob.size(), size_t(32));
        QVERIFY(blob[28] | blob[29] | blob[30] | blob[31]);
        QCOMPARE(decode_routing_trace(blob).first_layer, 1);
        for (size_t byte : {12u, 14u, 16u}) {
            auto damaged = blob;
            damaged[byte] ^= 1;
            try {
                decode_routing_trace(damaged);
                QFAIL(qPrintable(QString("a changed header byte %1 went unnoticed").arg(byte)));
            } catch (const StorageError& e) {
                QCOMPARE(e.code(), StorageErrorCode::Corrupt);
            }
        }
        auto legacy = blob;
        std::fill(legacy.begin() + 28, legacy.end(), uint8_t(0));
        const RoutingTrace back = decode_routing_trace(legacy);
        QCOMPARE(back.n_layers, 3);
        QCOMPARE(back.top_k, 2);
        QCOMPARE(back.n_tokens(), size_t(0));
    }
};

QTEST_GUILESS_MAIN(TestRoutingTrace)
#include "test_routing_trace.moc"
