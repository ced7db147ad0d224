#include "src/work_dir.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "src/file_io.hpp"

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

bool prepare_work_dir(const std::string& dir, std::string& error) {
    if (dir.empty()) {
        error = "work_dir is not set";
        return false;
    }
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
        error = sys_error("cannot create " + dir, errno);
        return false;
    }
    struct stat st;
    if (::lstat(dir.c_str(), &st) != 0) {
        error = sys_error("cannot stat " + dir, errno);
        return false;
    }
    if (S_ISLNK(st.st_mode)) {
        error = dir + " is a symbolic link; it must be a real directory";
        return false;
    }
    if (!S_ISDIR(st.st_mode)) {
        error = dir + " is not a directory";
        return false;
    }
    if (st.st_uid != ::geteuid()) {
        error = dir + " is owned by uid " + std::to_string(st.st_uid) +
                ", not by us (uid " + std::to_string(::geteuid()) + ")";
        return false;
    }
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
        error = dir + " is group or world writable";
        return false;
    }
    return remove_stale_files(dir, error);
}

bool write_script_file(const std::string& dir, const std::string& text,
                       std::string& path, std::string& error) {
    std::string tmpl = dir + "/" + kScriptFilePrefix + "XXXXXX";
    std::vector<char> name(tmpl.begin(), tmpl.end());
    name.push_back('\0');
#if defined(__linux__) || defined(__sun) || defined(__FreeBSD__)
    int fd = ::mkostemp(name.data(), O_CLOEXEC);
#else
    int fd = ::mkstemp(name.data());
    if (fd >= 0)
        ::fcntl(fd, F_SETFD, FD_CLOEXEC);
#endif
    if (fd < 0) {
        error = sys_error("cannot create a script file in " + dir, errno);
        return false;
    }
    std::string made(name.data());
    auto fail = [&](const std::string& what) {
        error = sys_error(what + " " + made, errno);
        close_retry(fd);
        ::unlink(made.c_str());
        return false;
    };
    if (::fchmod(fd, 0700) != 0)
        return fail("cannot chmod");
    if (!write_all(fd, text))
        return fail("cannot write");
    if (close_retry(fd) != 0) {
        error = sys_error("cannot close " + made, errno);
        ::unlink(made.c_str());
        return false;
    }
    path = std::move(made);
    return true;
}

}  // namespace ur
