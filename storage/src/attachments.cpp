// Attached text files inside a message's content: the canonical form, its parser,
// and reading a file to attach. See attachments.h for the form.
#include "cetus/storage/attachments.h"

#include "text_util.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <system_error>
#include <utility>

namespace cetus::storage {

namespace {

constexpr std::string_view k_file_prefix = "File: ";
constexpr std::string_view k_between = "\n\n";

size_t longest_backtick_run(std::string_view text) {
    size_t best = 0, run = 0;
    for (char c : text) {
        run = c == '`' ? run + 1 : 0;
        best = std::max(best, run);
    }
    return best;
}

size_t fence_length(std::string_view body) { return std::max<size_t>(3, longest_backtick_run(body) + 1); }

std::string_view without_trailing_newlines(std::string_view text) {
    while (!text.empty() && text.back() == '\n') text.remove_suffix(1);
    return text;
}

std::string lower_ascii(std::string_view s) {
    std::string out(s);
    for (char& c : out)
        if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
    return out;
}

void append_block(std::string& out, const AttachedFile& f) {
    const std::string_view body = without_trailing_newlines(f.text);
    const std::string fence(fence_length(body), '`');
    out += k_file_prefix;
    out += attachment_name(f.name);
    out += '\n';
    out += fence;
    out += attachment_language(f.name);
    out += '\n';
    if (!body.empty()) {
        out += body;
        out += '\n';
    }
    out += fence;
}

// Parses one block at `at`; on success sets `file` and returns the offset just after
// its closing fence, otherwise npos. Only the canonical form is taken.
size_t parse_block(std::string_view content, size_t at, AttachedFile& file) {
    constexpr size_t fail = std::string_view::npos;
    if (content.substr(at, k_file_prefix.size()) != k_file_prefix) return fail;
    size_t p = at + k_file_prefix.size();
    const size_t name_end = content.find('\n', p);
    if (name_end == std::string_view::npos) return fail;
    const std::string_view name = content.substr(p, name_end - p);
    if (attachment_name(name) != name) return fail;
    p = name_end + 1;
    size_t n = 0;
    while (p + n < content.size() && content[p + n] == '`') ++n;
    if (n < 3) return fail;
    const std::string_view fence = content.substr(p, n);
    const size_t info_end = content.find('\n', p + n);
    if (info_end == std::string_view::npos) return fail;
    if (content.substr(p + n, info_end - p - n) != attachment_language(name)) return fail;
    const size_t body_at = info_end + 1;
    size_t close;  // where the closing fence starts
    if (content.substr(body_at, n) == fence) {
        close = body_at;  // an empty file
    } else {
        const size_t nl = content.find("\n" + std::string(fence), body_at);
        // (At body_at itself: a body of one blank line, which compose never writes.)
        if (nl == std::string_view::npos || nl == body_at) return fail;
        close = nl + 1;
    }
    const std::string_view body = close == body_at ? std::string_view() : content.substr(body_at, close - 1 - body_at);
    if (!body.empty() && body.back() == '\n') return fail;  // compose drops trailing newlines
    if (fence_length(body) != n) return fail;
    const size_t end = close + n;
    if (end < content.size() && content[end] == '`') return fail;
    file.name = std::string(name);
    file.text = std::string(body);
    return end;
}

}  // namespace

std::string attachment_name(std::string_view name) {
    std::string out;
    out.reserve(name.size());
    for (char c : name) {
        const auto byte = static_cast<unsigned char>(c);
        out += byte < 0x20 || byte == 0x7F ? ' ' : c;
    }
    const size_t first = out.find_first_not_of(' ');
    if (first == std::string::npos) return "file";
    out.erase(0, first);
    out.erase(out.find_last_not_of(' ') + 1);
    return out;
}

std::string attachment_language(std::string_view name) {
    static constexpr std::array<std::pair<std::string_view, std::string_view>, 40> k_languages{{
        {"c", "c"},          {"h", "c"},           {"cc", "cpp"},       {"cpp", "cpp"},     {"cxx", "cpp"},
        {"hh", "cpp"},       {"hpp", "cpp"},       {"hxx", "cpp"},      {"cu", "cuda"},     {"cuh", "cuda"},
        {"py", "python"},    {"rs", "rust"},       {"go", "go"},        {"java", "java"},   {"kt", "kotlin"},
        {"js", "javascript"}, {"mjs", "javascript"}, {"ts", "typescript"}, {"cs", "csharp"}, {"rb", "ruby"},
        {"php", "php"},      {"swift", "swift"},   {"sh", "bash"},      {"bash", "bash"},   {"zsh", "bash"},
        {"sql", "sql"},      {"html", "html"},     {"htm", "html"},     {"css", "css"},     {"xml", "xml"},
        {"json", "json"},    {"yaml", "yaml"},     {"yml", "yaml"},     {"toml", "toml"},   {"ini", "ini"},
        {"md", "markdown"},  {"markdown", "markdown"}, {"tex", "latex"}, {"cmake", "cmake"}, {"csv", "csv"},
    }};
    const std::string clean = attachment_name(name);
    const size_t dot = clean.rfind('.');
    if (dot != std::string::npos && dot > 0) {
        const std::string ext = lower_ascii(std::string_view(clean).substr(dot + 1));
        for (const auto& [e, language] : k_languages)
            if (e == ext) return std::string(language);
    }
    if (lower_ascii(clean) == "cmakelists.txt") return "cmake";
    if (lower_ascii(clean) == "makefile") return "make";
    return "text";
}

std::string compose_message(std::span<const AttachedFile> files, std::string_view text) {
    std::string out;
    for (size_t i = 0; i < files.size(); ++i) {
        if (i > 0) out += k_between;
        append_block(out, files[i]);
    }
    if (!text.empty()) {
        if (!files.empty()) out += k_between;
        out += text;
    }
    return out;
}

MessageParts split_message(std::string_view content) {
    MessageParts parts;
    size_t p = 0;
    for (;;) {
        // A block is one when the content ends after it, or a blank line and more follow it
        // (compose writes nothing after the last file but typed text).
        AttachedFile f;
        const size_t end = parse_block(content, p, f);
        if (end == std::string_view::npos ||
            (end < content.size() && (content.substr(end, k_between.size()) != k_between ||
                                      end + k_between.size() == content.size()))) {
            if (parts.files.empty() || p == content.size()) break;  // not a message with files
            parts.text = std::string(content.substr(p));  // the typed text, whatever it looks like
            return parts;
        }
        parts.files.push_back(std::move(f));
        if (end == content.size()) return parts;
        p = end + k_between.size();
    }
    return MessageParts{{}, std::string(content)};
}

AttachedFile read_attachment(const std::filesystem::path& path, size_t max_bytes) {
    // The name as UTF-8 (a name in another encoding keeps its ASCII letters).
    std::string shown = path.filename().string();
    if (!detail::valid_utf8(shown))
        for (char& c : shown)
            if (static_cast<unsigned char>(c) >= 0x80) c = '?';
    std::error_code ec;
    const auto status = std::filesystem::status(path, ec);
    if (ec || !std::filesystem::exists(status))
        throw AttachmentError(shown + ": cannot be read (" + (ec ? ec.message() : "no such file") + ")");
    if (std::filesystem::is_directory(status)) throw AttachmentError(shown + " is a folder, not a file");
    // Not a device or a pipe either: reading one could wait for ever or never end.
    if (!std::filesystem::is_regular_file(status)) throw AttachmentError(shown + " is not a regular file");
    std::ifstream in(path, std::ios::binary);
    if (!in) throw AttachmentError(shown + ": cannot be read (" + std::strerror(errno) + ")");
    std::string bytes;
    bytes.resize(max_bytes + 1);
    in.read(bytes.data(), std::streamsize(bytes.size()));
    if (in.bad()) throw AttachmentError(shown + ": cannot be read (a read error)");
    bytes.resize(size_t(in.gcount()));
    if (bytes.size() > max_bytes) {
        const std::string limit = max_bytes % (size_t(1) << 20) == 0 ? std::to_string(max_bytes >> 20) + " MiB"
                                  : max_bytes % 1024 == 0             ? std::to_string(max_bytes >> 10) + " KiB"
                                                                      : std::to_string(max_bytes) + " bytes";
        throw AttachmentError(shown + " is larger than " + limit + ", the most Cetus attaches of one file");
    }
    if (bytes.starts_with("\xFF\xFE") || bytes.starts_with("\xFE\xFF"))
        throw AttachmentError(shown + " is UTF-16 text; Cetus attaches UTF-8 text (save it as UTF-8)");
    if (bytes.find('\0') != std::string::npos)
        throw AttachmentError(shown + " is not a text file (it holds zero bytes); Cetus attaches UTF-8 text files");
    if (!detail::valid_utf8(bytes))
        throw AttachmentError(shown + " is not UTF-8 text; Cetus attaches UTF-8 text files (code, notes, logs)");
    if (bytes.starts_with("\xEF\xBB\xBF")) bytes.erase(0, 3);
    std::string text;
    text.reserve(bytes.size());
    for (size_t i = 0; i < bytes.size(); ++i)
        if (!(bytes[i] == '\r' && i + 1 < bytes.size() && bytes[i + 1] == '\n')) text += bytes[i];
    return AttachedFile{attachment_name(shown), std::move(text)};
}

}  // namespace cetus::storage
