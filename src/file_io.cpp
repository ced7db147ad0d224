#include "src/file_io.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>

namespace ur {

bool read_file(const std::string& path, size_t max, std::string& out, std::string& error) {
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        error = path + ": " + std::strerror(errno);
        return false;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        error = path + ": not a regular file";
        close(fd);
        return false;
    }
    // Read straight into `out` (no buffer on the stack: the agent must run
    // under a small stack limit), the file's size first, then growing.
    out.clear();
    size_t len = 0;
    // (In 64 bits: st_size may not fit a 32-bit size_t.)
    out.resize(size_t(st.st_size > 0 ? std::min<uint64_t>(uint64_t(st.st_size), max) + 1
                                     : std::min<uint64_t>(4096, uint64_t(max) + 1)));
    for (;;) {
        if (len == out.size()) out.resize(std::min<size_t>(out.size() * 2, max + 1));
        ssize_t n = read(fd, &out[len], out.size() - len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            error = path + ": " + std::strerror(errno);
            close(fd);
            return false;
        }
        if (n == 0) break;
        len += size_t(n);
        if (len > max) {
            error = path + ": larger than " + std::to_string(max) + " bytes";
            close(fd);
            return false;
        }
    }
    out.resize(len);
    close(fd);
    return true;
}

std::vector<std::string> split(std::string_view text, char sep) {
    std::vector<std::string> out;
    for (size_t from = 0;;) {
        size_t at = text.find(sep, from);
        out.emplace_back(text.substr(from, at == std::string_view::npos ? at : at - from));
        if (at == std::string_view::npos) return out;
        from = at + 1;
    }
}

bool write_all(int fd, std::string_view data) {
    while (!data.empty()) {
        ssize_t n = ::write(fd, data.data(), data.size());
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        data.remove_prefix(size_t(n));
    }
    return true;
}

namespace {

bool stat_private_dir(const std::string& dir, struct stat& st, std::string& error) {
    auto sys = [&](const std::string& what) {
        error = what + " " + dir + ": " + std::strerror(errno);
        return false;
    };
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return sys("cannot create");
    if (::lstat(dir.c_str(), &st) != 0) return sys("cannot stat");
    if (S_ISLNK(st.st_mode)) {
        error = dir + " is a symbolic link; it must be a real directory";
        return false;
    }
    if (!S_ISDIR(st.st_mode)) {
        error = dir + " is not a directory";
        return false;
    }
    if (st.st_uid != ::geteuid()) {
        error = dir + " is owned by uid " + std::to_string(st.st_uid) + ", not by us (uid " +
                std::to_string(::geteuid()) + ")";
        return false;
    }
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
        error = dir + " is group or world writable";
        return false;
    }
    return true;
}

}  // namespace

bool make_private_dir(const std::string& dir, std::string& error) {
    struct stat st;
    return stat_private_dir(dir, st, error);
}

int open_private_dir(const std::string& dir, uint64_t& dev, uint64_t& ino, std::string& error) {
    struct stat st, fst;
    if (!stat_private_dir(dir, st, error)) return -1;
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 || ::fstat(fd, &fst) != 0) {
        error = "cannot open " + dir + ": " + std::strerror(errno);
        if (fd >= 0) ::close(fd);
        return -1;
    }
    if (fst.st_dev != st.st_dev || fst.st_ino != st.st_ino) {
        ::close(fd);
        error = dir + " changed while it was being checked";
        return -1;
    }
    dev = uint64_t(fst.st_dev);
    ino = uint64_t(fst.st_ino);
    return fd;
}

}  // namespace ur
