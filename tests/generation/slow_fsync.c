// Preloaded (LD_PRELOAD) by the test_prefix_disk_slow_disk run: fsync and fdatasync
// wait CETUS_TEST_SLOW_FSYNC_MS milliseconds before flushing, as a disk busy with
// other writes does, so that the prefix files' writer falls behind the requests.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

// Found by the test with dlsym: the run is slowed indeed.
int cetus_test_slow_fsync_ms(void) {
    const char* ms = getenv("CETUS_TEST_SLOW_FSYNC_MS");
    return ms ? atoi(ms) : 0;
}

static void wait_ms(int ms) {
    struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0) {
    }
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) *(void**)(&real) = dlsym(RTLD_NEXT, "fsync");
    wait_ms(cetus_test_slow_fsync_ms());
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) *(void**)(&real) = dlsym(RTLD_NEXT, "fdatasync");
    wait_ms(cetus_test_slow_fsync_ms());
    return real(fd);
}
