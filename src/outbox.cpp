#include "src/outbox.hpp"

namespace ur {

void Outbox::push(OutMessage m, std::vector<OutMessage>& dropped) {
    m.seq = 0;
    bytes_ += m.body.size();
    messages_.push_back(std::move(m));
    while (bytes_ > max_bytes_ && messages_.size() > 1) {
        auto oldest = messages_.begin();
        if (oldest->seq != 0) by_seq_.erase(oldest->seq);
        bytes_ -= oldest->body.size();
        dropped.push_back(std::move(*oldest));
        messages_.erase(oldest);
    }
}

void Outbox::erase(List::iterator it) {
    if (it->seq != 0) by_seq_.erase(it->seq);
    bytes_ -= it->body.size();
    messages_.erase(it);
}

void Outbox::replace_body(OutMessage* m, std::string body) {
    bytes_ -= m->body.size();
    m->body = std::move(body);
    bytes_ += m->body.size();
}

std::vector<OutMessage*> Outbox::unpublished() {
    std::vector<OutMessage*> out;
    for (auto& m : messages_)
        if (m.seq == 0) out.push_back(&m);
    return out;
}

void Outbox::mark_published(OutMessage* m, uint64_t seq) {
    for (auto it = messages_.begin(); it != messages_.end(); ++it) {
        if (&*it != m) continue;
        it->seq = seq;
        if (seq != 0) by_seq_[seq] = it;
        return;
    }
}

std::vector<OutMessage> Outbox::confirm(uint64_t seq, bool multiple) {
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
    for (auto it : its) {
        bytes_ -= it->body.size();
        done.push_back(std::move(*it));
        messages_.erase(it);
    }
    return done;
}

void Outbox::nack(uint64_t seq, bool multiple) {
    auto end = multiple ? by_seq_.upper_bound(seq) : by_seq_.find(seq);
    auto begin = multiple ? by_seq_.begin() : end;
    if (!multiple) {
        if (end == by_seq_.end()) return;
        ++end;
    }
    for (auto i = begin; i != end; ++i) i->second->seq = 0;
    by_seq_.erase(begin, end);
}

void Outbox::connection_lost() {
    by_seq_.clear();
    for (auto it = messages_.begin(); it != messages_.end();) {
        auto next = std::next(it);
        it->seq = 0;
        if (!it->keep) erase(it);
        it = next;
    }
}

bool Outbox::has_kept() const {
    for (const auto& m : messages_)
        if (m.keep) return true;
    return false;
}

}  // namespace ur
