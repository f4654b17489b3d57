// nlohmann::json keeps the last of duplicate keys silently; a model file with
// two values for one key is ambiguous, so we reject it through the parser callback.
#include "json_util.h"

#include "cetus/error.h"

#include <set>
#include <vector>

namespace cetus {

nlohmann::json parse_json_strict(const std::string& text, const std::string& source) {
    std::vector<std::set<std::string>> keys;
    std::string duplicate;
    auto callback = [&](int /*depth*/, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
        using E = nlohmann::json::parse_event_t;
        if (event == E::object_start) {
            keys.emplace_back();
        } else if (event == E::object_end) {
            if (!keys.empty()) keys.pop_back();
        } else if (event == E::key && !keys.empty()) {
            const auto& k = parsed.get_ref<const std::string&>();
            if (!keys.back().insert(k).second && duplicate.empty()) duplicate = k;
        }
        return true;
    };
    // nlohmann stops reading at a NUL byte and accepts whatever came before, so
    // "{}\0<anything>" would pass; raw NUL is never valid JSON text.
    if (auto nul = text.find('\0'); nul != std::string::npos)
        throw Error(ErrorCode::BadFormat, source + ": invalid JSON: NUL byte at offset " + std::to_string(nul));
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(text, callback, /*allow_exceptions=*/true);
    } catch (const nlohmann::json::exception& e) {
        throw Error(ErrorCode::BadFormat, source + ": invalid JSON: " + e.what());
    }
    if (!duplicate.empty())
        throw Error(ErrorCode::BadFormat, source + ": duplicate key \"" + duplicate + "\"");
    return j;
}

}  // namespace cetus
