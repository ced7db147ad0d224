// Whole-file reads and whole-buffer writes on plain POSIX descriptors.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace ur {

// Reads a whole regular file of at most `max` bytes.
bool read_file(const std::string& path, size_t max, std::string& out, std::string& error);

// Writes all of `data` to fd, retrying short writes and EINTR.  False (with
// errno set by the failing write) on an error or a write that makes no
// progress.
bool write_all(int fd, std::string_view data);

}  // namespace ur
