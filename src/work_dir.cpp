#include "src/work_dir.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <time.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "src/file_io.hpp"
#include "src/log.hpp"

namespace ur {

const char kScriptFilePrefix[] = "ur-job.";

namespace {

std::string sys_error(const std::string& what, int err) {
    return what + ": " + std::strerror(err);
}

int close_retry(int fd) {
    // close() is not retried on EINTR: on Linux and illumos the fd is
    // released anyway and retrying could close someone else's.
    return ::close(fd);
}

// Removes files named kScriptFilePrefix* in `dir`.  Best effort: a file we
// cannot remove is reported but does not fail init().
bool remove_stale_files(const std::string& dir, std::string& error) {
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) {
        error = sys_error("cannot open " + dir, errno);
        return false;
    }
    DIR* d = ::fdopendir(dfd);
    if (!d) {
        error = sys_error("cannot read " + dir, errno);
        close_retry(dfd);
        return false;
    }
    std::vector<std::string> stale;
    const size_t plen = sizeof kScriptFilePrefix - 1;
    while (struct dirent* e = ::readdir(d)) {
        if (std::strncmp(e->d_name, kScriptFilePrefix, plen) == 0)
            stale.emplace_back(e->d_name);
    }
    bool ok = true;
    for (const std::string& name : stale) {
        // unlinkat without AT_REMOVEDIR never removes a directory.
        if (::unlinkat(dfd, name.c_str(), 0) != 0 && errno != ENOENT) {
            error = sys_error("cannot remove stale " + dir + "/" + name, errno);
            ok = false;
        }
    }
    ::closedir(d);  // closes dfd
    return ok;
}

}  // namespace

void remove_stale_work_dirs(const std::string& parent, const std::string& prefix) {
    DIR* d = ::opendir(parent.c_str());
    if (!d) return;
    std::vector<std::string> found;
    while (struct dirent* e = ::readdir(d)) {
        std::string name = e->d_name;
        if (name.size() == prefix.size() + 6 && name.compare(0, prefix.size(), prefix) == 0)
            found.push_back(parent + "/" + name);
    }
    ::closedir(d);
    for (const std::string& dir : found) {
        struct stat st;
        if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != ::geteuid())
            continue;
        std::string error;
        if (remove_stale_files(dir, error)) ::rmdir(dir.c_str());  // fails if anything else is in it
    }
}

WorkDir::~WorkDir() { close_dir(); }

void WorkDir::close_dir() {
    if (fd_ >= 0) close_retry(fd_);
    fd_ = -1;
}

bool WorkDir::prepare(const std::string& dir, std::string& error) {
    close_dir();
    base_ = dir_ = dir;
    if (dir.empty()) {
        error = "work_dir is not set";
        return false;
    }
    if (adopt(dir, error) && remove_stale_files(dir, error)) return true;
    return fall_back(error);
}

// The directory at the path is there but will not do (someone else's, a
// symlink, writable by others: in a sticky /tmp anyone can make it first,
// or again after a cleaner removed ours): a fresh private one beside it
// (mkdtemp, BASE.XXXXXX) rather than no scripts at all.  Not when the path
// cannot be made at all (a read-only or full file system): nothing to flee.
bool WorkDir::fall_back(std::string& error) {
    struct stat st;
    if (base_.empty() || ::lstat(dir_.c_str(), &st) != 0) return false;
    std::string tmpl = base_ + ".XXXXXX";
    if (::mkdtemp(&tmpl[0]) == nullptr) {
        error += "; and no fresh directory: " + std::string(std::strerror(errno));
        return false;
    }
    std::string why = error;
    if (!adopt(tmpl, error)) return false;
    log::error("script directory not usable; using a fresh private one",
               {{"error", json::Value(why)}, {"work_dir", json::Value(tmpl)}});
    return true;
}

// Makes or checks `dir` (open_private_dir()) and holds it open as the one
// in use; seeds the name generator once.
bool WorkDir::adopt(const std::string& dir, std::string& error) {
    uint64_t dev = 0, ino = 0;
    int fd = open_private_dir(dir, dev, ino, error);
    if (fd < 0) return false;
    close_dir();
    fd_ = fd;
    dir_ = dir;
    dev_ = dev;
    ino_ = ino;
    if (rng_ == 0) {
        struct timespec ts;
        ::clock_gettime(CLOCK_MONOTONIC, &ts);
        rng_ = (uint64_t(ts.tv_nsec) << 20) ^ uint64_t(ts.tv_sec) ^ (uint64_t(::getpid()) << 40) ^
               ino_ ^ 0x9E3779B97F4A7C15ull;
        int r = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
        uint64_t seed = 0;
        if (r >= 0) {
            if (::read(r, &seed, sizeof seed) == ssize_t(sizeof seed)) rng_ ^= seed;
            close_retry(r);
        }
        if (rng_ == 0) rng_ = 1;
    }
    return true;
}

void WorkDir::remove_script(const std::string& path) {
    size_t slash = path.rfind('/');
    if (fd_ < 0 || slash == std::string::npos || path.compare(0, slash, dir_) != 0 ||
        slash != dir_.size())
        return;
    ::unlinkat(fd_, path.c_str() + slash + 1, 0);
}

// The path still leads to the directory we hold, which is still ours and
// writable by no one else.  One lstat() per script.
bool WorkDir::still_ours() const {
    struct stat st;
    return ::lstat(dir_.c_str(), &st) == 0 && S_ISDIR(st.st_mode) && uint64_t(st.st_dev) == dev_ &&
           uint64_t(st.st_ino) == ino_ && st.st_uid == ::geteuid() &&
           (st.st_mode & (S_IWGRP | S_IWOTH)) == 0;
}

bool WorkDir::write_script(const std::string& text, std::string& path, std::string& error) {
    create_errno_ = 0;
    if (dir_.empty()) {
        error = "work_dir is not set";
        return false;
    }
    // Made again, or checked again, but its files are not removed: some
    // may be of jobs still starting.
    if ((fd_ < 0 || !still_ours()) && !adopt(dir_, error) && !fall_back(error))
        return false;
    static const char kChars[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    std::string name;
    int fd = -1;
    for (int attempt = 0; attempt < 100 && fd < 0; ++attempt) {
        name = kScriptFilePrefix;
        for (int i = 0; i < 10; ++i) {
            rng_ ^= rng_ << 13;  // xorshift64: names unique, not secret (0700 dir)
            rng_ ^= rng_ >> 7;
            rng_ ^= rng_ << 17;
            name += kChars[rng_ % (sizeof kChars - 1)];
        }
        fd = ::openat(fd_, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0700);
        if (fd < 0 && errno != EEXIST) break;
    }
    std::string made = dir_ + "/" + name;
    if (fd < 0) {
        create_errno_ = errno;
        error = sys_error("cannot create a script file in " + dir_, errno);
        return false;
    }
    auto fail = [&](const std::string& what) {
        error = sys_error(what + " " + made, errno);
        if (fd >= 0) close_retry(fd);
        ::unlinkat(fd_, name.c_str(), 0);
        return false;
    };
    if (::fchmod(fd, 0700) != 0)  // whatever the umask took away
        return fail("cannot chmod");
    if (!write_all(fd, text))
        return fail("cannot write");
    int rc = close_retry(fd);
    fd = -1;
    if (rc != 0)
        return fail("cannot close");
    path = std::move(made);
    return true;
}

}  // namespace ur
