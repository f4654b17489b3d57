// Attached files inside a message's content: the canonical form written out by hand,
// round trips over random files and texts, lookalikes that must stay plain text,
// reading files (encodings, sizes, binaries), and titles of messages with files.
#include "cetus/storage/attachments.h"
#include "cetus/storage/store.h"
#include "cetus/storage/types.h"

#include <QTemporaryDir>
#include <QtTest>

#include <fstream>
#include <random>

using namespace cetus::storage;

namespace {

std::string trimmed_newlines(std::string s) {
    while (!s.empty() && s.back() == '\n') s.pop_back();
    return s;
}

std::string random_text(std::mt19937& rng, size_t max_len) {
    // Backticks and newlines often, so fences and line ends are exercised.
    static const std::string alphabet = "``````\n\n\n  abcFile:.txt\r\t\xC3\xA9";
    std::string s;
    const size_t n = rng() % (max_len + 1);
    while (s.size() < n) {
        const char c = alphabet[rng() % alphabet.size()];
        if (c == '\xC3') s += "\xC3\xA9";  // keep UTF-8 whole
        else if (c != '\xA9') s += c;
    }
    if (rng() % 5 == 0) s = "File: " + s;  // typed text that starts like a block
    return s;
}

void write_file(const QString& path, const std::string& bytes) {
    std::ofstream out(path.toStdString(), std::ios::binary);
    out << bytes;
}

}  // namespace

class TestAttachments : public QObject {
    Q_OBJECT
private slots:
    // The form written out by hand, as attachments.h documents it.
    void composeWritesTheDocumentedForm() {
        const std::vector<AttachedFile> files{{"notes.txt", "first line\nsecond line\n\n"}, {"main.cpp", "int a = 1; // ```x```\n"}};
        const std::string expected =
            "File: notes.txt\n"
            "```text\n"
            "first line\nsecond line\n"
            "```\n"
            "\n"
            "File: main.cpp\n"
            "````cpp\n"
            "int a = 1; // ```x```\n"
            "````\n"
            "\n"
            "What do these do?";
        QCOMPARE(compose_message(files, "What do these do?"), expected);
        const MessageParts parts = split_message(expected);
        QCOMPARE(parts.text, std::string("What do these do?"));
        QCOMPARE(parts.files.size(), size_t(2));
        QCOMPARE(parts.files[0].name, std::string("notes.txt"));
        QCOMPARE(parts.files[0].text, std::string("first line\nsecond line"));
        QCOMPARE(parts.files[1].text, std::string("int a = 1; // ```x```"));
        // No typed text: the content ends at the last fence; an empty file has no body.
        const std::vector<AttachedFile> empty{{"empty.md", ""}};
        QCOMPARE(compose_message(empty, ""), std::string("File: empty.md\n```markdown\n```"));
        QCOMPARE(split_message("File: empty.md\n```markdown\n```").files, empty);
        // No files: the typed text alone.
        QCOMPARE(compose_message({}, "just words"), std::string("just words"));
        QCOMPARE(split_message("just words"), (MessageParts{{}, "just words"}));
    }

    void fenceOutgrowsTheLongestRun() {
        const std::vector<AttachedFile> files{{"a.txt", "x ``````` y"}};
        const std::string c = compose_message(files, "");
        QVERIFY(c.starts_with("File: a.txt\n````````text\n"));
        QVERIFY(c.ends_with("\n````````"));
        QCOMPARE(split_message(c).files, files);
    }

    void namesAndLanguages() {
        QCOMPARE(attachment_name("  a\tb\n.py "), std::string("a b .py"));
        QCOMPARE(attachment_name("\n\n"), std::string("file"));
        QCOMPARE(attachment_language("Main.CPP"), std::string("cpp"));
        QCOMPARE(attachment_language("script.py"), std::string("python"));
        QCOMPARE(attachment_language("CMakeLists.txt"), std::string("cmake"));
        QCOMPARE(attachment_language("README"), std::string("text"));
        QCOMPARE(attachment_language(".bashrc"), std::string("text"));
        QCOMPARE(attachment_language("notes.txt"), std::string("text"));
        // A name with a line break is written cleaned, and read back cleaned.
        const std::vector<AttachedFile> odd{{"two\nlines.c", "int x;"}};
        const std::string c = compose_message(odd, "q");
        QVERIFY(c.starts_with("File: two lines.c\n```c\n"));
        QCOMPARE(split_message(c).files.at(0).name, std::string("two lines.c"));
    }

    // compose then split gives the files (trailing newlines dropped) and the text back;
    // and whatever split finds, compose writes back byte for byte.
    void randomRoundTrips() {
        std::mt19937 rng(20261201);
        for (int round = 0; round < 4000; ++round) {
            std::vector<AttachedFile> files(rng() % 4);
            for (auto& f : files) {
                f.name = attachment_name(random_text(rng, 12));
                if (rng() % 2) f.name += std::vector<std::string>{".cpp", ".py", ".txt", ".md", ""}[rng() % 5];
                f.text = random_text(rng, 80);
            }
            const std::string text = random_text(rng, 40);
            const std::string content = compose_message(files, text);
            const MessageParts parts = split_message(content);
            QCOMPARE(compose_message(parts.files, parts.text), content);
            if (!files.empty() && parts.files.empty()) QFAIL(("files lost in: " + content).c_str());
            QVERIFY(parts.files.size() >= files.size());
            for (size_t i = 0; i < files.size(); ++i) {
                QCOMPARE(parts.files[i].name, files[i].name);
                QCOMPARE(parts.files[i].text, trimmed_newlines(files[i].text));
            }
            if (!text.starts_with("File: ")) {
                QCOMPARE(parts.files.size(), files.size());
                QCOMPARE(parts.text, files.empty() ? content : text);
            }
        }
    }

    // Text that only looks like an attachment stays text: split finds no files.
    void lookalikesStayText_data() {
        QTest::addColumn<QString>("content");
        QTest::newRow("no_info_string") << "File: a.txt\n```\nx\n```";
        QTest::newRow("wrong_language") << "File: a.py\n```cpp\nx\n```";
        QTest::newRow("fence_too_long") << "File: a.txt\n````text\nx\n````";
        QTest::newRow("fence_too_short_for_body") << "File: a.txt\n```text\n```x\n```";
        QTest::newRow("unclosed") << "File: a.txt\n```text\nx\n``";
        QTest::newRow("closing_fence_longer") << "File: a.txt\n```text\nx\n````";
        QTest::newRow("text_right_after_fence") << "File: a.txt\n```text\nx\n```more";
        QTest::newRow("one_newline_before_text") << "File: a.txt\n```text\nx\n```\nmore";
        QTest::newRow("blank_line_then_nothing") << "File: a.txt\n```text\nx\n```\n\n";
        QTest::newRow("body_ends_in_newline") << "File: a.txt\n```text\nx\n\n```";
        QTest::newRow("body_one_blank_line") << "File: a.txt\n```text\n\n```";
        QTest::newRow("body_one_blank_line_then_text") << "File: a.txt\n```text\n\n```\n\nhi";
        QTest::newRow("untrimmed_name") << "File:  a.txt\n```text\nx\n```";
        QTest::newRow("no_name_line") << "File: a.txt";
        QTest::newRow("lowercase_prefix") << "file: a.txt\n```text\nx\n```";
        QTest::newRow("leading_space") << " File: a.txt\n```text\nx\n```";
    }
    void lookalikesStayText() {
        QFETCH(QString, content);
        const std::string c = content.toStdString();
        QCOMPARE(split_message(c), (MessageParts{{}, c}));
    }

    // Composed messages with bytes replaced, inserted and deleted: whatever split finds
    // composes back to the very content, and without files the text is the content.
    void mutatedContentsComposeBack() {
        std::mt19937 rng(3629);
        const std::string alphabet = "`\n\n\n xtF";
        for (int round = 0; round < 20000; ++round) {
            std::vector<AttachedFile> files(1 + rng() % 2);
            for (auto& f : files) {
                f.name = std::vector<std::string>{"a.txt", "b.py", "c"}[rng() % 3];
                f.text = random_text(rng, 12);
            }
            std::string c = compose_message(files, rng() % 2 ? random_text(rng, 8) : std::string());
            for (int e = 1 + int(rng() % 3); e > 0 && !c.empty(); --e) {
                const size_t at = rng() % c.size();
                switch (rng() % 3) {
                case 0: c[at] = alphabet[rng() % alphabet.size()]; break;
                case 1: c.insert(c.begin() + long(at), alphabet[rng() % alphabet.size()]); break;
                default: c.erase(at, 1);
                }
            }
            const MessageParts p = split_message(c);
            if (p.files.empty()) QCOMPARE(p.text, c);
            else if (compose_message(p.files, p.text) != c) QFAIL(("does not compose back: " + c).c_str());
        }
    }

    // Typed text that starts with what attaching a file writes: the files attached are
    // read back first, whatever the text goes on with, and the content composes back.
    void typedTextThatLooksLikeFiles() {
        std::mt19937 rng(20261202);
        const std::vector<std::string> tails = {"", "\n\n", "\n", "\v", "\n\nmore", "\n\n\n", "x"};
        for (int round = 0; round < 3000; ++round) {
            std::vector<AttachedFile> files(1 + rng() % 2);
            for (auto& f : files) f = {std::vector<std::string>{"a.txt", "b.py"}[rng() % 2], random_text(rng, 10)};
            const std::vector<AttachedFile> lookalike{{"c.md", random_text(rng, 10)}};
            const std::string typed = compose_message(lookalike, "") + tails[rng() % tails.size()];
            const std::string content = compose_message(files, typed);
            const MessageParts p = split_message(content);
            QCOMPARE(compose_message(p.files, p.text), content);
            QVERIFY(p.files.size() >= files.size());
            for (size_t i = 0; i < files.size(); ++i) QCOMPARE(p.files[i].text, trimmed_newlines(files[i].text));
        }
    }

    // A later block that is not canonical is part of the typed text.
    void laterLookalikeIsText() {
        const std::string c = "File: a.txt\n```text\nx\n```\n\nFile: b.txt\n```\ny\n```";
        const MessageParts p = split_message(c);
        QCOMPARE(p.files.size(), size_t(1));
        QCOMPARE(p.text, std::string("File: b.txt\n```\ny\n```"));
        // Typed text that is a whole block but for what follows it (found by fuzz_attachments):
        // the text, and the files before it stay files.
        const std::vector<AttachedFile> files{{"a.txt", "x"}};
        for (const std::string typed : {"File: b.txt\n```text\ny\n```\vmore", "File: b.txt\n```text\ny\n```\n\n"}) {
            const std::string content = compose_message(files, typed);
            QCOMPARE(split_message(content), (MessageParts{files, typed}));
        }
    }

    void readsTextFiles() {
        QTemporaryDir dir;
        const QString path = dir.filePath(QStringLiteral("notes.txt"));
        write_file(path, "\xEF\xBB\xBFline one\r\nline two\rstill two\r\n\xC3\xA9t\xC3\xA9\n");
        const AttachedFile f = read_attachment(path.toStdString());
        QCOMPARE(f.name, std::string("notes.txt"));
        QCOMPARE(f.text, std::string("line one\nline two\rstill two\n\xC3\xA9t\xC3\xA9\n"));
        // Exactly at the limit is accepted; one byte more is not.
        const QString limit = dir.filePath(QStringLiteral("limit.log"));
        write_file(limit, std::string(4096, 'a'));
        QCOMPARE(read_attachment(limit.toStdString(), 4096).text.size(), size_t(4096));
        write_file(limit, std::string(4097, 'a'));
        try {
            read_attachment(limit.toStdString(), 4096);
            QFAIL("a file over the limit was read");
        } catch (const AttachmentError& e) {
            QVERIFY2(std::string(e.what()).find("limit.log is larger than 4 KiB") != std::string::npos, e.what());
        }
    }

    void refusesWhatIsNotText_data() {
        QTest::addColumn<QByteArray>("bytes");
        QTest::addColumn<QString>("expected");
        QTest::newRow("zero_byte") << QByteArray("%PDF-1.7\n\0\x01\x02", 13) << "not a text file";
        QTest::newRow("latin1") << QByteArray("caf\xE9\n") << "not UTF-8 text";
        QTest::newRow("png") << QByteArray("\x89PNG\r\n\x1A\n") << "not UTF-8 text";
        QTest::newRow("utf16le") << QByteArray("\xFF\xFEh\0i\0", 6) << "UTF-16";
        QTest::newRow("utf16be") << QByteArray("\xFE\xFF\0h\0i", 6) << "UTF-16";
        QTest::newRow("cut_utf8") << QByteArray("ok \xE2\x82") << "not UTF-8 text";
    }
    void refusesWhatIsNotText() {
        QFETCH(QByteArray, bytes);
        QFETCH(QString, expected);
        QTemporaryDir dir;
        const QString path = dir.filePath(QStringLiteral("paper.bin"));
        write_file(path, bytes.toStdString());
        try {
            read_attachment(path.toStdString());
            QFAIL("not refused");
        } catch (const AttachmentError& e) {
            const std::string what = e.what();
            QVERIFY2(what.starts_with("paper.bin"), e.what());
            QVERIFY2(what.find(expected.toStdString()) != std::string::npos, e.what());
        }
    }

    void refusesFoldersAndMissingFiles() {
        QTemporaryDir dir;
        for (const QString& name : {QStringLiteral("sub"), QStringLiteral("gone.txt")}) {
            if (name == QLatin1String("sub")) QVERIFY(QDir(dir.path()).mkdir(name));
            try {
                read_attachment(dir.filePath(name).toStdString());
                QFAIL("not refused");
            } catch (const AttachmentError& e) {
                QVERIFY2(std::string(e.what()).starts_with(name.toStdString()), e.what());
            }
        }
    }

    void titlesOfMessagesWithFiles() {
        const std::vector<AttachedFile> files{{"report.md", "# Q3\nnumbers"}, {"data.csv", "a,b"}};
        QCOMPARE(make_auto_title(compose_message(files, "Summarise the report\nin three lines")),
                 std::string("Summarise the report"));
        QCOMPARE(make_auto_title(compose_message(files, "")), std::string("report.md, data.csv"));
        Store s = Store::open_memory();
        const int64_t c = s.create_conversation({});
        NewMessage m;
        m.conversation_id = c;
        m.content = compose_message(files, "");
        s.add_message(m);
        QCOMPARE(s.conversation(c).title, std::string("report.md, data.csv"));
    }
};

QTEST_APPLESS_MAIN(TestAttachments)
#include "test_attachments.moc"
