// Whole-file reads and whole-buffer writes on plain POSIX descriptors, the
// private directories the agent keeps files in, and splitting what such
// files hold into fields.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ur {

// Reads a whole regular file of at most `max` bytes.
bool read_file(const std::string& path, size_t max, std::string& out, std::string& error);

// Writes all of `data` to fd, retrying short writes and EINTR.  False (with
// errno set by the failing write) on an error or a write that makes no
// progress.
bool write_all(int fd, std::string_view data);

// `text` cut at every `sep`: n separators give n + 1 fields, empty ones
// included ("a::b" is "a", "", "b").
std::vector<std::string> split(std::string_view text, char sep);

// A directory only we may change: made 0700 if missing, else it must be a
// real directory (lstat: a symlink is refused), owned by our effective uid,
// not group- or world-writable.  False with the reason otherwise.
bool make_private_dir(const std::string& dir, std::string& error);

// make_private_dir(), then the directory opened (O_DIRECTORY|O_NOFOLLOW,
// close-on-exec) and checked to be the very one checked; its device and
// inode in `dev` and `ino`.  The fd, or -1 with the reason.  Files made
// through it (openat) land in that directory even if the path leads
// elsewhere later.
int open_private_dir(const std::string& dir, uint64_t& dev, uint64_t& ino, std::string& error);

}  // namespace ur
