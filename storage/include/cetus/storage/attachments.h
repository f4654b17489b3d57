// Text files attached to a user message. The model reads them as part of the
// message, so they are kept inside the message's content in one canonical form,
// and everything that handles messages (the prompt, the context fit, search,
// export and import, remote endpoints) treats them as the text they are:
//
//     File: notes.txt
//     ```text
//     …the file's text, without its trailing newlines…
//     ```
//
//     File: main.cpp
//     ````cpp
//     …a text holding ``` gets a longer fence…
//     ````
//
//     The question typed with them.
//
// Blocks are separated by one blank line, and the typed text follows the last one
// after another. The fence is one backtick longer than the longest run of backticks
// in the text (at least three), so the first line that is exactly the fence closes
// it. The info string is the language named by the file's extension ("text" for an
// unknown one). A message without files is its typed text alone.
//
// split_message() recognises only that form: when it finds files, compose_message()
// of what it returns gives the content back byte for byte, so nothing a user typed
// is ever shown as a file unless it is exactly what attaching that file would write.
#pragma once

#include <cstddef>
#include <filesystem>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace cetus::storage {

struct AttachedFile {
    std::string name;  // the file's name, no folders
    std::string text;  // UTF-8
    bool operator==(const AttachedFile&) const = default;
};

struct MessageParts {
    std::vector<AttachedFile> files;
    std::string text;  // what the user typed
    bool operator==(const MessageParts&) const = default;
};

// The name as it appears in a block: control characters become spaces, spaces at
// either end go, and an empty name becomes "file".
std::string attachment_name(std::string_view name);
// The fence's info string for a file name: "cpp" for main.cpp, "text" when unknown.
std::string attachment_language(std::string_view name);

// Trailing newlines of each file's text are dropped (the fence closes on its own line).
std::string compose_message(std::span<const AttachedFile> files, std::string_view text);
// The files and typed text of a message's content; no files when the content does not
// start with a block in the canonical form (then text is the whole content).
MessageParts split_message(std::string_view content);

class AttachmentError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Files up to 1 MiB can be attached (about 250,000 tokens: more than any context).
inline constexpr size_t k_max_attachment_bytes = size_t(1) << 20;

// Reads a text file to attach: UTF-8 (a byte-order mark is dropped), CRLF line ends
// become LF. Throws AttachmentError naming the file when it cannot be read, is a
// folder, is larger than max_bytes, or is not UTF-8 text (a zero byte, UTF-16, or
// bytes that are not UTF-8: PDFs, images, office documents).
AttachedFile read_attachment(const std::filesystem::path& path, size_t max_bytes = k_max_attachment_bytes);

}  // namespace cetus::storage
