// libFuzzer target for attached files inside message content (split_message), which
// runs on every user message the app shows, imported ones included. Each input is
// tried two ways:
//   1. as a message's content: what split_message finds must compose back to the
//      same bytes when it finds files, and be the whole content as text when not;
//   2. as files and a typed text (cut from the bytes at zero bytes): composing them
//      and splitting again must give the files back, trailing newlines dropped,
//      and compose to the same content again.
// Anything else is a finding.
#include "cetus/storage/attachments.h"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace {

using cetus::storage::AttachedFile;
using cetus::storage::MessageParts;

void require(bool ok) {
    if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view bytes(reinterpret_cast<const char*>(data), size);

    const MessageParts parts = cetus::storage::split_message(bytes);
    if (parts.files.empty()) require(parts.text == bytes);
    else require(cetus::storage::compose_message(parts.files, parts.text) == bytes);

    // Zero bytes cut the input into name, text, name, text, ..., typed text.
    std::vector<std::string> pieces;
    size_t at = 0;
    for (;;) {
        const size_t z = bytes.find('\0', at);
        pieces.emplace_back(bytes.substr(at, z == std::string_view::npos ? std::string_view::npos : z - at));
        if (z == std::string_view::npos) break;
        at = z + 1;
    }
    std::vector<AttachedFile> files;
    for (size_t i = 0; i + 1 < pieces.size(); i += 2)
        files.push_back({cetus::storage::attachment_name(pieces[i]), pieces[i + 1]});
    const std::string text = pieces.size() % 2 == 1 ? pieces.back() : std::string();
    const std::string content = cetus::storage::compose_message(files, text);
    const MessageParts back = cetus::storage::split_message(content);
    require(cetus::storage::compose_message(back.files, back.text) == content);
    require(back.files.size() >= files.size());
    for (size_t i = 0; i < files.size(); ++i) {
        std::string_view expected = files[i].text;
        while (!expected.empty() && expected.back() == '\n') expected.remove_suffix(1);
        require(back.files[i].name == files[i].name);
        require(back.files[i].text == expected);
    }
    if (!text.starts_with("File: ")) {
        require(back.files.size() == files.size());
        require(back.text == (files.empty() ? content : text));
    }
    return 0;
}
