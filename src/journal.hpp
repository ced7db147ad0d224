// The in-flight journal: one append-only file in a private directory of
// the state directory.  An execute request is recorded ("+") when it
// arrives (whether it then runs, waits for a slot or is answered "not
// run") and struck off ("-") once its reply is confirmed by the broker;
// when nothing is left in flight the file is emptied, and a file grown
// past a bound under constant load is rewritten with only what is live.
// One write(2) per record: creating and unlinking a file per request cost
// the agent about a tenth of its CPU per trivial request (tmpfs, measured).
//
// The failures it is for (the agent crashing, upgraded, OOM-killed) end the
// process, not the kernel: a write(2) that returned is in the page cache and
// survives them.  fsync protects against a kernel crash or power loss as
// well, at about 4 ms per request on ext4 (measured here), which is more
// than the agent's whole per-request budget; and the default state
// directory, /tmp, does not survive a reboot anyway.  So it is an option
// (--journal-fsync), off by default.  When the agent restarts (crash,
// upgrade, OOM kill), the requests left in the file are ones whose
// requesters still wait: the agent answers each of them with
// "agent_restarted" instead of letting them wait for their timeout.
//
// Record format, one per line: "+ KEY REPLY-KEY" or "- KEY", with '%',
// space, CR and LF of REPLY-KEY written as %XX (a request id may hold
// them).  A line cut short by a crash, or anything else that is not a
// record of ours, is ignored.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ur {

class Journal {
public:
    Journal() = default;
    Journal(const Journal&) = delete;
    Journal& operator=(const Journal&) = delete;
    ~Journal();

    // Creates (0700) or checks the directory, reads what a previous run
    // left in its journal file and opens that file for appending.  False
    // with a reason when it cannot be used; the agent then runs without a
    // journal.
    bool open(const std::string& dir, bool fsync_each, std::string& error);
    bool is_open() const { return fd_ >= 0; }

    struct Entry {
        std::string key;
        std::string reply_key;  // routing key of the reply owed
        std::string req_id;
    };
    // Entries left by a previous run (until they are removed).
    std::vector<Entry> leftovers() const { return leftovers_; }

    // Records a request; returns its key ("" when the journal is off or the
    // write failed, which is logged).
    std::string add(const std::string& reply_key, const std::string& req_id);
    void remove(const std::string& key);

    // The journal file's size in bytes (for tests).
    uint64_t file_size() const { return size_; }
    // Rewrites with the live entries (for tests).
    uint64_t rewrites() const { return rewrites_; }
    // Past this size the file is rewritten with the live entries only.
    static constexpr uint64_t kRewriteAt = 1u << 20;

private:
    bool append(const std::string& record);
    void rewrite();
    int open_dir(uint64_t& dev, uint64_t& ino, std::string& error);
    void hold_dir(int fd, uint64_t dev, uint64_t ino);
    void check_dir();

    std::string dir_, path_;
    int dir_fd_ = -1;  // the directory checked by open_dir(); files are made in it
    uint64_t dir_dev_ = 0, dir_ino_ = 0;  // ... and its identity, to see it replaced
    bool dir_lost_ = false;               // it went and could not be made again yet
    uint64_t dir_checked_ms_ = 0;         // when its path was last looked up
    int fd_ = -1;
    bool fsync_ = false;
    uint64_t size_ = 0;
    uint64_t rewritten_size_ = 0;  // what the last rewrite left
    uint64_t rewrites_ = 0;
    std::string key_prefix_;
    unsigned long counter_ = 0;
    std::map<std::string, std::string> live_;  // key -> reply key
    std::vector<Entry> leftovers_;
};

}  // namespace ur
