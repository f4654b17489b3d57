// libFuzzer target for importing conversations (Store::import_json, what
// `cetus-cli history import` and the app's Import run on a file the user picks).
// Each input is imported into a fresh in-memory store. A StorageError
// (BadImport) is the expected answer to a bad file, and then nothing may have
// been imported. An accepted file must leave a store that passes its integrity
// check, whose conversations all open, and whose JSON export imports into a
// second store and exports again byte for byte (the format is lossless).
// Anything else escaping, or a sanitizer report, is a finding.
#include "cetus/storage/store.h"

#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>
#include <string_view>

namespace {

using cetus::storage::ArchiveFilter;
using cetus::storage::Store;
using cetus::storage::StorageError;

void require(bool ok) {
    if (!ok) __builtin_trap();
}

std::string export_all(Store& store) {
    std::ostringstream out;
    store.export_json(out);
    return out.str();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    Store store = Store::open_memory();
    cetus::storage::ImportResult result;
    try {
        result = store.import_json(text, "fuzz.json");
    } catch (const StorageError&) {
        require(store.count_conversations(ArchiveFilter::Include) == 0);  // all or nothing
        return 0;
    }
    require(store.check_integrity().empty());
    require(store.count_conversations(ArchiveFilter::Include) == result.n_conversations);
    for (int64_t id : result.conversation_ids) {
        (void)store.open_conversation(id);
        (void)store.export_markdown(id);
        (void)store.statistics(id);
    }
    const std::string first = export_all(store);
    Store second = Store::open_memory();
    const auto again = second.import_json(first, "fuzz-export.json");  // an export must import
    require(again.n_conversations == result.n_conversations && again.n_messages == result.n_messages);
    require(export_all(second) == first);
    return 0;
}
