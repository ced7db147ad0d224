// The supervisor's private directory for script files.
//
// Scripts run as root, so the file that is executed must not be replaceable
// by anyone else between the moment it is written and the moment it is
// executed: it lives in a directory only we can write (make_private_dir(),
// file_io.hpp), under a random name made with O_EXCL, with mode 0700.
#pragma once

#include <string>

namespace ur {

// Prefix of every script file name, so that start-up clean-up removes only
// files we made even if work_dir is shared with something else.
extern const char kScriptFilePrefix[];

// Removes the directories named `prefix` + 6 characters in `parent` that
// are real directories of ours (fresh mkdtemp ones a previous run fell back
// to), with the script files in them; one holding anything else is kept.
// Best effort: for start-up, under the state directory's lock.
void remove_stale_work_dirs(const std::string& parent, const std::string& prefix);

// The script directory, checked and held open (open_private_dir()).  A
// script file is created inside it (openat on the held fd,
// O_EXCL, a random name), never by a path that could by then lead
// elsewhere; and before each one the directory at the path is checked to
// still be that one, ours and private.  If it is not (removed by a script
// or a /tmp cleaner, then made again by someone else; or chmod'ed), it is
// prepared again; one that is not ours, or is writable by others, is left
// alone for a fresh private directory beside it (BASE.XXXXXX, logged at
// error): a script is never written where another user could swap it
// before it runs as root, and scripts do not stop for it either.
class WorkDir {
public:
    WorkDir() = default;
    ~WorkDir();
    WorkDir(const WorkDir&) = delete;
    WorkDir& operator=(const WorkDir&) = delete;

    // Makes or checks `dir` and removes the script files an earlier run
    // left in it (start-up only), or takes a fresh directory beside one
    // that is not ours; then holds it open.
    bool prepare(const std::string& dir, std::string& error);
    const std::string& dir() const { return dir_; }

    // Writes `text` to a new file (mode 0700) in the directory, fully, and
    // closes it; sets `path` (dir + "/" + name).  On failure removes any
    // partial file and returns false with a reason in `error`.
    bool write_script(const std::string& text, std::string& path, std::string& error);
    // The errno of write_script()'s last failure to create the file (0 if
    // it failed otherwise): EMFILE/ENFILE pass by themselves.
    int create_errno() const { return create_errno_; }

    // Removes a file write_script() made, in the held directory (unlinkat):
    // never through a path that may lead elsewhere by now.
    void remove_script(const std::string& path);

private:
    bool adopt(const std::string& dir, std::string& error);
    bool fall_back(std::string& error);
    bool still_ours() const;
    void close_dir();

    std::string base_;  // the directory asked for; fresh ones are BASE.XXXXXX
    std::string dir_;   // the one in use
    int fd_ = -1;
    int create_errno_ = 0;
    uint64_t dev_ = 0, ino_ = 0;
    uint64_t rng_ = 0;
};

}  // namespace ur
