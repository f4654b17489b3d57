// The engine against transformers (and the MTP reference) on the committed
// fixtures: runs the same conformance suite as `cetus-cli selftest`.
#include "cetus/selftest.h"
#include "cuda_loader.h"

#include <QtTest>

class TestGolden : public QObject {
    Q_OBJECT
private slots:
    void cpuMatchesReference() {
        cetus::SelftestOptions o;
        o.fixtures_dir = std::string(CETUS_TEST_DATA) + "/golden";
        o.device = cetus::Device::Cpu;
        auto results = cetus::run_selftest(o);
        QVERIFY(results.size() > 10);
        int failed = 0;
        QSet<QString> cases;
        for (const auto& r : results) {
            cases.insert(QString::fromStdString(r.fixture));
            if (!r.passed) {
                ++failed;
                qWarning("%s / %s: error %.3g > tolerance %.3g %s", r.fixture.c_str(), r.check.c_str(), r.error,
                         r.tolerance, r.detail.c_str());
            }
        }
        if (failed)
            qWarning("If the reference changed on purpose, regenerate with: python3 tests/golden/make_fixtures.py");
        QCOMPARE(failed, 0);
        // Every family variant the fixtures promise is present.
        for (const char* c : {"v2-greedy", "v2-group", "v3-noaux", "v3-bf16", "v3-fp8"})
            QVERIFY2(cases.contains(c), c);
    }

    void cudaWithoutGpuFailsClearly() {
        if (cetus::probe_cuda().usable) QSKIP("a GPU is present: test_cuda_backend runs the suite on it");
        cetus::SelftestOptions o;
        o.fixtures_dir = std::string(CETUS_TEST_DATA) + "/golden";
        o.device = cetus::Device::Cuda;
        o.only = "v3-noaux";
        auto results = cetus::run_selftest(o);
        QCOMPARE(results.size(), size_t(1));
        QVERIFY(!results[0].passed);
        QVERIFY2(QString::fromStdString(results[0].detail).contains("cuda", Qt::CaseInsensitive),
                 results[0].detail.c_str());
    }
};

QTEST_GUILESS_MAIN(TestGolden)
#include "test_golden.moc"
