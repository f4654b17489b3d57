// The switch of programmatic dependent launch (pdl.cuh), set by the backend.
#include "kernels.h"

#include <atomic>

namespace cetus::cuda {
namespace {
std::atomic<bool> g_programmatic{false};
}  // namespace

void set_programmatic_launch(bool on) { g_programmatic.store(on, std::memory_order_relaxed); }
bool programmatic_launch() { return g_programmatic.load(std::memory_order_relaxed); }

}  // namespace cetus::cuda
