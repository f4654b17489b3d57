// The prefix store's disk tier (EngineOptions::prefix_cache_dir): a conversation
// opened again in a new engine (a restart) takes its rows back from the file written
// by the old one and answers exactly as an engine that prefills everything; files of
// another model, precision or changed model files are not used; damaged files are
// removed with a warning naming them, and the request still answers; the folder
// keeps to its budget. The file format itself: round trips, every truncation and
// bit flips refused, lying headers refused.
#include "backend.h"
#include "prefix_disk.h"

#include "cetus/engine.h"
#include "cetus/error.h"

#include <QtTest>

#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

#include <zlib.h>

#include <dlfcn.h>

#include <filesystem>
#include <fstream>
#include <random>

namespace fs = std::filesystem;

namespace {

const std::string k_demo = std::string(CETUS_SOURCE_DIR) + "/resources/models/cetus-demo";

std::unique_ptr<cetus::Engine> load(const std::string& model, const fs::path& cache_dir,
                                    cetus::KvCacheType kv = cetus::KvCacheType::F32, uint64_t budget = uint64_t(1) << 30) {
    cetus::EngineOptions o;
    o.model_dir = model;
    o.device = cetus::Device::Cpu;
    o.max_context = 512;
    o.kv_cache = kv;
    o.prefix_cache_dir = cache_dir;
    o.prefix_cache_bytes = budget;
    return cetus::Engine::load(o);
}

cetus::GenerateRequest chat(std::vector<cetus::ChatMessage> messages, bool mtp, float temperature, int draft = 1) {
    cetus::GenerateRequest r;
    r.messages = std::move(messages);
    r.sampling.temperature = temperature;
    r.sampling.seed = 11;
    r.max_new_tokens = 16;
    r.mtp = mtp;
    r.n_draft = draft;
    return r;
}

const std::string k_padding = " Please answer in one short sentence, and mind that I am asking about this subject only.";

// Three conversations answered by an engine on dir, which then goes: the first two were
// stored as the next one came, the last one is written as it goes.
std::vector<std::vector<cetus::ChatMessage>> three_answered_conversations(const fs::path& dir) {
    std::vector<std::vector<cetus::ChatMessage>> convs = {{{"user", "What is the capital of France?" + k_padding}},
                                                          {{"user", "What does the word generous mean?" + k_padding}},
                                                          {{"user", "What is the opposite of ancient?" + k_padding}}};
    auto first = load(k_demo, dir);
    for (auto& c : convs) c.push_back({"assistant", first->generate(chat(c, true, 0.0f)).text});
    return convs;
}

std::vector<fs::path> prefix_files(const fs::path& dir) {
    std::vector<fs::path> out;
    for (const auto& e : fs::directory_iterator(dir))
        if (e.path().extension() == ".cpx") out.push_back(e.path());
    std::sort(out.begin(), out.end());
    return out;
}

uint64_t folder_bytes(const fs::path& dir) {
    uint64_t total = 0;
    for (const auto& f : prefix_files(dir)) total += fs::file_size(f);
    return total;
}

std::vector<uint8_t> read_all(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_all(const fs::path& p, const std::vector<uint8_t>& bytes) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

cetus::SavedPrefix sample_prefix(size_t n, size_t row_bytes_per_token, size_t hidden_per_token, uint32_t seed) {
    std::mt19937 rng(seed);
    cetus::SavedPrefix p;
    for (size_t i = 0; i < n; ++i) p.ids.push_back(int32_t(rng() % 50000));
    p.mtp_valid = int64_t(n / 2);
    p.rows.resize(n * row_bytes_per_token);
    for (auto& b : p.rows) b = uint8_t(rng());
    p.hidden.resize(n * hidden_per_token);
    for (auto& h : p.hidden) h = float(int(rng() % 2001) - 1000) / 7.0f;
    return p;
}

std::vector<uint8_t> encode_file(const std::string& identity, const cetus::SavedPrefix& p) {
    std::vector<uint8_t> file = cetus::cpx::encode_head(identity, p);
    file.insert(file.end(), p.rows.begin(), p.rows.end());
    const auto* h = reinterpret_cast<const uint8_t*>(p.hidden.data());
    file.insert(file.end(), h, h + 4 * p.hidden.size());
    const uint32_t crc = cetus::cpx::body_crc(p);
    for (int i = 0; i < 4; ++i) file.push_back(uint8_t(crc >> (8 * i)));
    return file;
}

bool refused(const std::vector<uint8_t>& file) {
    try {
        cetus::cpx::decode(file);
        return false;
    } catch (const cetus::Error& e) {
        return e.code() == cetus::ErrorCode::BadFormat;
    }
}

}  // namespace

class TestPrefixDisk : public QObject {
    Q_OBJECT

    std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> m_log;

    QString warnings() const {
        QStringList out;
        for (const auto& line : m_log->last_formatted()) out << QString::fromStdString(line);
        return out.join(QLatin1Char('\n'));
    }

private slots:
    void init() {  // each test reads only its own warnings
        spdlog::drop("engine");
        m_log = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(200);
        auto logger = std::make_shared<spdlog::logger>("engine", m_log);
        logger->set_level(spdlog::level::warn);
        spdlog::register_logger(logger);
    }

    // A restart: the first engine answers three conversations (each is written after its
    // answer, and kept as the next one comes); a second
    // engine on the same folder goes on with each and answers as one that prefills all.
    void restartGoesOn() {
        QTemporaryDir tmp;
        const fs::path dir = tmp.path().toStdString();
        auto convs = three_answered_conversations(dir);
        QCOMPARE(prefix_files(dir).size(), size_t(3));
        QVERIFY2(warnings().isEmpty(), qPrintable(warnings()));

        auto second = load(k_demo, dir);
        auto plain = load(k_demo, fs::path());  // no disk tier
        plain->set_prefix_store_bytes(0);
        const char* follow_ups[] = {"And of Italy?", "Use it in a sentence.", "And of modern?"};
        const struct {
            bool mtp;
            float temperature;
            int draft;
        } modes[] = {{true, 0.0f, 1}, {false, 0.0f, 1}, {true, 0.8f, 2}};
        for (size_t c = 0; c < convs.size(); ++c) {
            convs[c].push_back({"user", follow_ups[c]});
            const auto req = chat(convs[c], modes[c].mtp, modes[c].temperature, modes[c].draft);
            plain->reset_cache();
            const auto want = plain->generate(req);
            const auto got = second->generate(req);
            QCOMPARE(got.ids, want.ids);
            // The MTP module's rows and inputs came back too: its drafts fare the same.
            QCOMPARE(got.stats.drafts_proposed, want.stats.drafts_proposed);
            QCOMPARE(got.stats.drafts_accepted, want.stats.drafts_accepted);
            QVERIFY(got.stats.prefix_from_disk && got.stats.prefix_restored);
            QVERIFY(!want.stats.prefix_from_disk);
            const int64_t n = second->count_tokens(req);
            QVERIFY2(got.stats.reused_prefix_tokens > n / 2,
                     qPrintable(QStringLiteral("%1 of %2 reused").arg(got.stats.reused_prefix_tokens).arg(n)));
            QVERIFY(want.stats.reused_prefix_tokens < 8);
            QVERIFY(got.stats.disk_prefixes >= 1 && got.stats.disk_prefix_bytes > 0);
            // The caches hold the same rows, the MTP layer's included when it ran (its first
            // new row needs the hidden state of the last restored position).
            const int64_t layers = second->info().n_layers + (modes[c].mtp ? second->info().n_mtp_layers : 0);
            const int64_t cached = std::min(got.stats.tokens_cached, want.stats.tokens_cached);
            QVERIFY(cached > n);
            for (int64_t l = 0; l < layers; ++l)
                for (int64_t pos = 0; pos < cached - 1; ++pos)
                    QVERIFY2(second->backend().cache_row(l, pos) == plain->backend().cache_row(l, pos),
                             qPrintable(QStringLiteral("conversation %1, layer %2, position %3").arg(c).arg(l).arg(pos)));
        }
        QVERIFY2(warnings().isEmpty(), qPrintable(warnings()));
    }

    // A process killed after an answer (not quit): the answer's conversation was written
    // already. The folder as it is then (copied while the engine lives on, unflushed) lets
    // a new engine go on with it as one that prefills all. A short follow-up writes no new
    // file; one that grows the conversation by a quarter does, and replaces the old one.
    void killedProcessKeepsItsConversation() {
        QTemporaryDir tmp;
        const fs::path dir = fs::path(tmp.path().toStdString()) / "live", snapshot = fs::path(tmp.path().toStdString()) / "killed";
        std::vector<cetus::ChatMessage> conv = {{"user", "What is the capital of France?" + k_padding}};
        auto a = load(k_demo, dir);
        auto req = chat(conv, true, 0.0f);
        req.cache_tag = "db#1";
        const auto first = a->generate(req);
        QVERIFY(first.stats.prefix_saved);
        // The one file there holds the whole conversation the cache holds.
        auto file_tokens = [&] {
            const auto files = prefix_files(dir);
            if (files.size() != 1) return int64_t(-int64_t(files.size()));
            try {
                cetus::cpx::Head h;
                cetus::cpx::decode(read_all(files[0]), &h);
                return h.tag == "db#1" ? int64_t(h.ids.size()) : int64_t(-100);
            } catch (const cetus::Error&) {
                return int64_t(-200);  // being renamed into place
            }
        };
        QTRY_COMPARE_WITH_TIMEOUT(file_tokens(), first.stats.tokens_cached, 20000);
        fs::create_directories(snapshot);
        for (const auto& f : prefix_files(dir)) fs::copy_file(f, snapshot / f.filename());

        conv.push_back({"assistant", first.text});
        conv.push_back({"user", "And of Italy?"});
        auto second = chat(conv, true, 0.0f);
        second.cache_tag = "db#1";
        auto b = load(k_demo, snapshot);
        auto plain = load(k_demo, fs::path());
        const auto got = b->generate(second);
        const auto want = plain->generate(second);
        QVERIFY(got.stats.prefix_from_disk);
        QVERIFY(got.stats.reused_prefix_tokens > first.stats.prompt_tokens);  // the answer's rows too
        QCOMPARE(got.ids, want.ids);
        QCOMPARE(got.stats.drafts_accepted, want.stats.drafts_accepted);

        // The short follow-up in the first engine: it grew by less than 32 tokens.
        const auto short_answer = a->generate(second);
        QCOMPARE(short_answer.ids, want.ids);
        QVERIFY(short_answer.stats.tokens_cached - first.stats.tokens_cached < 32);
        QVERIFY(!short_answer.stats.prefix_saved);
        QCOMPARE(file_tokens(), first.stats.tokens_cached);
        // A long one: written anew, the old file replaced.
        conv.push_back({"assistant", short_answer.text});
        conv.push_back({"user", "Tell me more about it." + k_padding + k_padding});
        auto third = chat(conv, true, 0.0f);
        third.cache_tag = "db#1";
        const auto long_answer = a->generate(third);
        QVERIFY(long_answer.stats.prefix_saved);
        QTRY_COMPARE_WITH_TIMEOUT(file_tokens(), long_answer.stats.tokens_cached, 20000);
        QVERIFY2(warnings().isEmpty(), qPrintable(warnings()));
    }

    // A deleted conversation's rows do not stay: forget_prefixes(tag) removes the cached
    // prefix, the store's copy and every file with its tag (also those of another
    // precision, and the live prefix written when the engine goes), and nothing of other
    // conversations; forget_prefix_files does it without an engine.
    void forgetConversation() {
        QTemporaryDir tmp;
        const fs::path dir = tmp.path().toStdString();
        auto tagged = [](std::vector<cetus::ChatMessage> m, const char* tag) {
            auto r = chat(std::move(m), false, 0.0f);
            r.cache_tag = tag;
            return r;
        };
        std::vector<cetus::ChatMessage> france = {{"system", "You are terse."},
                                                  {"user", "What is the capital of France?" + k_padding + k_padding}};
        std::vector<cetus::ChatMessage> generous = {{"system", "You are terse."},
                                                    {"user", "What does the word generous mean?" + k_padding + k_padding}};
        {
            auto bf16 = load(k_demo, dir, cetus::KvCacheType::BF16);
            bf16->generate(tagged(france, "db#1"));
        }
        auto e = load(k_demo, dir);
        france.push_back({"assistant", e->generate(tagged(france, "db#1")).text});
        e->generate(tagged(generous, "db#2"));  // France's prefix is stored, in memory and on disk
        e->persist_prefixes();
        QCOMPARE(prefix_files(dir).size(), size_t(3));
        for (const auto& f : prefix_files(dir)) {
            cetus::cpx::Head h;
            cetus::cpx::decode(read_all(f), &h);
            QVERIFY(h.tag == "db#1" || h.tag == "db#2");
        }
        france.push_back({"user", "And of Italy?"});
        e->forget_prefixes("db#1");
        QCOMPARE(prefix_files(dir).size(), size_t(1));  // generous's
        const auto r = e->generate(tagged(france, "db#1"));
        QVERIFY(!r.stats.prefix_restored && r.stats.reused_prefix_tokens < 16);
        QVERIFY(e->generate(tagged(generous, "db#2")).stats.reused_prefix_tokens > 16);  // from the store
        e->forget_prefixes("db#1");  // France's again: stored when generous came back, and queued
        e->persist_prefixes();       // generous's is live: no new file
        QCOMPARE(prefix_files(dir).size(), size_t(1));
        e->forget_prefixes("db#2");  // the live one too: nothing written when the engine goes
        e.reset();
        QCOMPARE(prefix_files(dir).size(), size_t(0));
        // Without an engine: the tagged files of any model, nothing else.
        {
            auto again = load(k_demo, dir);
            again->generate(tagged(france, "db#7"));
            again->generate(tagged(generous, "db#8"));
        }
        QCOMPARE(prefix_files(dir).size(), size_t(2));
        QCOMPARE(cetus::Engine::forget_prefix_files(dir, "db#7"), size_t(1));
        QCOMPARE(cetus::Engine::forget_prefix_files(dir, "db#7"), size_t(0));
        QCOMPARE(cetus::Engine::forget_prefix_files(dir, ""), size_t(0));
        QCOMPARE(prefix_files(dir).size(), size_t(1));
        cetus::Engine::remove_prefix_files(dir);
        QCOMPARE(prefix_files(dir).size(), size_t(0));
        QVERIFY2(warnings().isEmpty(), qPrintable(warnings()));
    }

    // Through PrefixDisk itself: a prefix that extends a file's supersedes it; the same
    // ids again only mark the file used; a new PrefixDisk on the folder finds them.
    void supersedingAndRescan() {
        QTemporaryDir tmp;
        const fs::path dir = tmp.path().toStdString();
        auto shorter = std::make_shared<cetus::SavedPrefix>(sample_prefix(40, 16, 2, 1));
        auto longer = std::make_shared<cetus::SavedPrefix>(sample_prefix(60, 16, 2, 1));  // same first 40 ids
        QVERIFY(std::equal(shorter->ids.begin(), shorter->ids.end(), longer->ids.begin()));
        auto other = std::make_shared<cetus::SavedPrefix>(sample_prefix(50, 16, 2, 9));
        {
            cetus::PrefixDisk disk(dir, "an identity", uint64_t(1) << 20, 16, 2);
            disk.store(shorter);
            disk.store(other);
            disk.flush();
            QCOMPARE(disk.files(), size_t(2));
            disk.store(longer);
            disk.store(longer);
            disk.flush();
            QCOMPARE(disk.files(), size_t(2));
            QCOMPARE(prefix_files(dir).size(), size_t(2));
        }
        cetus::PrefixDisk again(dir, "an identity", uint64_t(1) << 20, 16, 2);
        QCOMPARE(again.files(), size_t(2));
        auto ids = longer->ids;
        ids.push_back(7);
        const auto back = again.take(ids, 0, 1000);
        QVERIFY(back.has_value());
        QCOMPARE(back->ids, longer->ids);
        QVERIFY(back->rows == longer->rows && back->hidden == longer->hidden);
        QVERIFY(!again.take(ids, 60, 1000).has_value());  // nothing longer than asked for
        QVERIFY(!again.take(ids, 0, 59).has_value());     // nor past the context
        cetus::PrefixDisk stranger(dir, "another identity", uint64_t(1) << 20, 16, 2);
        QCOMPARE(stranger.files(), size_t(0));
        again.clear();
        QCOMPARE(prefix_files(dir).size(), size_t(0));
        QVERIFY2(warnings().isEmpty(), qPrintable(warnings()));
    }

    // The budget makes room for a file without counting the one it replaces (the same
    // conversation's earlier file), so another conversation's file that still fits stays.
    void replacedFilesLeaveRoom() {
        QTemporaryDir tmp;
        const fs::path dir = tmp.path().toStdString();
        auto shorter = std::make_shared<cetus::SavedPrefix>(sample_prefix(40, 16, 2, 1));
        auto longer = std::make_shared<cetus::SavedPrefix>(sample_prefix(60, 16, 2, 1));
        auto other = std::make_shared<cetus::SavedPrefix>(sample_prefix(50, 16, 2, 9));
        const uint64_t budget = encode_file("an identity", *other).size() + encode_file("an identity", *longer).size() + 100;
        QVERIFY(encode_file("an identity", *shorter).size() > 100);
        cetus::PrefixDisk disk(dir, "an identity", budget, 16, 2);
        disk.store(other);  // the least recently used
        disk.flush();
        disk.store(shorter);
        disk.flush();
        QCOMPARE(disk.files(), size_t(2));
        disk.store(longer);
        disk.flush();
        QCOMPARE(disk.files(), size_t(2));
        QVERIFY(folder_bytes(dir) <= budget);
        QVERIFY(disk.take(other->ids, 0, 1000).has_value());
        QCOMPARE(disk.take(longer->ids, 0, 1000)->ids, longer->ids);
        QVERIFY2(warnings().isEmpty(), qPrintable(warnings()));
    }

    // The budget counts a file's head too: a prefix whose file is one byte over it is
    // neither offered (would_queue) nor written, without a warning; one that fits
    // exactly is. holds() sees the written file.
    void budgetCountsTheHead() {
        QTemporaryDir tmp;
        const fs::path dir = tmp.path().toStdString();
        auto p = std::make_shared<cetus::SavedPrefix>(sample_prefix(40, 16, 2, 3));
        p->tag = "db#5";
        const uint64_t exact = encode_file("an identity", *p).size();
        {
            cetus::PrefixDisk disk(dir, "an identity", exact - 1, 16, 2);
            QVERIFY(!disk.would_queue(p->ids, p->tag.size(), p->bytes()));
            QVERIFY(!disk.store(p));
            disk.flush();
            QCOMPARE(prefix_files(dir).size(), size_t(0));
            QVERIFY(!disk.holds(p->ids));
        }
        cetus::PrefixDisk disk(dir, "an identity", exact, 16, 2);
        QVERIFY(disk.would_queue(p->ids, p->tag.size(), p->bytes()));
        QVERIFY(disk.store(p));
        QVERIFY(disk.holds(p->ids));  // queued, being written or written
        disk.flush();
        QCOMPARE(folder_bytes(dir), exact);
        QVERIFY(disk.holds(p->ids));
        QVERIFY(!disk.holds({p->ids.data(), p->ids.size() - 1}));
        QVERIFY(disk.store(p));  // already there: marked used
        QVERIFY2(warnings().isEmpty(), qPrintable(warnings()));
    }

    // Rows are only used by an engine that computes the same ones: another cache
    // precision, or model files changed since, find nothing (and remove nothing).
    void otherEnginesFilesAreNotUsed() {
        QTemporaryDir tmp, model_copy;
        const fs::path dir = tmp.path().toStdString();
        const fs::path model = fs::path(model_copy.path().toStdString()) / "cetus-demo";
        fs::copy(k_demo, model, fs::copy_options::recursive);
        auto req = chat({{"user", "What is the capital of France?" + k_padding}}, true, 0.0f);
        {
            auto e = load(model.string(), dir);
            req.messages.push_back({"assistant", e->generate(req).text});
        }
        QCOMPARE(prefix_files(dir).size(), size_t(1));
        req.messages.push_back({"user", "And of Italy?"});
        {
            auto bf16 = load(model.string(), dir, cetus::KvCacheType::BF16);
            const auto r = bf16->generate(req);
            QVERIFY(!r.stats.prefix_from_disk && !r.stats.prefix_restored);
            QCOMPARE(r.stats.disk_prefixes, int64_t(0));
            bf16->clear_prefix_cache();  // its file (written after the answer) goes, the other stays
        }
        // The same folder, the same model with one file touched (as a new download would).
        fs::last_write_time(model / "config.json", fs::last_write_time(model / "config.json") + std::chrono::seconds(5));
        {
            auto changed = load(model.string(), dir);
            const auto r = changed->generate(req);
            QVERIFY(!r.stats.prefix_from_disk);
            changed->generate(chat({{"user", "What does the word generous mean?" + k_padding}}, false, 0.0f));
            changed->clear_prefix_cache();  // its own files only (the one just stored)
        }
        // The first engine's file is still there, and the only one.
        QCOMPARE(prefix_files(dir).size(), size_t(1));
        fs::last_write_time(model / "config.json", fs::last_write_time(model / "config.json") - std::chrono::seconds(5));
        auto same = load(model.string(), dir);
        QVERIFY(same->generate(req).stats.prefix_from_disk);
        QVERIFY2(warnings().isEmpty(), qPrintable(warnings()));
    }

    // Damaged files: one cut short and one with a changed header are found when the
    // folder is read; one with a changed row is found when it is read back. Each is
    // removed with a warning naming it, and the request answers as without it.
    void damagedFilesAreRemoved() {
        QTemporaryDir tmp;
        const fs::path dir = tmp.path().toStdString();
        auto convs = three_answered_conversations(dir);
        const auto files = prefix_files(dir);
        QCOMPARE(files.size(), size_t(3));
        for (size_t i = 0; i < files.size(); ++i) {
            auto bytes = read_all(files[i]);
            cetus::cpx::Head h;
            cetus::cpx::decode(bytes, &h);
            if (i == 0) bytes.resize(bytes.size() - 1000);                          // cut short
            else if (i == 1) bytes[64] ^= 0x10;                                     // in the identity
            else bytes[h.body_offset + (bytes.size() - h.body_offset) / 2] ^= 0x01;  // in a row
            write_all(files[i], bytes);
        }
        auto second = load(k_demo, dir);
        auto plain = load(k_demo, fs::path());
        plain->set_prefix_store_bytes(0);
        int from_disk = 0;
        for (auto& c : convs) {
            c.push_back({"user", "Say more."});
            const auto req = chat(c, true, 0.0f);
            plain->reset_cache();
            const auto got = second->generate(req);
            QCOMPARE(got.ids, plain->generate(req).ids);
            from_disk += got.stats.prefix_from_disk;
        }
        QCOMPARE(from_disk, 0);
        const QString log = warnings();
        for (const auto& f : files) {
            QVERIFY2(log.contains(QString::fromStdString(f.string())), qPrintable(log));
            QVERIFY(!fs::exists(f));
        }
        QVERIFY(log.contains(QStringLiteral("checksum mismatch in the cached rows")));
        QVERIFY(log.contains(QStringLiteral("removed")));
    }

    // The folder keeps to its budget, least recently used first; a prefix larger than
    // the budget is not written; an unusable folder leaves the engine without a disk tier.
    void budgetAndUnusableFolder() {
        QTemporaryDir tmp;
        const fs::path dir = tmp.path().toStdString();
        auto probe = load(k_demo, fs::path());
        const auto one = probe->generate(chat({{"user", "What does the word generous mean?" + k_padding + k_padding}}, false, 0.0f));
        const uint64_t per_token = probe->info().kv_bytes_per_token_held + uint64_t(probe->info().hidden_size) * 4;
        // About two conversations (a prompt and up to 16 answer tokens each), not three.
        const uint64_t budget = uint64_t(one.stats.prompt_tokens + 16) * per_token * 12 / 5;
        // Long enough that the part a follow-up shares with each (the question) is worth keeping.
        const std::string padding = k_padding + k_padding;
        const char* questions[] = {"What is the capital of France?", "What does the word generous mean?",
                                   "What is the opposite of ancient?", "Name a large animal."};
        {
            auto e = load(k_demo, dir, cetus::KvCacheType::F32, budget);
            for (const char* q : questions) {
                QVERIFY(e->generate(chat({{"user", q + padding}}, false, 0.0f)).stats.prefix_saved);
                // Each answer's file written before the next question: a disk slower than the
                // answers would keep the queue over this small budget, and the newest
                // conversations would be refused ("the disk is behind") instead.
                e->persist_prefixes();
            }
        }
        const auto files = prefix_files(dir);
        QVERIFY2(files.size() == 2, qPrintable(QString::number(files.size())));
        QVERIFY(folder_bytes(dir) <= budget);
        // The two most recent conversations are the ones kept. (Read with a larger budget:
        // each answer here is written too, and would evict the next one looked for.)
        auto e = load(k_demo, dir);
        for (int q = 0; q < 4; ++q) {
            auto req = chat({{"user", questions[q] + padding}, {"assistant", "Yes."}, {"user", "Why?"}}, false, 0.0f);
            QCOMPARE(e->generate(req).stats.prefix_from_disk, q >= 2);
            e->reset_cache();
        }
        e.reset();
        {
            auto tiny = load(k_demo, dir, cetus::KvCacheType::F32, 1000);  // smaller than any prefix
            tiny->generate(chat({{"user", "Something else entirely." + k_padding}}, false, 0.0f));
        }
        QVERIFY(folder_bytes(dir) <= 1000);
        // A file where the folder should be: the model loads and answers, with a warning.
        const fs::path blocked = dir / "not-a-folder";
        write_all(blocked, {1, 2, 3});
        auto no_disk = load(k_demo, blocked);
        const auto r = no_disk->generate(chat({{"user", "What is the capital of France?" + k_padding}}, false, 0.0f));
        QVERIFY(!r.ids.empty() && !r.stats.prefix_from_disk);
        QVERIFY2(warnings().contains(QString::fromStdString(blocked.string())), qPrintable(warnings()));
    }

    // Behind a slow disk (run by test_prefix_disk_slow_disk, fsync slowed by a preloaded
    // shim): prefixes come faster than they are written, more than the budget waits, and
    // the oldest queued ones give way (with a warning) so that the newest is written.
    void slowDiskKeepsTheNewest() {
        if (!qEnvironmentVariableIsSet("CETUS_TEST_SLOW_FSYNC_MS"))
            QSKIP("needs a slow disk: the test_prefix_disk_slow_disk run preloads one");
        auto slowed = reinterpret_cast<int (*)()>(dlsym(RTLD_DEFAULT, "cetus_test_slow_fsync_ms"));
        QVERIFY2(slowed && slowed() >= 100, "the slow_fsync shim is not preloaded");
        QTemporaryDir tmp;
        const fs::path dir = tmp.path().toStdString();
        std::vector<std::shared_ptr<cetus::SavedPrefix>> ps;
        for (uint32_t seed : {21u, 22u, 23u, 24u}) ps.push_back(std::make_shared<cetus::SavedPrefix>(sample_prefix(40, 16, 2, seed)));
        const uint64_t file = encode_file("an identity", *ps[0]).size();
        cetus::PrefixDisk disk(dir, "an identity", file * 5 / 2, 16, 2);  // two files, not three
        for (const auto& p : ps) QVERIFY(disk.store(p));  // each taken, the newest last
        disk.flush();
        QVERIFY(disk.take(ps[3]->ids, 0, 1000).has_value());
        QVERIFY(folder_bytes(dir) <= file * 5 / 2);
        QVERIFY2(warnings().contains(QStringLiteral("gives way to a newer one")), qPrintable(warnings()));
    }

    void formatRoundTrip() {
        for (size_t n : {size_t(1), size_t(5), size_t(300)})
            for (size_t hidden : {size_t(0), size_t(3)}) {
                auto p = sample_prefix(n, 12, hidden, uint32_t(n + hidden));
                p.tag = n == 5 ? "" : "conversations.db#" + std::to_string(n);
                const auto file = encode_file("identity\nline two\n", p);
                cetus::cpx::Head h;
                const auto back = cetus::cpx::decode(file, &h);
                QCOMPARE(h.identity, std::string("identity\nline two\n"));
                QCOMPARE(h.tag, p.tag);
                QCOMPARE(back.tag, p.tag);
                QCOMPARE(back.ids, p.ids);
                QCOMPARE(back.mtp_valid, p.mtp_valid);
                QVERIFY(back.rows == p.rows);
                QVERIFY(back.hidden == p.hidden);
                QCOMPARE(h.file_bytes, uint64_t(file.size()));
            }
    }

    // Every truncation, every single-bit flip of a small file, and a sample of flips
    // in a large one end in BadFormat (CRC-32 catches any single-bit error).
    void damagedBytesAreRefused() {
        const auto small = encode_file("id", sample_prefix(3, 8, 2, 1));
        for (size_t cut = 0; cut < small.size(); ++cut) {
            auto t = small;
            t.resize(cut);
            QVERIFY2(refused(t), qPrintable(QStringLiteral("cut at %1").arg(cut)));
        }
        auto longer = small;
        longer.push_back(0);
        QVERIFY(refused(longer));
        for (size_t byte = 0; byte < small.size(); ++byte)
            for (int bit = 0; bit < 8; ++bit) {
                auto f = small;
                f[byte] ^= uint8_t(1 << bit);
                QVERIFY2(refused(f), qPrintable(QStringLiteral("bit %1 of byte %2").arg(bit).arg(byte)));
            }
        const auto large = encode_file("identity", sample_prefix(400, 64, 4, 2));
        std::mt19937 rng(3);
        for (int i = 0; i < 2000; ++i) {
            auto f = large;
            f[rng() % f.size()] ^= uint8_t(1 << (rng() % 8));
            QVERIFY(refused(f));
        }
    }

    // Headers that lie, with their CRC resealed: refused before anything is reserved.
    void lyingHeadersAreRefused() {
        const auto base = encode_file("id", sample_prefix(4, 8, 0, 5));
        auto reseal = [](std::vector<uint8_t> f, size_t at, uint64_t value, int width) {
            for (int i = 0; i < width; ++i) f[at + size_t(i)] = uint8_t(value >> (8 * i));
            uint64_t head = 0;
            try {
                head = cetus::cpx::head_bytes(std::span<const uint8_t>(f.data(), cetus::cpx::k_fixed_head_bytes));
            } catch (const cetus::Error&) {  // refused from the fixed part alone
            }
            if (head > 0 && head <= f.size()) {
                const uint32_t crc = uint32_t(::crc32(0, f.data(), uInt(head - 4)));
                for (int i = 0; i < 4; ++i) f[head - 4 + size_t(i)] = uint8_t(crc >> (8 * i));
            }
            return f;
        };
        QVERIFY(refused(reseal(base, 4, 0, 4)));                       // no identity
        QVERIFY(refused(reseal(base, 4, 1u << 20, 4)));                // identity too long
        QVERIFY(refused(reseal(base, 8, 0, 8)));                       // no tokens
        QVERIFY(refused(reseal(base, 8, uint64_t(1) << 40, 8)));       // absurd token count
        QVERIFY(refused(reseal(base, 16, 5, 8)));                      // MTP rows past the tokens
        QVERIFY(refused(reseal(base, 24, 33, 8)));                     // rows not a multiple of the tokens
        QVERIFY(refused(reseal(base, 24, uint64_t(1) << 62, 8)));      // absurd rows
        QVERIFY(refused(reseal(base, 24, 64, 8)));                     // more rows than the file has
        QVERIFY(refused(reseal(base, 32, 4, 8)));                      // hidden values the file lacks
        QVERIFY(refused(reseal(base, 32, uint64_t(1) << 50, 8)));      // absurd hidden values
        QVERIFY(refused(reseal(base, 40, 5000, 4)));                   // tag too long
        QVERIFY(refused(reseal(base, 40, 1, 4)));                      // a tag the file lacks
        QVERIFY(!refused(reseal(base, 16, 4, 8)));                     // an honest change is taken
    }
};

QTEST_GUILESS_MAIN(TestPrefixDisk)
#include "test_prefix_disk.moc"
