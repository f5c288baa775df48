/*
 * Small static helper for the virtio-fs end-to-end test. It runs in the guest
 * (busybox has no setfattr/getfattr) and on the host (to read back what the
 * guest stored), and only wraps single system calls so that their result and
 * errno can be checked from a shell script.
 *
 *   vfs-probe setx  PATH NAME VALUE   setxattr(PATH, NAME, VALUE)
 *   vfs-probe getx  PATH NAME         print the value of NAME
 *   vfs-probe listx PATH              print the attribute names, one a line
 *   vfs-probe rmx   PATH NAME         removexattr(PATH, NAME)
 *   vfs-probe fsync PATH              open, write nothing, fsync, close
 *   vfs-probe create PATH MODE        open(PATH, O_CREAT|O_EXCL|O_WRONLY, MODE), MODE octal
 *   vfs-probe as UID GID PROG ARGS... run PROG as UID:GID with no supplementary
 *                                     groups (busybox's setpriv cannot change ids)
 *   vfs-probe trylock PATH posix|flock
 *                                     one non-blocking exclusive lock attempt: exit 0 when
 *                                     granted, 4 when another owner holds it
 *   vfs-probe waitlock PATH posix|flock
 *                                     a blocking exclusive lock (F_SETLKW / LOCK_EX)
 *   vfs-probe holdlock PATH posix|flock READY UNTIL
 *                                     take the lock (waiting), create READY, hold it until
 *                                     UNTIL exists (at most 120 s: exit 5 past that)
 *
 * Exit status: 0 on success, 3 when the file system answers ENOTSUP/EOPNOTSUPP
 * (so the caller can report the feature as not supported), 1 on any other
 * error (errno printed on stderr), 2 on a usage error.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sys/file.h>
#include <time.h>
#include <sys/xattr.h>
#include <unistd.h>

/* An exclusive whole-file lock on fd: POSIX (fcntl) or BSD (flock), waiting or not. */
static int lock_fd(int fd, const char *kind, int wait)
{
    if (strcmp(kind, "flock") == 0)
        return flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB));
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
    return fcntl(fd, wait ? F_SETLKW : F_SETLK, &fl);
}

static int fail(const char *what, const char *path)
{
    int e = errno;
    fprintf(stderr, "vfs-probe: %s %s: %s (errno %d)\n", what, path, strerror(e), e);
    return (e == ENOTSUP || e == EOPNOTSUPP) ? 3 : 1;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: vfs-probe setx|getx|listx|rmx|fsync|create PATH [NAME|MODE [VALUE]]\n");
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "as") == 0 && argc >= 5) {
        uid_t uid = (uid_t)strtoul(argv[2], NULL, 10);
        gid_t gid = (gid_t)strtoul(argv[3], NULL, 10);
        if (setgroups(0, NULL) != 0 || setgid(gid) != 0 || setuid(uid) != 0)
            return fail("setuid", argv[2]);
        execvp(argv[4], argv + 4);
        return fail("exec", argv[4]);
    }
    const char *path = argv[2];

    if (strcmp(cmd, "setx") == 0 && argc == 5) {
        if (setxattr(path, argv[3], argv[4], strlen(argv[4]), 0) != 0)
            return fail("setxattr", path);
        return 0;
    }
    if (strcmp(cmd, "getx") == 0 && argc == 4) {
        char buf[65536];
        ssize_t n = getxattr(path, argv[3], buf, sizeof buf);
        if (n < 0)
            return fail("getxattr", path);
        fwrite(buf, 1, (size_t)n, stdout);
        putchar('\n');
        return 0;
    }
    if (strcmp(cmd, "listx") == 0 && argc == 3) {
        char buf[65536];
        ssize_t n = listxattr(path, buf, sizeof buf);
        if (n < 0)
            return fail("listxattr", path);
        /* The list is NUL-separated; print one name a line. */
        for (ssize_t i = 0; i < n; i += (ssize_t)strlen(buf + i) + 1)
            puts(buf + i);
        return 0;
    }
    if (strcmp(cmd, "rmx") == 0 && argc == 4) {
        if (removexattr(path, argv[3]) != 0)
            return fail("removexattr", path);
        return 0;
    }
    if (strcmp(cmd, "fsync") == 0 && argc == 3) {
        int fd = open(path, O_WRONLY);
        if (fd < 0)
            return fail("open", path);
        if (fsync(fd) != 0)
            return fail("fsync", path);
        if (close(fd) != 0)
            return fail("close", path);
        return 0;
    }
    if ((strcmp(cmd, "trylock") == 0 || strcmp(cmd, "waitlock") == 0) && argc == 4) {
        int wait = cmd[0] == 'w';
        int fd = open(path, O_RDWR);
        if (fd < 0)
            return fail("open", path);
        if (lock_fd(fd, argv[3], wait) == 0)
            return 0;
        if (!wait && (errno == EAGAIN || errno == EACCES || errno == EWOULDBLOCK))
            return 4;
        return fail("lock", path);
    }
    if (strcmp(cmd, "holdlock") == 0 && argc == 6) {
        int fd = open(path, O_RDWR);
        if (fd < 0)
            return fail("open", path);
        if (lock_fd(fd, argv[3], 1) != 0)
            return fail("lock", path);
        int ready = open(argv[4], O_CREAT | O_WRONLY, 0644);
        if (ready < 0)
            return fail("create", argv[4]);
        close(ready);
        struct timespec pause = { 0, 20 * 1000 * 1000 };
        for (int i = 0; i < 6000; i++) {
            if (access(argv[5], F_OK) == 0)
                return 0;
            nanosleep(&pause, NULL);
        }
        fprintf(stderr, "vfs-probe: %s never appeared\n", argv[5]);
        return 5;
    }
    if (strcmp(cmd, "create") == 0 && argc == 4) {
        int fd = open(path, O_CREAT | O_EXCL | O_WRONLY, (mode_t)strtoul(argv[3], NULL, 8));
        if (fd < 0)
            return fail("open", path);
        if (close(fd) != 0)
            return fail("close", path);
        return 0;
    }
    fprintf(stderr, "vfs-probe: bad command or argument count\n");
    return 2;
}
