// The in-flight journal: one small file per running request in a private
// directory of the state directory, written before the script starts and
// removed once its reply is confirmed by the broker.
//
// The failures it is for (the agent crashing, upgraded, OOM-killed) end the
// process, not the kernel: a write(2) that returned is in the page cache and
// survives them.  fsync (file and directory) protects against a kernel
// crash or power loss as well, at about 4 ms per request on ext4 (measured
// here), which is more than the agent's whole per-request budget; and the
// default state directory, /tmp, does not survive a reboot anyway.  So it
// is an option (--journal-fsync), off by default.  When the
// agent restarts (crash, upgrade, OOM kill), the files left behind name
// requests whose requesters still wait: the agent answers each of them with
// "agent_restarted" instead of letting them wait for their timeout.
#pragma once
#include <string>
#include <vector>

namespace ur {

class Journal {
public:
    // Creates (0700) or checks the directory.  False with a reason when it
    // cannot be used; the agent then runs without a journal.
    bool open(const std::string& dir, bool fsync_each, std::string& error);
    bool is_open() const { return !dir_.empty(); }

    struct Entry {
        std::string key;        // file name
        std::string reply_key;  // routing key of the reply owed
        std::string req_id;
    };
    // Entries left by a previous run.
    std::vector<Entry> leftovers() const;

    // Records a request; returns its key ("" when the journal is off or the
    // write failed, which is logged).
    std::string add(const std::string& reply_key, const std::string& req_id);
    void remove(const std::string& key);

private:
    std::string dir_;
    bool fsync_ = false;
    unsigned long counter_ = 0;
};

}  // namespace ur
