// cpu::matmul over every weight type against a double-precision reference built
// from Matrix::row_to_f32 (the decoding the loaders define), and the property
// the generator relies on: a token's output is bit-identical whatever the
// batch it is in, whichever path (weights decoded in registers for small
// batches, a converted block of rows for larger ones) computes it. The FP8
// matrix holds every byte value (NaN patterns aside) and spans several scale
// blocks; the width leaves a tail past the 8-float vectors.
#include "cetus/error.h"
#include "cpu/ggml_int8.h"
#include "cpu/ops.h"
#include "dtype.h"
#include "ggml_blocks.h"
#include "weights.h"

#include <QtTest>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <tuple>
#include <vector>

namespace {

struct TestMatrix {
    cetus::Matrix m;
    std::vector<uint8_t> bytes;
    std::vector<float> scales;
};

TestMatrix make(cetus::Dtype dt, int64_t rows, int64_t cols, std::mt19937& gen) {
    TestMatrix t;
    t.m.dtype = dt;
    t.m.rows = rows;
    t.m.cols = cols;
    std::normal_distribution<float> nd(0.0f, 1.0f);
    const int64_t n = rows * cols;
    switch (dt) {
    case cetus::Dtype::F32: {
        t.bytes.resize(size_t(n) * 4);
        for (int64_t i = 0; i < n; ++i) {
            const float v = nd(gen);
            std::memcpy(t.bytes.data() + i * 4, &v, 4);
        }
        break;
    }
    case cetus::Dtype::BF16:
    case cetus::Dtype::F16: {
        t.bytes.resize(size_t(n) * 2);
        for (int64_t i = 0; i < n; ++i) {
            const float v = nd(gen);
            uint16_t h = cetus::f32_to_bf16(v);
            if (dt == cetus::Dtype::F16) {  // a finite half: sign, exponent 1..29, any mantissa
                h = uint16_t((gen() & 0x8000u) | ((1u + gen() % 29u) << 10) | (gen() & 0x3ffu));
            }
            std::memcpy(t.bytes.data() + i * 2, &h, 2);
        }
        break;
    }
    case cetus::Dtype::F8_E4M3: {
        t.bytes.resize(size_t(n));
        for (int64_t i = 0; i < n; ++i) {
            uint8_t b = uint8_t(i % 256);  // every value, then shuffled below
            if ((b & 0x7f) == 0x7f) b = uint8_t(b ^ 0x01);  // no NaN
            t.bytes[size_t(i)] = b;
        }
        std::shuffle(t.bytes.begin(), t.bytes.end(), gen);
        t.m.scale_cols = (cols + 127) / 128;
        t.scales.resize(size_t((rows + 127) / 128 * t.m.scale_cols));
        std::uniform_real_distribution<float> ud(0.001f, 0.01f);
        for (float& s : t.scales) s = ud(gen);
        t.m.scale_inv = t.scales.data();
        break;
    }
    default:
        break;
    }
    t.m.data = t.bytes.data();
    return t;
}

struct BlockType {
    uint32_t id;
    std::vector<int> f16_at;  // the blocks' f16 scale fields: kept finite
};
const std::vector<BlockType>& block_types() {
    namespace gb = cetus::ggml_blocks;
    static const std::vector<BlockType> types = {
        {gb::k_type_q4_0, {0}},      {gb::k_type_q4_1, {0, 2}}, {gb::k_type_q5_0, {0}},   {gb::k_type_q5_1, {0, 2}},
        {gb::k_type_q8_0, {0}},      {gb::k_type_q2_k, {80, 82}}, {gb::k_type_q3_k, {108}}, {gb::k_type_q4_k, {0, 2}},
        {gb::k_type_q5_k, {0, 2}},   {gb::k_type_q6_k, {208}},  {gb::k_type_iq4_nl, {0}}, {gb::k_type_iq4_xs, {0}}};
    return types;
}
// 13 rows of random blocks (1408 or 1536 values), their f16 scales finite: sign,
// exponent 5..20 (2^-10 .. 2^5), any mantissa.
TestMatrix random_blocks(const BlockType& type, std::mt19937& gen) {
    int values = 0, bytes = 0;
    cetus::ggml_blocks::block_shape(type.id, values, bytes);
    const int64_t rows = 13, cols = values == 32 ? 1408 : 1536, per_row = cols / values;
    TestMatrix t;
    t.bytes.resize(size_t(rows * per_row * bytes));
    for (uint8_t& b : t.bytes) b = uint8_t(gen());
    for (int64_t i = 0; i < rows * per_row; ++i)
        for (int at : type.f16_at) {
            const uint16_t h = uint16_t((gen() & 0x8000u) | ((5u + gen() % 16u) << 10) | (gen() & 0x3ffu));
            std::memcpy(t.bytes.data() + i * bytes + at, &h, 2);
        }
    t.m.dtype = cetus::Dtype::Ggml;
    t.m.rows = rows;
    t.m.cols = cols;
    t.m.data = t.bytes.data();
    t.m.ggml_type = type.id;
    return t;
}

}  // namespace

class TestCpuOps : public QObject {
    Q_OBJECT
private slots:
    void matmulEveryTypeAndBatch_data() {
        QTest::addColumn<int>("dtype");
        QTest::newRow("f32") << int(cetus::Dtype::F32);
        QTest::newRow("bf16") << int(cetus::Dtype::BF16);
        QTest::newRow("f16") << int(cetus::Dtype::F16);
        QTest::newRow("fp8 e4m3") << int(cetus::Dtype::F8_E4M3);
    }

    // Every finite e4m3 code read through the products, in place (one token) and
    // converted (a batch), scale 1: exactly the table's value; a NaN code gives NaN.
    void fp8EveryCode() {
        std::vector<uint8_t> codes(256);
        for (int i = 0; i < 256; ++i) codes[size_t(i)] = (i & 0x7f) == 0x7f ? 0 : uint8_t(i);
        const float scale[2] = {1.0f, 1.0f};  // two column blocks
        cetus::Matrix m{cetus::Dtype::F8_E4M3, 1, 256, codes.data(), scale, 2};
        std::vector<float> eye(size_t(256 * 256), 0.0f), y(256);
        for (int i = 0; i < 256; ++i) eye[size_t(i * 256 + i)] = 1.0f;
        for (int n : {1, 256}) {
            for (int i = 0; i < 256; i += n) cetus::cpu::matmul(eye.data() + i * 256, n, m, y.data() + i);
            for (int i = 0; i < 256; ++i) {
                const float want = cetus::fp8_e4m3_to_f32(codes[size_t(i)]);
                QVERIFY2(y[size_t(i)] == want, qPrintable(QStringLiteral("batch %1: code 0x%2 reads %3, table %4")
                                                              .arg(n)
                                                              .arg(i, 2, 16, QLatin1Char('0'))
                                                              .arg(double(y[size_t(i)]))
                                                              .arg(double(want))));
            }
        }
        for (uint8_t nan_code : {uint8_t(0x7f), uint8_t(0xff)}) {
            std::vector<uint8_t> row(16, 0x38);  // 1.0
            row[5] = nan_code;
            cetus::Matrix w{cetus::Dtype::F8_E4M3, 1, 16, row.data(), scale, 1};
            for (int n : {1, 8}) {
                std::vector<float> x(static_cast<size_t>(n * 16), 1.0f), out(static_cast<size_t>(n));
                cetus::cpu::matmul(x.data(), n, w, out.data());
                QVERIFY(std::isnan(out[0]));
            }
        }
    }

    void matmulEveryTypeAndBatch() {
        QFETCH(int, dtype);
        std::mt19937 gen(uint32_t(dtype) + 5);
        // 300 rows: three FP8 scale-block rows (the last partial) and a partial
        // row block of 8; 270 columns: three scale blocks and a tail of 6.
        const int64_t rows = 300, cols = 270, max_tokens = 17;
        TestMatrix t = make(cetus::Dtype(dtype), rows, cols, gen);
        std::vector<float> wf(size_t(rows * cols));
        for (int64_t r = 0; r < rows; ++r) t.m.row_to_f32(r, wf.data() + r * cols);
        std::normal_distribution<float> nd(0.0f, 1.0f);
        std::vector<float> x(size_t(max_tokens * cols));
        for (float& v : x) v = nd(gen);

        // One-hot inputs pick single weights out exactly: the decoded values
        // themselves, in-place (1 token) and converted (9 tokens), tail included.
        const int64_t picks[9] = {0, 1, 7, 8, 127, 128, 200, 264, 269};
        std::vector<float> onehot(size_t(9 * cols), 0.0f), picked(size_t(9 * rows));
        for (int i = 0; i < 9; ++i) onehot[size_t(i * cols + picks[i])] = 1.0f;
        for (int n : {1, 9}) {
            for (int i = 0; i < 9; i += n) cetus::cpu::matmul(onehot.data() + i * cols, n, t.m, picked.data() + i * rows);
            for (int i = 0; i < 9; ++i)
                for (int64_t r = 0; r < rows; ++r)
                    if (!(picked[size_t(i * rows + r)] == wf[size_t(r * cols + picks[i])]))
                        QFAIL(qPrintable(QStringLiteral("batch %1: weight (%2, %3) reads %4, decodes to %5")
                                             .arg(n)
                                             .arg(r)
                                             .arg(picks[i])
                                             .arg(double(picked[size_t(i * rows + r)]), 0, 'g', 9)
                                             .arg(double(wf[size_t(r * cols + picks[i])]), 0, 'g', 9)));
        }

        // One token at a time (the decode path) against the reference.
        std::vector<float> single(size_t(max_tokens * rows));
        for (int64_t t0 = 0; t0 < max_tokens; ++t0) cetus::cpu::matmul(x.data() + t0 * cols, 1, t.m, single.data() + t0 * rows);
        double worst = 0.0;
        for (int64_t t0 = 0; t0 < max_tokens; ++t0)
            for (int64_t r = 0; r < rows; ++r) {
                double ref = 0.0, mag = 0.0;
                for (int64_t k = 0; k < cols; ++k) {
                    ref += double(x[size_t(t0 * cols + k)]) * double(wf[size_t(r * cols + k)]);
                    mag += std::fabs(double(x[size_t(t0 * cols + k)]) * double(wf[size_t(r * cols + k)]));
                }
                worst = std::max(worst, std::fabs(double(single[size_t(t0 * rows + r)]) - ref) / (mag + 1e-30));
            }
        QVERIFY2(worst < 1e-5, qPrintable(QString::number(worst)));  // fp32 sums of 270 terms

        // Every batch size gives each token the same bits.
        for (int64_t n : {2, 3, 4, 5, 8, 17}) {
            std::vector<float> batch(size_t(n * rows));
            cetus::cpu::matmul(x.data(), n, t.m, batch.data());
            for (int64_t i = 0; i < n * rows; ++i)
                if (std::memcmp(&batch[size_t(i)], &single[size_t(i)], 4) != 0)
                    QFAIL(qPrintable(QStringLiteral("batch of %1: token %2 row %3: %4 vs %5")
                                         .arg(n)
                                         .arg(i / rows)
                                         .arg(i % rows)
                                         .arg(double(batch[size_t(i)]), 0, 'g', 9)
                                         .arg(double(single[size_t(i)]), 0, 'g', 9)));
        }
    }

    // GGUF block rows against the same values as an F32 matrix, bit for bit, for every
    // block type (decoded with AVX2 where the machine has it) and batch size: 13 rows
    // (a whole row block of 8 and a partial one: tiles of 4 rows and of 1) of 1408 or
    // 1536 values (44 or 6 blocks a row), with random codes and finite scales.
    void ggmlBlocksEveryTypeAndBatch() {
        std::mt19937 gen(11);
        std::normal_distribution<float> nd(0.0f, 1.0f);
        for (const BlockType& type : block_types()) {
            const TestMatrix t = random_blocks(type, gen);
            const cetus::Matrix& q = t.m;
            const int64_t rows = q.rows, cols = q.cols;
            std::vector<float> wf(size_t(rows * cols));
            for (int64_t r = 0; r < rows; ++r) q.row_to_f32(r, wf.data() + r * cols);
            const cetus::Matrix f{cetus::Dtype::F32, rows, cols, wf.data()};
            std::vector<float> x(size_t(9 * cols));
            for (float& v : x) v = nd(gen);
            for (int n : {1, 2, 3, 4, 5, 9}) {
                std::vector<float> a(size_t(n * rows)), b(size_t(n * rows));
                cetus::cpu::matmul(x.data(), n, q, a.data());
                cetus::cpu::matmul(x.data(), n, f, b.data());
                for (int64_t i = 0; i < n * rows; ++i)
                    if (std::memcmp(&a[size_t(i)], &b[size_t(i)], 4) != 0)
                        QFAIL(qPrintable(QStringLiteral("type %1, %2 tokens: token %3 row %4: %5 vs %6")
                                             .arg(type.id)
                                             .arg(n)
                                             .arg(i / rows)
                                             .arg(i % rows)
                                             .arg(double(a[size_t(i)]), 0, 'g', 9)
                                             .arg(double(b[size_t(i)]), 0, 'g', 9)));
            }
        }
    }

    // The activations' int8 form, per block of 32 or 256 values: each value within half
    // a step of its block's, the step max |x| / 127 (so the largest value is +-127), an
    // all-zero block all zero, a block with a NaN or an infinity NaN, and the codes of
    // each run of 16 summed.
    void int8Quantisation() {
        for (int block : {32, 256}) {
            const int64_t cols = 4 * block, nb = 4, ld = cols + 7;
            std::mt19937 gen(5);
            std::normal_distribution<float> nd(0.0f, 3.0f);
            std::vector<float> x(size_t(ld + cols));  // two tokens, row stride cols + 7
            for (float& v : x) v = nd(gen);
            for (int i = block; i < 2 * block; ++i) x[size_t(i)] = 0.0f;  // token 0, block 1
            x[size_t(ld + 2 * block + 5)] = std::nanf("");                  // token 1, block 2
            x[size_t(ld + 3 * block + 9)] = INFINITY;                       // token 1, block 3
            cetus::cpu::Int8Rows a;
            cetus::cpu::quantise_int8(x.data(), ld, 2, cols, block, a);
            QCOMPARE(a.q.size(), size_t(2 * cols));
            QCOMPARE(a.block, block);
            for (int64_t t = 0; t < 2; ++t)
                for (int64_t j = 0; j < nb; ++j) {
                    const float* v = x.data() + t * ld + block * j;
                    const float d = a.d[size_t(t * nb + j)];
                    if (t == 1 && j >= 2) {
                        QVERIFY(std::isnan(d));
                        continue;
                    }
                    double amax = 0;
                    int qmax = 0;
                    for (int i = 0; i < block; ++i) {
                        amax = std::max(amax, std::fabs(double(v[i])));
                        const int q = a.q[size_t(t * cols + block * j + i)];
                        qmax = std::max(qmax, std::abs(q));
                        QVERIFY(std::fabs(double(v[i]) - double(d) * q) <= 0.5000001 * double(d));
                    }
                    QCOMPARE(double(d), double(float(amax) / 127.0f));
                    QCOMPARE(qmax, amax > 0 ? 127 : 0);
                    for (int h = 0; h < block / 16; ++h) {
                        int s = 0;
                        for (int i = 0; i < 16; ++i) s += a.q[size_t(t * cols + block * j + 16 * h + i)];
                        QCOMPARE(int(a.qsum16[size_t(t * cols / 16 + block / 16 * j + h)]), s);
                    }
                }
        }
    }

    // Activations quantised to int8 (vectorised on AVX2 machines) against the formulas
    // written out here: per block d = max |x| / 127, q = x * (127 / max |x|) rounded to
    // nearest with ties to even, the run sums; ties made exact by a block whose largest
    // value is 127 (so the factor is 1); an all-zero block; a NaN or an infinity gives
    // d = NaN and codes 0.
    void quantiseInt8MatchesFormulas() {
        std::mt19937 gen(14);
        std::normal_distribution<float> nd(0.0f, 3.0f);
        for (int block : {32, 256}) {
            const int64_t cols = 4 * 256, nb = cols / block;
            std::vector<float> x(size_t(3 * cols));
            for (float& v : x) v = nd(gen);
            float* ties = x.data();  // token 0, block 0
            const float tie_values[] = {2.5f, -3.5f, 0.5f, -0.5f, 126.5f, -126.5f, 1.5f, 127.0f};
            for (int i = 0; i < block; ++i) ties[i] = tie_values[i % 8];
            std::fill_n(x.data() + block, block, 0.0f);  // token 0, block 1: zeros
            x[size_t(cols + 5)] = std::nanf("");                              // token 1, block 0
            x[size_t(2 * cols + block + 7)] = -std::numeric_limits<float>::infinity();  // token 2, block 1
            cetus::cpu::Int8Rows a;
            cetus::cpu::quantise_int8(x.data(), cols, 3, cols, block, a);
            QCOMPARE(a.q.size(), size_t(3 * cols));
            for (int64_t t = 0; t < 3; ++t)
                for (int64_t j = 0; j < nb; ++j) {
                    const float* v = x.data() + t * cols + j * block;
                    bool finite = true;
                    float amax = 0.0f;
                    for (int i = 0; i < block; ++i) {
                        finite = finite && std::isfinite(v[i]);
                        if (std::isfinite(v[i])) amax = std::max(amax, std::fabs(v[i]));
                    }
                    const QString where = QStringLiteral("block of %1, token %2, block %3").arg(block).arg(t).arg(j);
                    const float d = a.d[size_t(t * nb + j)];
                    if (!finite) {
                        QVERIFY2(std::isnan(d), qPrintable(where));
                        for (int i = 0; i < block; ++i) QVERIFY2(a.q[size_t(t * cols + j * block + i)] == 0, qPrintable(where));
                        continue;
                    }
                    QVERIFY2(d == amax / 127.0f, qPrintable(where));
                    const float factor = amax > 0.0f ? 127.0f / amax : 0.0f;
                    for (int i = 0; i < block; ++i) {
                        const float r = std::nearbyint(v[i] * factor);
                        const int want = int(std::min(127.0f, std::max(-127.0f, r)));
                        if (a.q[size_t(t * cols + j * block + i)] != want)
                            QFAIL(qPrintable(where + QStringLiteral(": value %1 (%2) gives %3, not %4")
                                                         .arg(i)
                                                         .arg(double(v[i]))
                                                         .arg(int(a.q[size_t(t * cols + j * block + i)]))
                                                         .arg(want)));
                    }
                    for (int h = 0; h < block / 16; ++h) {
                        int sum = 0;
                        for (int i = 0; i < 16; ++i) sum += a.q[size_t(t * cols + j * block + 16 * h + i)];
                        QVERIFY2(a.qsum16[size_t(t * (cols / 16) + j * (block / 16) + h)] == sum, qPrintable(where));
                    }
                }
            // The ties went to even.
            QCOMPARE(int(a.q[0]), 2);
            QCOMPARE(int(a.q[1]), -4);
            QCOMPARE(int(a.q[2]), 0);
            QCOMPARE(int(a.q[4]), 126);
            QCOMPARE(int(a.q[6]), 2);
        }
    }

    // GGUF block products with int8 activations, every block type, 1 to 21 tokens:
    // within float rounding of the products of the blocks' decoded values
    // (Matrix::row_to_f32) with the activations' int8 values (d q, double sums), and
    // within the quantisation's bound (sum |w| d / 2) of the exact products; a
    // token's result the same bits in every batch.
    void int8ProductsEveryTypeAndBatch() {
        if (!cetus::cpu::int8_product_available(cetus::ggml_blocks::k_type_q4_k))
            QSKIP("no integer products on this machine (they need AVX2 and FMA)");
        std::mt19937 gen(12);
        std::normal_distribution<float> nd(0.0f, 1.0f);
        for (const BlockType& type : block_types()) {
            QVERIFY(cetus::cpu::int8_product_available(type.id));
            const TestMatrix t = random_blocks(type, gen);
            const cetus::Matrix& q = t.m;
            cetus::Matrix qi = q;  // the same blocks, marked for the integer products
            qi.int8_activations = true;
            const int64_t rows = q.rows, cols = q.cols;
            std::vector<float> wf(size_t(rows * cols));
            for (int64_t r = 0; r < rows; ++r) q.row_to_f32(r, wf.data() + r * cols);
            std::vector<float> x(size_t(21 * cols));
            for (float& v : x) v = nd(gen);
            int values = 0, bytes = 0;
            cetus::ggml_blocks::block_shape(type.id, values, bytes);
            cetus::cpu::Int8Rows a;
            cetus::cpu::quantise_int8(x.data(), cols, 21, cols, values, a);
            // Every form of the products: 1 to 3 tokens fold each row's blocks in turn
            // (rows_chained), 4 to 11 (15 for Q4_K and Q5_K, 16 without VNNI) take 8 rows
            // a block at a time, larger batches unpack 8 rows whole (interleaved with
            // VNNI); the 32-value types stream up to 16 tokens. Groups of 4 with each
            // remainder, and each side of every threshold.
            for (int n : {1, 2, 3, 4, 5, 6, 8, 9, 12, 16, 17, 21}) {
                std::vector<float> y(size_t(n * rows)), exact(size_t(n * rows));
                cetus::cpu::matmul(x.data(), n, qi, y.data());
                cetus::cpu::matmul(x.data(), n, q, exact.data());
                for (int64_t tk = 0; tk < n; ++tk)
                    for (int64_t r = 0; r < rows; ++r) {
                        double ref = 0, mag = 0, bound = 0;
                        for (int64_t c = 0; c < cols; ++c) {
                            const double w = wf[size_t(r * cols + c)];
                            const double d = a.d[size_t(tk * (cols / values) + c / values)];
                            const double xq = d * a.q[size_t(tk * cols + c)];
                            ref += w * xq;
                            mag += std::fabs(w * xq) + std::fabs(w) * d;
                            bound += std::fabs(w) * d / 2;
                        }
                        const float got = y[size_t(tk * rows + r)];
                        const QString where = QStringLiteral("type %1, %2 tokens: token %3 row %4: %5 vs %6")
                                                  .arg(type.id)
                                                  .arg(n)
                                                  .arg(tk)
                                                  .arg(r)
                                                  .arg(double(got), 0, 'g', 9)
                                                  .arg(ref, 0, 'g', 9);
                        if (!(std::fabs(got - ref) <= 1e-5 * mag)) QFAIL(qPrintable(where));
                        if (!(std::fabs(got - exact[size_t(tk * rows + r)]) <= bound + 1e-5 * mag))
                            QFAIL(qPrintable(where + " (exact " + QString::number(exact[size_t(tk * rows + r)]) + ")"));
                    }
                // Token t alone gives the same bits as in the batch.
                for (int64_t tk = 0; tk < n; ++tk) {
                    std::vector<float> one(static_cast<size_t>(rows));
                    cetus::cpu::matmul(x.data() + tk * cols, 1, qi, one.data());
                    if (std::memcmp(one.data(), y.data() + tk * rows, size_t(rows) * 4) != 0)
                        QFAIL(qPrintable(QStringLiteral("type %1: token %2 differs alone and in a batch of %3")
                                             .arg(type.id)
                                             .arg(tk)
                                             .arg(n)));
                }
            }
        }
    }

    // The integer products with AVX-512 VNNI's dot products, where the processor has
    // them, give AVX2's bits: every block type, 1 to 21 tokens (streamed and unpacked).
    void int8VnniAgreesWithAvx2() {
        if (!cetus::cpu::int8_product_available(cetus::ggml_blocks::k_type_q4_k))
            QSKIP("no integer products on this machine (they need AVX2 and FMA)");
        if (!cetus::cpu::int8_vnni_in_use()) QSKIP("this processor has no AVX-512 VNNI: only the AVX2 form runs");
        struct Restore {
            ~Restore() { cetus::cpu::allow_int8_vnni(true); }
        } restore;
        std::mt19937 gen(13);
        std::normal_distribution<float> nd(0.0f, 1.0f);
        for (const BlockType& type : block_types()) {
            TestMatrix t = random_blocks(type, gen);
            t.m.int8_activations = true;
            const int64_t rows = t.m.rows, cols = t.m.cols;
            std::vector<float> x(size_t(21 * cols));
            for (float& v : x) v = nd(gen);
            for (int n : {1, 2, 3, 4, 5, 6, 8, 9, 12, 16, 17, 21}) {
                std::vector<float> vnni(size_t(n * rows)), avx2(size_t(n * rows));
                cetus::cpu::allow_int8_vnni(true);
                QVERIFY(cetus::cpu::int8_vnni_in_use());
                cetus::cpu::matmul(x.data(), n, t.m, vnni.data());
                cetus::cpu::allow_int8_vnni(false);
                QVERIFY(!cetus::cpu::int8_vnni_in_use());
                cetus::cpu::matmul(x.data(), n, t.m, avx2.data());
                for (size_t i = 0; i < vnni.size(); ++i)
                    if (std::memcmp(&vnni[i], &avx2[i], 4) != 0)
                        QFAIL(qPrintable(QStringLiteral("type %1, %2 tokens: value %3: %4 with VNNI, %5 without")
                                             .arg(type.id)
                                             .arg(n)
                                             .arg(i)
                                             .arg(double(vnni[i]), 0, 'g', 9)
                                             .arg(double(avx2[i]), 0, 'g', 9)));
            }
        }
    }

    // Products prepared once and taken a range of rows at a time (the MoE layer's
    // chunks for the threads): every row the bits cpu::matmul gives it, for fp32,
    // BF16, FP8 and block weights on the exact and the int8 path; a gathered subset of
    // the tokens the bits of those tokens in the whole batch; an input prepared for
    // other matrices, or of another width, refused.
    void rowRangesAndGathers() {
        std::mt19937 gen(31);
        std::normal_distribution<float> nd(0.0f, 1.0f);
        std::vector<TestMatrix> ms;
        for (cetus::Dtype dt : {cetus::Dtype::F32, cetus::Dtype::BF16, cetus::Dtype::F8_E4M3})
            ms.push_back(make(dt, 300, 256, gen));
        for (const BlockType& type : block_types()) {
            ms.push_back(random_blocks(type, gen));
            ms.push_back(random_blocks(type, gen));
            ms.back().m.int8_activations = true;
        }
        for (const TestMatrix& t : ms) {
            const cetus::Matrix& w = t.m;
            const int64_t rows = w.rows, cols = w.cols, n = 7;
            const QString what = QStringLiteral("dtype %1, type %2%3")
                                     .arg(int(w.dtype))
                                     .arg(w.ggml_type)
                                     .arg(w.int8_activations ? ", int8" : "");
            std::vector<float> x(size_t(n * cols));
            for (float& v : x) v = nd(gen);
            std::vector<float> want(size_t(n * rows));
            cetus::cpu::matmul(x.data(), n, w, want.data());
            cetus::cpu::ProductInput in;
            cetus::cpu::prepare_input(x.data(), cols, n, cols, {&w}, in);
            std::vector<float> got(size_t(n * rows), std::nanf(""));
            // Uneven ranges, out of order, some not on a row block's edge.
            const int64_t cuts[] = {0, 5, 8, 64, rows / 2, rows - 1, rows};
            for (int i = 5; i >= 0; --i)
                cetus::cpu::matmul_rows(in, w, std::min(cuts[i], rows), std::min(cuts[i + 1], rows), got.data(), rows);
            QVERIFY2(std::memcmp(got.data(), want.data(), got.size() * 4) == 0, qPrintable(what));
            // Rows 5 .. 70 into a buffer of their own (matmul_rows_at), at a stride of 80.
            std::vector<float> part(size_t(n * 80), -3.0f);
            cetus::cpu::matmul_rows_at(in, w, 5, std::min<int64_t>(70, rows), part.data(), 80);
            for (int64_t t = 0; t < n; ++t)
                for (int64_t r = 5; r < 85; ++r)
                    QCOMPARE(part[size_t(t * 80 + r - 5)], r < std::min<int64_t>(70, rows) ? want[size_t(t * rows + r)] : -3.0f);
            // Tokens 6, 0 and 3, alone and as a batch of three (the streamed and the
            // unpacked int8 forms alike).
            for (const std::vector<int64_t>& pick : {std::vector<int64_t>{6, 0, 3}, std::vector<int64_t>{4}}) {
                cetus::cpu::ProductInput sub;
                std::vector<float> rows_of;
                cetus::cpu::gather_input(in, pick.data(), int64_t(pick.size()), rows_of, sub);
                std::vector<float> y(pick.size() * size_t(rows));
                cetus::cpu::matmul_rows(sub, w, 0, rows, y.data(), rows);
                for (size_t i = 0; i < pick.size(); ++i)
                    QVERIFY2(std::memcmp(y.data() + i * rows, want.data() + pick[i] * rows, size_t(rows) * 4) == 0,
                             qPrintable(what + QStringLiteral(": token %1 gathered").arg(pick[i])));
            }
            if (w.int8_activations) {  // prepared for no matrix: no int8 rows
                cetus::cpu::ProductInput bare;
                cetus::cpu::prepare_input(x.data(), cols, n, cols, {}, bare);
                QVERIFY_THROWS_EXCEPTION(cetus::Error, cetus::cpu::matmul_rows(bare, w, 0, rows, got.data(), rows));
            }
            cetus::cpu::ProductInput narrow;
            QVERIFY_THROWS_EXCEPTION(cetus::Error, cetus::cpu::prepare_input(x.data(), cols, n, cols - 32, {&w}, narrow));
        }
    }

    // cpu::rows_to_f32 (the absorbed attention's W_UK rows) gives Matrix::row_to_f32's
    // bits for every weight type, over ranges on and off a block of rows; a range
    // outside the matrix is refused.
    void rowsAsF32() {
        std::mt19937 gen(53);
        std::vector<TestMatrix> ms;
        for (cetus::Dtype dt : {cetus::Dtype::F32, cetus::Dtype::BF16, cetus::Dtype::F16, cetus::Dtype::F8_E4M3})
            ms.push_back(make(dt, 300, 264, gen));
        for (const BlockType& type : block_types()) ms.push_back(random_blocks(type, gen));
        for (const TestMatrix& t : ms) {
            const cetus::Matrix& w = t.m;
            const QString what = QStringLiteral("dtype %1, type %2").arg(int(w.dtype)).arg(w.ggml_type);
            std::vector<float> want(size_t(w.rows * w.cols));
            for (int64_t r = 0; r < w.rows; ++r) w.row_to_f32(r, want.data() + r * w.cols);
            for (const auto& [r0, r1] : {std::pair<int64_t, int64_t>{0, w.rows}, {5, 13}, {w.rows - 1, w.rows}, {3, 3}}) {
                std::vector<float> got(size_t((r1 - r0) * w.cols) + 1, -7.0f);
                cetus::cpu::rows_to_f32(w, r0, r1, got.data());
                QVERIFY2(std::memcmp(got.data(), want.data() + r0 * w.cols, size_t((r1 - r0) * w.cols) * 4) == 0,
                         qPrintable(what + QStringLiteral(": rows %1 .. %2").arg(r0).arg(r1)));
                QCOMPARE(got.back(), -7.0f);  // nothing written past the rows
            }
            std::vector<float> out(size_t(2 * w.cols));
            QVERIFY_THROWS_EXCEPTION(cetus::Error, cetus::cpu::rows_to_f32(w, w.rows - 1, w.rows + 1, out.data()));
            QVERIFY_THROWS_EXCEPTION(cetus::Error, cetus::cpu::rows_to_f32(w, -1, 1, out.data()));
        }
    }

    // Attention over cached rows for a group of queries (cpu::rows_dot and
    // cpu::weighted_rows, fp32 and bf16 rows, a width with a tail past the 8-float
    // vectors): within fp32 rounding of double sums, and each query's values the bits
    // it gets alone and over fewer rows, later rows weighing 0 (the causal limit of the
    // earlier tokens in a verify batch).
    void attentionOverRows_data() {
        QTest::addColumn<bool>("bf16");
        QTest::addColumn<int>("cols");
        QTest::newRow("fp32, 576 wide") << false << 576;
        QTest::newRow("bf16, 576 wide") << true << 576;
        QTest::newRow("fp32, 37 wide") << false << 37;
        QTest::newRow("bf16, 37 wide") << true << 37;
    }
    void attentionOverRows() {
        QFETCH(bool, bf16);
        QFETCH(int, cols);
        std::mt19937 gen(61);
        std::normal_distribution<float> nd(0.0f, 1.0f);
        const int64_t n_rows = 301, ld = cols + 3, n_q = 11;
        std::vector<float> rows_f(size_t(n_rows * ld));
        std::vector<uint16_t> rows_h(rows_f.size());
        for (size_t i = 0; i < rows_f.size(); ++i) {
            rows_h[i] = cetus::f32_to_bf16(nd(gen));
            rows_f[i] = bf16 ? cetus::bf16_to_f32(rows_h[i]) : nd(gen);
        }
        auto row = [&](int64_t s, int64_t k) { return double(rows_f[size_t(s * ld + k)]); };
        auto dot = [&](const float* q, int64_t nq, int64_t n, float* y, int64_t ldy) {
            if (bf16) cetus::cpu::rows_dot(q, cols, nq, rows_h.data(), ld, n, cols, y, ldy);
            else cetus::cpu::rows_dot(q, cols, nq, rows_f.data(), ld, n, cols, y, ldy);
        };
        auto weigh = [&](const float* p, int64_t ldp, int64_t nq, int64_t n, float* out) {
            if (bf16) cetus::cpu::weighted_rows(p, ldp, nq, rows_h.data(), ld, n, cols, out, cols);
            else cetus::cpu::weighted_rows(p, ldp, nq, rows_f.data(), ld, n, cols, out, cols);
        };
        std::vector<float> q(size_t(n_q * cols));
        for (float& v : q) v = nd(gen);
        std::vector<float> y(size_t(n_q * n_rows));
        dot(q.data(), n_q, n_rows, y.data(), n_rows);
        for (int64_t i = 0; i < n_q; ++i) {
            for (int64_t s = 0; s < n_rows; ++s) {
                double want = 0.0, mag = 0.0;
                for (int64_t k = 0; k < cols; ++k) {
                    want += double(q[size_t(i * cols + k)]) * row(s, k);
                    mag += std::fabs(double(q[size_t(i * cols + k)]) * row(s, k));
                }
                QVERIFY(std::fabs(double(y[size_t(i * n_rows + s)]) - want) <= 1e-6 * mag);
            }
            // Alone, over the first 123 rows (blocks of 4 and a remainder).
            std::vector<float> alone(123);
            dot(q.data() + i * cols, 1, 123, alone.data(), 123);
            QVERIFY(std::memcmp(alone.data(), y.data() + i * n_rows, alone.size() * 4) == 0);
        }
        // Weights: query i sees rows [0, n_i), zero after; the output starts from a
        // value of its own (the sums add to what is there).
        std::vector<float> p(size_t(n_q * n_rows), 0.0f), start(size_t(n_q * cols)), out;
        std::vector<int64_t> n_i(static_cast<size_t>(n_q), 0);
        std::uniform_real_distribution<float> ud(0.0f, 1.0f);
        for (int64_t i = 0; i < n_q; ++i) {
            n_i[size_t(i)] = n_rows - 17 * i;
            for (int64_t s = 0; s < n_i[size_t(i)]; ++s) p[size_t(i * n_rows + s)] = ud(gen);
        }
        for (float& v : start) v = nd(gen);
        out = start;
        weigh(p.data(), n_rows, n_q, n_rows, out.data());
        for (int64_t i = 0; i < n_q; ++i) {
            for (int64_t k = 0; k < cols; ++k) {
                double want = start[size_t(i * cols + k)], mag = std::fabs(want);
                for (int64_t s = 0; s < n_rows; ++s) {
                    want += double(p[size_t(i * n_rows + s)]) * row(s, k);
                    mag += std::fabs(double(p[size_t(i * n_rows + s)]) * row(s, k));
                }
                QVERIFY(std::fabs(double(out[size_t(i * cols + k)]) - want) <= 1e-6 * mag);
            }
            std::vector<float> alone(start.begin() + i * cols, start.begin() + (i + 1) * cols);
            weigh(p.data() + i * n_rows, n_rows, 1, n_i[size_t(i)], alone.data());
            QVERIFY2(std::memcmp(alone.data(), out.data() + i * cols, size_t(cols) * 4) == 0,
                     qPrintable(QStringLiteral("query %1 over its %2 rows").arg(i).arg(n_i[size_t(i)])));
        }
    }

    // One product over several matrices' rows (the attention's two input projections):
    // each output, at its own row stride, the bits of matmul with that matrix alone, on
    // one thread and on the pool.
    void manyMatricesOneProduct() {
        std::mt19937 gen(41);
        std::normal_distribution<float> nd(0.0f, 1.0f);
        const TestMatrix a = make(cetus::Dtype::F32, 300, 256, gen), b = make(cetus::Dtype::BF16, 37, 256, gen),
                         f = make(cetus::Dtype::F8_E4M3, 2100, 256, gen);
        const int64_t n = 3;
        std::vector<float> x(size_t(n * 256));
        for (float& v : x) v = nd(gen);
        cetus::cpu::ProductInput in;
        cetus::cpu::prepare_input(x.data(), 256, n, 256, {&a.m, &b.m, &f.m}, in);
        std::vector<float> ya(size_t(n * 310), -1.0f), yb(size_t(n * 40), -1.0f), yf(size_t(n * 2100), -1.0f);
        cetus::cpu::matmul_many(in, {{&a.m, ya.data(), 310}, {&b.m, yb.data(), 40}, {&f.m, yf.data(), 2100}});
        for (const auto& [m, y, ld] : {std::tuple{&a.m, &ya, int64_t(310)}, std::tuple{&b.m, &yb, int64_t(40)},
                                       std::tuple{&f.m, &yf, int64_t(2100)}}) {
            std::vector<float> want(size_t(n * m->rows));
            cetus::cpu::matmul(x.data(), n, *m, want.data());
            for (int64_t t = 0; t < n; ++t) {
                QVERIFY(std::memcmp(y->data() + t * ld, want.data() + t * m->rows, size_t(m->rows) * 4) == 0);
                for (int64_t r = m->rows; r < ld; ++r) QCOMPARE((*y)[size_t(t * ld + r)], -1.0f);  // untouched
            }
        }
    }
};

QTEST_GUILESS_MAIN(TestCpuOps)
#include "test_cpu_ops.moc"
