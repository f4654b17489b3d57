// OpenMP's default wait policy spins at every barrier. When other programs
// compete for the cores (a desktop, a build, the GUI thread) a spinning worker
// waits for a descheduled one and decoding slows down by up to 100x (measured:
// medium-cpu decode 0.6 tok/s spinning vs 65 tok/s passive with a second busy
// process on 2 cores). libgomp reads the policy when it is loaded, before main,
// so the mains set it and re-execute themselves once. OMP_WAIT_POLICY set by
// the user wins.
#pragma once

#include <cstdlib>
#include <unistd.h>

namespace cetus::app {

inline void ensure_passive_omp_wait(char** argv) {
    if (std::getenv("OMP_WAIT_POLICY")) return;
    if (setenv("OMP_WAIT_POLICY", "PASSIVE", 1) != 0) return;
    execv("/proc/self/exe", argv);  // returns only on failure: then carry on as we are
}

}  // namespace cetus::app
