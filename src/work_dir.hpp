// The supervisor's private directory for script files.
//
// Scripts run as root, so the file that is executed must not be replaceable
// by anyone else between the moment it is written and the moment it is
// executed: it lives in a directory only we can write, under a name made by
// mkstemp, with mode 0700.
#pragma once

#include <string>

namespace ur {

// Prefix of every script file name, so that start-up clean-up removes only
// files we made even if work_dir is shared with something else.
extern const char kScriptFilePrefix[];

// Creates `dir` with mode 0700, or verifies the existing one: a real
// directory (lstat: a symlink is refused), owned by our effective uid, not
// group- or world-writable.  Then removes stale script files left in it by
// an earlier run.  Returns false with a reason in `error` otherwise.
bool prepare_work_dir(const std::string& dir, std::string& error);

// Writes `text` to a new file in `dir` (mkstemp, mode 0700), fully, and
// closes it.  On success sets `path`; on failure removes any partial file
// and returns false with a reason in `error`.
bool write_script_file(const std::string& dir, const std::string& text,
                       std::string& path, std::string& error);

}  // namespace ur
