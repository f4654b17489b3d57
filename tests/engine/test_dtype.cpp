// Element decoding against the bit layouts (IEEE half, bfloat16, OCP e4m3fn)
// and FP8 block-scale indexing with partial edge blocks.
#include "dtype.h"
#include "weights.h"

#include <QtTest>

#include <cmath>

class TestDtype : public QObject {
    Q_OBJECT
private slots:
    void fp8E4m3Values() {
        using cetus::fp8_e4m3_to_f32;
        QCOMPARE(fp8_e4m3_to_f32(0x00), 0.0f);
        QCOMPARE(fp8_e4m3_to_f32(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
        QCOMPARE(fp8_e4m3_to_f32(0x07), 7.0f * std::ldexp(1.0f, -9));
        QCOMPARE(fp8_e4m3_to_f32(0x08), std::ldexp(1.0f, -6));  // smallest normal
        QCOMPARE(fp8_e4m3_to_f32(0x38), 1.0f);
        QCOMPARE(fp8_e4m3_to_f32(0x3c), 1.5f);
        QCOMPARE(fp8_e4m3_to_f32(0x7e), 448.0f);
        QCOMPARE(fp8_e4m3_to_f32(0xfe), -448.0f);
        QVERIFY(std::isnan(fp8_e4m3_to_f32(0x7f)));
        QVERIFY(std::isnan(fp8_e4m3_to_f32(0xff)));
        QCOMPARE(fp8_e4m3_to_f32(0x78), 256.0f);  // e=15 with m<7 is finite in e4m3fn
        for (int b = 0; b < 0x7f; ++b) QCOMPARE(cetus::f32_to_fp8_e4m3(cetus::fp8_e4m3_to_f32(uint8_t(b))), uint8_t(b));
    }

    void halfAndBfloat() {
        QCOMPARE(cetus::f16_to_f32(0x3c00), 1.0f);
        QCOMPARE(cetus::f16_to_f32(0xc000), -2.0f);
        QCOMPARE(cetus::f16_to_f32(0x7bff), 65504.0f);
        QCOMPARE(cetus::f16_to_f32(0x0001), std::ldexp(1.0f, -24));
        QVERIFY(std::isinf(cetus::f16_to_f32(0x7c00)));
        QVERIFY(std::isnan(cetus::f16_to_f32(0x7e00)));
        QCOMPARE(cetus::bf16_to_f32(0x3f80), 1.0f);
        QCOMPARE(cetus::bf16_to_f32(0xc2f7), -123.5f);
        QCOMPARE(cetus::f32_to_bf16(1.0f), uint16_t(0x3f80));
        QCOMPARE(cetus::f32_to_bf16(1.00390625f), uint16_t(0x3f80));  // tie rounds to even
        QCOMPARE(cetus::f32_to_bf16(1.01171875f), uint16_t(0x3f82));  // tie rounds to even (up)
    }

    void fp8BlockScalesWithPartialBlocks() {
        // 130 x 130 matrix: scales [2, 2]; element (r, c) uses scale[r/128][c/128].
        const int64_t n = 130;
        std::vector<uint8_t> q(size_t(n * n), 0x38);  // every element 1.0
        const float scales[4] = {2.0f, 3.0f, 5.0f, 7.0f};
        cetus::Matrix m{cetus::Dtype::F8_E4M3, n, n, q.data(), scales, 2};
        std::vector<float> row(static_cast<size_t>(n));
        m.row_to_f32(0, row.data());
        QCOMPARE(row[0], 2.0f);
        QCOMPARE(row[127], 2.0f);
        QCOMPARE(row[128], 3.0f);
        QCOMPARE(row[129], 3.0f);
        m.row_to_f32(129, row.data());
        QCOMPARE(row[5], 5.0f);
        QCOMPARE(row[129], 7.0f);
    }
};

QTEST_GUILESS_MAIN(TestDtype)
#include "test_dtype.moc"
