// Messages the agent has to publish, kept until the broker confirms them.
//
// A message is queued, published (given the channel's publish sequence
// number) and removed when a confirm covers that number.  When the
// connection drops, kept messages (replies, startup, ping and discover
// answers) go back to "unpublished" and are sent again after reconnecting,
// oldest first; ephemeral ones (sysinfo heartbeats) are dropped.  The bound
// is on the bytes not yet published (while the broker is away or blocks
// publishing): past it the oldest unpublished messages are dropped and
// returned to the caller, who logs them (the agent first cuts replies, see
// Agent::enqueue).  What is in flight does not count and is never dropped
// for the bound: the broker has it or will say it has not (a confirm, a
// nack or a lost connection, after which it counts), and dropping it would
// lose the retry while a confirm frees it soon anyway.  In flight has a
// bound of its own: see may_publish().
#pragma once
#include <cstdint>
#include <functional>
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
    bool owed = true;         // kept: waited for at shutdown (false: a ping or discover
                              // answer, sent again after a reconnect but not owed)
    bool cuttable = false;    // an execute reply: its output can be cut (fit_reply)
    bool whole = false;       // a script's reply: never cut or dropped for the bound (it
                              // waited for room, holding its script slot: Agent::held_)
    bool reboot_after = false;
    uint64_t seq = 0;         // publish sequence number, 0 = not published
    uint64_t queued_ms = 0;
    unsigned refusals = 0;    // broker refusals so far (nacks, 403s on its key)
    bool mandatory = false;   // published mandatory: one no queue took comes back (returned)
    unsigned returns = 0;     // times no queue took it
    uint64_t not_before = 0;  // not published before this (ms): a refused one's retry, a delay
};

class Outbox {
    using List = std::list<OutMessage>;

public:
    // A queued message; valid until the call that removes it.
    using Ref = List::iterator;

    // What a queued message counts against the bound: its body, its
    // strings and about what holding it costs besides (list node, shared
    // body block).  Counting bodies alone, a flood of ping replies (62
    // bytes of body under a key of up to 255) grew the agent to 9.5 times
    // --max-pending-bytes.  `bodies_only` counts bodies alone (tests of
    // the bound's logic, in round numbers).
    static constexpr uint64_t kOverheadBytes = 256;
    explicit Outbox(uint64_t max_bytes, bool bodies_only = false)
        : max_bytes_(max_bytes), bodies_only_(bodies_only) {}
    uint64_t cost(const OutMessage& m) const {
        if (bodies_only_) return m.body.size();
        return m.body.size() + m.routing_key.size() + m.req_id.size() + m.journal_key.size() +
               kOverheadBytes;
    }

    // Queues `m`; unpublished messages dropped to respect the bound, oldest
    // first, are appended to `dropped` (never `m` itself, never a whole one).
    void push(OutMessage m, std::vector<OutMessage>& dropped);
    // Before push(m), past the bound, cuttable messages give up bytes
    // rather than their place: `m` is cut to the room left (at least
    // min_cut); if it still does not fit, older unpublished cuttable ones
    // are cut to min_cut each, oldest first, until it does.  Whole ones
    // are never cut.  cut(msg, limit) returns msg's body made to fit in
    // `limit` bytes.
    using Cutter = std::function<std::string(const OutMessage&, uint64_t limit)>;
    void cut_to_fit(OutMessage& m, uint64_t min_cut, const Cutter& cut);
    // Unpublished bytes (cost()) that can still be queued within the bound.
    uint64_t room() const {
        return unpublished_bytes_ < max_bytes_ ? max_bytes_ - unpublished_bytes_ : 0;
    }
    // False while the bytes in flight reach the bound: a broker that keeps
    // the link up but withholds confirms must not make them grow without
    // limit, so the rest waits (and counts) as unpublished.  At least one
    // message may always be in flight.
    bool may_publish() const { return bytes_ - unpublished_bytes_ < max_bytes_; }

    // Unpublished messages, oldest first (none: no scan), except those
    // whose not_before is after now_ms.
    std::vector<Ref> unpublished(uint64_t now_ms);
    void mark_published(Ref m, uint64_t seq);
    // Gives a queued message a new body (kept in the byte count).
    void replace_body(Ref m, std::string body);

    // A broker confirm (basic.ack) for `seq` (and all before it when
    // `multiple`): removes and returns the covered messages.  One that
    // came back (returned()) is not done: it is sent again after 100,
    // 200, 400 and 800 ms, and at its fifth return moved to `unrouted`.
    static constexpr unsigned kMaxReturns = 4;
    static constexpr uint64_t kReturnRetryMs = 100;
    std::vector<OutMessage> confirm(uint64_t seq, bool multiple, uint64_t now_ms = 0,
                                    std::vector<OutMessage>* unrouted = nullptr);
    // A basic.return of a mandatory message with this routing key (no
    // queue took it: a requester that has not bound its reply queue yet,
    // or is gone).  The broker sends it just before that message's ack, so
    // the next confirm() applies it to the message with this key among
    // those it covers (answers to one client share a key, and an older
    // one may still await its queue's confirm).
    void returned(const std::string& routing_key);
    // A broker basic.nack for `seq` (and all before it when `multiple`):
    // some queue refused the message (a full one with overflow
    // reject-publish, say) while others may have taken it, so sending it
    // again duplicates it there.  A kept message is sent again after 1, 2
    // and 4 s; at its fourth refusal, or at its first for an ephemeral
    // one, it is removed and returned, given up.
    static constexpr unsigned kMaxRefusals = 3;
    static constexpr uint64_t kRefusalRetryMs = 1000;
    std::vector<OutMessage> nack(uint64_t seq, bool multiple, uint64_t now_ms);
    // The broker closed the channel over the unpublished messages `which`
    // picks (a 403 naming their routing key: a topic permission), so that
    // the others go first.  An owed one (a reply, the start-up
    // announcement) waits 1, 2, 4 ... s, then every kMaxRefusedWaitMs, and
    // is never given up: the permission may be fixed, and refusing every
    // reply key looks the same, key by key.  Others are counted and
    // delayed as a nack is; those given up are removed and returned.
    static constexpr uint64_t kMaxRefusedWaitMs = 60000;
    using Pick = std::function<bool(const OutMessage&)>;
    std::vector<OutMessage> refuse_unpublished(const Pick& which, uint64_t now_ms);
    // The earliest not_before of an unpublished message waiting for it; 0
    // if none.
    uint64_t next_due() const;
    // The channel or connection is gone: kept messages become unpublished,
    // ephemeral ones are removed.
    void connection_lost();

    size_t size() const { return messages_.size(); }
    uint64_t bytes() const { return bytes_; }  // all queued, in flight too
    uint64_t unpublished_bytes() const { return unpublished_bytes_; }
    bool empty() const { return messages_.empty(); }
    size_t in_flight() const { return by_seq_.size(); }
    // True when a message owed (kept and owed: replies, start-up) is
    // still queued.
    bool has_owed() const;
    // How many queued messages owed answer a request (have a req_id).
    size_t replies() const;

    // Removes the message at `it` (its bytes and sequence number too) and
    // returns it.
    OutMessage take(Ref it);

private:
    // One more refusal of `it`: delayed 1, 2, 4 s, or past kMaxRefusals
    // (at once for an ephemeral one) moved to given_up.
    void refuse(List::iterator it, uint64_t now_ms, std::vector<OutMessage>& given_up);

    uint64_t max_bytes_;
    bool bodies_only_;
    uint64_t bytes_ = 0;
    uint64_t unpublished_bytes_ = 0;            // of the messages with seq == 0
    size_t waiting_ = 0;                        // unpublished with not_before != 0
    std::vector<std::string> returned_keys_;    // returns the next confirm applies
    List messages_;                             // oldest first
    std::map<uint64_t, List::iterator> by_seq_;  // published, awaiting confirm
};

}  // namespace ur
