// Strict JSON parsing shared by the loaders: malformed JSON and duplicate keys
// at any depth become cetus::Error(BadFormat) naming the source file.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

namespace cetus {

nlohmann::json parse_json_strict(const std::string& text, const std::string& source);

}  // namespace cetus
