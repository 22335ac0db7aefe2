/*
 * LD_PRELOAD shim for tests/persistence.rs: records which file sizes were
 * made durable, so a test can tell "fsynced before the reply" from
 * "written before the reply" (kill -9 keeps the page cache, so a crash test
 * alone cannot).
 *
 * Built by the test itself: cc -shared -fPIC -o libfsync_shim.so fsync_shim.c -ldl
 *
 * Every successful fsync(2) / fdatasync(2) on any descriptor appends one line
 * to the file named by ANYKV_FSYNC_SHIM_LOG:
 *
 *     <unix ns when the call returned> <unix ns when it started> <call> <size> <path>
 *
 * <size> is the file's size (fstat) taken *before* the real call started:
 * data appended while the call runs may or may not be covered, so only what
 * was there before counts as durable. <path> is readlink(/proc/self/fd/N).
 * The line is written (one O_APPEND write) before the call returns to the
 * caller, so it is in the log before anything the caller does afterwards,
 * such as sending a reply. A line with the call `begin-<call>` (both times
 * its start) is written before the real call starts, so a call that never
 * returned before a kill is in the log too. sync_file_range(2) is logged too (as
 * "sync_file_range"), but it makes nothing durable (no metadata, no device
 * cache flush), so the test does not count it.
 *
 * ANYKV_FSYNC_SHIM_DELAY_MS=n: sleep n ms between the fstat and the real
 * call (a slow disk), so a reply that does not wait for the fsync reliably
 * arrives before the fsync's line is logged.
 *
 * ANYKV_FSYNC_SHIM_DELAY_PATH=s: apply that delay only to files whose path
 * contains s (e.g. a snapshot's temporary file, to hold a background save
 * in progress).
 *
 * ANYKV_FSYNC_SHIM_MODE=skip: fsync and fdatasync return 0 at once without
 * syncing or logging anything: a server that never fsyncs. The test uses it
 * to prove that its check fails when the fsync is missing.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_sync_file_range)(int, off64_t, off64_t, unsigned int);
static int log_fd = -1;
static int skip;
static long delay_ms;
static const char *delay_path;

__attribute__((constructor)) static void shim_init(void) {
    real_fsync = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    real_sync_file_range =
        (int (*)(int, off64_t, off64_t, unsigned int))dlsym(RTLD_NEXT, "sync_file_range");
    const char *log = getenv("ANYKV_FSYNC_SHIM_LOG");
    if (log && *log) {
        log_fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    }
    const char *mode = getenv("ANYKV_FSYNC_SHIM_MODE");
    skip = mode && strcmp(mode, "skip") == 0;
    const char *delay = getenv("ANYKV_FSYNC_SHIM_DELAY_MS");
    if (delay) {
        delay_ms = strtol(delay, NULL, 10);
    }
    delay_path = getenv("ANYKV_FSYNC_SHIM_DELAY_PATH");
    if (delay_path && !*delay_path) {
        delay_path = NULL;
    }
}

static void fd_path(int fd, char *out, size_t cap) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, out, cap - 1);
    if (n < 0) {
        n = 0;
    }
    out[n] = 0;
}

static void now(struct timespec *ts) { clock_gettime(CLOCK_REALTIME, ts); }

static void log_line(const struct timespec *start, const char *call, long long size,
                     const char *path) {
    if (log_fd < 0) {
        return;
    }
    struct timespec ts;
    now(&ts);
    char line[4400];
    int len = snprintf(line, sizeof line, "%lld%09ld %lld%09ld %s %lld %s\n",
                       (long long)ts.tv_sec, ts.tv_nsec, (long long)start->tv_sec,
                       start->tv_nsec, call, size, path);
    if (len > 0 && (size_t)len < sizeof line) {
        ssize_t w = write(log_fd, line, (size_t)len);
        (void)w;
    }
}

static int synced(const char *call, int fd, int (*real)(int)) {
    if (skip) {
        return 0;
    }
    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    struct timespec start;
    now(&start);
    struct stat st;
    long long size = fstat(fd, &st) == 0 ? (long long)st.st_size : -1;
    char path[4096];
    fd_path(fd, path, sizeof path);
    if (delay_ms > 0 && (!delay_path || strstr(path, delay_path))) {
        struct timespec d = {delay_ms / 1000, (delay_ms % 1000) * 1000000L};
        while (nanosleep(&d, &d) != 0 && errno == EINTR) {
        }
    }
    char begin[32];
    snprintf(begin, sizeof begin, "begin-%s", call);
    log_line(&start, begin, size, path);
    int r = real(fd);
    int saved = errno;
    if (r == 0) {
        log_line(&start, call, size, path);
    }
    errno = saved;
    return r;
}

int fsync(int fd) { return synced("fsync", fd, real_fsync); }

int fdatasync(int fd) { return synced("fdatasync", fd, real_fdatasync); }

int sync_file_range(int fd, off64_t offset, off64_t nbytes, unsigned int flags) {
    if (!real_sync_file_range) {
        errno = ENOSYS;
        return -1;
    }
    struct timespec start;
    now(&start);
    int r = real_sync_file_range(fd, offset, nbytes, flags);
    int saved = errno;
    if (r == 0) {
        char path[4096];
        fd_path(fd, path, sizeof path);
        log_line(&start, "sync_file_range", (long long)(offset + nbytes), path);
    }
    errno = saved;
    return r;
}
