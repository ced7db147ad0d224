#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "src/journal.hpp"

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

TEST_CASE("journal: foreign files are dropped, an unsafe directory refused") {
    std::string state = fresh_dir();
    std::string dir = state + "/inflight";
    std::string err;
    Journal j;
    REQUIRE(j.open(dir, false, err));
    std::ofstream(dir + "/req-forged") << "ur.execute.somebody.else\n";
    std::ofstream(dir + "/unrelated") << "x";
    CHECK(j.leftovers().empty());
    CHECK(access((dir + "/req-forged").c_str(), F_OK) != 0);

    std::string link = state + "/link";
    REQUIRE(symlink(dir.c_str(), link.c_str()) == 0);
    Journal k;
    CHECK_FALSE(k.open(link, false, err));
    CHECK(err.find("not a private directory") != std::string::npos);
    chmod(dir.c_str(), 0777);
    Journal m;
    CHECK_FALSE(m.open(dir, false, err));
}
