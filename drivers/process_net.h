/* The process driver's network for driver_config network = "egress" (docs/egress.md, "process
 * driver"): a network namespace per sandbox whose only way out is the replica's egress relay.
 *
 * Shape, for sandbox <id> in slot k (a /30 of 10.213.0.0/16, taken host-wide as the file
 * /run/gantry-egress/slot-<k> holding the id, so several clusters on one host never collide):
 *   netns  gantry-<id>     loopback, and gxs<12 hex of id> = 10.213.x.(4k+2)/30, default route
 *                          via the host end; IPv6 disabled
 *   host   gxh<12 hex>     10.213.x.(4k+1)/30 (the "door" address), IPv6 disabled
 *   iptables (host): nat PREROUTING  -i gxh.. -p tcp -j REDIRECT --to-ports <relay_port>
 *                    nat PREROUTING  -i gxh.. -p udp --dport 53 -j REDIRECT --to-ports <relay_port>
 *                    filter INPUT    -i gxh.. -d <door> -p udp --dport <relay_port> -j ACCEPT
 *                    filter INPUT    -i gxh.. -d <door> -p tcp --dport <relay_port> -j ACCEPT
 *                    filter INPUT    -i gxh.. -j DROP
 *                    filter FORWARD  -i gxh.. -j DROP
 * So every TCP connection the sandbox opens, to any address, arrives at the relay's door on the
 * host end (whose original destination SO_ORIGINAL_DST gives back), every DNS question over UDP,
 * to any resolver, reaches the relay's DNS responder, and every other packet (other UDP, ICMP,
 * forwarding to other hosts, and anything addressed to another sandbox's door) is dropped. Nothing inside the
 * sandbox can change this: the namespace belongs to the host's user namespace, where the sandbox has no
 * capability.
 *
 * The door file <state>/egress/<id>.door tells the replicas' relays which door to open: one line,
 * "<namespace>\t<name>\t<owner>\t<door address>\n" (process_net_door_decode reads it).
 *
 * Needs root (CAP_NET_ADMIN) and the ip and iptables commands; every call runs them and answers
 * GERR_UNAVAILABLE with their stderr when one fails. Calls are made under the driver's lock. */
#ifndef GANTRY_DRIVERS_PROCESS_NET_H
#define GANTRY_DRIVERS_PROCESS_NET_H

#include <stddef.h>

#define PROCESS_NET_SLOTS 16384u /* /30s in 10.213.0.0/16 */
#define PROCESS_NET_FIELD 256u

struct process_net_door {
    char ns[PROCESS_NET_FIELD];
    char name[PROCESS_NET_FIELD];
    char owner[PROCESS_NET_FIELD];
    char addr[16]; /* dotted IPv4 */
};

/* Make the namespace, veth pair, addresses and rules of sandbox @id, and its door file, then wait
 * (at most 2 s, polling /proc/net/tcp) until a relay listens on the door, so the sandbox's first
 * connection finds it. @relay_port is the relays' port (1..65535). On failure everything made is
 * undone. */
int process_net_setup(const char *state_dir, const char *id, const struct process_net_door *door_in,
                      unsigned relay_port, char *errmsg);

/* Open the sandbox's network namespace (O_RDONLY | O_CLOEXEC) for setns(2): an fd, or -1 with
 * errno. */
int process_net_open(const char *id);

/* Undo process_net_setup for @id: rules, namespace (and so the veth pair), slot and door file.
 * Idempotent: what is already gone is skipped. 0, or the first failure (the rest still runs). */
int process_net_teardown(const char *state_dir, const char *id, unsigned relay_port, char *errmsg);

/* Read and decode the door file of sandbox @id. 0, the open/read error, or GERR_PROTO. */
int process_net_door_read(const char *state_dir, const char *id, struct process_net_door *out, char *errmsg);

/* Decode a door file's @len bytes. 0, or GERR_PROTO with the reason. */
int process_net_door_decode(const char *text, size_t len, struct process_net_door *out, char *errmsg);

#endif
