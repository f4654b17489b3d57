// The safetensors parser against hand-built byte images: the minimum bad-input
// suite of bad-inputs.md (each case must end in Error(BadFormat) whose message
// names the problem) and valid files whose shapes and data pointers are checked.
// Images are written here byte by byte, independently of the engine.
#include "cetus/error.h"
#include "safetensors.h"

#include <QtTest>

#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <string>

using cetus::Dtype;
using cetus::ErrorCode;

namespace {

// 8-byte little-endian length, then whatever `rest` holds.
QByteArray with_length(quint64 n, const QByteArray& rest) {
    QByteArray out(8, '\0');
    for (int i = 0; i < 8; ++i) out[i] = char((n >> (8 * i)) & 0xff);
    return out + rest;
}

QByteArray image(const QByteArray& header, const QByteArray& data = {}) {
    return with_length(quint64(header.size()), header + data);
}

// One header entry, e.g. entry("w", "F32", "[2, 2]", 0, 16).
QByteArray entry(const char* name, const char* dtype, const char* shape, quint64 begin,
                 quint64 end) {
    return QByteArray("\"") + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape +
           ",\"data_offsets\":[" + QByteArray::number(begin) + "," + QByteArray::number(end) + "]}";
}

QByteArray object(std::initializer_list<QByteArray> entries) {
    QByteArray s = "{";
    bool first = true;
    for (const auto& e : entries) {
        if (!first) s += ",";
        s += e;
        first = false;
    }
    return s + "}";
}

QByteArray zeros(int n) {
    return QByteArray(n, '\0');
}

struct Outcome {
    bool accepted = false;
    ErrorCode code = ErrorCode::Io;
    std::string message;
    std::string foreign; // what() of an exception that is not cetus::Error
    std::vector<cetus::TensorInfo> tensors;
};

// Parses from an exactly sized heap copy, so a sanitizer build sees any read
// past the image. The copy is kept alive in `keep` for pointer checks.
Outcome parse(const QByteArray& img, std::unique_ptr<std::byte[]>* keep = nullptr) {
    auto buf = std::make_unique<std::byte[]>(size_t(img.size()) + 1);
    std::memcpy(buf.get(), img.constData(), size_t(img.size()));
    Outcome o;
    try {
        o.tensors = cetus::parse_safetensors(buf.get(), size_t(img.size()), "test.safetensors");
        o.accepted = true;
    } catch (const cetus::Error& e) {
        o.code = e.code();
        o.message = e.what();
    } catch (const std::exception& e) {
        o.foreign = e.what();
    }
    if (keep) *keep = std::move(buf);
    return o;
}

// Empty when the image was rejected as asked; otherwise what went wrong.
std::optional<QString> rejection_problem(const QByteArray& img, const QString& keyword) {
    Outcome o = parse(img);
    if (!o.foreign.empty()) return "non-cetus exception: " + QString::fromStdString(o.foreign);
    if (o.accepted) return QString("accepted");
    if (o.code != ErrorCode::BadFormat)
        return QString("code %1: %2")
            .arg(cetus::error_code_name(o.code), QString::fromStdString(o.message));
    const QString msg = QString::fromStdString(o.message);
    if (!msg.contains("test.safetensors")) return "message does not name the file: " + msg;
    if (!msg.contains(keyword, Qt::CaseInsensitive))
        return "message lacks \"" + keyword + "\": " + msg;
    return std::nullopt;
}

#define EXPECT_REJECTED(img, keyword)                                                              \
    do {                                                                                           \
        auto problem_ = rejection_problem((img), (keyword));                                       \
        QVERIFY2(!problem_, qPrintable(problem_.value_or(QString())));                             \
    } while (0)

// A valid three-tensor file: "a" F32 [2, 3] at 0..24, "b" BF16 [4] at 24..32,
// "c" I64 [1] at 32..40.
QByteArray valid_file() {
    QByteArray data;
    for (int i = 0; i < 40; ++i) data += char(i);
    return image(object({entry("a", "F32", "[2, 3]", 0, 24), entry("b", "BF16", "[4]", 24, 32),
                         entry("c", "I64", "[1]", 32, 40), "\"__metadata__\":{\"format\":\"pt\"}"}),
                 data);
}

} // namespace

class TestSafetensors : public QObject {
    Q_OBJECT
  private slots:
    void rejects_data() {
        QTest::addColumn<QByteArray>("img");
        QTest::addColumn<QString>("keyword");
        const QByteArray w = entry("w", "F32", "[2]", 0, 8);

        // Lengths.
        QTest::newRow("header_length_past_end") << with_length(100, "{}") << "past the end";
        QTest::newRow("header_length_past_end_by_one") << with_length(3, "{}") << "past the end";
        QTest::newRow("header_length_over_cap")
            << with_length((100ull << 20) + 1, "{}") << "100 MB";
        QTest::newRow("header_length_max_u64") << with_length(~0ull, "{}") << "100 MB";
        QTest::newRow("header_length_2_63") << with_length(1ull << 63, "{}") << "100 MB";
        QTest::newRow("header_length_zero") << with_length(0, "") << "empty";
        QTest::newRow("header_length_one") << with_length(1, "{") << "empty";

        // JSON and UTF-8.
        QTest::newRow("invalid_json") << image("{\"w\":{\"dtype\":") << "invalid JSON";
        QTest::newRow("invalid_json_trailing_garbage") << image("{} x") << "invalid JSON";
        QTest::newRow("json_nan_literal") << image("{\"w\":NaN}") << "invalid JSON";
        QTest::newRow("utf8_invalid_byte_in_key") << image("{\"w\xff\":1}") << "UTF-8";
        QTest::newRow("utf8_overlong_nul") << image("{\"w\xc0\x80\":1}") << "UTF-8";
        QTest::newRow("utf8_surrogate") << image("{\"w\xed\xa0\x80\":1}") << "UTF-8";
        QTest::newRow("utf8_truncated_sequence")
            << image(object({entry("w\xe2\x82", "F32", "[2]", 0, 8)}), zeros(8)) << "UTF-8";
        QTest::newRow("utf8_invalid_in_dtype")
            << image(object({entry("w", "F3\xff", "[2]", 0, 8)}), zeros(8)) << "UTF-8";
        // nlohmann stops at a NUL byte; what follows must not be ignored.
        QTest::newRow("nul_then_garbage")
            << image(QByteArray("{}\0{\"x\":", 8) + "junk") << "NUL byte";
        QTest::newRow("nul_padding") << image(QByteArray("{}\0\0\0\0\0\0", 8)) << "NUL byte";
        QTest::newRow("header_array") << image("[1, 2]  ") << "object";
        QTest::newRow("header_string") << image("\"text\"") << "object";
        QTest::newRow("header_number") << image("42") << "object";
        QTest::newRow("header_null") << image("null") << "object";

        // Names and entries.
        QTest::newRow("duplicate_tensor_name")
            << image(object({w, entry("w", "F32", "[2]", 8, 16)}), zeros(16))
            << "duplicate key \"w\"";
        QTest::newRow("duplicate_field_in_entry")
            << image("{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":["
                     "0,8]}}",
                     zeros(8))
            << "duplicate key \"dtype\"";
        QTest::newRow("entry_not_object")
            << image("{\"w\":[1,2]}") << "needs dtype, shape and data_offsets";
        QTest::newRow("entry_missing_dtype")
            << image("{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", zeros(8)) << "needs dtype";
        QTest::newRow("entry_missing_offsets")
            << image("{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", zeros(8)) << "data_offsets";
        QTest::newRow("metadata_non_string_value")
            << image("{\"__metadata__\":{\"format\":1}}")
            << "__metadata__ value \"format\" must be a string";
        QTest::newRow("metadata_nested_object")
            << image("{\"__metadata__\":{\"a\":{\"b\":\"c\"}}}") << "__metadata__";
        QTest::newRow("metadata_not_object")
            << image("{\"__metadata__\":\"pt\"}") << "__metadata__ must be an object";

        // Dtypes.
        QTest::newRow("unknown_dtype")
            << image(object({entry("w", "F17", "[2]", 0, 8)}), zeros(8)) << "unknown dtype \"F17\"";
        QTest::newRow("lowercase_dtype")
            << image(object({entry("w", "f32", "[2]", 0, 8)}), zeros(8)) << "unknown dtype";
        QTest::newRow("dtype_not_string")
            << image("{\"w\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", zeros(8))
            << "dtype must be a string";

        // Shapes.
        QTest::newRow("negative_dim")
            << image(object({entry("w", "F32", "[-2]", 0, 8)}), zeros(8)) << "non-negative";
        QTest::newRow("negative_dims_product_positive")
            << image(object({entry("w", "F32", "[-1, -2]", 0, 8)}), zeros(8)) << "non-negative";
        QTest::newRow("fractional_dim")
            << image(object({entry("w", "F32", "[2.5]", 0, 8)}), zeros(8))
            << "non-negative integer";
        QTest::newRow("float_dim") << image(object({entry("w", "F32", "[2.0]", 0, 8)}), zeros(8))
                                   << "non-negative integer";
        QTest::newRow("string_dim") << image(object({entry("w", "F32", "[\"2\"]", 0, 8)}), zeros(8))
                                    << "non-negative integer";
        QTest::newRow("shape_not_list")
            << image(object({entry("w", "F32", "2", 0, 8)}), zeros(8)) << "shape";
        QTest::newRow("shape_too_many_dims")
            << image(object({entry("w", "F32", "[1,1,1,1,1,1,1,1,2]", 0, 8)}), zeros(8))
            << "at most 8";
        QTest::newRow("zero_dim_with_bytes")
            << image(object({entry("w", "F32", "[0, 2]", 0, 8)}), zeros(8)) << "needs 0 bytes";
        // [2^32, 2^32] is 2^64 elements: a 64-bit product wraps to 0, and a
        // parser that trusts it accepts an empty byte range.
        QTest::newRow("dims_wrap_to_zero")
            << image(object({entry("w", "F32", "[4294967296, 4294967296]", 0, 0)})) << "overflow";
        QTest::newRow("dims_wrap_to_zero_three")
            << image(object({entry("w", "U8", "[2097152, 2097152, 4194304]", 0, 0)})) << "overflow";
        // 4 * 5 * 5581 * 8681 * 49477 * 384773 = 2^64 + 4: the product wraps to 4
        // elements, exactly what 16 bytes of F32 data would hold.
        QTest::newRow("dims_wrap_to_small")
            << image(object({entry("w", "F32", "[4, 5, 5581, 8681, 49477, 384773]", 0, 16)}),
                     zeros(16))
            << "overflow";
        QTest::newRow("dim_2_62_times_4")
            << image(object({entry("w", "F32", "[4611686018427387904, 4]", 0, 16)}), zeros(16))
            << "too large";
        QTest::newRow("dim_max_u64")
            << image(object({entry("w", "U8", "[18446744073709551615]", 0, 1)}), zeros(1))
            << "too large";
        QTest::newRow("dim_past_u64")
            << image(object({entry("w", "U8", "[18446744073709551616]", 0, 1)}), zeros(1))
            << "non-negative integer";
        // 2^62 + 4 elements fit in 64 bits, but times 4 bytes they wrap to 16.
        QTest::newRow("bytes_wrap_after_dtype_multiply")
            << image(object({entry("w", "F32", "[4, 1048577, 1099510579201]", 0, 16)}), zeros(16))
            << "byte size";
        // 2^61 F32 elements: 2^63 bytes, no 64-bit wrap but beyond any file.
        QTest::newRow("bytes_beyond_any_file")
            << image(object({entry("w", "F32", "[2147483648, 1073741824]", 0, 16)}), zeros(16))
            << "byte size";
        // 2 * 1048577 * 1099510579201 = 2^61 + 2 F64 elements: 2^64 + 16 bytes.
        QTest::newRow("bytes_wrap_f64")
            << image(object({entry("w", "F64", "[2, 1048577, 1099510579201]", 0, 16)}), zeros(16))
            << "byte size";

        // Offsets.
        QTest::newRow("offsets_begin_after_end")
            << image(object({entry("w", "F32", "[2]", 8, 0)}), zeros(8)) << "begin 8 > end 0";
        QTest::newRow("offsets_past_eof")
            << image(object({entry("w", "F32", "[2]", 4, 12)}), zeros(8))
            << "past the end of the data";
        QTest::newRow("offsets_huge_end")
            << image(object({entry("w", "F32", "[2]", 18446744073709551607ull,
                                   18446744073709551615ull)}),
                     zeros(8))
            << "past the end of the data";
        QTest::newRow("offsets_overlap")
            << image(object({entry("a", "F32", "[2]", 0, 8), entry("b", "F32", "[2]", 4, 12)}),
                     zeros(12))
            << "overlap";
        QTest::newRow("offsets_same_range")
            << image(object({entry("a", "F32", "[2]", 0, 8), entry("b", "F32", "[2]", 0, 8)}),
                     zeros(8))
            << "overlap";
        QTest::newRow("offsets_gap")
            << image(object({entry("a", "F32", "[2]", 0, 8), entry("b", "F32", "[2]", 12, 20)}),
                     zeros(20))
            << "gap";
        QTest::newRow("offsets_gap_at_start")
            << image(object({entry("w", "F32", "[2]", 4, 12)}), zeros(12)) << "gap";
        QTest::newRow("trailing_uncovered_bytes") << image(object({w}), zeros(9)) << "not covered";
        QTest::newRow("no_tensors_but_data") << image("{}", zeros(4)) << "not covered";
        QTest::newRow("shape_larger_than_range")
            << image(object({entry("w", "F32", "[3]", 0, 8)}), zeros(8))
            << "needs 12 bytes but data_offsets span 8";
        QTest::newRow("shape_smaller_than_range")
            << image(object({entry("w", "F32", "[1]", 0, 8)}), zeros(8)) << "needs 4 bytes";
        QTest::newRow("dtype_size_mismatch")
            << image(object({entry("w", "BF16", "[2]", 0, 8)}), zeros(8)) << "needs 4 bytes";
        QTest::newRow("offsets_one_element")
            << image("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8]}}", zeros(8))
            << "[begin, end]";
        QTest::newRow("offsets_three_elements")
            << image("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,8]}}", zeros(8))
            << "[begin, end]";
        QTest::newRow("offsets_object") << image("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_"
                                                 "offsets\":{\"begin\":0,\"end\":8}}}",
                                                 zeros(8))
                                        << "[begin, end]";
        QTest::newRow("offsets_strings")
            << image("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[\"0\",\"8\"]}}",
                     zeros(8))
            << "data offset";
        QTest::newRow("offsets_negative")
            << image("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", zeros(8))
            << "data offset";
        QTest::newRow("offsets_float")
            << image("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8.0]}}", zeros(8))
            << "data offset";
        QTest::newRow("offsets_null")
            << image("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,null]}}",
                     zeros(8))
            << "data offset";
    }
    void rejects() {
        QFETCH(QByteArray, img);
        QFETCH(QString, keyword);
        EXPECT_REJECTED(img, keyword);
    }

    // Every proper prefix of a valid file is rejected: inside the length field,
    // inside the header, at its end, and inside the data.
    void truncatedAtEveryLength() {
        const QByteArray full = valid_file();
        QVERIFY(parse(full).accepted);
        const quint64 header_len = quint64(full.size()) - 8 - 40;
        for (int n = 0; n < full.size(); ++n) {
            const QByteArray cut = full.left(n);
            const char* keyword = n < 8 ? "shorter than the 8-byte header length"
                                  : quint64(n) < 8 + header_len ? "runs past the end of the file"
                                                                : "file truncated?";
            auto problem = rejection_problem(cut, keyword);
            QVERIFY2(!problem, qPrintable(QString("cut at %1 of %2: %3")
                                              .arg(n)
                                              .arg(full.size())
                                              .arg(problem.value_or(QString()))));
        }
    }

    // Header length pointing inside the data (zero bytes there), or short of the
    // header's end.
    void headerLengthDisagreesWithHeader() {
        const QByteArray header = object({entry("w", "F32", "[2]", 0, 8)});
        EXPECT_REJECTED(with_length(quint64(header.size()) + 4, header + zeros(8)), "invalid JSON");
        EXPECT_REJECTED(with_length(quint64(header.size()) - 1, header + zeros(8)), "invalid JSON");
    }

    void acceptsZeroSizedTensors() {
        std::unique_ptr<std::byte[]> keep;
        // A zero-element tensor at the end, one at the start and one between others.
        const QByteArray img =
            image(object({entry("empty_end", "F32", "[0, 4]", 8, 8), entry("w", "F32", "[2]", 0, 8),
                          entry("empty_start", "BF16", "[3, 0]", 0, 0),
                          entry("scalar", "I32", "[]", 8, 12)}),
                  zeros(12));
        Outcome o = parse(img, &keep);
        QVERIFY2(o.accepted, o.message.c_str());
        QCOMPARE(o.tensors.size(), size_t(4));
        for (const auto& t : o.tensors) {
            if (t.name == "empty_end") {
                QCOMPARE(t.shape, (std::vector<int64_t>{0, 4}));
                QCOMPARE(t.n_bytes, uint64_t(0));
                QCOMPARE(t.n_elements(), int64_t(0));
            } else if (t.name == "empty_start") {
                QCOMPARE(t.shape, (std::vector<int64_t>{3, 0}));
                QCOMPARE(t.n_bytes, uint64_t(0));
            } else if (t.name == "scalar") {
                QVERIFY(t.shape.empty());
                QCOMPARE(t.n_elements(), int64_t(1));
                QCOMPARE(t.n_bytes, uint64_t(4));
            }
        }
        // An empty file body with only zero-sized tensors is valid too.
        QVERIFY(parse(image(object({entry("e", "F16", "[0]", 0, 0)}))).accepted);
        QVERIFY(parse(image("{}")).accepted);
    }

    void acceptsValidFile() {
        std::unique_ptr<std::byte[]> keep;
        const QByteArray img = valid_file();
        Outcome o = parse(img, &keep);
        QVERIFY2(o.accepted, o.message.c_str());
        QCOMPARE(o.tensors.size(), size_t(3)); // __metadata__ is not a tensor
        const std::byte* data = keep.get() + (img.size() - 40);
        for (const auto& t : o.tensors) {
            QCOMPARE(t.file, std::string("test.safetensors"));
            if (t.name == "a") {
                QCOMPARE(t.dtype, Dtype::F32);
                QCOMPARE(t.shape, (std::vector<int64_t>{2, 3}));
                QCOMPARE(t.shape_string(), std::string("[2, 3]"));
                QCOMPARE(t.n_elements(), int64_t(6));
                QCOMPARE(t.n_bytes, uint64_t(24));
                QCOMPARE(t.data, data);
            } else if (t.name == "b") {
                QCOMPARE(t.dtype, Dtype::BF16);
                QCOMPARE(t.shape, (std::vector<int64_t>{4}));
                QCOMPARE(t.data, data + 24);
                QCOMPARE(std::to_integer<int>(t.data[0]), 24);
            } else {
                QCOMPARE(t.name, std::string("c"));
                QCOMPARE(t.dtype, Dtype::I64);
                QCOMPARE(t.data, data + 32);
                QCOMPARE(std::to_integer<int>(t.data[7]), 39);
            }
        }
    }

    // Offsets listed out of order in the JSON; header padded with spaces to a
    // multiple of 8 as the reference writer does; every dtype name.
    void acceptsOutOfOrderOffsetsAndAllDtypes() {
        QByteArray header =
            object({entry("f64", "F64", "[1]", 30, 38), entry("bool", "BOOL", "[2]", 28, 30),
                    entry("fp8", "F8_E4M3", "[2, 2]", 24, 28), entry("i8", "I8", "[1]", 23, 24),
                    entry("u8", "U8", "[1]", 22, 23), entry("i16", "I16", "[1]", 20, 22),
                    entry("e5m2", "F8_E5M2", "[4]", 16, 20), entry("f16", "F16", "[2]", 12, 16),
                    entry("i32", "I32", "[1]", 8, 12), entry("f32", "F32", "[2]", 0, 8),
                    entry("i64", "I64", "[1]", 38, 46)});
        while (header.size() % 8) header += ' ';
        std::unique_ptr<std::byte[]> keep;
        const QByteArray img = image(header, zeros(46));
        Outcome o = parse(img, &keep);
        QVERIFY2(o.accepted, o.message.c_str());
        QCOMPARE(o.tensors.size(), size_t(11));
        const std::byte* data = keep.get() + 8 + header.size();
        for (const auto& t : o.tensors) {
            QVERIFY(t.data >= data);
            QVERIFY(t.data + t.n_bytes <= data + 46);
            if (t.name == "f64") QCOMPARE(t.data, data + 30);
            if (t.name == "fp8") QCOMPARE(t.dtype, Dtype::F8_E4M3);
            if (t.name == "e5m2") QCOMPARE(t.dtype, Dtype::F8_E5M2);
            if (t.name == "bool") QCOMPARE(t.dtype, Dtype::Bool);
            if (t.name == "i64") QCOMPARE(t.data, data + 38);
        }
    }

    // The largest permitted dimension is accepted when the element count stays
    // representable (a zero in the shape), rather than being rejected early.
    void acceptsLargeDimTimesZero() {
        Outcome o = parse(image(object({entry("w", "F32", "[9007199254740992, 0]", 0, 0)})));
        QVERIFY2(o.accepted, o.message.c_str());
        QCOMPARE(o.tensors[0].n_bytes, uint64_t(0));
    }

    // SafetensorsFile maps from disk; I/O failures are Io, contents BadFormat.
    void fromDisk() {
        QTemporaryDir dir;
        QVERIFY(dir.isValid());
        const std::string good = dir.filePath("good.safetensors").toStdString();
        const QByteArray img = valid_file();
        std::ofstream(good, std::ios::binary).write(img.constData(), img.size());
        cetus::SafetensorsFile f(good);
        QCOMPARE(f.tensors().size(), size_t(3));
        QCOMPARE(f.tensors()[0].file, good);

        const std::string empty = dir.filePath("empty.safetensors").toStdString();
        std::ofstream(empty, std::ios::binary).close();
        try {
            cetus::SafetensorsFile e(empty);
            QFAIL("empty file accepted");
        } catch (const cetus::Error& e) {
            QCOMPARE(e.code(), ErrorCode::BadFormat);
            QVERIFY2(std::string(e.what()).find(empty) != std::string::npos, e.what());
        }
        for (const std::string& p :
             {dir.filePath("missing.safetensors").toStdString(), dir.path().toStdString()}) {
            try {
                cetus::SafetensorsFile e(p);
                QFAIL("missing file or folder accepted");
            } catch (const cetus::Error& e) {
                QCOMPARE(e.code(), ErrorCode::Io);
                QVERIFY2(std::string(e.what()).find(p) != std::string::npos, e.what());
            }
        }
    }
};

QTEST_GUILESS_MAIN(TestSafetensors)
#include "test_safetensors.moc"
