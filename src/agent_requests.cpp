// Requests: deliveries, the queue of those waiting for a slot, acks, jobs
// and their replies, and the outbox that publishes them with confirms.

#include "src/agent.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <iterator>

#include "src/agent_internal.hpp"
#include "src/clock.hpp"
#include "src/log.hpp"
#include "src/memory.hpp"

namespace ur {

namespace {

// The least a reply is cut to for --max-pending-bytes (a 256-byte head of
// each stream): below it, the oldest unpublished replies make room.
const uint64_t kMinCutReply = 4096;

amqp::BasicProperties json_properties() {
    amqp::BasicProperties p;
    p.content_type = "application/json";
    return p;
}

}  // namespace

// The ping queue's deliveries, acked at once on its channel.  Only pings
// are answered there: requests run from the request queue alone, and
// anything else routed to the ping queue (a binding someone added) is
// logged and dropped.
void Agent::on_ping_delivery(const amqp::Event& ev, uint64_t now) {
    Request req = parse_request(id_, ev.routing_key, ev.body);
    if (req.kind == RequestKind::Ping) {
        answer_ping(req, now);
    } else {
        std::string why = ev.body_discarded ? "body of " + std::to_string(ev.body_size) +
                                                  " bytes is over the agent's limit"
                          : req.kind == RequestKind::Ignored ? req.error
                                                             : "not a ping";
        log::warn("ignoring message on the ping queue",
                  {{"routing_key", field(ev.routing_key)}, {"reason", field(why)}});
    }
    // Every delivery on this channel is decided at once: one multiple ack
    // at the end of the loop pass covers them all (flush_acks).
    ping_ack_upto_ = std::max(ping_ack_upto_, ev.delivery_tag);
}

void Agent::answer_ping(const Request& req, uint64_t now) {
    log::debug("ping", {{"reply_key", field(req.reply_key)}});
    OutMessage m;
    m.routing_key = req.reply_key;
    m.owed = false;  // sent again after a reconnect: the ping itself went with its queue
    uint64_t due = ping_reply_due(req.reply_key, now);
    if (due > now) m.not_before = due;
    // "now" (PROTOCOL.md) when it is sent: a delayed answer says so.
    m.body = ping_reply_body(req.ping_id, iso8601(wall_ms() + (due > now ? due - now : 0)));
    enqueue(std::move(m), now);
}

// The journal entry of a request whose reply is owed, the state directory
// kept (made again, its lock too) first; "" when there is no journal.
std::string Agent::journal_owed(const Request& req, uint64_t now) {
    keep_state_dir(now);
    return journal_.add(req.reply_key, req.req_id);
}

void Agent::on_delivery(amqp::Event& ev, uint64_t now) {
    if (ping_ch_ && ev.channel == ping_ch_) {
        on_ping_delivery(ev, now);
        return;
    }
    if (ev.channel != cons_ch_) return;  // stale channel: the broker requeues it
    forget_stale_acks();
    unacked_.insert(ev.delivery_tag);  // undecided: no multiple ack may cover it
    Request req = parse_request(id_, ev.routing_key, ev.body);
    if (stopping_ && req.kind == RequestKind::Execute && req.error.empty()) {
        std::string journal_key = journal_.add(req.reply_key, req.req_id);
        answer_not_run({std::move(req), ev.delivery_tag, now, std::move(journal_key)},
                       "the agent is shutting down", now);
        ack_later(ev.delivery_tag);
        return;
    }
    if (ev.body_discarded && (req.kind == RequestKind::Execute || req.kind == RequestKind::Ignored))
        req.error = "request body of " + std::to_string(ev.body_size) +
                    " bytes exceeds the agent's limit of " + std::to_string(max_body_size()) +
                    " bytes";
    auto ack = [&] { ack_later(ev.delivery_tag); };
    switch (req.kind) {
    case RequestKind::Ignored:
        log::warn("ignoring message", {{"routing_key", field(ev.routing_key)},
                                       {"reason", field(req.error)}});
        ack();
        return;
    case RequestKind::Ping:
        answer_ping(req, now);
        ack();
        return;
    case RequestKind::Broadcast:
        if (stopping_) {  // not found by a discover: it would be sent requests it will not run
            log::info("sysinfo broadcast not answered: shutting down", {{"req_id", field(req.req_id)}});
            ack();
            return;
        }
        log::info("sysinfo broadcast", {{"req_id", field(req.req_id)}});
        want_sysinfo({SysinfoWaiter::Why::Broadcast, req.reply_key, req.req_id, now}, now);
        ack();
        return;
    case RequestKind::Execute:
        break;
    }
    if (!req.error.empty()) {
        log::warn("invalid request", {{"req_id", field(req.req_id)},
                                      {"routing_key", field(ev.routing_key)},
                                      {"reason", field(req.error)},
                                      {"exit_status", json::Value(2)}});
        OutMessage m;
        m.routing_key = req.reply_key;
        m.body = invalid_request_body(req.error);
        m.cuttable = true;
        m.req_id = req.req_id;
        // Answered at once it beat the binds of a client that had just
        // connected (urclient does not wait for bind-ok), like a ping.
        m.not_before = now + kFreshClientReplyDelayMs;
        // Journaled as any request owed a reply: acked now and held those
        // 100 ms, it was lost to a crash within them.
        m.journal_key = journal_owed(req, now);
        enqueue(std::move(m), now);
        ack();
        return;
    }
    log::info("execute request",
              {{"req_id", field(req.req_id)}, {"routing_key", field(ev.routing_key)},
               {"type", req.is_file ? "file" : "script"}, {"origin", field(req.origin)},
               {"timestamp", req.timestamp.empty() ? json::Value() : field(req.timestamp)},
               {"args", json::Value(int64_t(req.args.size()))},
               {"script_bytes", json::Value(int64_t(req.is_file ? 0 : req.script.size()))},
               {"redelivered", json::Value(ev.redelivered)}});
    if (log::enabled(log::Level::Trace)) {
        json::Value env = json::Value::array();
        if (req.env)
            for (const auto& e : *req.env) env.push_back(field(e));
        log::trace("execute request text", {{"req_id", field(req.req_id)},
                                            {"script", field(req.script)},
                                            {"env", env}});
    }
    // Journaled from receipt, not from its start: a request still waiting
    // for a slot when the agent dies (kill -9) or stops with its "not run"
    // reply undelivered is answered on restart all the same.
    std::string journal_key = journal_owed(req, now);
    Queued q{std::move(req), ev.delivery_tag, now, std::move(journal_key)};
    // Unacked, the waiting requests are at most our prefetch: a broker
    // that ignores basic.qos would have them, bodies and all, grow
    // without bound.  Past it, a request is answered and acked at once.
    if (queued_.size() - acked_waiting_ >= prefetch()) {
        answer_not_run(q, "the broker delivered it past the " + std::to_string(prefetch()) +
                              " unacknowledged requests the agent asked for (basic.qos)",
                       now);
        ack();
        return;
    }
    q.bytes = ev.body.size();
    queued_.push_back(std::move(q));
    start_queued(now);
}

void Agent::start_queued(uint64_t now) {
    if (start_retry_at_ <= now) {
        start_retry_at_ = 0;
        while (!queued_.empty() && request_jobs_ < cfg_.max_concurrency && !stopping_) {
            if (!start_job(queued_.front(), now)) break;  // stays first, tried again later
            take_front();
        }
    }
    ack_waiting();
}

// Requests waiting for a slot are acked at receipt while the agent holds
// fewer than --max-waiting of them (and kMaxAckedWaitingBytes): the
// broker then goes on delivering to a node whose slots are all taken, and
// its sysinfo broadcasts (discover) with the rest, where a prefetch full
// of waiting requests held them back until a slot freed.  Past that bound
// they stay unacked, and the prefetch (--max-concurrency) keeps the rest
// in the broker.  The early ack loses nothing: each is journaled at
// receipt (agent_restarted if the agent dies), and when the channel or
// connection goes they stay queued and run in turn (answer_queued()):
// the broker cannot deliver them again, the exclusive auto-delete request
// queue having gone with it.
void Agent::ack_waiting() {
    // Oldest first, so those acked are the first acked_waiting_ of queued_
    // (requests leave it from the front, take_front()): the rest, none of
    // them acked (a request is acked otherwise only as it leaves), start
    // there.
    for (size_t i = acked_waiting_; i < queued_.size(); ++i) {
        Queued& q = queued_[i];
        if (acked_waiting_ >= cfg_.max_waiting ||
            acked_waiting_bytes_ + q.bytes > kMaxAckedWaitingBytes)
            return;
        ++acked_waiting_;
        acked_waiting_bytes_ += q.bytes;
        settle(q);
    }
}

// A request's delivery acked, once.
void Agent::settle(Queued& q) {
    if (q.acked) return;
    q.acked = true;
    ack_later(q.delivery_tag);
}

Agent::Queued Agent::take_front() {
    Queued q = std::move(queued_.front());
    queued_.pop_front();
    if (acked_waiting_ > 0) {  // the front was one of them
        --acked_waiting_;
        acked_waiting_bytes_ -= q.bytes;
    }
    return q;
}

// A request received and never started gets a reply all the same, so that
// its requester learns now, not at its own timeout, that it did not run.
void Agent::answer_not_run(const Queued& q, const std::string& why, uint64_t now) {
    log::warn("request not run", {{"req_id", field(q.req.req_id)}, {"reason", field(why)},
                                  {"exit_status", json::Value(1)}});
    OutMessage m;
    m.routing_key = q.req.reply_key;
    m.body = not_run_body(why);
    m.cuttable = true;
    m.req_id = q.req.req_id;
    m.journal_key = q.journal_key;  // struck off when the broker confirms the reply
    enqueue(std::move(m), now);
}

// Whatever ends the consumer channel (a lost connection, a close or
// cancel by the broker, shutdown) answers here the requests waiting for a
// slot that it delivered: unacked, they went with the channel's
// auto-delete queue.  Those acked at receipt (--max-waiting, the first
// acked_waiting_ of queued_) are the agent's alone by then, and stay to
// run in turn unless `all` (at shutdown, when none will).
void Agent::answer_queued(const std::string& why, uint64_t now, bool all) {
    size_t keep = all ? 0 : acked_waiting_;
    if (keep > 0)
        log::info("requests acked at receipt stay queued, to run when a slot frees",
                  {{"requests", json::Value(int64_t(keep))}});
    auto first = queued_.begin() + std::ptrdiff_t(keep);
    std::deque<Queued> rest(std::make_move_iterator(first), std::make_move_iterator(queued_.end()));
    queued_.erase(first, queued_.end());
    if (all) {
        acked_waiting_ = 0;
        acked_waiting_bytes_ = 0;
    }
    for (const Queued& q : rest) answer_not_run(q, why, now);
}

// Requests that have waited --max-queue-wait for a slot are answered and
// acked before RabbitMQ's consumer_timeout closes the channel over them.
void Agent::expire_queued(uint64_t now) {
    uint64_t limit = uint64_t(cfg_.max_queue_wait_s) * 1000;
    if (limit == 0) return;
    while (!queued_.empty() && now - queued_.front().received_ms >= limit) {
        Queued q = take_front();
        answer_not_run(q, q.was_short
                              ? "it could not be started for want of processes, memory or file "
                                "descriptors and waited " + std::to_string(cfg_.max_queue_wait_s) +
                                    " s (--max-queue-wait)"
                              : "it waited " + std::to_string(cfg_.max_queue_wait_s) +
                                    " s for one of the " + std::to_string(cfg_.max_concurrency) +
                                    " script slots (--max-concurrency; --max-queue-wait)",
                       now);
        settle(q);
    }
}

bool Agent::start_job(Queued& q, uint64_t now) {
    JobSpec spec;
    spec.id = std::to_string(++job_counter_);
    spec.kind = q.req.is_file ? JobSpec::Kind::File : JobSpec::Kind::Script;
    spec.script = std::move(q.req.script);
    spec.args = std::move(q.req.args);
    spec.env = std::move(q.req.env);
    double t = q.req.timeout_s > 0 ? q.req.timeout_s : double(cfg_.default_timeout_s);
    // Whole milliseconds, rounded up: a timeout under 1 ms is 1 ms, never
    // the 0 that means "no limit".
    spec.timeout_ms = uint64_t(std::ceil(t * 1000.0));
    spec.max_output = size_t(cfg_.max_output);
    spec.json_output = true;  // escaped while the script runs, not after
    std::string id = spec.id;
    // Short of processes (a fork bomb at the process limit), memory or
    // fds, the request waits at the front of the queue, tried again with
    // backoff, for up to --start-retry counted from the start of the
    // shortage (not from each request's turn: the last of N waiting ones
    // waited N times as long); then it is answered 126 with why.
    // (Only the request at the head of the queue is tried, so the
    // shortage began at or before its own first failure.)
    uint64_t retry_ms = uint64_t(cfg_.start_retry_s) * 1000;
    spec.retried_ms = starts_short_since_ ? now - starts_short_since_ : 0;
    const bool may_wait = retry_ms > 0 && spec.retried_ms < retry_ms;
    std::string why;
    Supervisor::Start started = retry_ms > 0 ? sup_.try_start(spec, now, why)
                                             : (sup_.start(std::move(spec), now) ? Supervisor::Start::Started
                                                                                : Supervisor::Start::DuplicateId);
    if (started == Supervisor::Start::Short) {
        q.was_short = true;
        if (!starts_short_since_) starts_short_since_ = now;
        if (!may_wait) {
            // Waited long enough in this shortage: answered 126 (start()
            // makes that result, saying how long it was tried).
            started = sup_.start(std::move(spec), now) ? Supervisor::Start::Started
                                                       : Supervisor::Start::DuplicateId;
        } else {
            // Given back untouched, to be tried again.
            q.req.script = std::move(spec.script);
            q.req.args = std::move(spec.args);
            q.req.env = std::move(spec.env);
            if (!short_warned_ && (!short_warned_at_ || now - short_warned_at_ >= 60000)) {
                short_warned_ = true;
                short_warned_at_ = now;
                log::warn("cannot start scripts for now; each waits and is tried again",
                          {{"error", field(why)},
                           {"retry_s", json::Value(int64_t(cfg_.start_retry_s))},
                           {"req_id", field(q.req.req_id)}});
            }
            // Not past the end of the wait: the 126 then says how long it was.
            start_retry_at_ = std::min(now + start_backoff_.next(random32()),
                                       starts_short_since_ + retry_ms);
            return false;
        }
    } else if (starts_short_since_) {
        // Made (or failed for a reason of its own): the shortage is over.
        if (short_warned_)
            log::info("starting scripts again", {{"waited_ms", json::Value(int64_t(now - starts_short_since_))}});
        short_warned_ = false;
        starts_short_since_ = 0;
        start_backoff_.reset();
    }
    if (started == Supervisor::Start::DuplicateId) {
        log::error("supervisor refused a job id", {{"req_id", field(q.req.req_id)}});
        journal_.remove(q.journal_key);
        settle(q);
        return true;
    }
    Running r;
    r.req_id = q.req.req_id;
    r.reply_key = q.req.reply_key;
    r.journal_key = q.journal_key;
    running_[id] = std::move(r);
    ++request_jobs_;
    settle(q);
    return true;
}

void Agent::ack_later(uint64_t delivery_tag) { to_ack_.push_back(delivery_tag); }

// The consumer channel the ack state belongs to is gone: the broker
// requeued what it had not seen acked, and an ack can no longer be sent on
// it.
void Agent::forget_stale_acks() {
    if (acks_gen_ == channel_gen_) return;
    unacked_.clear();
    to_ack_.clear();
    acks_gen_ = channel_gen_;
}

void Agent::flush_acks() {
    // An answer goes out ahead of the ack of what it answers.
    if (publish_due_) publish_outbox(monotonic_ms());
    if (ping_ack_upto_ && conn_ && ping_ch_) conn_->basic_ack(ping_ch_, ping_ack_upto_, true);
    ping_ack_upto_ = 0;
    forget_stale_acks();
    if (to_ack_.empty() || !conn_ || !cons_ch_) {
        to_ack_.clear();
        return;
    }
    std::sort(to_ack_.begin(), to_ack_.end());
    for (uint64_t t : to_ack_) unacked_.erase(t);
    // A multiple ack covers every unacked delivery up to its tag, so it
    // must stay below the oldest delivery not yet decided (a request
    // waiting for a free slot).  Deliveries arrive in tag order, so all
    // tags below that one have been seen and decided.
    uint64_t undecided = unacked_.empty() ? UINT64_MAX : *unacked_.begin();
    size_t below = size_t(std::lower_bound(to_ack_.begin(), to_ack_.end(), undecided) -
                          to_ack_.begin());
    if (below > 0) conn_->basic_ack(cons_ch_, to_ack_[below - 1], below > 1);
    for (size_t i = below; i < to_ack_.size(); ++i) conn_->basic_ack(cons_ch_, to_ack_[i]);
    to_ack_.clear();
}

void Agent::on_job_finished(JobResult& r, uint64_t now) {
    if (r.id.rfind(kSysinfoJob, 0) == 0) return on_sysinfo_job(r, now);
    if (r.id.rfind(kRebootJob, 0) == 0) {
        reboot_running_ = false;
        if (r.exit_status == 0 && !r.timed_out) {
            log::info("reboot command finished", {{"exit_status", json::Value(r.exit_status)}});
            return;
        }
        // Not rebooting after all: the next script that exits 113 tries
        // again (the original agent exited, to be restarted, for the same).
        rebooted_ = false;
        log::error("the reboot command failed; a later exit 113 runs it again",
                   {{"command", field(cfg_.reboot_cmd)},
                    {"exit_status", json::Value(r.exit_status)},
                    {"stderr", field(r.err.data.substr(0, 1000))}});
        return;
    }
    auto it = running_.find(r.id);
    if (it == running_.end()) return;
    Running run = std::move(it->second);
    running_.erase(it);

    ExecuteOutcome o;
    o.exit_status = r.exit_status;
    bool reboot = r.exit_status == 113 && r.signal == 0;
    if (reboot) o.exit_status = 0;
    o.signal = r.signal;
    o.timed_out = r.timed_out;
    o.out = {r.out.data, r.out.total, r.out.truncated, r.out.escaped};
    o.err = {r.err.data, r.err.total, r.err.truncated, r.err.escaped};
    o.duration_ms = r.duration_ms;
    if (!r.start_error.empty())  // the node's trouble (no fds, no processes, a full disk), not the request's
        log::error("cannot start a script", {{"req_id", field(run.req_id)}, {"error", field(r.start_error)}});
    log::info("execute finished",
              {{"req_id", field(run.req_id)}, {"exit_status", json::Value(r.exit_status)},
               {"duration_ms", json::Value(int64_t(r.duration_ms))},
               {"stdout_bytes", json::Value(int64_t(r.out.total))},
               {"stderr_bytes", json::Value(int64_t(r.err.total))},
               {"timed_out", json::Value(r.timed_out)}});
    if (r.unkillable)
        log::error("script did not end after SIGKILL (stuck in the kernel: a hung NFS or FUSE "
                   "mount?); replied without its exit status, it is reaped if it ever ends",
                   {{"req_id", field(run.req_id)}, {"script_pid", json::Value(int64_t(r.pid))}});
    if (r.pipes_abandoned)
        log::warn("script exited but a background process still holds its output; replied "
                  "without waiting for it (it is left running, its output pipes closed: its "
                  "next write to them fails, or kills it with SIGPIPE)",
                  {{"req_id", field(run.req_id)}});
    OutMessage m;
    m.routing_key = run.reply_key;
    m.cuttable = true;
    if (r.out.escaped) {
        o.out.data = {};  // the capture becomes the body
        m.body = execute_reply_body(o, std::move(r.out.data));
    } else {
        m.body = execute_reply_body(o);
    }
    memory::note_buffer(m.body.size());
    // Free the captured streams (o only views them) before enqueue()
    // frames the body for the socket: the peak is then two copies of the
    // output (body + frames), not three.
    o.out.data = o.err.data = {};
    std::string().swap(r.out.data);
    std::string().swap(r.err.data);
    m.req_id = run.req_id;
    m.journal_key = run.journal_key;
    m.reboot_after = reboot;
    m.whole = true;
    // A reboot command waiting to be forked (reboot_retry_at_) is a
    // reboot under way too: another 113 does not start a second.
    if (reboot && !reboot_pending_ && !rebooted_ && !reboot_retry_at_) {
        log::info("script exited 113: rebooting once the reply is confirmed, or 10 s after "
                  "it is sent (120 s if it cannot be sent)",
                  {{"req_id", field(run.req_id)}});
        reboot_pending_ = true;
        reboot_at_ = UINT64_MAX;  // its grace starts when the reply leaves held_
    } else if (reboot) {
        log::info(reboot_pending_ || reboot_retry_at_ ? "script exited 113: a reboot is already pending"
                                  : "script exited 113: the reboot command was started already "
                                    "(a later 113 starts it again only if it fails)",
                  {{"req_id", field(run.req_id)}});
    }
    // Through held_, in order: its slot stays taken until there is room, so
    // replies waiting for the broker's confirms hold scripts back instead
    // of losing output.
    held_.push_back(std::move(m));
    release_held(now);
    if (!held_.empty())
        log::debug("reply waits for room among the replies not yet confirmed",
                   {{"req_id", field(run.req_id)}, {"held", json::Value(int64_t(held_.size()))},
                    {"unsent_bytes", json::Value(int64_t(outbox_.unpublished_bytes()))}});
}

// Replies of finished scripts go from held_ to the outbox, oldest first,
// while they fit in its room (or it is empty), each giving up its slot.
void Agent::release_held(uint64_t now) {
    while (!held_.empty() && (outbox_.cost(held_.front()) <= outbox_.room() || outbox_.empty())) {
        OutMessage m = std::move(held_.front());
        held_.pop_front();
        --request_jobs_;
        // The grace of an unconfirmed reply runs from its publish
        // (publish_outbox()): the broker may be away or blocking us now.
        if (m.reboot_after && reboot_pending_) {
            reboot_at_ = now + kRebootUnsentMs;
            reboot_reply_sent_ = false;
        }
        enqueue(std::move(m), now);
    }
}

void Agent::enqueue(OutMessage m, uint64_t now) {
    m.queued_ms = now;
    m.mandatory = m.body.size() <= kReturnableBytes && is_answer_key(m.routing_key);
    // Past --max-pending-bytes of replies not yet sent (the broker away or
    // blocking publishes; what is in flight does not count), replies give
    // up output rather than their place: every request still gets its exit
    // status.  Only when replies cut to kMinCutReply fill the bound are the
    // oldest dropped.
    if (outbox_.cost(m) > outbox_.room()) {  // (the cutter is built only when needed)
        auto cut = [&](const OutMessage& which, uint64_t limit) {
            return cut_reply(which, limit, FitReason::PendingBound);
        };
        outbox_.cut_to_fit(m, kMinCutReply, cut);
    }
    std::vector<OutMessage> dropped;
    outbox_.push(std::move(m), dropped);
    for (const auto& d : dropped) {
        log::error("dropping an undelivered reply: pending replies exceed --max-pending-bytes",
                   {{"req_id", field(d.req_id)}, {"routing_key", field(d.routing_key)},
                    {"bytes", json::Value(int64_t(d.body.size()))}});
        journal_.remove(d.journal_key);
    }
    // Published once per loop pass (and before any ack: flush_acks()),
    // not here: each publish_outbox() walks the outbox, and a broker that
    // ignores our prefetch can make a pass queue thousands of answers.
    publish_due_ = true;
}

void Agent::publish_outbox(uint64_t now) {
    publish_due_ = false;
    // Not even the scan while the bytes in flight fill the bound: a full
    // outbox would be listed at every loop pass.
    if (!can_publish() || !outbox_.may_publish()) return;
    for (Outbox::Ref m : outbox_.unpublished(now)) {
        if (!outbox_.may_publish()) break;  // the rest waits for confirms
        if (broker_max_message_ && m->body.size() > broker_max_message_) {
            if (!m->cuttable) {
                // Sysinfo, a start-up announcement: not a reply whose
                // output can go, and never sendable as it is.
                give_up(outbox_.take(m), "it is larger than the broker takes (" +
                                             std::to_string(broker_max_message_) + " bytes)",
                        now);
                continue;
            }
            outbox_.replace_body(m, cut_reply(*m, broker_max_message_, FitReason::BrokerMax));
        }
        uint64_t seq = conn_->basic_publish(pub_ch_, "amq.topic", m->routing_key,
                                            json_properties(), m->body.shared(), m->mandatory);
        if (log::enabled(log::Level::Debug))  // spares building the fields per reply
            log::debug("published", {{"routing_key", field(m->routing_key)},
                                     {"bytes", json::Value(int64_t(m->body.size()))},
                                     {"seq", json::Value(int64_t(seq))}});
        if (m->reboot_after && reboot_pending_ && !reboot_reply_sent_) {
            reboot_reply_sent_ = true;
            reboot_at_ = std::min(reboot_at_, now + kRebootGraceMs);
        }
        outbox_.mark_published(m, seq);
    }
}

// m's body made to fit in `limit` bytes (fit_reply), and a log line saying so.
std::string Agent::cut_reply(const OutMessage& m, uint64_t limit, FitReason why) {
    std::string fit = fit_reply(*m.body.shared(), limit, why);
    log::warn(why == FitReason::BrokerMax
                  ? "reply larger than the broker takes; output cut to fit"
                  : "replies waiting for the broker fill --max-pending-bytes; output cut",
              {{"req_id", field(m.req_id)}, {"routing_key", field(m.routing_key)},
               {"bytes", json::Value(int64_t(m.body.size()))},
               {"now_bytes", json::Value(int64_t(fit.size()))},
               {"unsent_bytes", json::Value(int64_t(outbox_.unpublished_bytes()))}});
    return fit;
}

// A message that will not be sent (again): said at error, and its reply
// no longer owed (the journal entry goes; a reboot waiting for it runs).
void Agent::give_up(const OutMessage& m, const std::string& why, uint64_t now,
                    log::Level level) {
    // Replies to pings and discovers carry no request id of ours: their
    // routing key says whose they were.
    if (m.req_id.empty())
        log::write(level, "message given up, not sent again: " + why,
                   {{"routing_key", field(m.routing_key)},
                    {"bytes", json::Value(int64_t(m.body.size()))}});
    else
        log::write(level, "message given up, not sent again: " + why,
                   {{"req_id", field(m.req_id)}, {"routing_key", field(m.routing_key)},
                    {"bytes", json::Value(int64_t(m.body.size()))}});
    journal_.remove(m.journal_key);
    if (m.reboot_after && reboot_pending_) reboot(now);
}

void Agent::on_confirmed(std::vector<OutMessage> done, uint64_t now) {
    if (!done.empty()) pub_backoff_.reset();
    for (auto& m : done) {
        journal_.remove(m.journal_key);
        if (!m.req_id.empty() && log::enabled(log::Level::Debug))
            log::debug("reply confirmed", {{"req_id", field(m.req_id)},
                                           {"routing_key", field(m.routing_key)}});
        if (m.reboot_after && reboot_pending_) reboot(now);
    }
}

}  // namespace ur
