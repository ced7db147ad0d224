#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <algorithm>
#include <fstream>
#include <iterator>
#include <vector>

#include "src/journal.hpp"
#include "src/log.hpp"

using namespace ur;

static std::string fresh_dir() {
    char tmpl[] = "/tmp/ur-journal-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    return tmpl;
}

TEST_CASE("journal: entries outlive the process that wrote them, until removed") {
    std::string state = fresh_dir();
    std::string dir = state + "/inflight";
    for (bool sync : {false, true}) {
        std::string err;
        Journal j;
        REQUIRE(j.open(dir, sync, err));
        struct stat st;
        REQUIRE(lstat(dir.c_str(), &st) == 0);
        CHECK((st.st_mode & 0777) == 0700);
        std::string k1 = j.add("ur.execute-reply.u1.req1", "req1");
        std::string k2 = j.add("ur.execute-reply.u1.req2", "req2");
        CHECK_FALSE(k1.empty());
        CHECK(k1 != k2);
        j.remove(k1);

        Journal again;  // the restarted agent
        REQUIRE(again.open(dir, sync, err));
        auto left = again.leftovers();
        REQUIRE(left.size() == 1);
        CHECK(left[0].key == k2);
        CHECK(left[0].reply_key == "ur.execute-reply.u1.req2");
        CHECK(left[0].req_id == "req2");
        again.remove(left[0].key);
        CHECK(again.leftovers().empty());
    }
}

TEST_CASE("journal: request ids with a space, a newline or '%' survive a restart") {
    std::string dir = fresh_dir() + "/inflight";
    std::string err;
    const std::vector<std::string> ids = {"has space", "nl\nzz", "cr\rx", "50%25", "%", "a b\n%0A"};
    std::vector<std::string> keys;
    {
        Journal j;
        REQUIRE(j.open(dir, false, err));
        for (const std::string& id : ids) keys.push_back(j.add("ur.execute-reply.u1." + id, id));
    }
    Journal again;
    REQUIRE(again.open(dir, false, err));
    auto left = again.leftovers();
    REQUIRE(left.size() == ids.size());
    for (const std::string& id : ids) {
        CAPTURE(id);
        auto it = std::find_if(left.begin(), left.end(),
                               [&](const Journal::Entry& e) { return e.req_id == id; });
        REQUIRE(it != left.end());
        CHECK(it->reply_key == "ur.execute-reply.u1." + id);
    }
}

static std::string slurp(const std::string& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

TEST_CASE("journal: lines that are not records of ours are ignored; unsafe places refused") {
    std::string state = fresh_dir();
    std::string dir = state + "/inflight";
    REQUIRE(mkdir(dir.c_str(), 0700) == 0);
    std::ofstream(dir + "/journal")
        << "+ k1 ur.execute-reply.u1.req1\n"
        << "+ forged ur.execute.somebody.else\n"      // not a reply key
        << "+ k2 ur.execute-reply.u1.req2 extra\n"    // a field too many
        << "garbage\n\n- \n"
        << "- nothing-by-that-key\n"
        << "+ k3 ur.execute-reply.u1.req3\n"
        << "- k3\n"
        << "+ k4 ur.execute-reply." << std::string(300, 'x') << "\n"  // too long
        << "+ k5 ur.execute-reply.u1.req5";            // cut by a crash
    std::string err;
    Journal j;
    // The lines skipped are said, counted (not the torn last one).
    int logp[2];
    REQUIRE(pipe(logp) == 0);
    fcntl(logp[0], F_SETFL, O_NONBLOCK);
    log::init("ur", log::Level::Info, logp[1]);
    bool opened = j.open(dir, false, err);
    log::init("ur", log::Level::Info, 2);
    char buf[4096];
    ssize_t n = read(logp[0], buf, sizeof buf);
    std::string said(buf, n > 0 ? size_t(n) : 0);
    close(logp[0]);
    close(logp[1]);
    REQUIRE(opened);
    CHECK(said.find("skipped lines of the in-flight journal") != std::string::npos);
    CHECK(said.find("\"lines\":5") != std::string::npos);
    auto left = j.leftovers();
    REQUIRE(left.size() == 1);
    CHECK(left[0].key == "k1");
    CHECK(left[0].req_id == "req1");
    // Opening rewrote the file with the live entries only.
    CHECK(slurp(dir + "/journal") == "+ k1 ur.execute-reply.u1.req1\n");

    std::string link = state + "/link";
    REQUIRE(symlink(dir.c_str(), link.c_str()) == 0);
    Journal k;
    CHECK_FALSE(k.open(link, false, err));
    CHECK(err.find("not a private directory") != std::string::npos);
    chmod(dir.c_str(), 0777);
    Journal m;
    CHECK_FALSE(m.open(dir, false, err));
    chmod(dir.c_str(), 0700);

    // Something else in the journal's place: refused at once, no hang.
    std::string dir2 = state + "/fifo";
    REQUIRE(mkdir(dir2.c_str(), 0700) == 0);
    REQUIRE(mkfifo((dir2 + "/journal").c_str(), 0600) == 0);
    Journal f;
    CHECK_FALSE(f.open(dir2, false, err));
    CHECK(err.find("cannot open journal") != std::string::npos);
    CHECK_FALSE(f.is_open());
    CHECK(f.add("ur.execute-reply.u1.r", "r").empty());
}

TEST_CASE("journal: a torn last line is cut, so that a failed rewrite cannot join it to ours") {
    std::string dir = fresh_dir();
    std::ofstream(dir + "/journal") << "+ k1 ur.execute-reply.u1.req1\n"
                                    << "+ k2 ur.execute-reply.u1.re";  // cut by a crash
    // A directory where the rewrite's new file goes: the rewrite fails.
    REQUIRE(mkdir((dir + "/journal.new").c_str(), 0700) == 0);
    std::string err;
    {
        Journal j;
        REQUIRE(j.open(dir, false, err));
        CHECK(slurp(dir + "/journal") == "+ k1 ur.execute-reply.u1.req1\n");
        CHECK_FALSE(j.add("ur.execute-reply.u1.req3", "req3").empty());
    }
    REQUIRE(rmdir((dir + "/journal.new").c_str()) == 0);
    Journal again;
    REQUIRE(again.open(dir, false, err));
    std::vector<std::string> ids;
    for (const auto& e : again.leftovers()) ids.push_back(e.req_id);
    std::sort(ids.begin(), ids.end());
    CHECK(ids == std::vector<std::string>{"req1", "req3"});  // req3 was lost, joined to the torn line
}

TEST_CASE("journal: one append per record; emptied when idle, rewritten when big") {
    std::string dir = fresh_dir() + "/inflight";
    std::string err;
    Journal j;
    REQUIRE(j.open(dir, false, err));
    CHECK(j.file_size() == 0);
    std::string a = j.add("ur.execute-reply.u1.a", "a");
    std::string b = j.add("ur.execute-reply.u1.b", "b");
    CHECK(slurp(dir + "/journal") == "+ " + a + " ur.execute-reply.u1.a\n+ " + b +
                                         " ur.execute-reply.u1.b\n");
    j.remove(a);
    CHECK(slurp(dir + "/journal").find("- " + a + "\n") != std::string::npos);
    j.remove(a);  // twice: nothing more written
    uint64_t size = j.file_size();
    CHECK(size == slurp(dir + "/journal").size());
    j.remove(b);  // nothing left in flight: emptied
    CHECK(j.file_size() == 0);
    CHECK(slurp(dir + "/journal").empty());

    // Under constant load (one request always in flight) the file is
    // rewritten once it passes kRewriteAt, keeping only the live entry.
    std::string keep = j.add("ur.execute-reply.u1.keep", "keep");
    uint64_t most = 0;
    for (int i = 0; i < 20000; ++i) {
        std::string k = j.add("ur.execute-reply.u1.r" + std::to_string(i), "r");
        most = std::max(most, j.file_size());
        j.remove(k);
        most = std::max(most, j.file_size());
    }
    CHECK(most >= Journal::kRewriteAt);         // it grew that far...
    CHECK(most < Journal::kRewriteAt + 4096);   // ...and no further
    CHECK(j.file_size() < Journal::kRewriteAt);
    CHECK(j.file_size() == slurp(dir + "/journal").size());
    Journal again;  // what a restart would find
    REQUIRE(again.open(dir, false, err));
    auto left = again.leftovers();
    REQUIRE(left.size() == 1);
    CHECK(left[0].key == keep);
}

TEST_CASE("journal: thousands in flight are not copied again at every removal") {
    std::string dir = fresh_dir() + "/inflight";
    std::string err;
    Journal j;
    REQUIRE(j.open(dir, false, err));
    std::vector<std::string> keys;
    for (int i = 0; i < 30000; ++i)
        keys.push_back(j.add("ur.execute-reply.u1.r" + std::to_string(i), "r"));
    REQUIRE(j.file_size() > Journal::kRewriteAt);  // live entries alone pass it
    uint64_t before = j.rewrites();
    for (int i = 0; i < 20000; ++i) j.remove(keys[size_t(i)]);
    // Each rewrite happens once the file has doubled since the last one.
    CHECK(j.rewrites() - before <= 2);
    CHECK(j.file_size() == slurp(dir + "/journal").size());
    Journal again;  // what a restart would find: the 10,000 still in flight
    REQUIRE(again.open(dir, false, err));
    CHECK(again.leftovers().size() == 10000);
}

// The request ids a (restarted) journal owes replies for, sorted.
static std::vector<std::string> leftover_reqs(const Journal& j) {
    std::vector<std::string> reqs;
    for (const auto& e : j.leftovers()) reqs.push_back(e.req_id);
    std::sort(reqs.begin(), reqs.end());
    return reqs;
}

TEST_CASE("journal: its directory removed behind our back is made again, live entries kept") {
    std::string state = fresh_dir();
    std::string dir = state + "/inflight";
    std::string err;
    Journal j;
    REQUIRE(j.open(dir, false, err));
    std::string k1 = j.add("ur.execute-reply.u1.before", "before");
    REQUIRE(std::system(("rm -rf '" + dir + "'").c_str()) == 0);
    std::string k2 = j.add("ur.execute-reply.u1.after", "after");
    CHECK_FALSE(k2.empty());
    struct stat st;
    REQUIRE(lstat(dir.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0700);

    Journal again;  // the restarted agent finds both
    REQUIRE(again.open(dir, false, err));
    CHECK(leftover_reqs(again) == std::vector<std::string>{"after", "before"});
    std::system(("rm -rf '" + state + "'").c_str());
}

TEST_CASE("journal: its directory moved away is made again at its path, live entries kept") {
    std::string state = fresh_dir();
    std::string dir = state + "/inflight";
    std::string err;
    {
        Journal j;
        REQUIRE(j.open(dir, false, err));
        j.add("ur.execute-reply.u1.one", "one");
        REQUIRE(rename(dir.c_str(), (state + "/moved").c_str()) == 0);
        usleep(1100 * 1000);  // a rename is looked for at most once a second
        j.add("ur.execute-reply.u1.two", "two");
        // The journal object is not closed cleanly: a crash.
        Journal again;
        REQUIRE(again.open(dir, false, err));
        CHECK(leftover_reqs(again) == std::vector<std::string>{"one", "two"});
    }
    std::system(("rm -rf '" + state + "'").c_str());
}
