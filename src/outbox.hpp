// Messages the agent has to publish, kept until the broker confirms them.
//
// A message is queued, published (given the channel's publish sequence
// number) and removed when a confirm covers that number.  When the
// connection drops, kept messages (replies, startup) go back to
// "unpublished" and are sent again after reconnecting, oldest first;
// ephemeral ones (ping replies, sysinfo heartbeats) are dropped.  The total
// body size is bounded: past it the oldest messages are dropped and
// returned to the caller, who logs them.
#pragma once
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace ur {

// A message body, immutable once set and shared with the AMQP connection
// that writes it: a big reply is framed as slices of this one buffer, not
// copied.
class SharedBody {
public:
    SharedBody& operator=(std::string s) {
        p_ = std::make_shared<const std::string>(std::move(s));
        return *this;
    }
    size_t size() const { return p_ ? p_->size() : 0; }
    const std::shared_ptr<const std::string>& shared() const { return p_; }

private:
    std::shared_ptr<const std::string> p_;
};

struct OutMessage {
    std::string routing_key;
    SharedBody body;
    std::string req_id;       // for logs; empty when not a reply
    std::string journal_key;  // journal entry to remove once confirmed
    bool keep = true;         // survive reconnects
    bool reboot_after = false;
    uint64_t seq = 0;         // publish sequence number, 0 = not published
    uint64_t queued_ms = 0;
};

class Outbox {
public:
    explicit Outbox(uint64_t max_bytes) : max_bytes_(max_bytes) {}

    // Queues `m`; messages dropped to respect the bound are appended to
    // `dropped` (never `m` itself unless it alone is over the bound).
    void push(OutMessage m, std::vector<OutMessage>& dropped);

    // Unpublished messages, oldest first.  Pointers stay valid until the
    // next call that removes messages.
    std::vector<OutMessage*> unpublished();
    void mark_published(OutMessage* m, uint64_t seq);
    // Gives an unpublished message a new body (kept in the byte count).
    void replace_body(OutMessage* m, std::string body);

    // A broker confirm (basic.ack) for `seq` (and all before it when
    // `multiple`): removes and returns the covered messages.
    std::vector<OutMessage> confirm(uint64_t seq, bool multiple);
    // A broker basic.nack: the covered messages become unpublished again.
    void nack(uint64_t seq, bool multiple);
    // The channel or connection is gone: kept messages become unpublished,
    // ephemeral ones are removed.
    void connection_lost();

    size_t size() const { return messages_.size(); }
    uint64_t bytes() const { return bytes_; }
    bool empty() const { return messages_.empty(); }
    size_t in_flight() const { return by_seq_.size(); }
    // True when a message that must survive reconnects is still queued.
    bool has_kept() const;

private:
    using List = std::list<OutMessage>;
    void erase(List::iterator it);

    uint64_t max_bytes_;
    uint64_t bytes_ = 0;
    List messages_;                             // oldest first
    std::map<uint64_t, List::iterator> by_seq_;  // published, awaiting confirm
};

}  // namespace ur
