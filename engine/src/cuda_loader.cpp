// The plug-in is looked for, in order: $CETUS_CUDA_PLUGIN (a file), beside the
// executable, in ../lib/cetus next to it (relocatable installs), in the
// installed library folder, and in the build tree this engine was compiled in.
// A missing plug-in or driver is not an error until the CUDA device is asked for.
#include "cuda_loader.h"

#include "cuda_plugin.h"
#include "log.h"

#include <dlfcn.h>

#include <cstdlib>

#include <filesystem>
#include <mutex>
#include <vector>

namespace cetus {
namespace {

struct Plugin {
    void* handle = nullptr;
    cetus_cuda_probe_fn probe = nullptr;
    cetus_cuda_create_fn create = nullptr;
    std::string path, error;
};

std::vector<std::filesystem::path> candidates() {
    std::vector<std::filesystem::path> c;
    if (const char* env = std::getenv("CETUS_CUDA_PLUGIN"); env && *env) c.emplace_back(env);
    std::error_code ec;
    const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (!ec) {
        c.push_back(exe.parent_path() / "libcetus-cuda.so");
        c.push_back(exe.parent_path() / ".." / "lib" / "cetus" / "libcetus-cuda.so");
    }
#ifdef CETUS_CUDA_PLUGIN_INSTALL_PATH
    c.emplace_back(CETUS_CUDA_PLUGIN_INSTALL_PATH);
#endif
#ifdef CETUS_CUDA_PLUGIN_BUILD_PATH
    c.emplace_back(CETUS_CUDA_PLUGIN_BUILD_PATH);
#endif
    return c;
}

const Plugin& plugin() {
    static Plugin p;
    static std::once_flag once;
    std::call_once(once, [] {
        std::string tried;
        for (const auto& path : candidates()) {
            std::error_code ec;
            if (!std::filesystem::is_regular_file(path, ec)) {
                tried += (tried.empty() ? "" : ", ") + path.string();
                continue;
            }
            void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
            if (!h) {
                const char* e = dlerror();
                p.error = "found " + path.string() + " but it cannot be loaded: " + (e ? e : "unknown error");
                return;
            }
            auto abi = reinterpret_cast<cetus_cuda_abi_fn>(dlsym(h, "cetus_cuda_abi"));
            p.probe = reinterpret_cast<cetus_cuda_probe_fn>(dlsym(h, "cetus_cuda_probe"));
            p.create = reinterpret_cast<cetus_cuda_create_fn>(dlsym(h, "cetus_cuda_create"));
            if (!abi || !p.probe || !p.create || abi() != k_cuda_plugin_abi) {
                p.error = path.string() + " is not a CUDA plug-in of this Cetus version";
                p.probe = nullptr;
                p.create = nullptr;
                dlclose(h);
                return;
            }
            p.handle = h;  // never closed: backends' code lives in it
            p.path = path.string();
            engine_log().info("CUDA plug-in: {}", p.path);
            return;
        }
        p.error = "this build has no CUDA plug-in (libcetus-cuda.so not found; looked in " + tried + ")";
    });
    return p;
}

}  // namespace

CudaProbe probe_cuda() {
    const Plugin& p = plugin();
    CudaProbe r;
    if (!p.handle) {
        r.text = p.error;
        return r;
    }
    r.plugin = p.path;
    char text[512] = {};
    const int n = p.probe(text, sizeof text);
    r.usable = n > 0;
    r.text = text;
    return r;
}

std::unique_ptr<Backend> create_cuda_backend(const Model& model, int64_t capacity, KvCacheType cache_type,
                                             const LoadProgress& progress) {
    const Plugin& p = plugin();
    if (!p.handle) throw Error(ErrorCode::Device, p.error);
    const ModelConfig& c = model.config();
    const int64_t d_r = c.qk_rope_head_dim;
    // Rotary angles for every position the cache can hold, computed by the CPU's
    // own Rope so both backends rotate with the same numbers.
    std::vector<float> table(static_cast<size_t>(capacity * d_r));
    for (int64_t pos = 0; pos < capacity; ++pos) model.rope().angles(pos, table.data() + pos * d_r);
    CudaBackendArgs a;
    a.model = &model;
    a.capacity = capacity;
    a.cache_bf16 = cache_type == KvCacheType::BF16;
    a.rope_table = table.data();
    a.rope_interleave = c.rope_interleave;
    a.softmax_scale = float(c.softmax_scale());
    a.n_moe_layers = c.n_moe_layers();
    a.progress = progress.report;
    a.cancel = progress.cancel;
    a.log = [](int level, const std::string& m) {
        if (level > 0) engine_log().warn("cuda: {}", m);
        else engine_log().info("cuda: {}", m);
    };
    std::unique_ptr<Backend> b(p.create(&a));
    if (!b) throw Error(ErrorCode::Device, p.path + ": the CUDA backend could not be created");
    return b;
}

}  // namespace cetus
