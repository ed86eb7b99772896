/* The process driver's egress network. See process_net.h. */
#include "drivers/process_net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/err.h"
#include "lib/log.h"

extern char **environ;

#define NETNS_DIR "/run/netns"
/* Slots are taken host-wide: every state directory (every gantry cluster) on this host shares the
 * one 10.213.0.0/16, so two clusters must never hand out the same /30. */
#define SLOT_DIR "/run/gantry-egress"

/* Run argv (a NULL-terminated list) and wait. 0, or GERR_UNAVAILABLE with the command and the end
 * of its stderr in @errmsg. The one translation of a helper command's failure. */
static int run(char *errmsg, const char *const *argv)
{
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) {
        gerr_set(errmsg, "pipe: %s", strerror(errno));
        return GERR_IO;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
    pid_t pid;
    static char *const envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL};
    int rv = posix_spawn(&pid, argv[0], &fa, NULL, (char *const *)argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    close(pipefd[1]);
    if (rv != 0) {
        close(pipefd[0]);
        gerr_set(errmsg, "%s: %s", argv[0], strerror(rv));
        return GERR_UNAVAILABLE;
    }
    char err[512];
    size_t n = 0;
    ssize_t r;
    while ((r = read(pipefd[0], err + n, sizeof err - 1 - n)) > 0 || (r < 0 && errno == EINTR)) {
        n += r > 0 ? (size_t)r : 0;
        if (n == sizeof err - 1) {
            char sink[256];
            while (read(pipefd[0], sink, sizeof sink) > 0) {
            }
            break;
        }
    }
    close(pipefd[0]);
    err[n] = '\0';
    while (n > 0 && (err[n - 1] == '\n' || err[n - 1] == ' ')) {
        err[--n] = '\0';
    }
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        return 0;
    }
    char cmd[256] = "";
    for (size_t i = 0; argv[i] != NULL && strlen(cmd) < 200; i++) {
        snprintf(cmd + strlen(cmd), sizeof cmd - strlen(cmd), "%s%s", i ? " " : "", argv[i]);
    }
    gerr_set(errmsg, "%s: %s", cmd, err[0] != '\0' ? err : "failed");
    return GERR_UNAVAILABLE;
}

#define RUN(errmsg, ...) run((errmsg), (const char *const[]){__VA_ARGS__, NULL})

struct names {
    char netns[64]; /* gantry-<id> */
    char host[16];  /* gxh<12 hex> */
    char inner[16]; /* gxs<12 hex> */
    char port[8];
    char door[256]; /* <state>/egress/<id>.door */
    char dir[256];  /* <state>/egress */
};

static void names_of(const char *state_dir, const char *id, unsigned relay_port, struct names *n)
{
    /* Interface names hold 15 bytes: 12 hex digits of a hash of the WHOLE id (the first digits of
     * a UUIDv7 are its creation time, shared by sandboxes made in the same millisecond, whose
     * set-up would then collide and whose clean-up would remove the other's rules). */
    uint64_t h = 1469598103934665603ull;
    for (const char *p = id; *p != '\0'; p++) {
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    }
    char hex[13];
    snprintf(hex, sizeof hex, "%012" PRIx64, (uint64_t)(h & 0xffffffffffffull));
    snprintf(n->netns, sizeof n->netns, "gantry-%.36s", id);
    snprintf(n->host, sizeof n->host, "gxh%s", hex);
    snprintf(n->inner, sizeof n->inner, "gxs%s", hex);
    snprintf(n->port, sizeof n->port, "%u", relay_port);
    snprintf(n->dir, sizeof n->dir, "%.200s/egress", state_dir);
    snprintf(n->door, sizeof n->door, "%.200s/%.36s.door", n->dir, id);
}

static void slot_addr(unsigned slot, unsigned host, char *out, size_t len)
{
    unsigned v = slot * 4 + host;
    snprintf(out, len, "10.213.%u.%u", v / 256, v % 256);
}

/* Take the first free slot (a file created exclusively, holding the id). */
static int slot_take(const struct names *n, const char *id, unsigned *slot, char *errmsg)
{
    const char *dirs[] = {n->dir, SLOT_DIR};
    for (size_t i = 0; i < 2; i++) {
        if (mkdir(dirs[i], 0700) != 0 && errno != EEXIST) {
            gerr_set(errmsg, "mkdir %s: %s", dirs[i], strerror(errno));
            return gerr_from_errno(errno);
        }
    }
    for (unsigned k = 0; k < PROCESS_NET_SLOTS; k++) {
        char path[300];
        snprintf(path, sizeof path, SLOT_DIR "/slot-%u", k);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0) {
            if (errno == EEXIST) {
                continue;
            }
            gerr_set(errmsg, "open %s: %s", path, strerror(errno));
            return gerr_from_errno(errno);
        }
        ssize_t w = write(fd, id, strlen(id));
        close(fd);
        if (w != (ssize_t)strlen(id)) {
            unlink(path);
            gerr_set(errmsg, "write %s: short write", path);
            return GERR_IO;
        }
        *slot = k;
        return 0;
    }
    gerr_set(errmsg, "every one of the %u egress network slots is taken", PROCESS_NET_SLOTS);
    return GERR_UNAVAILABLE;
}

/* The slot whose file holds @id, or -1. */
static long slot_find(const struct names *n, const char *id)
{
    for (unsigned k = 0; k < PROCESS_NET_SLOTS; k++) {
        char path[300], buf[64];
        snprintf(path, sizeof path, SLOT_DIR "/slot-%u", k);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            if (errno == ENOENT) {
                continue;
            }
            return -1;
        }
        ssize_t r = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (r > 0 && (buf[r] = '\0', strcmp(buf, id) == 0)) {
            return (long)k;
        }
    }
    return -1;
}

static int write_sysctl(const char *path, char *errmsg)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            return 0; /* no IPv6 in this kernel: nothing to disable */
        }
        gerr_set(errmsg, "open %s: %s", path, strerror(errno));
        return gerr_from_errno(errno);
    }
    ssize_t w = write(fd, "1\n", 2);
    close(fd);
    if (w != 2) {
        gerr_set(errmsg, "write %s: %s", path, strerror(errno));
        return GERR_IO;
    }
    return 0;
}

/* The host's rules for @n, whose door is @door; @op "-I" to add (at the top), "-D" to remove. The
 * ACCEPT rules name the door's address: without it a sandbox could reach ANOTHER sandbox's door (by
 * UDP to its relay port, which no REDIRECT rewrites) and have its DNS questions decided under that
 * sandbox's policy and audited under its owner. */
static int rules(const struct names *n, const char *door, const char *op, char *errmsg)
{
    int rv = RUN(errmsg, "/usr/sbin/iptables", "-w", "-t", "nat", op, "PREROUTING", "-i", n->host, "-p",
                 "tcp", "-j", "REDIRECT", "--to-ports", n->port);
    if (rv == 0) {
        /* DNS, to whatever resolver the sandbox asks: the relay's responder on the same port. */
        rv = RUN(errmsg, "/usr/sbin/iptables", "-w", "-t", "nat", op, "PREROUTING", "-i", n->host, "-p",
                 "udp", "--dport", "53", "-j", "REDIRECT", "--to-ports", n->port);
    }
    /* Inserted at the top in reverse order, so ACCEPT ends up above DROP. */
    if (rv == 0) {
        rv = RUN(errmsg, "/usr/sbin/iptables", "-w", op, "INPUT", "-i", n->host, "-j", "DROP");
    }
    if (rv == 0) {
        rv = RUN(errmsg, "/usr/sbin/iptables", "-w", op, "INPUT", "-i", n->host, "-d", door, "-p", "tcp",
                 "--dport", n->port, "-j", "ACCEPT");
    }
    if (rv == 0) {
        rv = RUN(errmsg, "/usr/sbin/iptables", "-w", op, "INPUT", "-i", n->host, "-d", door, "-p", "udp",
                 "--dport", n->port, "-j", "ACCEPT");
    }
    if (rv == 0) {
        rv = RUN(errmsg, "/usr/sbin/iptables", "-w", op, "FORWARD", "-i", n->host, "-j", "DROP");
    }
    return rv;
}

static int write_door(const struct names *n, const struct process_net_door *d, char *errmsg)
{
    char tmp[300], line[4 * PROCESS_NET_FIELD + 8];
    int len = snprintf(line, sizeof line, "%s\t%s\t%s\t%s\n", d->ns, d->name, d->owner, d->addr);
    snprintf(tmp, sizeof tmp, "%s.tmp", n->door);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, line, (size_t)len) != len || fsync(fd) != 0 || close(fd) != 0 ||
        rename(tmp, n->door) != 0) {
        int e = errno;
        if (fd >= 0) {
            close(fd);
        }
        unlink(tmp);
        gerr_set(errmsg, "write %s: %s", n->door, strerror(e));
        return gerr_from_errno(e);
    }
    return 0;
}

/* Is some socket listening on @want ("%08X:%04X", /proc/net/tcp's form of address and port)? */
static bool door_listening(const char *want)
{
    FILE *f = fopen("/proc/net/tcp", "re");
    char line[512];
    bool found = false;
    while (f != NULL && !found && fgets(line, sizeof line, f) != NULL) {
        char local[64], st[8];
        found = sscanf(line, " %*s %63s %*s %7s", local, st) == 2 && strcmp(local, want) == 0 &&
                strcmp(st, "0A") == 0; /* TCP_LISTEN */
    }
    if (f != NULL) {
        fclose(f);
    }
    return found;
}

/* Wait at most @ms for a relay to open the door (it watches the door directory), so the sandbox's
 * first connection finds it; without a relay the sandbox starts anyway, confined all the same. */
static void wait_door(const char *addr, unsigned port, unsigned ms)
{
    struct in_addr in;
    char want[16];
    if (inet_pton(AF_INET, addr, &in) != 1) {
        return;
    }
    snprintf(want, sizeof want, "%08X:%04X", (unsigned)in.s_addr, port);
    struct timespec step = {.tv_nsec = 10 * 1000 * 1000};
    for (unsigned waited = 0; waited < ms; waited += 10) {
        if (door_listening(want)) {
            return;
        }
        nanosleep(&step, NULL);
    }
    LOG_WARN("process driver: no egress relay opened the door %s:%u within %u ms; the sandbox starts (its "
             "connections are refused until one does)",
             addr, port, ms);
}

int process_net_setup(const char *state_dir, const char *id, const struct process_net_door *door_in,
                      unsigned relay_port, char *errmsg)
{
    struct names n;
    names_of(state_dir, id, relay_port, &n);
    struct process_net_door door = *door_in;
    char inner_addr[32], host_cidr[40], inner_cidr[40], path[128];
    unsigned slot = 0;
    int rv = slot_take(&n, id, &slot, errmsg);
    if (rv != 0) {
        return rv;
    }
    slot_addr(slot, 1, door.addr, sizeof door.addr);
    slot_addr(slot, 2, inner_addr, sizeof inner_addr);
    snprintf(host_cidr, sizeof host_cidr, "%s/30", door.addr);
    snprintf(inner_cidr, sizeof inner_cidr, "%s/30", inner_addr);
    snprintf(path, sizeof path, "/proc/sys/net/ipv6/conf/%s/disable_ipv6", n.host);
    if ((rv = RUN(errmsg, "/usr/sbin/ip", "netns", "add", n.netns)) != 0 ||
        (rv = RUN(errmsg, "/usr/sbin/ip", "netns", "exec", n.netns, "/usr/sbin/sysctl", "-q", "-w",
                  "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")) != 0 ||
        (rv = RUN(errmsg, "/usr/sbin/ip", "link", "add", n.host, "type", "veth", "peer", "name", n.inner,
                  "netns", n.netns)) != 0 ||
        (rv = write_sysctl(path, errmsg)) != 0 ||
        (rv = RUN(errmsg, "/usr/sbin/ip", "addr", "add", host_cidr, "dev", n.host)) != 0 ||
        (rv = RUN(errmsg, "/usr/sbin/ip", "link", "set", n.host, "up")) != 0 ||
        (rv = RUN(errmsg, "/usr/sbin/ip", "-n", n.netns, "addr", "add", inner_cidr, "dev", n.inner)) != 0 ||
        (rv = RUN(errmsg, "/usr/sbin/ip", "-n", n.netns, "link", "set", n.inner, "up")) != 0 ||
        (rv = RUN(errmsg, "/usr/sbin/ip", "-n", n.netns, "link", "set", "lo", "up")) != 0 ||
        (rv = RUN(errmsg, "/usr/sbin/ip", "-n", n.netns, "route", "add", "default", "via", door.addr)) != 0 ||
        (rv = rules(&n, door.addr, "-I", errmsg)) != 0 || (rv = write_door(&n, &door, errmsg)) != 0) {
        char ignored[GERR_MSG_SIZE];
        gerr_wrap(errmsg, "egress network of sandbox %s", id);
        process_net_teardown(state_dir, id, relay_port, ignored);
        return rv;
    }
    wait_door(door.addr, relay_port, 2000);
    return 0;
}

int process_net_open(const char *id)
{
    char path[128];
    snprintf(path, sizeof path, NETNS_DIR "/gantry-%.36s", id);
    return open(path, O_RDONLY | O_CLOEXEC);
}

int process_net_teardown(const char *state_dir, const char *id, unsigned relay_port, char *errmsg)
{
    struct names n;
    names_of(state_dir, id, relay_port, &n);
    int first = 0;
    char msg[GERR_MSG_SIZE];
    unlink(n.door);
    char nspath[128];
    snprintf(nspath, sizeof nspath, NETNS_DIR "/%s", n.netns);
    char link_path[64];
    snprintf(link_path, sizeof link_path, "/sys/class/net/%s", n.host);
    long slot = slot_find(&n, id);
    char door[16] = "0.0.0.0";
    if (slot >= 0) {
        slot_addr((unsigned)slot, 1, door, sizeof door);
    }
    if (access(link_path, F_OK) == 0) {
        /* Each rule is removed on its own: one already gone must not keep the others. The ACCEPT
         * rules without "-d" are those of a sandbox made before they named the door. */
        const char *const *cmds[] = {
            (const char *const[]){"/usr/sbin/iptables", "-w", "-D", "INPUT", "-i", n.host, "-d", door, "-p",
                                  "tcp", "--dport", n.port, "-j", "ACCEPT", NULL},
            (const char *const[]){"/usr/sbin/iptables", "-w", "-D", "INPUT", "-i", n.host, "-d", door, "-p",
                                  "udp", "--dport", n.port, "-j", "ACCEPT", NULL},
            (const char *const[]){"/usr/sbin/iptables", "-w", "-t", "nat", "-D", "PREROUTING", "-i", n.host,
                                  "-p", "tcp", "-j", "REDIRECT", "--to-ports", n.port, NULL},
            (const char *const[]){"/usr/sbin/iptables", "-w", "-t", "nat", "-D", "PREROUTING", "-i", n.host,
                                  "-p", "udp", "--dport", "53", "-j", "REDIRECT", "--to-ports", n.port, NULL},
            (const char *const[]){"/usr/sbin/iptables", "-w", "-D", "INPUT", "-i", n.host, "-p", "tcp",
                                  "--dport", n.port, "-j", "ACCEPT", NULL},
            (const char *const[]){"/usr/sbin/iptables", "-w", "-D", "INPUT", "-i", n.host, "-p", "udp",
                                  "--dport", n.port, "-j", "ACCEPT", NULL},
            (const char *const[]){"/usr/sbin/iptables", "-w", "-D", "INPUT", "-i", n.host, "-j", "DROP",
                                  NULL},
            (const char *const[]){"/usr/sbin/iptables", "-w", "-D", "FORWARD", "-i", n.host, "-j", "DROP",
                                  NULL},
        };
        for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
            run(msg, cmds[i]); /* a rule already gone is fine */
        }
    }
    if (access(nspath, F_OK) == 0) {
        int rv = RUN(msg, "/usr/sbin/ip", "netns", "del", n.netns);
        if (rv != 0 && first == 0) {
            first = rv;
            gerr_set(errmsg, "%s", msg);
        }
    }
    if (slot >= 0) {
        char path[300];
        snprintf(path, sizeof path, SLOT_DIR "/slot-%ld", slot);
        unlink(path);
    }
    return first;
}

int process_net_door_read(const char *state_dir, const char *id, struct process_net_door *out, char *errmsg)
{
    struct names n;
    names_of(state_dir, id, 1, &n);
    char text[4 * PROCESS_NET_FIELD + 8];
    int fd = open(n.door, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        gerr_set(errmsg, "open %s: %s", n.door, strerror(errno));
        return gerr_from_errno(errno);
    }
    ssize_t r = read(fd, text, sizeof text);
    int e = errno;
    close(fd);
    if (r < 0) {
        gerr_set(errmsg, "read %s: %s", n.door, strerror(e));
        return gerr_from_errno(e);
    }
    return process_net_door_decode(text, (size_t)r, out, errmsg);
}

int process_net_door_decode(const char *text, size_t len, struct process_net_door *out, char *errmsg)
{
    char *fields[4] = {out->ns, out->name, out->owner, out->addr};
    const size_t caps[4] = {sizeof out->ns, sizeof out->name, sizeof out->owner, sizeof out->addr};
    memset(out, 0, sizeof *out);
    size_t f = 0, k = 0;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (c == '\t' || c == '\n') {
            if (k == 0 && f != 2) {
                gerr_set(errmsg, "door file: field %zu is empty", f + 1);
                return GERR_PROTO;
            }
            f++;
            k = 0;
            if (c == '\n') {
                if (f != 4 || i + 1 != len) {
                    gerr_set(errmsg, "door file: expected one line of 4 fields");
                    return GERR_PROTO;
                }
                struct in_addr in;
                if (strspn(out->addr, "0123456789.") != strlen(out->addr) ||
                    inet_pton(AF_INET, out->addr, &in) != 1 ||
                    (ntohl(in.s_addr) >> 16) != ((10u << 8) | 213u)) {
                    gerr_set(errmsg, "door file: the address is not in 10.213.0.0/16");
                    return GERR_PROTO;
                }
                return 0;
            }
            if (f >= 4) {
                gerr_set(errmsg, "door file: more than 4 fields");
                return GERR_PROTO;
            }
            continue;
        }
        if ((unsigned char)c < 0x21 || (unsigned char)c > 0x7e || k + 1 >= caps[f]) {
            gerr_set(errmsg, "door file: field %zu holds a control character or is too long", f + 1);
            return GERR_PROTO;
        }
        fields[f][k++] = c;
    }
    gerr_set(errmsg, "door file: no end of line");
    return GERR_PROTO;
}
