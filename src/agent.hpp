// The agent: one poll() loop that owns the broker link (socket +
// amqp::Connection), the Ur protocol handling, the process supervisor and
// the outbox of replies.  Data flows one way: socket -> Connection -> Ur
// request -> Supervisor -> reply -> Outbox -> Connection -> socket.
// Its definitions are split by concept: agent.cpp (set-up, the loop,
// shutdown), agent_link.cpp, agent_requests.cpp, agent_sysinfo.cpp and
// agent_state_dir.cpp, with what they share in agent_internal.hpp.
#pragma once
#include <cstdint>
#include <deque>
#include <map>
#include <set>
#include <memory>
#include <string>
#include <vector>

#include "amqp/connection.hpp"
#include "json/json.hpp"
#include "src/config.hpp"
#include "src/journal.hpp"
#include "src/linux_sysinfo.hpp"
#include "src/net.hpp"
#include "src/outbox.hpp"
#include "src/resolver.hpp"
#include "src/supervisor.hpp"
#include "src/sysinfo.hpp"
#include "src/ur_protocol.hpp"

namespace ur {

// True when sysinfo comes from the built-in Linux reader: no --sysinfo-file,
// no --sysinfo-cmd, and no executable /usr/bin/sysinfo.
bool use_builtin_sysinfo(const Config& cfg);
// Where sysinfo comes from, for messages: "--sysinfo-file F", "--sysinfo-cmd
// C" or "the built-in sysinfo".
std::string sysinfo_source(const Config& cfg);
BuiltinSysinfoOptions builtin_sysinfo_options(const Config& cfg);
// Reads sysinfo once as the agent does (the file, the built-in reader, or
// the command under the same time and output limits) and checks it the
// same way: for --print-sysinfo.  On success `sysinfo` is what the agent
// would send; otherwise `error` says why it would refuse it.
bool read_sysinfo_now(const Config& cfg, json::Value& sysinfo, std::string& error);

// Exponential backoff with jitter: base doubling to cap; reset() after a
// healthy period.
class Backoff {
public:
    Backoff(uint64_t base_ms, uint64_t cap_ms) : base_(base_ms), cap_(cap_ms) {}
    uint64_t next(uint32_t random);  // delay for the next attempt
    void reset() { attempt_ = 0; }
    unsigned attempts() const { return attempt_; }

private:
    uint64_t base_, cap_;
    unsigned attempt_ = 0;
};

class Agent {
public:
    explicit Agent(Config cfg);
    ~Agent();
    // Runs until SIGTERM/SIGINT (or a fatal set-up error).  Returns the
    // process exit status.
    int run();

private:
    // Resolving: a broker's name is being looked up (resolver_), then
    // Connecting to its addresses one by one.
    enum class Link { Down, Resolving, Connecting, Handshake, Open };

    // One request delivered but not yet started (waiting for a free slot).
    struct Queued {
        Request req;
        uint64_t delivery_tag;
        uint64_t received_ms;
        std::string journal_key;  // journaled at receipt; "" when the journal is off
        bool was_short = false;   // failed to start for want of resources (start_retry_at_)
        uint64_t bytes = 0;       // its body's size
        bool acked = false;       // its delivery acked (or to be, by flush_acks)
    };
    struct Running {
        std::string req_id, reply_key, journal_key;
    };
    struct SysinfoWaiter {
        enum class Why { Boot, Heartbeat, Broadcast } why;
        std::string reply_key, req_id;
        uint64_t received_ms = 0;  // Broadcast: when it arrived
    };

    // Set-up
    bool setup(std::string& error);
    bool lock_state_dir();
    std::string lock_path() const;
    static int open_lock_file(const std::string& path, std::string& why);
    static int lock_without_waiting(const std::string& path, const char* held_why,
                                    std::string& why);
    bool open_journal();
    void keep_state_dir(uint64_t now);
    std::string journal_owed(const Request& req, uint64_t now);
    void adopt_state_dir(uint64_t now);
    void install_signals();
    // The loop
    void loop_once();
    uint64_t next_deadline() const;
    uint64_t setup_stall_at() const;
    uint64_t setup_step_ms() const;
    // Our basic.qos on the request and ping channels: one per script slot.
    uint16_t prefetch() const { return uint16_t(std::min<unsigned>(cfg_.max_concurrency, 65535)); }
    void drain_self_pipe();
    // Broker link
    void connect_next(uint64_t now);
    void start_lookup(const BrokerAddress& b, uint64_t now);
    void read_lookup(uint64_t now);
    void on_connected(uint64_t now);
    void link_down(const std::string& why, uint64_t now, bool refused = false,
                   bool retry_at_once = false);
    uint64_t max_body_size() const;
    void read_socket(uint64_t now);
    void write_socket(uint64_t now, bool down_on_error = true);
    void handle_events(uint64_t now);
    void consume_ping_queue(uint16_t ch);
    void declare_ping_queue(uint16_t ch);
    bool learn_transient_refusal(const std::string& close_text);
    void bind_ping_queue(uint16_t ch);
    void request_channel_gone(const std::string& why, uint64_t now);
    void setup_consumer(uint64_t now);
    void setup_ping(uint64_t now);
    void setup_publisher(uint64_t now);
    void heard_on(uint16_t channel, uint64_t now);
    void park_pings();
    void close_ping_channel();
    void need_channels();
    void on_consuming(uint64_t now);
    // Ur protocol
    void on_delivery(amqp::Event& ev, uint64_t now);
    void on_ping_delivery(const amqp::Event& ev, uint64_t now);
    void answer_ping(const Request& req, uint64_t now);
    void start_queued(uint64_t now);
    void ack_waiting();
    void settle(Queued& q);
    Queued take_front();
    void answer_not_run(const Queued& q, const std::string& why, uint64_t now);
    void warn_memory_limit();
    void fit_fd_limit();
    void answer_leftovers(uint64_t now);
    void answer_queued(const std::string& why, uint64_t now, bool all);
    void expire_queued(uint64_t now);
    // False when it could not start for want of resources: q is left as
    // it was, to be tried again (start_retry_at_).
    bool start_job(Queued& q, uint64_t now);
    void release_held(uint64_t now);
    void stop_consuming();
    void answer_late_broadcasts(uint64_t now);
    // Replies the agent still owes that must survive reconnects.
    bool owes_replies() const { return outbox_.has_owed() || !held_.empty(); }
    // A publish would go out now: the connection open (not closing, where
    // basic_publish sends nothing and a due message would spin the loop),
    // the publishing channel open, the broker not blocking us.
    bool can_publish() const { return conn_ && conn_->is_open() && pub_ready_ && !blocked_; }
    void ack_later(uint64_t delivery_tag);
    void forget_stale_acks();
    void flush_acks();
    void on_job_finished(JobResult& r, uint64_t now);
    void enqueue(OutMessage m, uint64_t now);
    std::string cut_reply(const OutMessage& m, uint64_t limit, FitReason why);
    void publish_outbox(uint64_t now);
    void give_up(const OutMessage& m, const std::string& why, uint64_t now,
                 log::Level level = log::Level::Error);
    void on_confirmed(std::vector<OutMessage> done, uint64_t now);
    // Sysinfo
    void want_sysinfo(SysinfoWaiter w, uint64_t now);
    void on_sysinfo_job(const JobResult& r, uint64_t now);
    void on_sysinfo(bool ok, const std::string& text, const std::string& error, uint64_t now);
    // The reply to a sysinfo broadcast: body, on the waiter's reply key.
    // When a ping for reply_key may be answered: kFreshClientReplyDelayMs
    // after that client's first ping arrived (every ping until then).
    uint64_t ping_reply_due(const std::string& reply_key, uint64_t now);
    void answer_broadcast(const SysinfoWaiter& w, const std::string& body, uint64_t now);
    void send_sysinfo(const std::vector<SysinfoWaiter>& waiters, uint64_t now);
    void send_sysinfo_heartbeat(uint64_t now);
    // Reboot and shutdown
    void reboot(uint64_t now);
    void adopt_boot_broker(const json::Value& sysinfo);
    void begin_shutdown(uint64_t now);
    void repeat_shutdown(uint64_t now);
    uint64_t grace_end() const;
    size_t running_scripts() const;
    void check_shutdown(uint64_t now);
    std::string random_hex(size_t digits);
    uint32_t random32();

    Config cfg_;
    Supervisor sup_;
    Journal journal_;
    Outbox outbox_;
    Identity id_;
    json::Value sysinfo_;
    bool have_identity_ = false;

    // Self-pipe for signals
    int sig_pipe_[2] = {-1, -1};
    int lock_fd_ = -1;  // STATE-DIR/.ur-agent.lock, write-locked while we run
    std::vector<int> removed_lock_fds_;  // lock files removed under us, held locked (keep_state_dir)
    bool relock_failed_ = false;         // said once until the lock is made again
    bool state_dir_absent_ = false;      // could not be made at start: tried at each request
    std::deque<std::pair<std::string, uint64_t>> ping_clients_;  // recent pings' reply keys, first seen (ping_reply_due)

    // Broker link
    Link link_ = Link::Down;
    int fd_ = -1;
    std::unique_ptr<amqp::Connection> conn_;
    // What read_socket() reads into: on the heap, not the stack, so that
    // the agent runs under a small stack limit (ulimit -s 128 crashed it).
    static constexpr size_t kReadChunk = 65536;
    std::unique_ptr<char[]> read_buf_{new char[kReadChunk]};
    size_t broker_index_ = 0;
    std::vector<SocketAddress> addrs_;
    size_t addr_index_ = 0;
    Resolver resolver_;                // when Resolving: the broker's name looked up
    Backoff link_backoff_;             // 100 ms doubling to cfg_.reconnect_max_ms
    uint64_t reconnect_at_ = 0;        // when Down: next connect attempt
    uint64_t connect_deadline_ = 0;    // when Resolving/Connecting/Handshake
    uint64_t open_since_ = 0;          // when Open: since when (backoff reset)
    // When Open: since when each channel's set-up has waited for the
    // broker (its last step sent or answer heard); 0 when done or not
    // under way (setup_stall_at()).
    uint64_t cons_waits_ = 0, ping_waits_ = 0, pub_waits_ = 0;
    bool failed_since_serving_ = false; // a connect failed since we last served
    std::string peer_;        // the address connected to (resolved)
    std::string peer_given_;  // the broker as configured: "host:port", "[v6]:port"
    uint16_t pub_ch_ = 0, cons_ch_ = 0, ping_ch_ = 0;
    bool pub_ready_ = false;
    // The publishing channel closed by the broker (a message it refused):
    // opened again after a backoff that a confirm resets, never at once;
    // capped at 10 s, as reconnects are by default: the refusal may be a
    // permission that an operator restores.
    Backoff pub_backoff_{100, 10000};
    uint64_t last_key_refusal_ms_ = 0;  // the last 403 naming one of our routing keys
    uint64_t pub_retry_at_ = 0;        // 0 = none scheduled
    uint64_t broker_max_message_ = 0;  // learned from a refusal; 0 = unknown
    bool consuming_ = false;            // serving: the request consumer is up (see ping_ready_)
    bool request_consumer_ok_ = false;  // consume-ok on cons_ch_
    // Ping consumer up, or its channel failed once on this connection:
    // start-up waits for one or the other, not for pings that cannot be.
    bool ping_ready_ = false;
    Backoff ping_backoff_{500, 10000};
    uint64_t ping_up_since_ = 0;       // ping consumer up since (0: not up)
    uint64_t ping_retry_at_ = 0;       // 0 = none scheduled
    uint64_t ping_ack_upto_ = 0;       // ping deliveries to ack at the end of the pass
    bool ping_shared_ = false;         // no third channel: pings on cons_ch_
    bool ping_parked_ = false;         // no ping consumer while the request queue is locked out
    bool pings_down_ = false;          // the ping consumer failed; said when it is back
    // The broker denies transient non-exclusive queues (RabbitMQ 4.3+):
    // the ping queue is declared exclusive, for the life of the process.
    bool ping_exclusive_ = false;
    unsigned request_binds_due_ = 0;   // bind-oks the request channel's set-up still owes
    bool ping_bind_due_ = false;       // the ping queue's bind + consume wait for them
    uint64_t channel_gen_ = 0;         // bumps whenever cons_ch_ becomes invalid
    // Short cap: when the other holder of our queue goes, take over quickly.
    Backoff consumer_backoff_{500, 5000};
    unsigned locked_attempts_ = 0;      // 405s in a row on the request queue
    unsigned login_refusals_ = 0;       // connections refused in a row (login, vhost)
    uint64_t consumer_retry_at_ = 0;   // 0 = none scheduled
    bool blocked_ = false;
    bool publish_due_ = false;         // enqueue()d since the last publish_outbox()
    bool startup_checked_ = false;

    // Acks of the consumer channel, decided during a loop pass and sent at
    // its end (and before that channel is closed): the ones below every
    // delivery still undecided go as one basic.ack with multiple set.
    // RabbitMQ's CPU per consumed message here: 78 us acked one by one,
    // 33 us with a multiple ack per 16 (pika against the test broker).
    std::set<uint64_t> unacked_;     // deliveries of acks_gen_, not yet acked
    std::vector<uint64_t> to_ack_;   // decided this pass
    uint64_t acks_gen_ = 0;          // the channel_gen_ they belong to

    // Requests
    std::deque<Queued> queued_;
    size_t acked_waiting_ = 0;          // the first of queued_, acked at receipt (ack_waiting)
    uint64_t acked_waiting_bytes_ = 0;  // and their bodies' bytes
    std::map<std::string, Running> running_;  // by supervisor job id
    uint64_t job_counter_ = 0;
    size_t request_jobs_ = 0;  // script slots taken: running, or a reply held (below)
    // Replies of finished scripts that do not fit in the outbox's room
    // (--max-pending-bytes) yet, oldest first: each keeps its script slot,
    // so no new script starts while they wait, and none is cut while the
    // broker merely confirms slowly.
    std::deque<OutMessage> held_;
    // Short of processes, memory or fds (Supervisor::try_start): the
    // request at the front of queued_ is tried again at start_retry_at_.
    uint64_t start_retry_at_ = 0;
    Backoff start_backoff_{50, 1000};
    uint64_t starts_short_since_ = 0;  // for the log: 0 = scripts start
    uint64_t short_warned_at_ = 0;     // warned at most once a minute (fds short by one per script)
    bool short_warned_ = false;        // this shortage was warned: say when it ends

    // Sysinfo
    std::vector<SysinfoWaiter> sysinfo_waiters_;
    bool sysinfo_running_ = false;
    bool sysinfo_slow_said_ = false;  // answer_late_broadcasts() warned during this run
    Backoff sysinfo_backoff_{1000, 60000};
    uint64_t sysinfo_retry_at_ = 0;     // boot-time retry
    uint64_t sysinfo_next_at_ = 0;      // next heartbeat, 0 = stopped
    uint64_t sysinfo_slow_at_ = 0;      // when to say the first read is slow, 0 = not
    bool setup_done_ = false;
    std::string setup_problem_;  // last said of an unusable setup-state file

    // Reboot
    bool reboot_pending_ = false;
    uint64_t reboot_at_ = 0;            // grace deadline
    bool reboot_reply_sent_ = false;    // the exit-113 reply was published (its grace runs)
    bool rebooted_ = false;
    bool reboot_running_ = false;       // the reboot command has not ended: shutdown waits
    bool reboot_left_said_ = false;
    uint64_t reboot_retry_at_ = 0;      // the command could not start: next try, 0 = none
    uint64_t reboot_short_said_ = 0;    // when that was last said

    // Shutdown
    bool stopping_ = false;
    uint64_t stop_started_ = 0;
    bool children_killed_ = false;
    bool closing_ = false;
    bool done_ = false;

    uint64_t rng_state_;
};

}  // namespace ur
