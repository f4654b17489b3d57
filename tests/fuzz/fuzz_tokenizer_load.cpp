// libFuzzer target: tokenizer.json (and, after the first NUL byte, tokenizer_config.json)
// from arbitrary bytes. Loading must either succeed or throw cetus::Error; a loaded
// tokenizer must then encode and decode a fixed text without crashing.
#include "cetus/error.h"
#include "cetus/tokenizer.h"

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    const size_t nul = input.find('\0');
    const std::string_view json = input.substr(0, nul);
    const std::string_view config =
        nul == std::string_view::npos ? std::string_view() : input.substr(nul + 1);
    try {
        const auto tok = cetus::Tokenizer::from_json(json, config, "fuzz/tokenizer.json");
        for (const bool special : {true, false}) {
            const auto ids = tok.encode("Hello, world! 123 <｜User｜> 中文 \xff", special);
            (void)tok.decode(ids);
        }
        const cetus::ChatMessage m[] = {{"system", "s"}, {"user", "u"}, {"assistant", "a"}};
        (void)tok.apply_chat_template(m, true);
    } catch (const cetus::Error&) {
        // Rejected with a clear error: what we want for bad input.
    }
    return 0;
}
