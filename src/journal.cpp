#include "src/journal.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "src/clock.hpp"
#include "src/log.hpp"
#include "src/sysinfo.hpp"

namespace ur {

static const char kPrefix[] = "req-";
static const char kReplyPrefix[] = "ur.execute-reply.";

bool Journal::open(const std::string& dir, bool fsync_each, std::string& error) {
    fsync_ = fsync_each;
    if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
        error = "cannot create journal directory " + dir + ": " + std::strerror(errno);
        return false;
    }
    struct stat st;
    if (lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid() ||
        (st.st_mode & (S_IWGRP | S_IWOTH))) {
        error = "journal directory " + dir +
                " is not a private directory of ours (a symlink, someone else's, or writable "
                "by others)";
        return false;
    }
    dir_ = dir;
    return true;
}

std::vector<Journal::Entry> Journal::leftovers() const {
    std::vector<Entry> out;
    if (dir_.empty()) return out;
    DIR* d = opendir(dir_.c_str());
    if (!d) return out;
    while (struct dirent* e = readdir(d)) {
        std::string name = e->d_name;
        if (name.rfind(kPrefix, 0) != 0) continue;
        std::string text, error;
        std::string path = dir_ + "/" + name;
        if (!read_file(path, 4096, text, error)) continue;
        // "<reply-key>\n"; anything else is not ours: drop it.
        size_t nl = text.find('\n');
        std::string key = text.substr(0, nl);
        if (key.rfind(kReplyPrefix, 0) != 0 || key.size() > 255) {
            unlink(path.c_str());
            continue;
        }
        size_t last = key.rfind('.');
        out.push_back({name, key, key.substr(last + 1)});
    }
    closedir(d);
    return out;
}

std::string Journal::add(const std::string& reply_key, const std::string& req_id) {
    if (dir_.empty()) return "";
    std::string name = kPrefix + std::to_string(getpid()) + "-" + std::to_string(wall_ms()) +
                       "-" + std::to_string(++counter_);
    std::string path = dir_ + "/" + name;
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        log::error("cannot write journal entry", {{"file", path}, {"error", std::strerror(errno)},
                                                   {"req_id", req_id}});
        return "";
    }
    std::string line = reply_key + "\n";
    bool ok = ::write(fd, line.data(), line.size()) == ssize_t(line.size()) &&
              (!fsync_ || fsync(fd) == 0);
    close(fd);
    if (!ok) {
        log::error("cannot write journal entry", {{"file", path}, {"req_id", req_id}});
        unlink(path.c_str());
        return "";
    }
    // fsync the directory too, so the new name survives a kernel crash.
    int dfd = fsync_ ? ::open(dir_.c_str(), O_RDONLY | O_CLOEXEC) : -1;
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return name;
}

void Journal::remove(const std::string& key) {
    if (dir_.empty() || key.empty()) return;
    unlink((dir_ + "/" + key).c_str());
}

}  // namespace ur
