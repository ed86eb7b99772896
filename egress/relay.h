/* The egress relay (docs/egress.md): accepts a sandbox's outbound connections, works out where each
 * wants to go, asks the decision point, and only then dials the destination and splices bytes.
 *
 * Doors. The relay listens on one door per sandbox (a TCP address only that sandbox can reach), so
 * the door a connection arrives on says whose it is: namespace, sandbox, owner. Nothing the sandbox
 * sends can claim another identity.
 *
 * Happy path of one connection: accept; read the first bytes (up to sniff_ms of silence) and pick
 * the adapter (egress/parse.h): HTTP CONNECT (the target of the request line), plain HTTP (the
 * absolute-form URI's host and the Host header), TLS (the ClientHello's server_name, read without
 * terminating TLS), or raw TCP (the connection's original destination, from the orig_dst hook:
 * SO_ORIGINAL_DST by default, which is where an iptables REDIRECT/DNAT on the host sent it). The
 * intent (transport, names, original address, port) goes to egress_policy_cache_decide: the one
 * decision function. Refused: CONNECT and HTTP get "403 Forbidden" with the reason, TLS and raw TCP
 * are closed. Allowed: the relay resolves the NAME it decided on (never an address the sandbox
 * chose, unless the intent had no name), dials it, answers CONNECT with "200 Connection
 * Established", forwards everything else it has read unchanged, and splices both ways. Inside a
 * CONNECT tunnel the first bytes are looked at before any is forwarded, whenever they come: a TLS
 * ClientHello's server_name is decided with the CONNECT target (a refusal, reported as a second
 * DECIDED event, closes the tunnel); anything else is spliced. After sniff_ms of silence from the
 * sandbox the destination's bytes flow to it (protocols where the server speaks first) while its
 * own first bytes are still awaited and looked at.
 *
 * DNS over TCP: on a door opened with EGRESS_DOOR_DNS, a connection whose original destination port
 * is 53 carries length-prefixed DNS questions (egress_dns_tcp_frame), each decided and answered as
 * the door's UDP questions are, one at a time, in order; nothing is dialed.
 *
 * Bounds: each connection buffers at most buf_size bytes per direction (reading stops while a
 * write is in flight); a door holds at most max_conns_per_sandbox connections and the relay at most
 * max_conns; a connection over either limit is accepted and closed at once (so the backlog drains)
 * and reported as refused, and every other connection keeps being served. A head must be complete
 * within head_timeout_ms and a dial within connect_timeout_ms.
 *
 * Events: @cb (may be NULL) is called on the loop thread, synchronously, for every decision (DNS
 * questions included)
 * (EGRESS_EVENT_DECIDED, allow or deny, including refusals for limits and malformed heads, whose
 * layer is "relay") and when an allowed connection ends (EGRESS_EVENT_CLOSED, with its byte counts).
 * It must not block and must not call back into the relay; every pointer in the event is valid only
 * during the call.
 *
 * Threads: everything runs on @loop's thread; only egress_relay_stats may be called from another. */
#ifndef GANTRY_EGRESS_RELAY_H
#define GANTRY_EGRESS_RELAY_H

#include <stdint.h>

#include <uv.h>

#include "api/rules/egress.h"
#include "egress/policy_cache.h"

struct egress_relay_config {
    unsigned max_conns;             /* every door together (4096) */
    unsigned max_conns_per_sandbox; /* one door (1024) */
    unsigned buf_size;              /* bytes per direction per connection (16384, at least EGRESS_HEAD_MAX) */
    unsigned sniff_ms;              /* silence after which a connection is raw TCP (300) */
    unsigned head_timeout_ms;       /* a head begun must be complete within this (10000) */
    unsigned connect_timeout_ms;    /* resolving and dialing the destination (10000) */
};

/* The defaults above. */
void egress_relay_config_defaults(struct egress_relay_config *cfg);

/* Whose door: copied. @id (may be NULL) is the sandbox's id, under which the policy cache holds its
 * own policy (egress_policy_cache_set_sandbox); NULL decides by the gateway and namespace only. */
struct egress_sandbox {
    const char *ns, *name, *owner, *id;
};

enum egress_event_kind { EGRESS_EVENT_DECIDED, EGRESS_EVENT_CLOSED };

struct egress_event {
    enum egress_event_kind kind;
    const struct egress_sandbox *sandbox;
    const struct egress_intent *intent;     /* the names and port asked for (DECIDED and CLOSED) */
    const struct egress_decision *decision; /* DECIDED and CLOSED */
    uint64_t bytes_out;                     /* CLOSED: sandbox -> destination */
    uint64_t bytes_in;                      /* CLOSED: destination -> sandbox */
};

typedef void (*egress_event_cb)(void *ctx, const struct egress_event *ev);

/* Where a connection accepted on @fd was originally going (0, or a GERR_* code when unknown).
 * The default reads SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST. */
typedef int (*egress_orig_dst_fn)(void *ctx, uv_os_fd_t fd, struct sockaddr_storage *out);

struct egress_relay;
struct egress_door;

/* A relay on @loop (borrowed) deciding with @policies (borrowed; both must outlive the relay).
 * @cfg copied. 0, or GERR_INVAL for a buf_size below EGRESS_HEAD_MAX (16384) or a zero limit. */
int egress_relay_new(uv_loop_t *loop, const struct egress_relay_config *cfg,
                     struct egress_policy_cache *policies, egress_event_cb cb, void *cb_ctx,
                     struct egress_relay **out);

/* Use @fn instead of SO_ORIGINAL_DST (tests; a relay behind something other than iptables). */
void egress_relay_set_orig_dst(struct egress_relay *r, egress_orig_dst_fn fn, void *ctx);

/* Flags of a door. */
/* SO_REUSEPORT: the relays of several replicas on one host each hold the same door, and the kernel
 * spreads the sandbox's traffic over them. */
#define EGRESS_DOOR_REUSE_PORT 1u
/* Also a DNS responder on the same address and port (UDP): each question is decided (transport
 * DNS, the name, any port); refused is answered REFUSED, allowed is resolved by the replica and
 * answered (A, AAAA; other types with no records); malformed datagrams are dropped. */
#define EGRESS_DOOR_DNS 2u

/* Open a door for @sb on @addr (port 0: any; the bound port goes to *@port when not NULL) with
 * @flags. 0, or a libuv (lib/uverr.h) or socket (errno) failure translated, with the text in
 * @errmsg (GERR_MSG_SIZE). */
int egress_relay_open_door(struct egress_relay *r, const struct egress_sandbox *sb,
                           const struct sockaddr *addr, unsigned flags, int *port, struct egress_door **out,
                           char *errmsg);

/* Who is behind the source address @peer of a connection or DNS datagram that reached a shared
 * door: 0 with @out filled (its strings may point into @buf, @buflen bytes, which the relay keeps
 * for as long as it uses them), or GERR_NOTFOUND when the address is no sandbox's. Called on the
 * loop thread, once per accepted connection and once per DNS datagram; it must not block (answer
 * from memory, such as the kubernetes driver's cache: driver_k8s_lookup_ip). */
typedef int (*egress_source_lookup_fn)(void *ctx, const struct sockaddr *peer, struct egress_sandbox *out,
                                       char *buf, size_t buflen);
#define EGRESS_SOURCE_BUF 512u /* the @buflen a lookup gets */

/* Open a shared door on @addr: one listener (and, with EGRESS_DOOR_DNS, one DNS responder) for
 * many sandboxes, each connection and datagram attributed by its source address through @lookup
 * (kubernetes pods: docs/egress.md, "Kubernetes"). A source @lookup does not know is refused: the
 * connection is closed at once (a datagram answered REFUSED) and the refusal reported as a DECIDED
 * event of layer "relay" whose sandbox has empty namespace, name and owner and whose reason names
 * the address. max_conns_per_sandbox counts each sandbox's connections on the door apart. The
 * original destination is not looked at (raw TCP is refused: pods reach the door only as a proxy).
 * Otherwise like egress_relay_open_door. */
int egress_relay_open_shared_door(struct egress_relay *r, const struct sockaddr *addr, unsigned flags,
                                  egress_source_lookup_fn lookup, void *lookup_ctx, int *port,
                                  struct egress_door **out, char *errmsg);

/* Stop accepting on @d and close every connection of it; the door's memory goes when the last
 * handle has closed (on a later loop iteration). */
void egress_relay_close_door(struct egress_door *d);

struct egress_relay_stats {
    uint64_t open;     /* connections now open */
    uint64_t accepted; /* connections accepted since the start */
    uint64_t refused_limit;
};
void egress_relay_stats(struct egress_relay *r, struct egress_relay_stats *out);

/* Close every door and connection; @cb (may be NULL) fires once all handles have closed, never
 * synchronously. Then the relay is freed: @r must not be used after this call. */
typedef void (*egress_relay_close_cb)(void *ctx);
void egress_relay_close(struct egress_relay *r, egress_relay_close_cb cb, void *ctx);

#endif
