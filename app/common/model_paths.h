// Where the bundled demo model is found (Qt-free, header-only; used by both mains).
//
// Folders searched, in this order; the first one holding a model folder (a sub-folder
// with a config.json, first by name) wins:
//   1. $CETUS_MODELS_DIR, when set (packagers, tests, several installs side by side);
//   2. <folder of the executable>/../share/cetus/models: an installed or unpacked package
//      wherever it lies (the .tar.gz anywhere, `dpkg-deb -x` into a scratch root);
//   3. CETUS_INSTALL_MODELS_DIR: <CMAKE_INSTALL_PREFIX>/share/cetus/models, fixed at configure time;
//   4. only for a binary run from its build folder (one not in a .../bin folder):
//      <source tree>/resources/models (CETUS_SOURCE_DIR) and ./resources/models.
// Nothing here loads anything: the caller opens the folder it gets.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

namespace cetus::app {

// The folder of the running executable ("" when /proc is unavailable).
inline std::filesystem::path executable_dir() {
    std::error_code ec;
    const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    return ec ? std::filesystem::path() : exe.parent_path();
}

// The folders that may hold bundled model folders, in search order (existing or not).
inline std::vector<std::filesystem::path> bundled_model_roots() {
    std::vector<std::filesystem::path> roots;
    if (const char* env = std::getenv("CETUS_MODELS_DIR"); env && *env) roots.emplace_back(env);
    const std::filesystem::path exe_dir = executable_dir();
    if (!exe_dir.empty()) roots.push_back(exe_dir.parent_path() / "share" / "cetus" / "models");
#ifdef CETUS_INSTALL_MODELS_DIR
    roots.emplace_back(CETUS_INSTALL_MODELS_DIR);
#endif
    if (exe_dir.empty() || exe_dir.filename() != "bin") {
#ifdef CETUS_SOURCE_DIR
        roots.push_back(std::filesystem::path(CETUS_SOURCE_DIR) / "resources" / "models");
#endif
        roots.emplace_back("resources/models");
    }
    return roots;
}

// True when dir looks like a model folder (has a config.json).
inline bool is_model_dir(const std::filesystem::path& dir) {
    std::error_code ec;
    return std::filesystem::is_regular_file(dir / "config.json", ec);
}

// The bundled model folder to open by default, as an absolute path; "" when none exists.
inline std::string find_bundled_model() {
    for (const std::filesystem::path& root : bundled_model_roots()) {
        std::error_code ec;
        if (!std::filesystem::is_directory(root, ec)) continue;
        std::vector<std::filesystem::path> models;
        for (std::filesystem::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec))
            if (it->is_directory(ec) && is_model_dir(it->path())) models.push_back(it->path());
        if (models.empty()) continue;
        std::sort(models.begin(), models.end());
        const std::filesystem::path found = std::filesystem::weakly_canonical(models.front(), ec);
        return ec ? models.front().string() : found.string();
    }
    return {};
}

// The search list as one line, for "no model found" messages.
inline std::string bundled_model_roots_text() {
    std::string text;
    for (const std::filesystem::path& root : bundled_model_roots()) text += (text.empty() ? "" : ", ") + root.string();
    return text;
}

}  // namespace cetus::app
