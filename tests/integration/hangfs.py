"""A FUSE file system that hangs, for the tests of exec on a hung mount.

    python3 hangfs.py MOUNTPOINT

Mounts (as root) a file system with two executables that never finish
being read, the way files on an NFS mount behave when its server is gone:

    hang, hang2
            lookup and open answer; every read waits forever, so an exec
            stops in the kernel reading the first page (a killable wait
            for the first reader of a file; a second waits for the page
            lock, where SIGKILL does not reach it: use each file once)
    stuck   the lookup itself waits forever, so an exec stops in the
            kernel waiting for an answer this server has taken and will
            never give: no signal, not even SIGKILL, ends that wait

Everything waits until this process is killed (SIGKILL: it does not act on
SIGTERM while a request waits), which aborts the waiting requests; then
the mount point needs `umount -l`.  Needs the python3-fusepy package and
/dev/fuse; exits 3 when either is missing."""

import errno
import stat
import sys
import threading
import time

try:
    import fusepy
except ImportError:
    sys.stderr.write("hangfs: python3-fusepy is not installed\n")
    sys.exit(3)

FOREVER = threading.Event()  # never set


class HangFS(fusepy.Operations):

    def getattr(self, path, fh=None):
        now = time.time()
        times = dict(st_ctime=now, st_mtime=now, st_atime=now)
        if path == "/":
            return dict(st_mode=stat.S_IFDIR | 0o755, st_nlink=2, **times)
        if path == "/stuck":
            FOREVER.wait()
        if path in ("/hang", "/hang2", "/stuck"):
            return dict(st_mode=stat.S_IFREG | 0o755, st_nlink=1,
                        st_size=4096, **times)
        raise fusepy.FuseOSError(errno.ENOENT)

    def readdir(self, path, fh):
        return [".", "..", "hang", "hang2", "stuck"]

    def open(self, path, flags):
        return 0

    def read(self, path, size, offset, fh):
        FOREVER.wait()
        return b""


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.stderr.write("usage: hangfs.py MOUNTPOINT\n")
        sys.exit(2)
    try:
        fusepy.FUSE(HangFS(), sys.argv[1], foreground=True, nothreads=False)
    except RuntimeError as e:  # fusepy's "1" when the mount fails
        sys.stderr.write("hangfs: cannot mount %s: %s\n" % (sys.argv[1], e))
        sys.exit(3)
