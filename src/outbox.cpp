#include "src/outbox.hpp"

#include <algorithm>

namespace ur {

void Outbox::push(OutMessage m, std::vector<OutMessage>& dropped) {
    m.seq = 0;
    if (m.not_before != 0) ++waiting_;
    bytes_ += cost(m);
    unpublished_bytes_ += cost(m);
    messages_.push_back(std::move(m));
    auto newest = std::prev(messages_.end());
    for (auto it = messages_.begin(); unpublished_bytes_ > max_bytes_ && it != newest;) {
        auto next = std::next(it);
        if (it->seq == 0 && !it->whole) dropped.push_back(take(it));
        it = next;
    }
}

void Outbox::cut_to_fit(OutMessage& m, uint64_t min_cut, const Cutter& cut) {
    if (m.cuttable && !m.whole && cost(m) > room()) {
        const uint64_t rest = cost(m) - m.body.size();  // what cutting the body leaves
        uint64_t limit = std::max(room() > rest ? room() - rest : 0, min_cut);
        if (m.body.size() > limit) m.body = cut(m, limit);
    }
    if (cost(m) <= room()) return;
    for (auto it = messages_.begin(); it != messages_.end() && cost(m) > room(); ++it)
        if (it->seq == 0 && it->cuttable && !it->whole && it->body.size() > min_cut)
            replace_body(it, cut(*it, min_cut));
}

OutMessage Outbox::take(Ref it) {
    if (it->seq != 0) by_seq_.erase(it->seq);
    else unpublished_bytes_ -= cost(*it);
    if (it->seq == 0 && it->not_before != 0) --waiting_;
    bytes_ -= cost(*it);
    OutMessage m = std::move(*it);
    messages_.erase(it);
    return m;
}

void Outbox::replace_body(Ref m, std::string body) {
    bytes_ -= cost(*m);
    if (m->seq == 0) unpublished_bytes_ -= cost(*m);
    m->body = std::move(body);
    bytes_ += cost(*m);
    if (m->seq == 0) unpublished_bytes_ += cost(*m);
}

std::vector<Outbox::Ref> Outbox::unpublished(uint64_t now_ms) {
    std::vector<Ref> out;
    size_t n = messages_.size() - by_seq_.size();  // a message has a seq iff it is in by_seq_
    if (n == 0) return out;
    out.reserve(n);
    for (auto it = messages_.begin(); it != messages_.end(); ++it)
        if (it->seq == 0 && it->not_before <= now_ms) out.push_back(it);
    return out;
}

uint64_t Outbox::next_due() const {
    if (waiting_ == 0) return 0;
    uint64_t next = 0;
    for (const auto& m : messages_)
        if (m.seq == 0 && m.not_before != 0 && (next == 0 || m.not_before < next)) next = m.not_before;
    return next;
}

void Outbox::mark_published(Ref m, uint64_t seq) {
    if (m->seq != 0 || seq == 0) return;
    if (m->not_before != 0) {
        m->not_before = 0;
        --waiting_;
    }
    m->seq = seq;
    by_seq_[seq] = m;
    unpublished_bytes_ -= cost(*m);
}

std::vector<OutMessage> Outbox::confirm(uint64_t seq, bool multiple, uint64_t now_ms,
                                        std::vector<OutMessage>* unrouted) {
    std::vector<OutMessage> done;
    auto end = multiple ? by_seq_.upper_bound(seq) : by_seq_.find(seq);
    auto begin = multiple ? by_seq_.begin() : end;
    if (!multiple) {
        if (end == by_seq_.end()) return done;
        ++end;
    }
    std::vector<List::iterator> its;
    for (auto i = begin; i != end; ++i) its.push_back(i->second);
    by_seq_.erase(begin, end);
    // Returns come just before the ack of their message, whose tag this
    // ack's is (or, for a multiple one, among those it covers): each
    // applies to the newest covered message with its key; any left over
    // were for nothing of ours.
    std::vector<bool> came_back(its.size(), false);
    for (size_t i = its.size(); i-- > 0 && !returned_keys_.empty();) {
        if (!its[i]->mandatory) continue;
        for (auto k = returned_keys_.begin(); k != returned_keys_.end(); ++k) {
            if (*k == its[i]->routing_key) {
                returned_keys_.erase(k);
                came_back[i] = true;
                break;
            }
        }
    }
    for (size_t i = 0; i < its.size(); ++i) {
        auto it = its[i];
        if (came_back[i]) {
            it->seq = 0;
            unpublished_bytes_ += cost(*it);
            if (++it->returns > kMaxReturns) {
                OutMessage m = take(it);
                if (unrouted) unrouted->push_back(std::move(m));
                continue;
            }
            it->not_before = now_ms + (kReturnRetryMs << (it->returns - 1));
            ++waiting_;
            continue;
        }
        bytes_ -= cost(*it);
        done.push_back(std::move(*it));
        messages_.erase(it);
    }
    returned_keys_.clear();
    return done;
}

void Outbox::returned(const std::string& routing_key) {
    // Bounded: a broker that returned without ever acking.
    if (returned_keys_.size() < 4096) returned_keys_.push_back(routing_key);
}

std::vector<OutMessage> Outbox::nack(uint64_t seq, bool multiple, uint64_t now_ms) {
    std::vector<OutMessage> given_up;
    auto end = multiple ? by_seq_.upper_bound(seq) : by_seq_.find(seq);
    auto begin = multiple ? by_seq_.begin() : end;
    if (!multiple) {
        if (end == by_seq_.end()) return given_up;
        ++end;
    }
    std::vector<List::iterator> its;
    for (auto i = begin; i != end; ++i) its.push_back(i->second);
    by_seq_.erase(begin, end);
    returned_keys_.clear();
    for (auto it : its) {
        it->seq = 0;
        unpublished_bytes_ += cost(*it);
        refuse(it, now_ms, given_up);
    }
    return given_up;
}

std::vector<OutMessage> Outbox::refuse_unpublished(const Pick& which, uint64_t now_ms) {
    std::vector<OutMessage> given_up;
    for (auto it = messages_.begin(); it != messages_.end();) {
        auto next = std::next(it);
        if (it->seq == 0 && which(*it)) {
            if (it->keep && it->owed) {
                unsigned shift = std::min(it->refusals++, 6u);
                if (it->not_before == 0) ++waiting_;
                it->not_before = std::max(
                    it->not_before, now_ms + std::min(kRefusalRetryMs << shift, kMaxRefusedWaitMs));
            } else {
                refuse(it, now_ms, given_up);
            }
        }
        it = next;
    }
    return given_up;
}

void Outbox::refuse(List::iterator it, uint64_t now_ms, std::vector<OutMessage>& given_up) {
    if (++it->refusals > kMaxRefusals || !it->keep) {
        given_up.push_back(take(it));
        return;
    }
    if (it->not_before == 0) ++waiting_;
    it->not_before = std::max(it->not_before, now_ms + (kRefusalRetryMs << (it->refusals - 1)));
}

void Outbox::connection_lost() {
    by_seq_.clear();
    returned_keys_.clear();  // their confirms will not come: all are sent again anyway
    unpublished_bytes_ = bytes_;
    for (auto it = messages_.begin(); it != messages_.end();) {
        auto next = std::next(it);
        it->seq = 0;
        if (!it->keep) take(it);
        it = next;
    }
}

bool Outbox::has_owed() const {
    for (const auto& m : messages_)
        if (m.keep && m.owed) return true;
    return false;
}

size_t Outbox::replies() const {
    size_t n = 0;
    for (const auto& m : messages_) n += !m.req_id.empty() && m.owed;
    return n;
}

}  // namespace ur
