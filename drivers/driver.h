/* The compute driver interface: the one seam between the reconciler and whatever runs sandboxes.
 *
 * Three implementations sit behind it: `process` (drivers/process.h, the embedded default: local
 * process trees under bubblewrap), `kubernetes` (drivers/k8s.h: agents.x-k8s.io Sandbox objects through the
 * API server) and `fake` (drivers/fake.h: in memory, for tests and benchmarks). A driver is made by its own
 * constructor and used only through the functions below, which check the arguments every driver
 * shares and then call the driver.
 *
 * Calls are synchronous and blocking: each one returns when the backend has done the work, refused
 * it, or failed. There are no callbacks. The reconciler calls drivers from its own thread; the API
 * layer may call driver_capabilities() and driver_validate() from any thread. Every driver
 * instance serialises its own calls with an internal mutex, so one instance may be shared between
 * threads; calls that reach a backend take as long as the backend does (bounded by the timeouts in
 * each driver's configuration).
 *
 * Epoch fencing. Every call that reaches the backend carries the caller's lease epoch (> 0). A
 * driver remembers the newest epoch it has seen, in the backend where the backend allows it (the
 * process driver in its state directory, the Kubernetes driver in a fence ConfigMap, the fake
 * driver in memory or in its shared state file), and refuses a call tagged with an older epoch
 * with DRIVER_ERR_STALE before touching anything. A call with a newer epoch raises the mark. So a
 * replica that lost its lease cannot create or delete anything once the new holder has made one
 * call. The refusal is final for that epoch: the caller must stop acting and wait for a new
 * lease. driver_capabilities() and driver_validate() carry no epoch: they are pure functions of
 * the configuration and the spec, used at admission time by replicas that hold no lease.
 *
 * Adoption. Backend state, not driver memory, is the truth: a second driver instance over the same
 * backend (another replica after a failover, or the same replica after a restart) sees, gets and
 * deletes what the first created. create() of an id that already exists returns the existing
 * sandbox (0), never a second copy.
 *
 * Memory. Specs and strings passed in are borrowed for the duration of the call and copied if kept.
 * Results are written into caller-owned structs whose strings the driver allocates; release them
 * with driver_sandbox_close() / driver_sandbox_list_close(). On failure a result struct is left
 * zeroed (safe to close). errmsg is a caller buffer of GERR_MSG_SIZE bytes that receives the reason
 * of any failure (never a secret, token or environment value).
 *
 * Errors (lib/err.h), the same meaning for every driver:
 *   DRIVER_ERR_STALE  (GERR_STALE) the epoch is older than the newest the driver has seen;
 *   GERR_INVAL        a malformed argument or spec (field, size, format), or a driver_config key the
 *                     driver does not know or a value it cannot use;
 *   GERR_PERM         a driver_config key the caller's allowed list excludes, a namespace outside
 *                     the driver's allowlist, or an object the driver does not own;
 *   GERR_NOTFOUND     get(): no such sandbox; create(): the namespace was never ensured;
 *   GERR_EXISTS       create(): the id exists with a different namespace or name, or a backend
 *                     object of that name belongs to someone else;
 *   GERR_CONSTRAINT   delete_namespace() while sandboxes remain in it;
 *   GERR_UNAVAILABLE  the backend cannot run sandboxes here (see capabilities) or did not answer;
 *   GERR_TIMEOUT      the backend did not finish within the driver's timeout (outcome unknown:
 *                     call again, every call is idempotent);
 *   GERR_ABORTED      the backend kept reporting conflicting concurrent writes (retry);
 *   GERR_UNAUTH       the backend refused our credentials;
 *   GERR_IO, GERR_PROTO, GERR_TOOBIG, GERR_INTERNAL  local I/O, a malformed or oversized backend
 *                     answer, or a bug.
 * delete() of something absent and delete_namespace() of an absent namespace succeed (0). */
#ifndef GANTRY_DRIVERS_DRIVER_H
#define GANTRY_DRIVERS_DRIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/err.h"

/* A stale epoch (gRPC FAILED_PRECONDITION). Callers compare against this name. */
#define DRIVER_ERR_STALE GERR_STALE

/* Limits on a spec, checked by driver_validate() and driver_create() before any driver sees it. */
#define DRIVER_NAME_MAX           63u   /* DNS-1123 label: namespace and name */
#define DRIVER_ID_LEN             36u   /* canonical lowercase UUID */
#define DRIVER_OWNER_MAX          256u  /* principal id, printable */
#define DRIVER_IMAGE_MAX          1024u /* container image reference, printable, no spaces */
#define DRIVER_ARGV_MAX           256u  /* command arguments */
#define DRIVER_ARG_MAX            8192u /* bytes per argument */
#define DRIVER_ENV_MAX            256u  /* environment entries */
#define DRIVER_ENV_VAL_MAX        32768u
#define DRIVER_LABELS_MAX         64u
#define DRIVER_LABEL_MAX          63u /* bytes of a label key (after any prefix) and of a label value */
#define DRIVER_CONFIG_MAX         32u /* driver_config entries */
#define DRIVER_CONFIG_VAL         4096u
#define DRIVER_GPU_MAX            64u
#define DRIVER_LIFETIME_MAX       (366ull * 24 * 3600) /* seconds */
#define DRIVER_CREDENTIALS_MAX    256u                 /* credential entries of one sandbox */
#define DRIVER_CREDENTIAL_VAL_MAX (16u * 1024)         /* bytes of one value (the provider API's limit) */
#define DRIVER_CREDENTIAL_KEY_MAX 128u                 /* bytes of a key: [A-Za-z0-9_.-], not "." or ".." */
#define DRIVER_CREDENTIALS_DIR    "/run/gantry/credentials" /* where they appear inside a sandbox */

enum driver_phase {
    DRIVER_PHASE_PROVISIONING = 0, /* accepted, not running yet */
    DRIVER_PHASE_READY,            /* running */
    DRIVER_PHASE_ERROR,            /* failed; the message says why */
    DRIVER_PHASE_DELETING,         /* deletion accepted, not finished */
    DRIVER_PHASE_STOPPED,          /* the command ended (or the lifetime did) */
    DRIVER_PHASE_UNKNOWN,          /* the backend cannot tell (state unreadable, node lost) */
};

/* "PROVISIONING", "READY", ... (static; "UNKNOWN" for values outside the enum). */
const char *driver_phase_name(enum driver_phase phase);

struct driver_kv {
    const char *key;
    const char *value;
};

/* A credential delivered into a sandbox (docs/credentials.md): entry @key of the secret of provider
 * @provider, granted to the sandbox. A driver with caps.credentials makes it the file
 * DRIVER_CREDENTIALS_DIR/<provider>/<key> inside the sandbox, readable by the sandbox's user only,
 * and, when @env is set, the environment variable @env of the sandbox's processes. The value is
 * plaintext: a driver never logs it, returns it, puts it in an error message, or writes it to
 * anything but memory and a tmpfs only the sandbox's user can read. */
struct driver_credential {
    const char *provider; /* DNS-1123 label */
    const char *key;      /* 1..DRIVER_CREDENTIAL_KEY_MAX of [A-Za-z0-9_.-], not "." or ".." */
    const char *value;    /* NUL-terminated, at most DRIVER_CREDENTIAL_VAL_MAX bytes */
    const char *env;      /* NULL: the file only; else [A-Za-z_][A-Za-z0-9_]* */
};

/* What the reconciler asks for. Every pointer is borrowed for the call. */
struct driver_sandbox_spec {
    const char *id;             /* canonical lowercase UUID, 8-4-4-4-12 */
    const char *namespace;      /* gantry namespace, DNS-1123 label */
    const char *name;           /* DNS-1123 label, unique in the namespace */
    const char *owner;          /* principal id of the owner (recorded, never interpreted) */
    const char *image;          /* container image; may be NULL or "" where caps.images is false */
    const char *const *command; /* argv, n_command >= 1 entries (argv[0] looked up in the sandbox's PATH) */
    size_t n_command;
    const struct driver_kv *env; /* NAME=value pairs; NAME is [A-Za-z_][A-Za-z0-9_]* */
    size_t n_env;
    uint32_t gpu_count;             /* 0..DRIVER_GPU_MAX */
    uint64_t lifetime_s;            /* 0 = until deleted; the reconciler enforces it, drivers may too */
    const struct driver_kv *labels; /* Kubernetes-style labels; keys under gantry.dev/ are reserved */
    size_t n_labels;
    const struct driver_kv *driver_config; /* this driver's settings; keys from caps.config_keys */
    size_t n_driver_config;
    /* Credentials to deliver (create only; driver_update_credentials replaces the files later).
     * Not part of what validate checks against the driver: a driver without caps.credentials
     * refuses a create that carries any (GERR_INVAL), so the caller decides what to do first. */
    const struct driver_credential *credentials;
    size_t n_credentials;
};

/* What the backend has. Strings are heap copies owned by the struct (driver_sandbox_close). */
struct driver_sandbox {
    char *id;
    char *namespace;
    char *name;
    enum driver_phase phase;
    char *handle;           /* the driver's name for it, e.g. "bwrap:4711@123456" or "k8s:ns/name" */
    char *message;          /* why the phase is what it is ("" when there is nothing to say) */
    uint64_t epoch;         /* the epoch that created it (0 when the backend lost that fact) */
    uint64_t created_at_ms; /* Unix ms (0 when unknown) */
};

struct driver_sandbox_list {
    struct driver_sandbox *items; /* heap array of n items */
    size_t n;
};

void driver_sandbox_close(struct driver_sandbox *s);           /* frees the strings; zeroes @s */
void driver_sandbox_list_close(struct driver_sandbox_list *l); /* closes every item; zeroes @l */

struct driver_caps {
    const char *name;               /* "process", "kubernetes", "fake" (static) */
    bool available;                 /* false: this backend cannot run sandboxes here; @detail says why */
    bool isolation;                 /* sandboxes get their own PID, mount and network namespaces */
    bool images;                    /* the spec's image is used (false: ignored, the host's files are seen) */
    bool gpus;                      /* gpu_count > 0 can be honoured */
    bool namespaces;                /* ensure/delete_namespace create and remove backend objects */
    bool shared_backend;            /* several replicas (or gateway clusters) may share the backend */
    bool credentials;               /* credentials are delivered (files, environment variables) */
    bool logs;                      /* driver_logs_open reads the main process's output */
    bool exec;                      /* driver_exec_start runs commands inside a sandbox */
    bool port_forward;              /* driver_port_connect reaches a TCP port inside a sandbox */
    bool pools;                     /* driver_pool_apply/delete/list manage warm pools (kubernetes) */
    const char *const *config_keys; /* driver_config keys this driver knows, NULL-terminated */
    char detail[GERR_MSG_SIZE];     /* human-readable: the backend, its mode, what is missing */
};

struct driver; /* opaque; made by driver_fake_new, driver_process_new, driver_k8s_new */

/* Fill @caps. Never fails; never touches the backend (availability was probed at construction). */
void driver_capabilities(struct driver *d, struct driver_caps *caps);

/* Check @spec without touching the backend: the shared limits above, then the driver's own rules
 * (its driver_config schema, gpu support, namespace allowlists, availability). @allowed_config_keys
 * (NULL-terminated; NULL = every key the driver knows) is the caller's delegation scope: a known key
 * outside it is GERR_PERM, an unknown key GERR_INVAL; the message names the key and the allowed
 * ones. Returns 0, GERR_INVAL, GERR_PERM or GERR_UNAVAILABLE. */
int driver_validate(struct driver *d, const struct driver_sandbox_spec *spec,
                    const char *const *allowed_config_keys, char *errmsg);

/* Start the sandbox @spec (validated again, against every key the driver knows) in its namespace,
 * which ensure_namespace() must have made. On 0, @out describes it (usually PROVISIONING or READY).
 * An id that exists already: 0 and @out describes the existing one if its namespace and name
 * match, else GERR_EXISTS. */
int driver_create(struct driver *d, uint64_t epoch, const struct driver_sandbox_spec *spec,
                  struct driver_sandbox *out, char *errmsg);

/* Describe sandbox @id of namespace @ns into @out. GERR_NOTFOUND if the backend has no such
 * sandbox (including one that was fully deleted). */
int driver_get(struct driver *d, uint64_t epoch, const char *ns, const char *id, struct driver_sandbox *out,
               char *errmsg);

/* Every sandbox this driver (this gateway id) owns, in namespace @ns or, with @ns NULL, in all
 * namespaces, in no particular order. Never lists what other gateways or other tools created. */
int driver_list(struct driver *d, uint64_t epoch, const char *ns, struct driver_sandbox_list *out,
                char *errmsg);

/* Stop sandbox @id of @ns and release everything it had (process tree, workspace, backend
 * objects). 0 also when it did not exist. Where the backend deletes asynchronously (Kubernetes),
 * get() may report DELETING after 0 until it is gone. */
int driver_delete(struct driver *d, uint64_t epoch, const char *ns, const char *id, char *errmsg);

/* Replace the credential files of running sandbox @id of @ns with @creds (@n entries, the whole set
 * of every provider it names: files of keys no longer present are removed). Environment variables
 * keep the values the sandbox started with. GERR_NOTFOUND when the sandbox is not there,
 * GERR_INVAL for a driver without caps.credentials or bad entries (the message never holds a
 * value). */
int driver_update_credentials(struct driver *d, uint64_t epoch, const char *ns, const char *id,
                              const struct driver_credential *creds, size_t n, char *errmsg);

/* ---- The main process's output (caps.logs).
 *
 * A reader of one sandbox's output log, used by one thread at a time. It holds no lock of the
 * driver's: a follower may wait on it for hours while the driver serves other calls. It carries no
 * epoch (it only reads). */
struct driver_log;

struct driver_log_query {
    int64_t tail_lines; /* < 0: everything kept; else only the last N lines */
    uint64_t since_ms;  /* 0: no bound; else only output the backend received at or after this Unix ms */
};

/* Open a reader of sandbox @id of @ns. GERR_NOTFOUND when the backend has no such sandbox or no
 * log for it; GERR_UNAVAILABLE for a driver without caps.logs (the message says which driver);
 * GERR_IO. *@out on 0 (driver_log_close). */
int driver_logs_open(struct driver *d, const char *ns, const char *id, const struct driver_log_query *q,
                     struct driver_log **out, char *errmsg);

/* The next piece of output: 0 with *@n (1..@cap) bytes in @buf the backend received at Unix ms
 * *@ts_ms; GERR_BUSY when there is nothing more now (poll again to follow); GERR_CLOSED when the
 * output ended (the main process and everything holding its output are gone) and all of it was
 * returned; GERR_NOTFOUND when the sandbox was deleted meanwhile; GERR_PROTO, GERR_IO. @cap is at
 * least DRIVER_LOG_CHUNK. */
#define DRIVER_LOG_CHUNK (64u * 1024u)
int driver_log_next(struct driver_log *l, uint8_t *buf, size_t cap, size_t *n, uint64_t *ts_ms, char *errmsg);

/* NULL is fine. */
void driver_log_close(struct driver_log *l);

/* ---- A command run inside a running sandbox (caps.exec).
 *
 * The command joins the sandbox's namespaces (process driver: user, mount, PID, network, UTS, IPC,
 * cgroup), runs as the sandbox's user in its working directory with the environment its main
 * process started with, and talks through file descriptors, so the caller moves bytes with
 * whatever it likes (poll(2), a libuv loop) and a driver may back them with anything (pipes, a
 * pty, a socketpair fed from a WebSocket). Without a TTY: stdin, stdout and stderr are three
 * pipes. With one: a pseudo-terminal whose master is stdin and stdout (stderr is merged into it,
 * fd -1), sized rows x cols, the command its session leader with it as controlling terminal.
 *
 * An exec holds no lock of the driver's and carries no epoch: it does not change the sandbox's
 * record. It is used by one thread at a time. */
struct driver_exec;

struct driver_exec_spec {
    const char *const *command; /* argv, n_command >= 1; argv[0] looked up in the sandbox's PATH */
    size_t n_command;
    bool tty;
    uint16_t rows, cols; /* the terminal's size (tty only); 0: 24 x 80 */
};

/* Start @spec in sandbox @id of @ns. On 0, *@out runs (or already failed: a command that cannot be
 * executed exits 127 after a message on its stderr, as a shell's does). GERR_NOTFOUND (no such
 * sandbox), GERR_UNAVAILABLE (a driver without caps.exec; a sandbox not running: the message says
 * which), GERR_INVAL (a bad spec), GERR_IO (fork, pipes, the pty, the namespaces). */
int driver_exec_start(struct driver *d, const char *ns, const char *id, const struct driver_exec_spec *spec,
                      struct driver_exec **out, char *errmsg);

/* The descriptors, non-blocking and close-on-exec, owned by the exec (valid until
 * driver_exec_close; driver_exec_close_stdin closes *@in): write the command's input to *@in, read
 * its output from *@out and *@err (-1 with a TTY). EOF on an output once the command and everything
 * that inherited it closed it. */
void driver_exec_fds(struct driver_exec *x, int *in, int *out, int *err);

/* End the command's input (EOF on its stdin; with a TTY, an end-of-file character). */
void driver_exec_close_stdin(struct driver_exec *x);

/* Resize the terminal (tty only: GERR_INVAL otherwise); the command gets SIGWINCH. */
int driver_exec_resize(struct driver_exec *x, uint16_t rows, uint16_t cols);

/* Send signal @sig (1..31) to the command. 0, or GERR_INVAL; 0 also when it has ended. */
int driver_exec_signal(struct driver_exec *x, int sig);

/* Whether the command ended: 0 with *@exit_code (0..255, or 128 + the signal) and *@signal (the
 * signal that ended it, or 0); GERR_BUSY while it runs. Never blocks. */
int driver_exec_status(struct driver_exec *x, int *exit_code, int *signal);

/* Close the descriptors; a command still running is killed (SIGKILL) and reaped. NULL is fine. */
void driver_exec_close(struct driver_exec *x);

/* ---- A TCP connection to a port on a running sandbox's loopback (caps.port_forward).
 *
 * Connect to 127.0.0.1:@port inside sandbox @id of @ns and return the connection as a
 * driver_exec (the same object an exec is, so one session loop serves both): *@in and *@out of
 * driver_exec_fds are the connected socket (one descriptor), *@err is -1;
 * driver_exec_close_stdin shuts the socket's write side; driver_exec_status answers 0 (code 0)
 * at once: the connection has "ended" when its reads reach EOF; resize and signal answer
 * GERR_INVAL. GERR_NOTFOUND (no such sandbox), GERR_UNAVAILABLE (a driver without
 * caps.port_forward, a sandbox not running), GERR_REFUSED (nothing listens on the port),
 * GERR_INVAL (port 0), GERR_IO. */
int driver_port_connect(struct driver *d, const char *ns, const char *id, uint16_t port,
                        struct driver_exec **out, char *errmsg);

/* ---- Warm pools (caps.pools): pools of ready sandboxes of a template that Gantry's API declares
 * (the WarmPools service) and the reconciler keeps in the backend; the kubernetes driver makes them
 * agent-sandbox SandboxWarmPool objects (drivers/k8s_pools.h), which a sandbox's driver_config
 * "warm_pool" claims from. Fenced like every other call: a stale epoch is DRIVER_ERR_STALE before
 * anything is touched. A driver without caps.pools answers GERR_UNAVAILABLE ("does not manage warm
 * pools") to all three. */
#define DRIVER_POOL_REPLICAS_MAX 100u

struct driver_pool_spec {
    const char *id;            /* the WarmPool's id (canonical UUID) */
    const char *namespace;     /* its gantry namespace, DNS-1123 label */
    const char *name;          /* DNS-1123 label: the backend object's name */
    const char *k8s_namespace; /* NULL or "": the backend namespace the gantry namespace maps to */
    const char *template_name; /* DNS subdomain: the SandboxTemplate of its members */
    uint32_t replicas;         /* 0..DRIVER_POOL_REPLICAS_MAX */
};

/* A pool in the backend. Strings are heap copies owned by the struct (driver_pool_close). */
struct driver_pool {
    char *id, *namespace, *name, *k8s_namespace;
    uint32_t replicas; /* what it asks for */
    uint32_t ready;    /* members ready to be claimed now */
};

struct driver_pool_list {
    struct driver_pool *items;
    size_t n;
};

void driver_pool_close(struct driver_pool *p);           /* frees the strings; zeroes @p */
void driver_pool_list_close(struct driver_pool_list *l); /* closes every item; zeroes @l */

/* Make the backend's pool of @spec exist with its replicas and template: created when absent,
 * changed when they differ (a concurrent write is read again and retried), left alone otherwise. On
 * 0, @out describes it. A backend object of that name that is not this gateway's pool @spec->id is
 * GERR_EXISTS and is never changed; a k8s_namespace the driver may not use GERR_PERM; the template
 * or pool resource not served GERR_UNAVAILABLE. */
int driver_pool_apply(struct driver *d, uint64_t epoch, const struct driver_pool_spec *spec,
                      struct driver_pool *out, char *errmsg);

/* Delete pool @id named @name in backend namespace @k8s_namespace (its members go with it). 0 also
 * when it is absent; one of that name that is not this gateway's pool @id is left alone (0). */
int driver_pool_delete(struct driver *d, uint64_t epoch, const char *k8s_namespace, const char *name,
                       const char *id, char *errmsg);

/* Every pool this gateway owns, in every namespace the driver may use, in no particular order. */
int driver_pool_list(struct driver *d, uint64_t epoch, struct driver_pool_list *out, char *errmsg);

/* Make namespace @ns usable for create(). Idempotent. */
int driver_ensure_namespace(struct driver *d, uint64_t epoch, const char *ns, char *errmsg);

/* Remove what ensure_namespace() made. GERR_CONSTRAINT while sandboxes of this driver remain in
 * @ns; otherwise 0, also when the namespace is absent, and at once for drivers or modes that never
 * delete backend namespaces (Kubernetes operator and shared modes). */
int driver_delete_namespace(struct driver *d, uint64_t epoch, const char *ns, char *errmsg);

/* Release the driver's memory and connections. Sandboxes keep running: they belong to the
 * backend, and the next driver instance adopts them. NULL is fine. */
void driver_free(struct driver *d);

/* ---- Helpers the drivers share (also useful to callers that validate input early). */

bool driver_is_dns_label(const char *s);     /* [a-z0-9]([-a-z0-9]*[a-z0-9])?, 1..63 bytes */
bool driver_is_dns_subdomain(const char *s); /* dot-separated DNS labels, 1..253 bytes */
bool driver_is_uuid(const char *s);          /* canonical lowercase 8-4-4-4-12 */

/* The value of the first @key in @kv (validate refuses duplicate keys), or NULL. */
const char *driver_kv_get(const struct driver_kv *kv, size_t n, const char *key);

#endif
