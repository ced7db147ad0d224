#include "src/journal.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "src/clock.hpp"
#include "src/log.hpp"
#include "src/file_io.hpp"

namespace ur {

namespace {

const char kFile[] = "journal";
const char kReplyPrefix[] = "ur.execute-reply.";
// A previous run's file larger than this is not a journal of ours.
constexpr size_t kReadMax = 64u << 20;

// In the directory dir_fd, never by a path that could lead elsewhere by
// now.  O_NONBLOCK: a FIFO in its place fails to open instead of blocking.
int open_append(int dir_fd, const char* name, int extra_flags) {
    int fd = ::openat(dir_fd, name,
                      O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | extra_flags,
                      0600);
    struct stat st;
    if (fd >= 0 && (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))) {
        ::close(fd);
        errno = EINVAL;
        return -1;
    }
    return fd;
}


// A reply key in a record: '%', ' ', CR and LF as %XX, so that a request
// id holding any of them (all legal inside one routing-key word) leaves
// the record one line of three fields.
std::string escape_key(const std::string& k) {
    static const char kHex[] = "0123456789ABCDEF";
    std::string out;
    out.reserve(k.size());
    for (unsigned char c : k) {
        if (c == '%' || c == ' ' || c == '\n' || c == '\r') {
            out += '%';
            out += kHex[c >> 4];
            out += kHex[c & 15];
        } else {
            out += char(c);
        }
    }
    return out;
}

bool unescape_key(const std::string& k, std::string& out) {
    auto hex = [](char c) {
        return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    };
    out.clear();
    for (size_t i = 0; i < k.size(); ++i) {
        if (k[i] != '%') {
            out += k[i];
            continue;
        }
        if (i + 2 >= k.size() || hex(k[i + 1]) < 0 || hex(k[i + 2]) < 0) return false;
        out += char(hex(k[i + 1]) * 16 + hex(k[i + 2]));
        i += 2;
    }
    return true;
}

std::string add_record(const std::string& key, const std::string& reply_key) {
    return "+ " + key + " " + escape_key(reply_key) + "\n";
}

// Replays the complete lines of `text` into `live`.
// Returns the number of whole lines that are no record (a torn last line,
// the trace of a crash mid-write, is not counted).
size_t replay(const std::string& text, std::map<std::string, std::string>& live) {
    size_t bad = 0;
    size_t at = 0;
    for (size_t nl; (nl = text.find('\n', at)) != std::string::npos; at = nl + 1) {
        std::string line = text.substr(at, nl - at);
        std::vector<std::string> f;
        for (size_t i = 0; i <= line.size();) {
            size_t sp = std::min(line.find(' ', i), line.size());
            f.push_back(line.substr(i, sp - i));
            i = sp + 1;
        }
        std::string reply_key;
        if (f.size() == 3 && f[0] == "+" && !f[1].empty() && unescape_key(f[2], reply_key) &&
            reply_key.rfind(kReplyPrefix, 0) == 0 && reply_key.size() <= 255)
            live[f[1]] = reply_key;
        else if (f.size() == 2 && f[0] == "-")
            live.erase(f[1]);
        else
            ++bad;
    }
    return bad;
}

}  // namespace

Journal::~Journal() {
    if (fd_ >= 0) ::close(fd_);
    if (dir_fd_ >= 0) ::close(dir_fd_);
}

// Makes dir_ (0700) or checks it is a private directory of ours, and
// returns it open (or -1 with `error`; its identity in dev/ino): the
// journal's files are made in that directory only, even if the path leads
// elsewhere later.
int Journal::open_dir(uint64_t& dev, uint64_t& ino, std::string& error) {
    int fd = open_private_dir(dir_, dev, ino, error);
    if (fd < 0)
        error = "journal directory " + dir_ + " is not a private directory of ours, or cannot "
                "be made: " + error;
    return fd;
}

void Journal::hold_dir(int fd, uint64_t dev, uint64_t ino) {
    if (dir_fd_ >= 0) ::close(dir_fd_);
    dir_fd_ = fd;
    dir_dev_ = dev;
    dir_ino_ = ino;
}

// The directory removed or renamed behind our back (a script, a /tmp
// cleaner): the records would go where no restart looks.  Made again at
// the path, and the live entries written there; tried again at each
// request until it can be (said once).  A removal is seen at once (fstat
// of the held directory); a rename by the path's identity, looked up at
// most once a second (a path walk per request cost the agent ~1 us).
void Journal::check_dir() {
    if (dir_fd_ < 0) return;
    struct stat st;
    bool removed = fstat(dir_fd_, &st) == 0 && st.st_nlink == 0;
    if (!removed && !dir_lost_) {
        uint64_t now = monotonic_ms();
        if (now - dir_checked_ms_ < 1000) return;
        dir_checked_ms_ = now;
        if (lstat(dir_.c_str(), &st) == 0 && uint64_t(st.st_dev) == dir_dev_ &&
            uint64_t(st.st_ino) == dir_ino_)
            return;
    }
    std::string error;
    uint64_t dev = 0, ino = 0;
    int dfd = open_dir(dev, ino, error);
    int fd = dfd >= 0 ? open_append(dfd, kFile, O_TRUNC) : -1;
    if (fd < 0) {
        if (dfd >= 0) {
            error = "cannot open journal " + path_ + ": " + std::strerror(errno);
            ::close(dfd);
        }
        if (!dir_lost_)
            log::error("the journal directory was removed or moved and cannot be made again; "
                       "trying at each request",
                       {{"error", error}});
        dir_lost_ = true;
        return;
    }
    log::warn("the journal directory was removed or moved; made again", {{"dir", dir_}});
    dir_lost_ = false;
    hold_dir(dfd, dev, ino);
    ::close(fd_);
    fd_ = fd;
    size_ = 0;
    rewrite();
}

bool Journal::open(const std::string& dir, bool fsync_each, std::string& error) {
    fsync_ = fsync_each;
    dir_ = dir;
    path_ = dir + "/" + kFile;
    uint64_t dev = 0, ino = 0;
    int dfd = open_dir(dev, ino, error);
    if (dfd < 0) return false;
    hold_dir(dfd, dev, ino);
    std::string text, rerr;
    size_t whole = SIZE_MAX;  // bytes of whole lines, when the last is torn
    if (read_file(path_, kReadMax, text, rerr)) {
        if (!text.empty() && text.back() != '\n') {
            size_t nl = text.rfind('\n');
            whole = nl == std::string::npos ? 0 : nl + 1;
        }
        if (size_t bad = replay(text, live_))
            log::warn("skipped lines of the in-flight journal that are no record (the requests "
                      "they were, if any, cannot be answered agent_restarted)",
                      {{"file", path_}, {"lines", json::Value(int64_t(bad))}});
    } else if (access(path_.c_str(), F_OK) == 0)
        log::warn("ignoring an unreadable in-flight journal", {{"error", rerr}});
    for (const auto& [key, reply_key] : live_)
        leftovers_.push_back({key, reply_key, reply_key.substr(reply_key.rfind('.') + 1)});
    // Keys of this run cannot meet a previous run's.
    key_prefix_ = std::to_string(getpid()) + "-" + std::to_string(wall_ms()) + "-";
    fd_ = open_append(dir_fd_, kFile, 0);
    struct stat fst;
    if (fd_ < 0 || fstat(fd_, &fst) != 0) {
        error = "cannot open journal " + path_ + ": " + std::strerror(errno);
        return false;
    }
    size_ = uint64_t(fst.st_size);
    // A torn last line (a crash mid-write) goes, so that should the
    // rewrite below fail (a full disk) no record of this run is appended
    // to it, where replay() would drop both.
    if (whole != SIZE_MAX && whole <= size_ && ftruncate(fd_, off_t(whole)) == 0) size_ = whole;
    if (fsync_) fsync(dir_fd_);
    rewrite();  // only the leftovers from here on
    return true;
}

bool Journal::append(const std::string& record) {
    if (write_all(fd_, record) && (!fsync_ || fdatasync(fd_) == 0)) {
        size_ += record.size();
        return true;
    }
    // No half record may stay in front of the next one.
    if (ftruncate(fd_, off_t(size_)) != 0) {
        // Left as it is: replay() drops the line that the cut record and
        // the next one make together.
    }
    return false;
}

std::string Journal::add(const std::string& reply_key, const std::string& req_id) {
    if (fd_ < 0) return "";
    check_dir();
    std::string key = key_prefix_ + std::to_string(++counter_);
    if (!append(add_record(key, reply_key))) {
        log::error("cannot write journal entry",
                   {{"file", path_}, {"error", std::strerror(errno)}, {"req_id", req_id}});
        return "";
    }
    live_[key] = reply_key;
    return key;
}

void Journal::remove(const std::string& key) {
    if (fd_ < 0 || key.empty() || live_.erase(key) == 0) return;
    leftovers_.erase(std::remove_if(leftovers_.begin(), leftovers_.end(),
                                    [&](const Entry& e) { return e.key == key; }),
                     leftovers_.end());
    // Rewritten past kRewriteAt, and only once the file holds at least as
    // many bytes again as the last rewrite left: with thousands in flight
    // (a flood) a rewrite at every removal would copy them all each time.
    if (live_.empty() || (size_ >= kRewriteAt && size_ >= 2 * rewritten_size_)) {
        rewrite();
        return;
    }
    if (!append("- " + key + "\n"))
        log::error("cannot write journal entry", {{"file", path_}, {"error", std::strerror(errno)}});
}

// Nothing live: the file is emptied in place.  Else the live records go to
// a new file that replaces the old one by rename(), so a crash leaves one
// or the other, whole.
void Journal::rewrite() {
    if (live_.empty()) {
        if (ftruncate(fd_, 0) == 0) size_ = 0;
        return;
    }
    std::string text;
    for (const auto& [key, reply_key] : live_) text += add_record(key, reply_key);
    static const char kNew[] = "journal.new";
    unlinkat(dir_fd_, kNew, 0);  // O_EXCL below: never into a file already there
    int fd = open_append(dir_fd_, kNew, O_EXCL);
    bool ok = fd >= 0 && write_all(fd, text) && (!fsync_ || fsync(fd) == 0) &&
              renameat(dir_fd_, kNew, dir_fd_, kFile) == 0;
    if (ok && fsync_) fsync(dir_fd_);
    if (!ok) {
        log::error("cannot rewrite the journal",
                   {{"file", path_ + ".new"}, {"error", std::strerror(errno)}});
        if (fd >= 0) ::close(fd);
        unlinkat(dir_fd_, kNew, 0);
        return;
    }
    ::close(fd_);
    fd_ = fd;
    size_ = rewritten_size_ = text.size();
    ++rewrites_;
}

}  // namespace ur
