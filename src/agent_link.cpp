// The broker link: connecting, the AMQP events, the channels and queues
// PROTOCOL.md asks for, and announcing start-up once they are consuming.

#include "src/agent.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "src/agent_internal.hpp"
#include "src/log.hpp"

namespace ur {

namespace {

const char kRequestTag[] = "ur-request";
const char kPingTag[] = "ur-ping";

// A string the broker gave in connection.start ("product", "version"), or "".
std::string server_property(const amqp::Table& props, std::string_view name) {
    const amqp::FieldValue* v = amqp::table_find(props, name);
    return v && v->type == amqp::FieldType::LongString ? v->bytes : std::string();
}

// How loud the attempt-th refusal in a row of the same thing is: said at
// once, then at error every 12th attempt (one to two minutes at the
// backoffs' 5 and 10 s caps): one that lasts leaves the node serving
// nothing.
log::Level lasting_refusal_level(unsigned attempt) {
    return attempt <= 1 ? log::Level::Warn
           : attempt % 12 == 0 ? log::Level::Error
                               : log::Level::Debug;
}

}  // namespace

void Agent::connect_next(uint64_t now) {
    if (addr_index_ >= addrs_.size()) {
        // Next broker of the list; resolve it afresh (its address may move).
        const BrokerAddress& b = cfg_.brokers[broker_index_ % cfg_.brokers.size()];
        ++broker_index_;
        peer_given_ = broker_text(b);
        addrs_.clear();
        addr_index_ = 0;
        if (!resolve_without_lookup(b.host, b.port, addrs_)) return start_lookup(b, now);
    }
    const SocketAddress& a = addrs_[addr_index_++];
    peer_ = a.text;
    bool in_progress = false;
    std::string error;
    fd_ = start_connect(a, in_progress, error);
    if (fd_ < 0) {
        link_down(error, now);
        return;
    }
    log::debug("connecting to broker", {{"broker", peer_}});
    connect_deadline_ = now + uint64_t(cfg_.connect_timeout_s) * 1000;
    link_ = Link::Connecting;
    if (!in_progress) on_connected(now);
}

// A broker given by name is looked up in a child process (Resolver), not
// here: a resolver that does not answer (a DNS outage) would hold the
// whole loop for resolv.conf's timeout x attempts x nameservers, on every
// reconnect, with no script timeout enforced and no signal handled
// meanwhile.  The lookup gets --connect-timeout, as a connect does.
void Agent::start_lookup(const BrokerAddress& b, uint64_t now) {
    peer_ = b.host;
    std::string error;
    if (!resolver_.start(b.host, b.port, cfg_.connect_timeout_s, error)) {
        link_down(error, now);
        return;
    }
    log::debug("looking up the broker's name", {{"broker", field(peer_given_)}});
    connect_deadline_ = now + uint64_t(cfg_.connect_timeout_s) * 1000;
    link_ = Link::Resolving;
}

// The lookup's pipe is readable: once the answer is whole, a connect to
// its first address (the others are tried at once after it, as before),
// or the failure and the usual backoff.
void Agent::read_lookup(uint64_t now) {
    std::string error;
    switch (resolver_.read_answer(addrs_, error)) {
    case Resolver::Answer::Pending:
        return;
    case Resolver::Answer::Failed:
        link_down(error, now);
        return;
    case Resolver::Answer::Resolved:
        log::debug("looked up the broker's name", {{"broker", field(peer_given_)},
                                                   {"addresses", json::Value(int64_t(addrs_.size()))}});
        addr_index_ = 0;
        link_ = Link::Down;
        connect_next(now);
        return;
    }
}

void Agent::on_connected(uint64_t now) {
    amqp::ConnectionOptions o;
    o.login = cfg_.login;
    o.password = cfg_.password;
    o.vhost = cfg_.vhost;
    o.heartbeat = uint16_t(cfg_.heartbeat_s);
    o.version = UR_VERSION;
#if defined(__sun)
    o.platform = "illumos";
#else
    o.platform = "Linux";
#endif
    o.connection_name = "ur-agent " + id_.uuid;
    o.max_body_size = max_body_size();
    conn_ = std::make_unique<amqp::Connection>(o);
    conn_->start(now);
    link_ = Link::Handshake;
    log::debug("connected, AMQP handshake", {{"broker", peer_}});
}

uint64_t Agent::max_body_size() const {
    // Requests carry whole scripts: a few MiB at most in practice.  Parsed
    // JSON takes several times its text in memory, so this bound is what
    // keeps a hostile request from costing more than a few hundred MiB.
    return kMaxRequestBytes;
}

void Agent::link_down(const std::string& why, uint64_t now, bool refused, bool retry_at_once) {
    bool was_open = link_ == Link::Open;
    // A connection open kHealthyMs ended the outage before it: this loss
    // starts the backoff over from its base delay.  Decided here, where the
    // backoff is used, rather than on some later pass of the loop that
    // nothing may wake in time (no heartbeats, no timers).
    if (was_open && now - open_since_ >= kHealthyMs) link_backoff_.reset();
    if (fd_ >= 0) {
        close(fd_);
        fd_ = -1;
    }
    resolver_.cancel();  // a lookup still running (its deadline, say)
    conn_.reset();
    link_ = Link::Down;
    pub_ready_ = false;
    consuming_ = false;
    request_consumer_ok_ = false;
    ping_ready_ = false;
    pub_ch_ = cons_ch_ = ping_ch_ = 0;
    cons_waits_ = ping_waits_ = pub_waits_ = 0;
    request_binds_due_ = 0;
    ping_bind_due_ = false;
    ping_up_since_ = 0;
    ping_shared_ = false;
    ping_parked_ = false;
    locked_attempts_ = 0;  // a 405 on the next connection is said again
    ping_ack_upto_ = 0;
    ++channel_gen_;
    consumer_retry_at_ = 0;
    ping_retry_at_ = 0;
    pub_retry_at_ = 0;  // a new connection opens its own
    blocked_ = false;
    outbox_.connection_lost();
    // Requests received, not started and not acked went with our exclusive
    // queue: answer them (after the reconnect) rather than leave their
    // requesters waiting.  Those acked at receipt stay, to run.
    answer_queued("the broker connection was lost (" + why + ") before it started", now,
                  /*all=*/false);
    if (done_) return;
    if (!was_open) failed_since_serving_ = true;
    uint64_t delay = link_backoff_.next(random32());
    // The name's other addresses are tried at once, and so is a broker
    // whose refusal we have just learnt to avoid.
    if (addr_index_ < addrs_.size() || retry_at_once) delay = 0;
    reconnect_at_ = now + delay;
    if (stopping_) {
        log::info("broker link closed during shutdown", {{"reason", field(why)}});
        return;
    }
    // Refused (login, vhost, permissions): a setting to fix, not an outage
    // to wait out, so said as an error: at once, then every 12th attempt
    // (the lines between at debug: one a retry would fill the log).
    log::Level level = log::Level::Warn;
    if (refused) {
        ++login_refusals_;
        level = login_refusals_ == 1 ? log::Level::Error
                                     : lasting_refusal_level(login_refusals_);
    }
    log::write(level,
              refused   ? "the broker refused us (check the login, the password, --vhost and "
                          "the user's permissions)"
              : was_open ? "lost the broker connection"
                         : "cannot connect to the broker",
              {{"broker", field(peer_)}, {"configured", field(peer_given_)}, {"reason", field(why)},
               {"retry_in_ms", json::Value(int64_t(delay))},
               {"pending_replies", json::Value(int64_t(outbox_.size()))}});
}

void Agent::read_socket(uint64_t now) {
    char* buf = read_buf_.get();
    for (int rounds = 0; rounds < 64 && fd_ >= 0; ++rounds) {
        ssize_t n = read(fd_, buf, kReadChunk);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n <= 0) {
            std::string why = n == 0 ? "the broker closed the connection"
                                     : std::string("read: ") + std::strerror(errno);
            if (link_ == Link::Handshake)
                why += std::string(" ") +
                       (conn_ ? conn_->handshake_stage() : "during the AMQP handshake");
            handle_events(now);
            link_down(why, now);
            return;
        }
        conn_->feed(buf, size_t(n), now);
        handle_events(now);
    }
}

// Writes what the connection has queued.  A write error takes the link
// down, unless down_on_error is false: flushing the close-ok to a broker
// that closed, the caller takes it down with the real reason.
void Agent::write_socket(uint64_t now, bool down_on_error) {
    // Up to 16 pieces a call (the least IOV_MAX POSIX allows): a big reply
    // goes out as frame headers between slices of its body, 8 frames a call.
    constexpr size_t kPieces = 16;
    while (fd_ >= 0 && conn_ && conn_->wants_write()) {
        std::string_view pieces[kPieces];
        struct iovec iov[kPieces];
        size_t k = conn_->output_pieces(pieces, kPieces);
        for (size_t i = 0; i < k; ++i)
            iov[i] = {const_cast<char*>(pieces[i].data()), pieces[i].size()};
        ssize_t n = writev(fd_, iov, int(k));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n < 0) {
            if (down_on_error) link_down(std::string("write: ") + std::strerror(errno), now);
            return;
        }
        conn_->consume_output(size_t(n));
    }
}

void Agent::handle_events(uint64_t now) {
    amqp::Event ev;
    while (conn_ && conn_->next_event(ev)) {
        heard_on(ev.channel, now);
        switch (ev.kind) {
        case amqp::EventKind::Opened:
            link_ = Link::Open;
            open_since_ = now;
            login_refusals_ = 0;
            // Learnt afresh on each connection (from a refusal): the limit
            // may have been raised since, or this is another broker.
            broker_max_message_ = 0;
            {
                std::string product = server_property(conn_->server_properties(), "product");
                std::string version = server_property(conn_->server_properties(), "version");
                log::info("connected to the broker",
                          {{"broker", field(peer_)},
                           {"broker_product", field(product)},
                           {"broker_version", field(version)},
                           {"heartbeat_s", json::Value(int64_t(conn_->heartbeat()))},
                           {"frame_max", json::Value(int64_t(conn_->frame_max()))}});
                // Known to refuse PROTOCOL.md's ping queue: not even tried.
                if (!ping_exclusive_ && denies_transient_queues(product, version)) {
                    ping_exclusive_ = true;
                    log::info("RabbitMQ 4.3 and later deny transient queues that are not "
                              "exclusive; declaring the ping queue exclusive",
                              {{"queue", field(ping_queue_name(id_))}});
                }
            }
            setup_publisher(now);
            setup_consumer(now);
            setup_ping(now);
            break;
        case amqp::EventKind::ChannelOpened:
            break;  // its set-up went out behind its channel.open
        case amqp::EventKind::ConfirmSelected:
            if (ev.channel == pub_ch_) {
                pub_ready_ = true;
                pub_waits_ = 0;
            }
            break;
        case amqp::EventKind::ConsumeOk:
            if (ev.consumer_tag == kPingTag && pings_down_ &&
                (ev.channel == ping_ch_ || ev.channel == cons_ch_)) {
                pings_down_ = false;
                log::info("answering pings again", {{"queue", field(ping_queue_name(id_))}});
            }
            if (ev.channel == cons_ch_ && ev.consumer_tag == kPingTag) {
                ping_ready_ = true;  // shared with the request channel
                ping_waits_ = 0;
            } else if (ev.channel == cons_ch_) {
                request_consumer_ok_ = true;
                cons_waits_ = 0;
                if (ping_parked_) {
                    ping_parked_ = false;
                    setup_ping(now);
                }
            } else if (ev.channel == ping_ch_) {
                ping_ready_ = true;
                ping_waits_ = 0;
                // The backoff starts over once pings have been served a
                // while (the channel closing then), not at once: a broker
                // that closes it each time just after consume-ok would
                // have it set up again every half second, for ever.
                ping_up_since_ = now;
            }
            if (request_consumer_ok_ && ping_ready_ && !consuming_) on_consuming(now);
            break;
        case amqp::EventKind::Delivery:
            on_delivery(ev, now);
            break;
        case amqp::EventKind::Confirmed:
            if (ev.channel == pub_ch_) {
                std::vector<OutMessage> unrouted;
                on_confirmed(outbox_.confirm(ev.delivery_tag, ev.multiple, now, &unrouted), now);
                for (OutMessage& m : unrouted)
                    give_up(m, "no queue took it in " + std::to_string(m.returns) +
                                   " tries (its requester is gone)", now, log::Level::Info);
            }
            break;
        case amqp::EventKind::Nacked:
            if (ev.channel == pub_ch_) {
                size_t in_flight = outbox_.in_flight();
                std::vector<OutMessage> gone = outbox_.nack(ev.delivery_tag, ev.multiple, now);
                if (outbox_.in_flight() == in_flight)
                    log::warn("ignoring a nack for no message of ours in flight",
                              {{"seq", json::Value(int64_t(ev.delivery_tag))}});
                else
                    log::warn("the broker refused a message (a queue bound to its key full, "
                              "with overflow reject-publish?); sending it again with backoff",
                              {{"seq", json::Value(int64_t(ev.delivery_tag))},
                               {"multiple", json::Value(ev.multiple)}});
                for (OutMessage& m : gone)
                    give_up(m, "the broker refused it " + std::to_string(m.refusals) +
                                   " times (a nack: the other queues bound to its key, the "
                                   "requester's among them, may have had each copy)",
                            now);
            }
            break;
        case amqp::EventKind::Returned:
            // No queue took an answer (published mandatory): its requester
            // may not have bound its reply queue yet.  Sent again once
            // its confirm, which follows, comes.
            if (ev.channel == pub_ch_) {
                outbox_.returned(ev.routing_key);
                log::debug("no queue took the answer; sending it again shortly",
                           {{"routing_key", field(ev.routing_key)}});
            } else {
                log::warn("message returned by the broker",
                          {{"routing_key", field(ev.routing_key)},
                           {"code", json::Value(int64_t(ev.code))}});
            }
            break;
        case amqp::EventKind::ServerCancel:
            log::warn("the broker cancelled our consumer (queue deleted?); setting it up again",
                      {{"consumer_tag", field(ev.consumer_tag)}});
            if (conn_ && ev.consumer_tag == kPingTag &&
                (ev.channel == ping_ch_ || (ping_shared_ && ev.channel == cons_ch_))) {
                // The ping queue went: declared and consumed again on its
                // channel.
                pings_down_ = true;
                ping_waits_ = now;
                consume_ping_queue(ev.channel);
            } else if (ev.channel == cons_ch_ && conn_) {
                // Start over on a fresh channel: the request queue is gone,
                // and with it what it held.
                flush_acks();
                conn_->close_channel(cons_ch_);
                request_channel_gone("the broker cancelled the request consumer (request queue "
                                     "deleted?)", now);
                consumer_retry_at_ = now + 200;
            }
            break;
        case amqp::EventKind::Blocked:
            blocked_ = true;
            log::warn("the broker blocked publishing (memory or disk alarm); replies are held",
                      {{"reason", field(ev.text)}});
            break;
        case amqp::EventKind::Unblocked:
            blocked_ = false;
            // A set-up step sent while blocked was not read until now.
            for (uint64_t* w : {&cons_waits_, &ping_waits_, &pub_waits_})
                if (*w) *w = now;
            log::info("the broker unblocked publishing");
            break;
        case amqp::EventKind::ChannelClosed: {
            // RabbitMQ 4.3 closes the connection over a transient queue,
            // but a broker that closed the channel instead is answered
            // the same way: the ping queue declared exclusive, at once.
            bool learnt = learn_transient_refusal(ev.text);
            if (ev.channel == cons_ch_) {
                // The request queue is auto-delete: it went with its only
                // consumer, and every request in it.
                request_channel_gone("the broker closed the request channel (" +
                                         std::to_string(ev.code) + " " + ev.text + ")",
                                     now);
                uint64_t delay = learnt ? 0 : consumer_backoff_.next(random32());
                consumer_retry_at_ = now + delay;
                if (ev.code == 405) {
                    park_pings();
                    // A lock that lasts leaves this node serving nothing.
                    unsigned attempt = ++locked_attempts_;
                    log::write(lasting_refusal_level(attempt),
                               "405 RESOURCE_LOCKED: the request queue is held by another "
                               "connection (another agent with this UUID, or the broker has not "
                               "noticed our old connection died), or a queue of that name "
                               "exists that is not exclusive (delete it); retrying",
                               {{"queue", field(request_queue_name(id_))},
                                {"code", json::Value(405)}, {"text", field(ev.text)},
                                {"retry_in_ms", json::Value(int64_t(delay))},
                                {"attempt", json::Value(int64_t(attempt))}});
                }
                else
                    log::write(lasting_refusal_level(consumer_backoff_.attempts()),
                               ev.code == 403
                                   ? "403 ACCESS_REFUSED on the request queue: the login lacks a "
                                     "permission on the vhost (ur-agent needs configure, write and "
                                     "read on ur.* queues, and write and read on amq.topic); "
                                     "retrying"
                                   : "the broker closed the request channel; opening it again",
                               {{"code", json::Value(int64_t(ev.code))}, {"text", field(ev.text)},
                                {"attempt", json::Value(int64_t(consumer_backoff_.attempts()))},
                                {"retry_in_ms", json::Value(int64_t(delay))}});
            } else if (ev.channel == ping_ch_) {
                // A ping queue we cannot declare (one of that name made
                // with other flags, say) costs pings only: requests go on.
                // Start-up is announced without it rather than never.
                ping_ch_ = 0;
                ping_waits_ = 0;
                pings_down_ = true;
                ping_bind_due_ = false;
                ping_ack_upto_ = 0;
                ping_ready_ = true;
                if (ping_up_since_ && now - ping_up_since_ >= kHealthyMs) ping_backoff_.reset();
                ping_up_since_ = 0;
                uint64_t delay = learnt ? 0 : ping_backoff_.next(random32());
                ping_retry_at_ = now + delay;
                // Said at the first failure and then about once an hour (at
                // the 10 s cap), not at every retry of a lasting refusal.
                unsigned attempt = ping_backoff_.attempts();
                log::write(attempt == 1 || attempt % 360 == 0 ? log::Level::Warn : log::Level::Debug,
                           ev.code == 403 && ev.text.find("in exclusive use") != std::string::npos
                               ? "403 ACCESS_REFUSED on the ping queue: another connection "
                                 "consumes it exclusively; pings go unanswered until it lets go "
                                 "(tried again with backoff)"
                           : ev.code == 403
                               ? "403 ACCESS_REFUSED on the ping queue: the login lacks a "
                                 "permission on the vhost (configure, write and read on ur.* "
                                 "queues, read on amq.topic); pings go unanswered until it is "
                                 "set up again"
                               : "the broker closed the ping channel; pings go unanswered until "
                                 "it is set up again",
                           {{"queue", field(ping_queue_name(id_))},
                            {"code", json::Value(int64_t(ev.code))}, {"text", field(ev.text)},
                            {"attempt", json::Value(int64_t(attempt))},
                            {"retry_in_ms", json::Value(int64_t(delay))}});
                if (request_consumer_ok_ && !consuming_) on_consuming(now);
            } else if (ev.channel == pub_ch_) {
                // Usually a message it refused.  Reopening at once would
                // publish the same message again, as fast as the broker
                // refuses it, with every later reply stuck behind it.
                pub_ready_ = false;
                pub_ch_ = 0;
                pub_waits_ = 0;
                outbox_.connection_lost();
                // A 403 naming one routing key (a topic permission): that
                // message waits as a nacked one does and the others go
                // first, at once; it must not hold them back for ever.
                size_t refused = 0;
                std::vector<OutMessage> gone = outbox_.refuse_unpublished(
                    [&](const OutMessage& m) {
                        bool named = close_refuses_key(ev.code, ev.text, m.routing_key);
                        refused += named;
                        return named;
                    },
                    now);
                // At once, but not at every close: new answers on a
                // refused key (a denied client's pings) each close it again,
                // and each close sends what was in flight again.
                uint64_t delay = pub_backoff_.next(random32());
                if (refused > 0 && (last_key_refusal_ms_ == 0 || now - last_key_refusal_ms_ >= 1000))
                    delay = 0;
                if (refused > 0) last_key_refusal_ms_ = now;
                pub_retry_at_ = now + delay;
                log::write(lasting_refusal_level(pub_backoff_.attempts()),
                           refused > 0 ? "403 ACCESS_REFUSED on a publish to one routing key (a "
                                         "topic permission): the other messages go first; a reply "
                                         "on it is sent again after 1, 2, 4 s and on up to every "
                                         "60 s, a ping or discover answer given up after 4 tries"
                           : ev.code == 403
                               ? "403 ACCESS_REFUSED on a publish: the login lacks write "
                                 "permission on amq.topic; replies wait, and the channel is "
                                 "opened again"
                               : "the broker closed the publishing channel; opening it again",
                           {{"code", json::Value(int64_t(ev.code))}, {"text", field(ev.text)},
                            {"attempt", json::Value(int64_t(pub_backoff_.attempts()))},
                            {"retry_in_ms", json::Value(int64_t(delay))}});
                for (OutMessage& m : gone)
                    give_up(m, "the broker refused its routing key " +
                                   std::to_string(m.refusals) + " times (403: a topic permission)",
                            now);  // never an owed one
                if (uint64_t limit = max_size_from_close(ev.code, ev.text);
                    limit && limit != broker_max_message_) {
                    broker_max_message_ = limit;
                    log::warn("the broker refuses messages over its max message size; larger "
                              "replies will be cut to fit",
                              {{"max_bytes", json::Value(int64_t(limit))}});
                }
            }
            break;
        }
        case amqp::EventKind::Closed: {
            std::string why = "connection closed";
            switch (ev.close_reason) {
            case amqp::CloseReason::ClosedByPeer: why = "closed by the broker"; break;
            case amqp::CloseReason::ProtocolError: why = "protocol error"; break;
            case amqp::CloseReason::HeartbeatTimeout: why = "no heartbeat from the broker: peer dead"; break;
            case amqp::CloseReason::AuthFailure: why = "access refused"; break;
            case amqp::CloseReason::ClosedByUs: why = "closed by us"; break;
            }
            if (ev.code) why += " (" + std::to_string(ev.code) + " " + ev.text + ")";
            else if (!ev.text.empty()) why += " (" + ev.text + ")";
            write_socket(now, false);  // flush close / close-ok, best effort
            if (ev.close_reason == amqp::CloseReason::ClosedByUs) done_ = stopping_;
            bool fixed = ev.close_reason == amqp::CloseReason::ClosedByPeer &&
                         learn_transient_refusal(ev.text);
            link_down(why, now, ev.close_reason == amqp::CloseReason::AuthFailure, fixed);
            return;
        }
        case amqp::EventKind::QueueBound:
            if (ev.channel == cons_ch_ && request_binds_due_ > 0) --request_binds_due_;
            break;
        default:
            break;
        }
    }
    if (ping_bind_due_ && (cons_ch_ == 0 || request_binds_due_ == 0)) {
        if (ping_waits_) ping_waits_ = now;  // its wait for the request binds is none of the broker's
        bind_ping_queue(ping_ch_);
    }
}

// Declares and binds the ping queue and consumes it on `ch`: its own
// channel, so that a ping queue the broker refuses (or deletes) cannot
// take the request queue, and the requests in it, down with it; the
// request channel only when the broker allows no third channel.
void Agent::consume_ping_queue(uint16_t ch) {
    declare_ping_queue(ch);
    bind_ping_queue(ch);
}

// Auto-delete, not durable, and not exclusive as PROTOCOL.md has it, but
// exclusive where the broker denies that (ping_exclusive_).
void Agent::declare_ping_queue(uint16_t ch) {
    conn_->queue_declare(ch, ping_queue_name(id_), false, false, ping_exclusive_, true);
}

// A close whose text is RabbitMQ's refusal of a transient non-exclusive
// queue (ours is the ping queue): from now on it is declared exclusive.
// True the first time only, when the caller should retry at once.
bool Agent::learn_transient_refusal(const std::string& close_text) {
    if (ping_exclusive_ || !is_transient_queue_refusal(close_text)) return false;
    ping_exclusive_ = true;
    log::warn("the broker denies transient queues that are not exclusive "
              "(transient_nonexcl_queues); declaring the ping queue exclusive from now on",
              {{"queue", field(ping_queue_name(id_))}});
    return true;
}

// The ping queue's binding and consumer, on `ch` (its declare went first);
// no longer due after this.
void Agent::bind_ping_queue(uint16_t ch) {
    ping_bind_due_ = false;
    std::string pq = ping_queue_name(id_);
    for (const auto& key : ping_bindings(id_)) conn_->queue_bind(ch, pq, "amq.topic", key);
    conn_->basic_consume(ch, pq, kPingTag, false, false);
}

void Agent::setup_ping(uint64_t now) {
    if (!conn_ || !conn_->is_open() || stopping_ || ping_parked_) return;
    ping_ch_ = conn_->open_channel();
    if (ping_ch_ != 0 || cons_ch_ != 0) ping_waits_ = now;
    if (ping_ch_ != 0) {
        conn_->basic_qos(ping_ch_, prefetch());
        // Bindings to amq.topic made at once on two channels contend for
        // the same records in RabbitMQ's database (every Ur key starts
        // with "ur."), and one of them waits or is retried: start-up took
        // 1 ms longer at the median, up to 10 ms at the tail (make bench).
        // So the ping queue is declared at once, but bound only when the
        // request queue's bindings are done (handle_events()).
        declare_ping_queue(ping_ch_);
        if (cons_ch_ != 0 && request_binds_due_ > 0)
            ping_bind_due_ = true;
        else
            bind_ping_queue(ping_ch_);
        return;
    }
    if (cons_ch_ == 0) return need_channels();
    ping_shared_ = true;
    log::warn("the broker allows only 2 channels; pings share the request channel (a ping "
              "queue the broker refuses then takes the request queue down with it)",
              {{"channel_max", json::Value(int64_t(conn_->channel_max()))}});
    consume_ping_queue(cons_ch_);
}

// The broker's channel_max leaves too few channels.  Staying connected
// would look healthy and serve nothing: close, and reconnect with backoff
// until the broker is fixed.
void Agent::need_channels() {
    log::error("the broker allows too few channels; ur-agent needs 2",
               {{"channel_max", json::Value(int64_t(conn_->channel_max()))}});
    conn_->close(amqp::kResourceError, "ur-agent needs 2 channels");
}

// The request channel closed or its consumer cancelled by the broker,
// the connection still up: the requests waiting for a slot are answered
// (the queue went with them), and serving starts over on a new channel
// (with the ping consumer, when it shares this one).
void Agent::request_channel_gone(const std::string& why, uint64_t now) {
    cons_ch_ = 0;
    cons_waits_ = 0;
    if (ping_shared_) ping_waits_ = 0;
    request_binds_due_ = 0;
    ++channel_gen_;
    answer_queued(why + " before it started", now, /*all=*/false);
    consuming_ = false;
    request_consumer_ok_ = false;
    if (ping_shared_) ping_ready_ = false;
}

// Each channel's set-up goes out right behind its channel.open, without
// waiting for the open-ok: the broker handles a channel's frames in order
// and drops what follows a refused open with the channel.  That saves a
// round trip to the broker (about 0.5 ms at start-up on loopback).
void Agent::setup_consumer(uint64_t now) {
    if (!conn_ || !conn_->is_open() || stopping_) return;
    cons_ch_ = conn_->open_channel();
    request_consumer_ok_ = false;
    if (cons_ch_ == 0) return need_channels();
    if (id_.mac.empty()) {
        // sysinfo_ is read again while id_ stays the start's: a usable MAC
        // that came later is not used until a restart, and not called bad.
        const json::Value* nic = admin_nic(sysinfo_);
        const std::string later = admin_mac(sysinfo_);
        if (!nic) {
            log::warn("no NIC in sysinfo carries the admin tag; request queue without MAC binding",
                      {{"admin_tag", field(admin_tag(sysinfo_))}});
        } else if (later.empty()) {
            const json::Value* mac = nic->find("MAC Address");
            log::warn("the admin NIC's \"MAC Address\" cannot be a word of a routing key; "
                      "request queue without MAC binding",
                      {{"admin_tag", field(admin_tag(sysinfo_))},
                       {"mac", field(mac ? json::write(*mac).substr(0, 300) : "missing")}});
        } else {
            log::warn("the admin NIC's MAC came after start; request queue without MAC binding "
                      "until the agent restarts",
                      {{"mac", field(later)}});
        }
    }
    conn_->basic_qos(cons_ch_, prefetch());
    std::string rq = request_queue_name(id_);
    conn_->queue_declare(cons_ch_, rq, false, false, true, true);
    request_binds_due_ = 0;
    for (const auto& key : request_bindings(id_))
        if (conn_->queue_bind(cons_ch_, rq, "amq.topic", key)) ++request_binds_due_;
    conn_->basic_consume(cons_ch_, rq, kRequestTag, false, false);
    cons_waits_ = now;
    if (ping_shared_) {
        ping_waits_ = now;
        consume_ping_queue(cons_ch_);
    }
}

void Agent::setup_publisher(uint64_t now) {
    pub_ch_ = conn_->open_channel();
    if (pub_ch_ != 0) {
        conn_->confirm_select(pub_ch_);
        pub_waits_ = now;
    }
}

// An event on `channel`: the broker answers that channel's set-up, if
// one is under way (setup_stall_at()).
void Agent::heard_on(uint16_t channel, uint64_t now) {
    if (channel == 0) return;
    if (channel == cons_ch_ && cons_waits_) cons_waits_ = now;
    if ((channel == ping_ch_ || (ping_shared_ && channel == cons_ch_)) && ping_waits_)
        ping_waits_ = now;
    if (channel == pub_ch_ && pub_waits_) pub_waits_ = now;
}

void Agent::on_consuming(uint64_t now) {
    consuming_ = true;
    consumer_backoff_.reset();
    locked_attempts_ = 0;
    // Serving again after connects had failed: the outage (a broker
    // restart, say) is over, so the next one starts from the base delay
    // instead of where this one left off.  A broker that lets us serve and
    // then drops us at once, with no failed connect in between, still
    // climbs the backoff until kHealthyMs of health resets it.
    if (failed_since_serving_) {
        failed_since_serving_ = false;
        link_backoff_.reset();
    }
    log::info("serving requests", {{"queue", field(request_queue_name(id_))},
                                   {"uuid", field(id_.uuid)}});
    if (!startup_checked_) {
        startup_checked_ = true;
        std::string marker = cfg_.state_dir + "/.ur-startup";
        const int flags = O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW;
        int fd = open(marker.c_str(), flags, 0644);
        struct stat st;
        bool foreign = false;
        if (fd < 0 && errno == EEXIST && lstat(marker.c_str(), &st) == 0 &&
            (!S_ISREG(st.st_mode) || st.st_uid != geteuid() || st.st_nlink != 1)) {
            // In a world-writable state dir (/tmp) any local user could
            // keep the node from being announced: only a file of ours with
            // one link counts (a hard link to any file of ours is not
            // ours to trust).  Replaced where we may; announced all the same.
            foreign = true;
            log::warn("a start-up marker this agent's user did not make is ignored",
                      {{"file", marker}, {"uid", json::Value(int64_t(st.st_uid))}});
            fd = unlink(marker.c_str()) == 0 ? open(marker.c_str(), flags, 0644) : -1;
        }
        const int err = fd < 0 ? errno : 0;
        if (err == EEXIST && !foreign)
            log::info("start-up was announced earlier in this boot (the marker exists)",
                      {{"file", marker}});
        if (fd >= 0 || err != EEXIST || foreign) {
            // A marker that cannot be made (a read-only or full state dir)
            // must not keep a booted node from being announced: announced
            // all the same, once, and a restart of the agent may repeat it.
            if (fd >= 0)
                close(fd);
            else
                log::error("cannot create the start-up marker; announcing start-up without it",
                           {{"file", marker}, {"error", std::strerror(err)}});
            OutMessage m;
            m.routing_key = startup_key(id_.uuid);
            m.body = json::write(sysinfo_);
            enqueue(std::move(m), now);
            log::info("announcing start-up", {{"routing_key", field(startup_key(id_.uuid))}});
        }
    }
    // A sysinfo heartbeat on every connect, then on the interval until set-up.
    send_sysinfo_heartbeat(now);
}

}  // namespace ur
