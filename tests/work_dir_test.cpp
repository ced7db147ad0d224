#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "src/file_io.hpp"
#include "src/work_dir.hpp"

namespace {

struct TempDir {
    std::string path;
    TempDir() {
        char tmpl[] = "/tmp/ur-workdir-test.XXXXXX";
        REQUIRE(::mkdtemp(tmpl) != nullptr);
        path = tmpl;
    }
    ~TempDir() { std::system(("rm -rf '" + path + "'").c_str()); }
};

bool exists(const std::string& p) {
    struct stat st;
    return ::lstat(p.c_str(), &st) == 0;
}

void touch(const std::string& p) {
    int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    ::close(fd);
}

}  // namespace

TEST_CASE("work dir: created with mode 0700") {
    TempDir t;
    std::string dir = t.path + "/work";
    std::string error;
    REQUIRE(ur::make_private_dir(dir, error));
    struct stat st;
    REQUIRE(::lstat(dir.c_str(), &st) == 0);
    CHECK(S_ISDIR(st.st_mode));
    CHECK((st.st_mode & 0777) == 0700);
    // Verifying an existing good directory succeeds too.
    CHECK(ur::make_private_dir(dir, error));
}

TEST_CASE("work dir: a symlink is refused") {
    TempDir t;
    std::string real = t.path + "/real", link = t.path + "/link";
    REQUIRE(::mkdir(real.c_str(), 0700) == 0);
    REQUIRE(::symlink(real.c_str(), link.c_str()) == 0);
    std::string error;
    CHECK_FALSE(ur::make_private_dir(link, error));
    CHECK(error.find("symbolic link") != std::string::npos);
}

TEST_CASE("work dir: group- or world-writable is refused") {
    TempDir t;
    std::string dir = t.path + "/w";
    REQUIRE(::mkdir(dir.c_str(), 0700) == 0);
    std::string error;
    REQUIRE(::chmod(dir.c_str(), 0777) == 0);
    CHECK_FALSE(ur::make_private_dir(dir, error));
    CHECK(error.find("writable") != std::string::npos);
    REQUIRE(::chmod(dir.c_str(), 0720) == 0);
    CHECK_FALSE(ur::make_private_dir(dir, error));
    REQUIRE(::chmod(dir.c_str(), 0755) == 0);
    CHECK(ur::make_private_dir(dir, error));
}

TEST_CASE("work dir: a file, a missing parent or an empty path is refused") {
    TempDir t;
    std::string file = t.path + "/f";
    touch(file);
    std::string error;
    CHECK_FALSE(ur::make_private_dir(file, error));
    CHECK(error.find("not a directory") != std::string::npos);
    CHECK_FALSE(ur::make_private_dir(t.path + "/no/such", error));
    CHECK_FALSE(ur::make_private_dir("", error));
}

TEST_CASE("work dir: owned by someone else is refused") {
    if (::geteuid() != 0) {
        MESSAGE("skipped: needs root to chown a directory to another user");
        return;
    }
    TempDir t;
    std::string dir = t.path + "/other";
    REQUIRE(::mkdir(dir.c_str(), 0700) == 0);
    REQUIRE(::chown(dir.c_str(), 65534, 65534) == 0);
    std::string error;
    CHECK_FALSE(ur::make_private_dir(dir, error));
    CHECK(error.find("owned by uid 65534") != std::string::npos);
}

TEST_CASE("work dir: stale script files are removed, other files kept") {
    TempDir t;
    std::string dir = t.path + "/w";
    REQUIRE(::mkdir(dir.c_str(), 0700) == 0);
    std::string stale = dir + "/" + ur::kScriptFilePrefix + "abc123";
    std::string other = dir + "/keep.txt";
    touch(stale);
    touch(other);
    std::string error;
    ur::WorkDir w;
    REQUIRE(w.prepare(dir, error));
    CHECK_FALSE(exists(stale));
    CHECK(exists(other));
}

TEST_CASE("work dir: script file is private, complete and uniquely named") {
    TempDir t;
    std::string a, b, error;
    std::string text = "#!/bin/sh\necho hi\n";
    ur::WorkDir w;
    REQUIRE(w.prepare(t.path + "/w", error));
    REQUIRE(w.write_script(text, a, error));
    REQUIRE(w.write_script(text, b, error));
    CHECK(a != b);
    CHECK(a.rfind(t.path + "/w/" + ur::kScriptFilePrefix, 0) == 0);
    struct stat st;
    REQUIRE(::lstat(a.c_str(), &st) == 0);
    CHECK(S_ISREG(st.st_mode));
    CHECK((st.st_mode & 0777) == 0700);
    CHECK(st.st_size == static_cast<off_t>(text.size()));
    ur::WorkDir missing;
    CHECK_FALSE(missing.prepare(t.path + "/no/such", error));
    CHECK_FALSE(missing.write_script(text, a, error));
    CHECK(error.find("cannot create") != std::string::npos);
}

TEST_CASE("work dir: removed behind our back, it is made again before the next script") {
    TempDir t;
    std::string dir = t.path + "/w", path, error;
    ur::WorkDir w;
    REQUIRE(w.prepare(dir, error));
    REQUIRE(std::system(("rm -rf '" + dir + "'").c_str()) == 0);
    REQUIRE(w.write_script("#!/bin/sh\n", path, error));
    CHECK(path.rfind(dir + "/", 0) == 0);
    struct stat st;
    REQUIRE(::lstat(dir.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0700);
    CHECK(exists(path));
}

TEST_CASE("work dir: a directory made writable since is not written to; a fresh one is") {
    TempDir t;
    std::string dir = t.path + "/w", path, error;
    ur::WorkDir w;
    REQUIRE(w.prepare(dir, error));
    REQUIRE(::chmod(dir.c_str(), 0777) == 0);
    REQUIRE(w.write_script("#!/bin/sh\n", path, error));
    CHECK(path.rfind(dir + ".", 0) == 0);  // BASE.XXXXXX/ur-job.*
    CHECK(w.dir() != dir);
    struct stat st;
    REQUIRE(::lstat(w.dir().c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0700);
    CHECK(std::system(("test -z \"$(ls -A '" + dir + "')\"").c_str()) == 0);
}

TEST_CASE("work dir: replaced by someone else's directory, no script goes into it") {
    // A root script removes the directory; another user makes one of the
    // same name (in a sticky /tmp anyone can): scripts written there could
    // be swapped before they run as root.
    if (::geteuid() != 0) {
        MESSAGE("skipped: needs root to chown a directory to another user");
        return;
    }
    TempDir t;
    std::string dir = t.path + "/w", path, error;
    ur::WorkDir w;
    REQUIRE(w.prepare(dir, error));
    REQUIRE(::rmdir(dir.c_str()) == 0);
    REQUIRE(::mkdir(dir.c_str(), 0777) == 0);
    REQUIRE(::chmod(dir.c_str(), 0777) == 0);
    REQUIRE(::chown(dir.c_str(), 65534, 65534) == 0);
    REQUIRE(w.write_script("#!/bin/sh\n", path, error));
    CHECK(path.rfind(dir + ".", 0) == 0);  // a fresh one of ours beside it
    ur::WorkDir w2;  // even a private one of theirs, met at start-up
    REQUIRE(::chmod(dir.c_str(), 0700) == 0);
    REQUIRE(w2.prepare(dir, error));
    CHECK(w2.dir() != dir);
    REQUIRE(w2.write_script("#!/bin/sh\n", path, error));
    CHECK(path.rfind(dir + ".", 0) == 0);
    CHECK(std::system(("test -z \"$(ls -A '" + dir + "')\"").c_str()) == 0);
}

TEST_CASE("work dir: renamed away and replaced by another of ours, the new one is used") {
    TempDir t;
    std::string dir = t.path + "/w", path, error;
    ur::WorkDir w;
    REQUIRE(w.prepare(dir, error));
    REQUIRE(::rename(dir.c_str(), (t.path + "/old").c_str()) == 0);
    REQUIRE(::mkdir(dir.c_str(), 0700) == 0);
    REQUIRE(w.write_script("#!/bin/sh\n", path, error));
    CHECK(path.rfind(dir + "/", 0) == 0);
    CHECK(exists(path));
    CHECK(std::system(("test -z \"$(ls -A '" + t.path + "/old')\"").c_str()) == 0);
}

TEST_CASE("work dir: fallback directories of earlier runs are removed, nothing else") {
    TempDir t;
    const std::string p = t.path + "/.ur-agent-work.";
    REQUIRE(::mkdir((p + "abc123").c_str(), 0700) == 0);
    touch(p + "abc123/" + ur::kScriptFilePrefix + "x");
    REQUIRE(::mkdir((p + "def456").c_str(), 0700) == 0);
    touch(p + "def456/keep.txt");
    REQUIRE(::mkdir((p + "toolong7").c_str(), 0700) == 0);
    REQUIRE(::mkdir((t.path + "/elsewhere").c_str(), 0700) == 0);
    REQUIRE(::symlink((t.path + "/elsewhere").c_str(), (p + "lnk123").c_str()) == 0);
    touch(t.path + "/elsewhere/" + ur::kScriptFilePrefix + "y");
    ur::remove_stale_work_dirs(t.path, ".ur-agent-work.");
    CHECK_FALSE(exists(p + "abc123"));
    CHECK(exists(p + "def456/keep.txt"));
    CHECK(exists(p + "toolong7"));
    CHECK(exists(p + "lnk123"));
    CHECK(exists(t.path + "/elsewhere/" + ur::kScriptFilePrefix + "y"));
}

TEST_CASE("work dir: a script file is removed from the held directory, not through its path") {
    TempDir t;
    std::string dir = t.path + "/w", path, error;
    ur::WorkDir w;
    REQUIRE(w.prepare(dir, error));
    REQUIRE(w.write_script("#!/bin/sh\n", path, error));
    std::string name = path.substr(path.rfind('/') + 1);
    // The path now leads elsewhere, to a file of the same name.
    REQUIRE(::rename(dir.c_str(), (t.path + "/moved").c_str()) == 0);
    REQUIRE(::mkdir((t.path + "/other").c_str(), 0700) == 0);
    touch(t.path + "/other/" + name);
    REQUIRE(::symlink((t.path + "/other").c_str(), dir.c_str()) == 0);
    w.remove_script(path);
    CHECK(exists(t.path + "/other/" + name));
    CHECK_FALSE(exists(t.path + "/moved/" + name));
}

TEST_CASE("work dir: checked again, its files are left alone (jobs may be starting)") {
    TempDir t;
    std::string dir = t.path + "/w", a, b, error;
    ur::WorkDir w;
    REQUIRE(w.prepare(dir, error));
    REQUIRE(w.write_script("#!/bin/sh\n", a, error));
    // Replaced at the path by another directory of ours: checked again,
    // not prepared (no stale-file removal), so both files stay.
    REQUIRE(::rename(dir.c_str(), (t.path + "/x").c_str()) == 0);
    REQUIRE(::mkdir(dir.c_str(), 0700) == 0);
    REQUIRE(w.write_script("#!/bin/sh\n", b, error));  // the new one at the path
    REQUIRE(::rmdir(dir.c_str()) != 0);                  // b is in it
    CHECK(exists(t.path + "/x/" + a.substr(a.rfind('/') + 1)));
    CHECK(exists(b));
}
