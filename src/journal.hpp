// The in-flight journal: one small file per running request in a private
// directory of the state directory, written and fsync'd before the script
// starts and removed once its reply is confirmed by the broker.  When the
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
    bool open(const std::string& dir, std::string& error);
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
    unsigned long counter_ = 0;
};

}  // namespace ur
