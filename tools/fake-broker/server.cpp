// The AMQP 0-9-1 server side of fake::Broker: handshake, channels,
// exchanges, queues, consumers, publishes and confirms.
#include <fnmatch.h>

#include <algorithm>

#include "src/ur_protocol.hpp"
#include "tools/fake-broker/broker_impl.hpp"
#include "tools/fake-broker/topic.hpp"

namespace fake {

using namespace amqp;

namespace {

bool starts_with(std::string_view s, std::string_view prefix) {
    return s.substr(0, prefix.size()) == prefix;
}

std::string in_vhost(const char* what, const std::string& name) {
    return std::string(what) + " '" + name + "' in vhost '/'";
}

Table server_properties(const std::string& product, const std::string& version) {
    Table caps;
    for (const char* cap : {"publisher_confirms", "exchange_exchange_bindings", "basic.nack",
                            "consumer_cancel_notify", "connection.blocked",
                            "consumer_priorities", "authentication_failure_close",
                            "per_consumer_qos"})
        caps.push_back({cap, FieldValue::make_bool(true)});
    Table t;
    t.push_back({"capabilities", FieldValue::make_table(std::move(caps))});
    t.push_back({"cluster_name", FieldValue::make_string("fake@localhost")});
    t.push_back({"product", FieldValue::make_string(product)});
    t.push_back({"platform", FieldValue::make_string("C++17")});
    t.push_back({"version", FieldValue::make_string(version)});
    return t;
}

}  // namespace

std::string Broker::Impl::random_name(const char* prefix) {
    static const char kAlphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    std::string s = prefix;
    for (int i = 0; i < 22; i++) s += kAlphabet[rng() % 64];
    return s;
}

// ---- errors ----

void Broker::Impl::connection_error(Conn& c, uint16_t code, const std::string& text,
                                    uint16_t class_id, uint16_t method_id) {
    if (c.dead || c.state == ConnState::Closing) return;
    event("connection-error " + std::to_string(c.id) + " " + std::to_string(code) + " " + text);
    send_method(c, 0, ConnectionClose{code, text, class_id, method_id});
    for (auto& kv : c.channels) release_channel(c, kv.second);
    c.channels.clear();
    c.state = ConnState::Closing;
    c.closing_since = now_ms();
}

void Broker::Impl::channel_error(Conn& c, Channel& ch, uint16_t code, const std::string& text,
                                 uint16_t class_id, uint16_t method_id) {
    event("channel-error " + std::to_string(c.id) + " " + std::to_string(ch.id) + " " +
          std::to_string(code) + " " + text);
    send_method(c, ch.id, ChannelClose{code, text, class_id, method_id});
    release_channel(c, ch);
    ch.state = ChannelState::Closing;
}

// ---- handshake ----

void Broker::Impl::on_protocol_header(Conn& c, Millis) {
    if (c.header_bytes != kProtocolHeader) {
        // The spec's answer to a header we do not speak: ours, then close.
        c.out.append(kProtocolHeader.data(), kProtocolHeader.size());
        c.close_after_flush = true;
        event("bad-protocol-header " + std::to_string(c.id));
        return;
    }
    ConnectionStart start;
    start.server_properties = server_properties(product, version);
    send_method(c, 0, start);
    c.state = ConnState::AwaitStartOk;
}

bool Broker::Impl::on_frame(Conn& c, const FrameView& f, Millis now) {
    auto keep_going = [&] { return !c.dead && !c.close_after_flush && !c.paused; };
    if (f.type == kFrameHeartbeat) return true;

    std::string why;
    Method m;
    if (c.state == ConnState::Closing) {
        // Only the end of the close handshake matters now.
        if (f.type == kFrameMethod && f.channel == 0 && decode_method(f.payload, m) == DecodeStatus::Ok) {
            if (std::holds_alternative<ConnectionCloseOk>(m)) {
                kill_conn(c, "closed by broker");
            } else if (std::holds_alternative<ConnectionClose>(m)) {
                send_method(c, 0, ConnectionCloseOk{});
                c.close_after_flush = true;
            }
        }
        return keep_going();
    }
    if (c.state != ConnState::Open && (f.type != kFrameMethod || f.channel != 0)) {
        connection_error(c, kUnexpectedFrame, "UNEXPECTED_FRAME - frame type " +
                                                  std::to_string(f.type) + " on channel " +
                                                  std::to_string(f.channel) + " during handshake");
        return false;
    }

    if (f.type == kFrameMethod) {
        DecodeStatus st = decode_method(f.payload, m, &why);
        if (st != DecodeStatus::Ok) {
            connection_error(c, reply_code(st),
                             std::string(st == DecodeStatus::SyntaxError ? "SYNTAX_ERROR - "
                                                                         : "COMMAND_INVALID - ") +
                                 why);
            return false;
        }
        if (f.channel == 0) {
            if (method_class_id(m) != ConnectionStart::kClassId) {
                connection_error(c, kCommandInvalid,
                                 std::string("COMMAND_INVALID - ") + method_name(m) +
                                     " on channel 0",
                                 method_class_id(m), method_method_id(m));
                return false;
            }
            on_method(c, 0, m, now);
            return keep_going();
        }
        if (method_class_id(m) == ConnectionStart::kClassId) {
            connection_error(c, kCommandInvalid,
                             std::string("COMMAND_INVALID - ") + method_name(m) + " on channel " +
                                 std::to_string(f.channel),
                             method_class_id(m), method_method_id(m));
            return false;
        }
    }

    if (f.channel > c.channel_max) {
        connection_error(c, kChannelError, "CHANNEL_ERROR - channel " + std::to_string(f.channel) +
                                               " exceeds channel_max " +
                                               std::to_string(c.channel_max));
        return false;
    }
    auto it = c.channels.find(f.channel);
    if (it == c.channels.end()) {
        if (f.type == kFrameMethod && std::holds_alternative<ChannelOpen>(m)) {
            Channel& ch = c.channels[f.channel];
            ch.id = f.channel;
            ch.conn_id = c.id;
            send_method(c, f.channel, ChannelOpenOk{});
            return keep_going();
        }
        connection_error(c, kChannelError,
                         "CHANNEL_ERROR - expected 'channel.open' on channel " +
                             std::to_string(f.channel));
        return false;
    }
    Channel& ch = it->second;
    if (ch.state == ChannelState::Closing) {
        // Frames in flight when we closed the channel are dropped.
        if (f.type == kFrameMethod && (std::holds_alternative<ChannelCloseOk>(m) ||
                                       std::holds_alternative<ChannelClose>(m))) {
            if (std::holds_alternative<ChannelClose>(m)) send_method(c, ch.id, ChannelCloseOk{});
            c.channels.erase(it);
        }
        return keep_going();
    }

    if (f.type == kFrameMethod) {
        if (ch.publish) {
            connection_error(c, kUnexpectedFrame,
                             std::string("UNEXPECTED_FRAME - expected content ") +
                                 (ch.have_header ? "body" : "header") + ", got " + method_name(m));
            return false;
        }
        on_channel_method(c, ch, m, now);
        return keep_going();
    }
    if (!ch.publish || (f.type == kFrameHeader) == ch.have_header) {
        connection_error(c, kUnexpectedFrame,
                         "UNEXPECTED_FRAME - content frame type " + std::to_string(f.type) +
                             " not expected on channel " + std::to_string(ch.id));
        return false;
    }
    if (f.type == kFrameHeader) {
        DecodeStatus st = decode_content_header(f.payload, ch.header, &why);
        if (st != DecodeStatus::Ok) {
            connection_error(c, reply_code(st), "SYNTAX_ERROR - " + why);
            return false;
        }
        if (ch.header.class_id != BasicPublish::kClassId) {
            connection_error(c, kUnexpectedFrame,
                             "UNEXPECTED_FRAME - content header of class " +
                                 std::to_string(ch.header.class_id));
            return false;
        }
        if (ch.header.body_size > opt.max_body) {
            channel_error(c, ch, kPreconditionFailed,
                          "PRECONDITION_FAILED - message size " +
                              std::to_string(ch.header.body_size) +
                              " is larger than max size " + std::to_string(opt.max_body),
                          BasicPublish::kClassId, BasicPublish::kMethodId);
            return keep_going();
        }
        ch.have_header = true;
        ch.body.clear();
        // body_size is the peer's claim: reserve only a bounded amount.
        ch.body.reserve(size_t(std::min<uint64_t>(ch.header.body_size, 16u << 20)));
        if (ch.header.body_size == 0) finish_publish(c, ch, now);
        return keep_going();
    }
    // Body frame.
    if (f.payload.size() > ch.header.body_size - ch.body.size()) {
        connection_error(c, kFrameError, "FRAME_ERROR - content body longer than body_size " +
                                             std::to_string(ch.header.body_size));
        return false;
    }
    ch.body.append(f.payload.data(), f.payload.size());
    if (ch.body.size() == ch.header.body_size) finish_publish(c, ch, now);
    return keep_going();
}

void Broker::Impl::on_method(Conn& c, uint16_t, Method& m, Millis now) {
    auto unexpected = [&] {
        connection_error(c, kChannelError,
                         std::string("CHANNEL_ERROR - unexpected ") + method_name(m) +
                             " in this connection state",
                         method_class_id(m), method_method_id(m));
    };
    switch (c.state) {
    case ConnState::AwaitStartOk: {
        auto* so = std::get_if<ConnectionStartOk>(&m);
        if (!so) return unexpected();
        // PLAIN: [authzid] NUL authcid NUL passwd.
        size_t a = so->response.find('\0');
        size_t b = a == std::string::npos ? a : so->response.find('\0', a + 1);
        if (so->mechanism != "PLAIN" || b == std::string::npos ||
            so->response.find('\0', b + 1) != std::string::npos) {
            connection_error(c, kAccessRefused,
                             "ACCESS_REFUSED - bad " + so->mechanism + " login", 10, 11);
            return;
        }
        c.user = so->response.substr(a + 1, b - a - 1);
        if (refuse_login) {
            connection_error(c, kAccessRefused,
                             "ACCESS_REFUSED - Login was refused using authentication "
                             "mechanism PLAIN. For details see the broker logfile.",
                             10, 11);
            return;
        }
        send_method(c, 0, ConnectionTune{opt.channel_max, opt.frame_max, opt.heartbeat});
        c.state = ConnState::AwaitTuneOk;
        return;
    }
    case ConnState::AwaitTuneOk: {
        auto* t = std::get_if<ConnectionTuneOk>(&m);
        if (!t) return unexpected();
        uint32_t fm = t->frame_max ? t->frame_max : opt.frame_max;
        uint16_t cm = t->channel_max ? t->channel_max : opt.channel_max;
        if (fm < kFrameMinSize || (opt.frame_max && fm > opt.frame_max)) {
            connection_error(c, kNotAllowed,
                             "NOT_ALLOWED - frame_max " + std::to_string(t->frame_max) +
                                 " outside [4096, " + std::to_string(opt.frame_max) + "]",
                             10, 31);
            return;
        }
        if (cm > opt.channel_max) {
            connection_error(c, kNotAllowed,
                             "NOT_ALLOWED - channel_max " + std::to_string(cm) + " over " +
                                 std::to_string(opt.channel_max),
                             10, 31);
            return;
        }
        c.frame_max = fm;
        c.channel_max = cm;
        c.heartbeat = t->heartbeat;
        c.parser.set_frame_max(fm);
        c.last_recv = now;
        c.state = ConnState::AwaitOpen;
        return;
    }
    case ConnState::AwaitOpen: {
        if (!std::holds_alternative<ConnectionOpen>(m)) return unexpected();
        send_method(c, 0, ConnectionOpenOk{});
        c.state = ConnState::Open;
        event("open " + std::to_string(c.id) + " user=" + c.user);
        if (blocked) send_method(c, 0, ConnectionBlocked{"low on memory"});
        return;
    }
    case ConnState::Open:
        if (std::holds_alternative<ConnectionClose>(m)) {
            send_method(c, 0, ConnectionCloseOk{});
            for (auto& kv : c.channels) release_channel(c, kv.second);
            c.channels.clear();
            c.close_after_flush = true;
            return;
        }
        if (std::holds_alternative<ConnectionCloseOk>(m)) return;  // stray; harmless
        return unexpected();
    default:
        return unexpected();
    }
}

void Broker::Impl::on_channel_method(Conn& c, Channel& ch, Method& m, Millis) {
    const uint16_t cls = method_class_id(m), mth = method_method_id(m);
    auto fail = [&](uint16_t code, const std::string& text) {
        channel_error(c, ch, code, text, cls, mth);
    };

    // As a broker's channel does, what follows a stalled declare waits
    // behind it (here, for ever); a close is still answered.
    if (ch.stalled && !std::holds_alternative<ChannelClose>(m)) return;
    if (std::holds_alternative<ChannelOpen>(m)) {
        connection_error(c, kChannelError, "CHANNEL_ERROR - second 'channel.open' seen", cls, mth);
    } else if (std::holds_alternative<ChannelClose>(m)) {
        uint16_t id = ch.id;
        release_channel(c, ch);
        send_method(c, id, ChannelCloseOk{});
        c.channels.erase(id);  // `ch` is gone
    } else if (std::holds_alternative<ChannelCloseOk>(m) || std::holds_alternative<ChannelFlowOk>(m)) {
        // Answers to nothing we sent: ignore, as RabbitMQ does.
    } else if (auto* fl = std::get_if<ChannelFlow>(&m)) {
        ch.flow_active = fl->active;
        send_method(c, ch.id, ChannelFlowOk{fl->active});
        for (auto& kv : ch.consumers) dirty.insert(kv.second);
    } else if (auto* ed = std::get_if<ExchangeDeclare>(&m)) {
        auto ex = exchanges.find(ed->exchange);
        if (ed->exchange.empty()) {
            return fail(kAccessRefused, "ACCESS_REFUSED - operation not permitted on the default exchange");
        } else if (ex != exchanges.end()) {
            if (!ed->passive && ex->second.type != ed->type)
                return fail(kPreconditionFailed,
                            "PRECONDITION_FAILED - inequivalent arg 'type' for " +
                                in_vhost("exchange", ed->exchange) + ": received '" + ed->type +
                                "' but current is '" + ex->second.type + "'");
        } else if (ed->passive) {
            return fail(kNotFound, "NOT_FOUND - no " + in_vhost("exchange", ed->exchange));
        } else if (starts_with(ed->exchange, "amq.")) {
            return fail(kAccessRefused, "ACCESS_REFUSED - exchange name '" + ed->exchange +
                                            "' contains reserved prefix 'amq.*'");
        } else if (ed->type != "direct" && ed->type != "topic") {
            return connection_error(c, kCommandInvalid,
                                    "COMMAND_INVALID - unknown exchange type '" + ed->type + "'",
                                    cls, mth);
        } else {
            exchanges[ed->exchange] = Exchange{ed->exchange, ed->type, {}};
        }
        if (!ed->nowait) send_method(c, ch.id, ExchangeDeclareOk{});
    } else if (auto* qd = std::get_if<QueueDeclare>(&m)) {
        if (stall_declares) {
            ch.stalled = true;
            return;
        }
        std::string name = qd->queue;
        if (name.empty() && !qd->passive) name = random_name("amq.gen-");
        if (deny_transient && !qd->passive && !qd->durable && !qd->exclusive)
            return connection_error(c, kInternalError,
                                    "INTERNAL_ERROR - Feature `transient_nonexcl_queues` is "
                                    "deprecated.\nBy default, this feature is not permitted anymore.",
                                    cls, mth);
        for (const auto& pat : locked_patterns)
            if (fnmatch(pat.c_str(), name.c_str(), 0) == 0)
                return fail(kResourceLocked, "RESOURCE_LOCKED - cannot obtain exclusive access to locked " +
                                                 in_vhost("queue", name));
        auto q = queues.find(name);
        if (q != queues.end()) {
            Queue& qu = q->second;
            if (qu.exclusive && qu.owner != c.id)
                return fail(kResourceLocked, "RESOURCE_LOCKED - cannot obtain exclusive access to locked " +
                                                 in_vhost("queue", name));
            if (!qd->passive) {
                const char* arg = qu.durable != qd->durable         ? "durable"
                                  : qu.auto_delete != qd->auto_delete ? "auto_delete"
                                  : qu.exclusive != qd->exclusive     ? "exclusive"
                                                                      : nullptr;
                if (arg)
                    return fail(kPreconditionFailed, std::string("PRECONDITION_FAILED - inequivalent arg '") +
                                                         arg + "' for " + in_vhost("queue", name));
            }
        } else if (qd->passive) {
            return fail(kNotFound, "NOT_FOUND - no " + in_vhost("queue", name));
        } else if (starts_with(name, "amq.") && qd->queue == name) {
            return fail(kAccessRefused, "ACCESS_REFUSED - queue name '" + name +
                                            "' contains reserved prefix 'amq.*'");
        } else {
            Queue& qu = queues[name];
            qu.name = name;
            qu.durable = qd->durable;
            qu.exclusive = qd->exclusive;
            qu.auto_delete = qd->auto_delete;
            qu.owner = qd->exclusive ? c.id : 0;
            event("queue-declared " + name);
        }
        Queue& qu = queues[name];
        if (!qd->nowait)
            send_method(c, ch.id, QueueDeclareOk{name, uint32_t(qu.ready.size()),
                                                 uint32_t(qu.consumers.size())});
    } else if (auto* qb = std::get_if<QueueBind>(&m)) {
        auto q = queues.find(qb->queue);
        if (q == queues.end()) return fail(kNotFound, "NOT_FOUND - no " + in_vhost("queue", qb->queue));
        if (q->second.exclusive && q->second.owner != c.id)
            return fail(kResourceLocked, "RESOURCE_LOCKED - cannot obtain exclusive access to locked " +
                                             in_vhost("queue", qb->queue));
        if (qb->exchange.empty())
            return fail(kAccessRefused, "ACCESS_REFUSED - operation not permitted on the default exchange");
        auto ex = exchanges.find(qb->exchange);
        if (ex == exchanges.end())
            return fail(kNotFound, "NOT_FOUND - no " + in_vhost("exchange", qb->exchange));
        auto& bs = ex->second.bindings;
        bool have = std::any_of(bs.begin(), bs.end(), [&](const Binding& b) {
            return b.queue == qb->queue && b.key == qb->routing_key;
        });
        if (!have) bs.push_back(Binding{qb->queue, qb->routing_key});
        if (!qb->nowait) send_method(c, ch.id, QueueBindOk{});
    } else if (auto* qdel = std::get_if<QueueDelete>(&m)) {
        uint32_t count = 0;
        auto q = queues.find(qdel->queue);
        if (q != queues.end()) {
            if (q->second.exclusive && q->second.owner != c.id)
                return fail(kResourceLocked, "RESOURCE_LOCKED - cannot obtain exclusive access to locked " +
                                                 in_vhost("queue", qdel->queue));
            if (qdel->if_unused && !q->second.consumers.empty())
                return fail(kPreconditionFailed, "PRECONDITION_FAILED - " + in_vhost("queue", qdel->queue) + " in use");
            if (qdel->if_empty && !q->second.ready.empty())
                return fail(kPreconditionFailed, "PRECONDITION_FAILED - " + in_vhost("queue", qdel->queue) + " not empty");
            count = delete_queue(qdel->queue);
        }
        if (!qdel->nowait) send_method(c, ch.id, QueueDeleteOk{count});
    } else if (auto* qos = std::get_if<BasicQos>(&m)) {
        ch.prefetch = qos->prefetch_count;
        send_method(c, ch.id, BasicQosOk{});
    } else if (auto* bc = std::get_if<BasicConsume>(&m)) {
        auto q = queues.find(bc->queue);
        if (q == queues.end()) return fail(kNotFound, "NOT_FOUND - no " + in_vhost("queue", bc->queue));
        Queue& qu = q->second;
        if (qu.exclusive && qu.owner != c.id)
            return fail(kResourceLocked, "RESOURCE_LOCKED - cannot obtain exclusive access to locked " +
                                             in_vhost("queue", bc->queue));
        if (bc->exclusive && !qu.consumers.empty())
            return fail(kAccessRefused, "ACCESS_REFUSED - " + in_vhost("queue", bc->queue) +
                                            " in exclusive use");
        std::string tag = bc->consumer_tag.empty() ? random_name("amq.ctag-") : bc->consumer_tag;
        if (ch.consumers.count(tag))
            return connection_error(c, kNotAllowed,
                                    "NOT_ALLOWED - attempt to reuse consumer tag '" + tag + "'",
                                    cls, mth);
        Consumer cons;
        cons.tag = tag;
        cons.conn_id = c.id;
        cons.channel = ch.id;
        cons.no_ack = bc->no_ack;
        cons.prefetch = ch.prefetch;
        qu.consumers.push_back(cons);
        ch.consumers[tag] = qu.name;
        dirty.insert(qu.name);
        if (!bc->nowait) send_method(c, ch.id, BasicConsumeOk{tag});
        event("consume " + std::to_string(c.id) + " " + qu.name + " " + tag);
    } else if (auto* bcancel = std::get_if<BasicCancel>(&m)) {
        auto cq = ch.consumers.find(bcancel->consumer_tag);
        std::string tag = bcancel->consumer_tag;
        if (cq != ch.consumers.end()) {
            std::string queue = cq->second;
            remove_consumer(queue, c.id, ch.id, tag, false);
        }
        if (!bcancel->nowait) send_method(c, ch.id, BasicCancelOk{tag});
    } else if (auto* bp = std::get_if<BasicPublish>(&m)) {
        if (bp->immediate)
            return connection_error(c, kNotImplemented, "NOT_IMPLEMENTED - immediate=true", cls, mth);
        ch.publish = *bp;
        ch.have_header = false;
        ch.body.clear();
    } else if (auto* ack = std::get_if<BasicAck>(&m)) {
        ++ack_frames;
        event("ack " + std::to_string(c.id) + " " + std::to_string(ch.id) + " " +
              std::to_string(ack->delivery_tag) + (ack->multiple ? " multiple" : ""));
        size_t before = ch.unacked.size();
        auto it = ch.unacked.find(ack->delivery_tag);
        if (ack->multiple && ack->delivery_tag == 0) {
            while (!ch.unacked.empty()) ack_one(ch, ch.unacked.begin(), false);
        } else if (it == ch.unacked.end()) {
            return fail(kPreconditionFailed,
                        "PRECONDITION_FAILED - unknown delivery tag " + std::to_string(ack->delivery_tag));
        } else if (ack->multiple) {
            while (!ch.unacked.empty() && ch.unacked.begin()->first <= ack->delivery_tag)
                ack_one(ch, ch.unacked.begin(), false);
        } else {
            ack_one(ch, it, false);
        }
        acked_messages += before - ch.unacked.size();
    } else if (auto* nack = std::get_if<BasicNack>(&m)) {
        if (nack->multiple && nack->delivery_tag == 0) {
            while (!ch.unacked.empty()) ack_one(ch, std::prev(ch.unacked.end()), nack->requeue);
            return;
        }
        auto it = ch.unacked.find(nack->delivery_tag);
        if (it == ch.unacked.end())
            return fail(kPreconditionFailed,
                        "PRECONDITION_FAILED - unknown delivery tag " + std::to_string(nack->delivery_tag));
        if (nack->multiple) {
            // Newest first, so that requeued messages keep their order at the head.
            auto end = ch.unacked.upper_bound(nack->delivery_tag);
            while (end != ch.unacked.begin()) {
                auto last = std::prev(end);
                ack_one(ch, last, nack->requeue);
                end = ch.unacked.upper_bound(nack->delivery_tag);
            }
        } else {
            ack_one(ch, it, nack->requeue);
        }
    } else if (auto* rej = std::get_if<BasicReject>(&m)) {
        auto it = ch.unacked.find(rej->delivery_tag);
        if (it == ch.unacked.end())
            return fail(kPreconditionFailed,
                        "PRECONDITION_FAILED - unknown delivery tag " + std::to_string(rej->delivery_tag));
        ack_one(ch, it, rej->requeue);
    } else if (auto* cs = std::get_if<ConfirmSelect>(&m)) {
        ch.confirm = true;
        if (!cs->nowait) send_method(c, ch.id, ConfirmSelectOk{});
    } else {
        // Server-to-client methods (deliver, return, *-ok ...) from a client.
        connection_error(c, kCommandInvalid,
                         std::string("COMMAND_INVALID - ") + method_name(m) + " from a client",
                         cls, mth);
    }
}

// ---- publishing and routing ----

void Broker::Impl::record_publish(const std::string& exchange, const std::string& key,
                                  const std::string& body) {
    published_keys.push_back(key);
    recent.push_back(Recent{exchange, key, body.substr(0, 1u << 20)});
    if (recent.size() > kRecent) recent.pop_front();
    event("publish " + (exchange.empty() ? std::string("\"\"") : exchange) + " " + key + " " +
          std::to_string(body.size()));
}

int Broker::Impl::route(const std::string& exchange, const std::string& key,
                        const BasicProperties& props, std::shared_ptr<const std::string> body) {
    auto ex = exchanges.find(exchange);
    if (ex == exchanges.end()) return -1;
    std::set<std::string> targets;
    if (exchange.empty()) {
        if (queues.count(key)) targets.insert(key);
    } else {
        bool topic = ex->second.type == "topic";
        for (const Binding& b : ex->second.bindings)
            if (topic ? topic_matches(b.key, key) : b.key == key) targets.insert(b.queue);
    }
    for (const std::string& t : targets) {
        auto q = queues.find(t);
        if (q == queues.end()) continue;
        q->second.ready.push_back(Message{exchange, key, props, body, false});
        dirty.insert(t);
    }
    if (targets.empty() && opt.reply_sink && ur::is_answer_key(key)) return 1;
    return int(targets.size());
}

void Broker::Impl::finish_publish(Conn& c, Channel& ch, Millis now) {
    BasicPublish p = std::move(*ch.publish);
    ch.publish.reset();
    ch.have_header = false;
    auto body = std::make_shared<const std::string>(std::move(ch.body));
    ch.body = std::string();
    if (!exchanges.count(p.exchange))
        return channel_error(c, ch, kNotFound, "NOT_FOUND - no " + in_vhost("exchange", p.exchange),
                             BasicPublish::kClassId, BasicPublish::kMethodId);
    record_publish(p.exchange, p.routing_key, *body);
    int n = route(p.exchange, p.routing_key, ch.header.properties, body);
    if (n == 0 && p.mandatory)
        send_content(c, ch.id, BasicReturn{kNoRoute, "NO_ROUTE", p.exchange, p.routing_key},
                     ch.header.properties, *body);
    if (ch.confirm) {
        uint64_t seq = ++ch.publish_seq;
        if (confirm_delay == 0 && c.confirms.empty()) {
            send_method(c, ch.id, BasicAck{seq, false});
        } else {
            // Later confirms never overtake earlier ones.
            Millis due = now + confirm_delay;
            if (!c.confirms.empty()) due = std::max(due, c.confirms.back().due);
            c.confirms.push_back(PendingConfirm{due, ch.id, seq});
        }
    }
}

// ---- delivery ----

void Broker::Impl::dispatch_all() {
    std::set<std::string> names;
    names.swap(dirty);
    for (const std::string& n : names) {
        auto q = queues.find(n);
        if (q != queues.end()) dispatch(q->second);
    }
}

void Broker::Impl::dispatch(Queue& q) {
    while (!q.ready.empty() && !q.consumers.empty()) {
        size_t n = q.consumers.size();
        bool delivered = false;
        for (size_t tries = 0; tries < n && !delivered; tries++) {
            size_t i = (q.next_consumer + tries) % n;
            Consumer& cons = q.consumers[i];
            Conn* c = find_conn(cons.conn_id);
            if (!c || !may_send(*c) || c->state != ConnState::Open || c->close_after_flush) continue;
            Channel* ch = find_channel(cons.conn_id, cons.channel);
            if (!ch || ch->state != ChannelState::Open || !ch->flow_active) continue;
            if (!cons.no_ack && cons.prefetch != 0 && cons.unacked >= cons.prefetch &&
                !ignore_prefetch)
                continue;
            q.next_consumer = (i + 1) % n;
            Message m = std::move(q.ready.front());
            q.ready.pop_front();
            deliver(*c, *ch, cons, q, std::move(m));
            delivered = true;
        }
        if (!delivered) return;
    }
}

void Broker::Impl::deliver(Conn& c, Channel& ch, Consumer& cons, Queue& q, Message m) {
    uint64_t tag = ++ch.delivery_tag;
    send_content(c, ch.id, BasicDeliver{cons.tag, tag, m.redelivered, m.exchange, m.routing_key},
                 m.properties, *m.body);
    if (cons.no_ack) return;
    cons.unacked++;
    q.unacked++;
    ch.unacked.emplace(tag, Unacked{q.name, cons.tag, std::move(m)});
}

void Broker::Impl::ack_one(Channel& ch, std::map<uint64_t, Unacked>::iterator it, bool requeue_it) {
    Unacked u = std::move(it->second);
    ch.unacked.erase(it);
    auto q = queues.find(u.queue);
    if (q != queues.end()) {
        if (q->second.unacked) q->second.unacked--;
        for (Consumer& cons : q->second.consumers)
            if (cons.tag == u.consumer_tag && cons.conn_id == ch.conn_id &&
                cons.channel == ch.id && cons.unacked)
                cons.unacked--;
        dirty.insert(u.queue);
    }
    if (requeue_it) requeue(u.queue, std::move(u.message));
}

void Broker::Impl::requeue(const std::string& queue, Message m) {
    auto q = queues.find(queue);
    if (q == queues.end()) return;  // deleted meanwhile: the message goes too
    m.redelivered = true;
    q->second.ready.push_front(std::move(m));
    dirty.insert(queue);
}

void Broker::Impl::release_channel(Conn& c, Channel& ch) {
    auto consumers = ch.consumers;  // remove_consumer edits ch.consumers
    for (const auto& kv : consumers) remove_consumer(kv.second, c.id, ch.id, kv.first, false);
    // Newest first, each to the head: the queue sees them in delivery order.
    while (!ch.unacked.empty()) ack_one(ch, std::prev(ch.unacked.end()), true);
    ch.publish.reset();
    ch.body = std::string();
    c.confirms.erase(std::remove_if(c.confirms.begin(), c.confirms.end(),
                                    [&](const PendingConfirm& p) { return p.channel == ch.id; }),
                     c.confirms.end());
}

void Broker::Impl::release_conn(Conn& c) {
    for (auto& kv : c.channels) release_channel(c, kv.second);
    c.channels.clear();
    std::vector<std::string> owned;
    for (auto& kv : queues)
        if (kv.second.exclusive && kv.second.owner == c.id) owned.push_back(kv.first);
    for (const std::string& name : owned) delete_queue(name);
}

void Broker::Impl::remove_consumer(const std::string& queue, uint64_t conn_id, uint16_t channel,
                                   const std::string& tag, bool notify) {
    Channel* ch = find_channel(conn_id, channel);
    if (ch) {
        ch->consumers.erase(tag);
        Conn* c = find_conn(conn_id);
        if (notify && c && ch->state == ChannelState::Open)
            send_method(*c, channel, BasicCancel{tag, true});
    }
    auto q = queues.find(queue);
    if (q == queues.end()) return;
    auto& cs = q->second.consumers;
    auto it = std::find_if(cs.begin(), cs.end(), [&](const Consumer& x) {
        return x.tag == tag && x.conn_id == conn_id && x.channel == channel;
    });
    if (it == cs.end()) return;
    cs.erase(it);
    if (q->second.next_consumer >= cs.size()) q->second.next_consumer = 0;
    if (cs.empty() && q->second.auto_delete) delete_queue(queue);
}

uint32_t Broker::Impl::delete_queue(const std::string& name) {
    auto it = queues.find(name);
    if (it == queues.end()) return 0;
    Queue q = std::move(it->second);
    queues.erase(it);
    dirty.erase(name);
    for (const Consumer& cons : q.consumers) {
        Channel* ch = find_channel(cons.conn_id, cons.channel);
        Conn* c = find_conn(cons.conn_id);
        if (!ch || !c) continue;
        ch->consumers.erase(cons.tag);
        if (ch->state == ChannelState::Open) send_method(*c, cons.channel, BasicCancel{cons.tag, true});
    }
    for (auto& kv : exchanges) {
        auto& bs = kv.second.bindings;
        bs.erase(std::remove_if(bs.begin(), bs.end(), [&](const Binding& b) { return b.queue == name; }),
                 bs.end());
    }
    event("queue-deleted " + name);
    return uint32_t(q.ready.size());
}

}  // namespace fake
