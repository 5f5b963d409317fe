/* Private declarations shared by the C files of luaws.core. */
#ifndef LUAWS_H
#define LUAWS_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>
#include <lauxlib.h>
#include <uv.h>
#include <libwebsockets.h>

#define LUAWS_LOOP_MT "luaws.Loop"
#define LUAWS_CONN_MT "luaws.Conn"
#define LUAWS_SERVER_MT "luaws.Server"
#define LUAWS_REQUEST_MT "luaws.Request"
#define LUAWS_TIMER_MT "luaws.Timer"
#define LUAWS_SIGNAL_MT "luaws.Signal"

/* object.c: each Lua type's metatable (methods get it as upvalue 1; tostring, gc and
 * close may be NULL), and the check of self that uses it */
void luaws_new_type(lua_State *L, const char *name, const luaL_Reg *methods,
		    lua_CFunction tostring, lua_CFunction gc, lua_CFunction close);
void luaws_add_methods(lua_State *L, const char *name, const luaL_Reg *methods);
void *luaws_test(lua_State *L, int idx);
void *luaws_check(lua_State *L, int idx, const char *name);

/* Longest subprotocol name luaws negotiates (lws tokenizes names into 64 bytes). */
#define LUAWS_SUBPROTOCOL_MAX 64

/* What a wsi's opaque user data points at: every such struct starts with this tag. */
enum luaws_kind {
	LUAWS_KIND_REQUEST = 1,
	LUAWS_KIND_CONN,
	LUAWS_KIND_LISTENER,
	LUAWS_KIND_ORPHAN /* sender.c: bytes left to send for a socket nobody owns */
};

/*
 * A C object a coroutine can wait on. While armed its own userdata sits in a slot of
 * the loop's armed table; luaws_wake hands the slot to the loop, and the next step gives
 * the userdata to the Lua scheduler, which resumes whoever waits on it.
 */
typedef struct luaws_waitable {
	int slot; /* in the loop's armed table (from 1); 0 when nobody waits */
} luaws_waitable;

/* A growable byte buffer. */
typedef struct luaws_buf {
	unsigned char *data;
	size_t len, cap;
} luaws_buf;

/* buf.c */
int luaws_buf_reserve(luaws_buf *b, size_t extra);
int luaws_buf_append(luaws_buf *b, const void *p, size_t n);
int luaws_buf_printf(luaws_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void luaws_buf_free(luaws_buf *b);

/* inbox.c: received messages waiting for the reader (see there). pool: big buffers
 * the caller keeps for big messages (or NULL). */
#define LUAWS_NO_PARTIAL ((size_t)-1)
typedef struct luaws_inbox {
	luaws_buf buf;     /* records: type byte, size_t length, payload */
	size_t head;       /* the first unread record */
	size_t msgs;       /* whole records from head on */
	size_t partial;    /* the record still arriving, or LUAWS_NO_PARTIAL */
	size_t taken;      /* bytes of the head record a streaming reader took */
	int discarding;    /* the partial record's bytes are dropped as they arrive */
} luaws_inbox;

#define LUAWS_INBOX_POOL 8
typedef struct luaws_inbox_pool {
	luaws_buf bufs[LUAWS_INBOX_POOL];
	int n;
	size_t bytes;
} luaws_inbox_pool;

void luaws_inbox_init(luaws_inbox *in);
void luaws_inbox_free(luaws_inbox *in);
/* A message of this type starts arriving (hint: bytes that come with it). -1: no memory */
int luaws_inbox_begin(luaws_inbox *in, int type, size_t hint, luaws_inbox_pool *pool);
int luaws_inbox_append(luaws_inbox *in, const unsigned char *p, size_t n, luaws_inbox_pool *pool);
/* The arriving message is complete: 1 when it is now readable (0: it was discarded). */
int luaws_inbox_finish(luaws_inbox *in);
void luaws_inbox_drop_partial(luaws_inbox *in);
int luaws_inbox_partial_type(const luaws_inbox *in);
/* The type of the message a reader gets next (whole or arriving), 0 when none. */
int luaws_inbox_head_type(const luaws_inbox *in);
/* Up to max bytes of that message not taken yet (*p), without taking them. */
size_t luaws_inbox_peek(const luaws_inbox *in, size_t max, const unsigned char **p);
/* Take n of them: 1 when that ended the message. */
int luaws_inbox_consume(luaws_inbox *in, size_t n, luaws_inbox_pool *pool);
/* Drop the head message (an arriving one: the rest of it as it comes). */
void luaws_inbox_discard(luaws_inbox *in, luaws_inbox_pool *pool);
size_t luaws_inbox_unread(const luaws_inbox *in);
/* Drop the first whole message longer than limit and everything after it: 1 if any. */
int luaws_inbox_cut_over(luaws_inbox *in, size_t limit);
void luaws_inbox_pool_free(luaws_inbox_pool *pool);

/* frame.c: the wire format */
typedef struct luaws_frame_parser {
	unsigned char hdr[14];
	unsigned char hdr_have, opcode, fin, first, in_payload, in_message, expect_masked,
		failed;
	unsigned char rsv1_ok;  /* permessage-deflate: RSV1 allowed on a message's first frame */
	unsigned char rsv1;     /* the current frame has RSV1 */
	unsigned char mask[4];
	uint64_t length, mask_pos;
} luaws_frame_parser;

typedef struct luaws_frame_event {
	unsigned char *data;
	size_t len;
	uint64_t frame_len;  /* the payload length the frame's header claims */
	int opcode, fin, first, last;
	int rsv1;            /* the frame has RSV1 (a compressed message's first frame) */
	int code;            /* on a protocol error: the close code */
	const char *reason;
} luaws_frame_event;

/* Or'ed into the opcode given to luaws_frame_header and luaws_send_frame: set RSV1 (the
 * first frame of a compressed message). */
#define LUAWS_RSV1 0x40

void luaws_mask(unsigned char *p, size_t n, const unsigned char key[4], size_t pos);
size_t luaws_frame_header(unsigned char *out, int fin, int opcode, uint64_t len,
			  const unsigned char *mask);
int luaws_frame_next(luaws_frame_parser *fp, unsigned char **in, size_t *len,
		     luaws_frame_event *ev);

struct luaws_conn;
typedef struct luaws_tls luaws_tls;
struct luaws_loop;

/* Work that must run outside lws's callbacks (what __gc may not do itself): run at the
 * start of the next step, or when the loop closes (loop->closing set: release only).
 * The node lives inside the caller's own record. */
typedef struct luaws_deferred {
	struct luaws_deferred *next;
	void (*run)(struct luaws_loop *loop, struct luaws_deferred *d);
} luaws_deferred;

typedef struct luaws_loop {
	lua_State *L;             /* the thread inside luaws_step, for request callbacks */
	uv_loop_t *uv;            /* own_uv, or luv's loop when luv was loaded first */
	uv_loop_t own_uv;
	int owns_uv;              /* luaws created the loop, so luaws closes it */
	void *luv;                /* luv's context (luv_ctx_t) when luv shares the loop */
	struct lws_context *ctx;
	struct lws_vhost *vhost;  /* of every luaws socket, accepted or dialed, but: */
	struct lws_context *low_ctx; /* accepted descriptors below low_fds (loop.c) */
	struct lws_vhost *low_vhost;
	uv_idle_t *low_idle;      /* low_ctx's idle handle (as lws_idle) */
	int low_fds;              /* slots in low_ctx's table (0: none) */
	uv_timer_t step_timer;
	uv_timer_t tls_sweep;     /* tls.c: hands busy sockets' buffers back when quiet */
	struct luaws_tls *tls_busy; /* tls.c: the sockets that keep their buffers */
	int *woken;               /* armed-table slots handed over by luaws_wake */
	size_t nwoken, cap_woken, narmed;
	int armed_ref;            /* registry ref of the armed table: slot -> armed object */
	lua_State *current;       /* sched.c: the coroutine the scheduler runs (or NULL) */
	int sched_waiters_ref, sched_finish_ref; /* sched.c: sched.lua's */
	unsigned nwaiting;        /* sched.c: entries in sched.lua's waiters table */
	int parked_ref;           /* sched.c: slot -> the coroutine parked on its object in C */
	int *free_slots;          /* its free slots (room for every slot ever used) */
	int nfree, nslots, cap_slots;
	luaws_buf scratch;        /* a client frame being masked */
	luaws_inbox_pool rx_pool; /* large emptied inbox buffers, for the next big messages */
	int need_cancel;          /* lws was called from outside its callbacks */
	uv_idle_t *lws_idle;      /* lws's own idle handle, which re-arms its timers */
	struct luaws_batch *batch; /* sender.c: small frames gathered while coroutines run */
	struct luaws_pmd_pool *pmd_pool; /* deflate.c: zlib streams between messages */
	luaws_deferred *deferred;  /* run at the start of the next step */
	int stepping, closing;
	int nosleep;              /* set in a step by core.nosleep: something is ready */
	uint64_t spin_ns;         /* busy polling before a step sleeps (SetBusyPoll; 0: off) */
	unsigned spin_rate;       /* how often a spin finds work: 0..SPIN_ONE, a moving average */
	unsigned spin_probe;      /* sleeps since the last spin */
	unsigned live_conns;
	unsigned fault_request;   /* test hook (core._inject_fault): fail the next Request */
	int max_fds;              /* slots in lws's descriptor table (0: no context yet) */
	int fd_table_cap;         /* the program's SetMaxOpenFiles (0: the default) */
} luaws_loop;

/* loop.c */
luaws_loop *luaws_loop_get(lua_State *L);
int luaws_loop_context(lua_State *L, luaws_loop *loop);
void luaws_loop_low_context(luaws_loop *loop);
void luaws_arm(lua_State *L, luaws_loop *loop, luaws_waitable *w, int idx);
void luaws_wake(luaws_loop *loop, luaws_waitable *w);
void luaws_unarm(lua_State *L, luaws_loop *loop, luaws_waitable *w);
void luaws_touched_lws(luaws_loop *loop);
void luaws_defer(luaws_loop *loop, luaws_deferred *d);
int luaws_pcall(lua_State *L, int nargs, int nresults);
int luaws_fail(lua_State *L, const char *msg);
int luaws_loop_open(lua_State *L);

/* sched.c: the scheduler's hot path (parking, resuming) */
void luaws_sched_resume(lua_State *L, luaws_loop *loop, int co_idx, int nargs);
int luaws_sched_wake(lua_State *L, luaws_loop *loop, int obj_idx, int co_idx);
int luaws_sched_park_slot(lua_State *L, luaws_loop *loop, int slot, lua_KFunction k);
void luaws_sched_open(lua_State *L);

/* limits.c: lws's descriptor table, the open-files limit, lws's log level */
struct lws_context *luaws_create_context(luaws_loop *loop,
					 struct lws_context_creation_info *info, long cap,
					 int must_cap, int *table);
int luaws_limits_open(lua_State *L);

/* protocol.c: the one lws protocol (raw sockets) and its callback */
extern const struct lws_protocols luaws_protocols[2];
int luaws_protocol_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
			    void *in, size_t len);

/* conn.c: the life of a connection, one state; each transition is a function there. */
enum luaws_conn_state {
	LUAWS_CONNECTING,     /* client: resolving, connecting, handshaking */
	LUAWS_UPGRADING,      /* server: Upgrade accepted, 101 not sent yet */
	LUAWS_OPEN,
	LUAWS_CLOSE_SENT,     /* our close frame went out; reading goes on to the peer's */
	LUAWS_CLOSE_RECEIVED, /* the peer's close frame came; answered when the reader
			       * gets to it (or by a Lua close handler) */
	LUAWS_CLOSING,        /* close frames both ways, or the connection failed: TCP
			       * closes once what is queued has gone out */
	LUAWS_CLOSED          /* the socket is gone */
};

/* How reading ended, for the reader (close_code and close_text say the rest). */
enum luaws_read_end {
	LUAWS_READING,
	LUAWS_READ_PEER_CLOSE, /* the peer's close frame */
	LUAWS_READ_FAILED,     /* luaws failed the connection (protocol error) */
	LUAWS_READ_LIMIT,      /* failed for a message over the read limit */
	LUAWS_READ_GONE        /* TCP ended without a close frame (1006) */
};

/* Why a connection broke or a dial failed, for the Lua side (never told apart by
 * message text). */
enum luaws_err {
	LUAWS_ERR_NONE,
	LUAWS_ERR_CLOSED,    /* closed by this side (Close, collection) */
	LUAWS_ERR_WRITE,     /* the socket failed on a write */
	LUAWS_ERR_TIMEOUT,   /* a write deadline or the dial's timeout passed */
	LUAWS_ERR_LOOKUP,    /* dial: the name did not resolve */
	LUAWS_ERR_CONNECT,   /* dial: no address accepted the connection */
	LUAWS_ERR_HANDSHAKE, /* dial: the server's answer was not a valid upgrade */
	LUAWS_ERR_EOF,       /* dial: the server closed during the handshake */
	LUAWS_ERR_TLS,       /* the TLS handshake or connection failed */
	LUAWS_ERR_PROXY      /* dial: the proxy refused the tunnel or did not speak HTTP */
};

/* sender.c: what a connection has queued to send (see there). */
typedef struct luaws_sender {
	struct luaws_out *head, *tail;
	size_t queued;            /* bytes in the queue not yet written */
	size_t batched;           /* segments in the loop's batch */
	size_t last_seg;          /* the latest of them (extended while it stays last) */
} luaws_sender;

/* receiver.c: the message rules for what a connection receives (see there). */
typedef struct luaws_receiver {
	luaws_frame_parser parser;
	unsigned char utf8[3];    /* UTF-8 check across the fragments of a text message */
	unsigned char ctl_len;
	unsigned char inflating;  /* the message being received is compressed */
	unsigned char receiving;  /* inside luaws_receive */
	unsigned char holding;    /* inflating stopped until the reader catches up: */
	unsigned char held_final; /* held_payload ends the message */
	luaws_buf held_payload;   /* the compressed bytes of the frame not inflated yet */
	luaws_buf held_raw;       /* what came after them, not parsed yet */
	unsigned char ctl[125];   /* the control frame being received */
	uint64_t msg_len;         /* bytes of the message being received, for the limit */
	int64_t read_limit;       /* 0: none */
	luaws_buf ctl_in;         /* pings/pongs for Lua handlers: type, length byte, payload */
	/* A protocol error found behind whole unread messages: reading from the socket
	 * stops, and the connection fails when the reader gets there (fail_code 0: none). */
	int fail_code;
	enum luaws_read_end fail_end;
	const char *fail_why;     /* a static string */
} luaws_receiver;

typedef struct luaws_dial luaws_dial;
typedef struct luaws_deadlines luaws_deadlines;

typedef struct luaws_conn {
	enum luaws_kind kind;
	luaws_loop *loop;
	struct lws *wsi;
	luaws_waitable waitable;
	int plain_sock;           /* the socket + 1 while open without TLS (the sender's
				   * direct send; no lookup through lws), else 0 */
	enum luaws_conn_state state;
	enum luaws_read_end read_end;
	unsigned is_client : 1, rx_paused : 1, streaming : 1, read_timed_out : 1,
		 write_timed_out : 1, lua_ping : 1, lua_pong : 1, lua_close : 1,
		 close_went : 1, /* our close frame was sent: writes get ErrCloseSent */
		 /* conn_fast.c: conn.lua must run reads / writes (c:_fast); a reader is
		  * parked in the fast ReadMessage */
		 slow_read : 1, slow_write : 1, fast_reading : 1;
	luaws_receiver rx;
	luaws_inbox inbox;
	luaws_sender tx;
	luaws_deadlines *deadlines;
	int close_code;
	char close_text[124];
	enum luaws_err error_kind;
	char error[160];          /* why a dial failed, or why the connection broke */
	luaws_dial *dial;
	struct luaws_pmd *pmd;    /* permessage-deflate, when negotiated (deflate.c) */
	char subprotocol[LUAWS_SUBPROTOCOL_MAX];
	char remote[56], local[56];
} luaws_conn;

luaws_conn *luaws_conn_new(lua_State *L, luaws_loop *loop, int is_client);
void luaws_conn_attach(luaws_conn *c, struct lws *wsi);
void luaws_conn_start(luaws_conn *c, const unsigned char *early, size_t len);
void luaws_conn_closed(luaws_conn *c, enum luaws_err kind, const char *error);
void luaws_conn_tx_changed(luaws_conn *c, int drained);
int luaws_conn_fail(luaws_conn *c, int code, const char *why);
int luaws_conn_fail_read_limit(luaws_conn *c);
int luaws_conn_peer_close(luaws_conn *c, int code, const unsigned char *text, size_t tl);
void luaws_conn_received(luaws_conn *c);
void luaws_conn_update_rx(luaws_conn *c);
luaws_inbox_pool *luaws_conn_rx_pool(luaws_conn *c);
int luaws_conn_reading(const luaws_conn *c);
luaws_conn *luaws_conn_check(lua_State *L);
void luaws_conn_add_methods(lua_State *L, const luaL_Reg *methods);
int luaws_conn_read(lua_State *L, luaws_conn *c);
int luaws_conn_write(lua_State *L, luaws_conn *c, int opcode, const unsigned char *data,
		     size_t len, int fin);

/* conn_fast.c: ReadMessage and WriteMessage's common case */
int luaws_conn_fast_open(lua_State *L);

/* receiver.c */
void luaws_receiver_init(luaws_receiver *rx, int is_client);
void luaws_receive(luaws_conn *c, unsigned char *in, size_t len);
void luaws_receive_last(luaws_conn *c, int fd, struct luaws_tls *tls);
void luaws_receive_resume(luaws_conn *c);
void luaws_receiver_drop_held(luaws_receiver *rx);
void luaws_receiver_free(luaws_receiver *rx);
int luaws_receiver_open(lua_State *L);

/* deadline.c */
void luaws_deadlines_free(luaws_conn *c);
int luaws_deadline_open(lua_State *L);
struct lws *luaws_conn_detach(luaws_conn *c);
void luaws_conn_abandon(luaws_conn *c);
int luaws_conn_event(luaws_conn *c, enum lws_callback_reasons reason, void *in, size_t len);
int luaws_conn_open(lua_State *L);

/* sender.c: every byte a connection sends. urgent: a ping or pong, which may overtake
 * queued frames that have not started. 0, or -1 when out of memory or the socket failed
 * (then c->wsi is NULL: the connection is closed). */
int luaws_send_frame(luaws_conn *c, int opcode, int fin, const unsigned char *data, size_t len,
		     int urgent);
int luaws_send_bytes(luaws_conn *c, const unsigned char *p, size_t len, int urgent);
int luaws_sender_writeable(luaws_conn *c);
int luaws_sender_flush(luaws_conn *c);
int luaws_sender_idle(const luaws_conn *c);
int luaws_sender_full(const luaws_conn *c);
void luaws_sender_free(luaws_conn *c);
struct luaws_orphan;
int luaws_orphan(luaws_loop *loop, struct lws *wsi, luaws_conn *c, const unsigned char *p,
		 size_t n, int now);
void luaws_orphan_closed(struct luaws_orphan *o);
int luaws_send_detached(luaws_loop *loop, struct lws *wsi, unsigned char *p, size_t n);
void luaws_detached_writeable(struct lws *wsi);
ssize_t luaws_socket_send(int fd, const void *p, size_t n);
int luaws_batch_new(luaws_loop *loop);
int luaws_batch_set(luaws_loop *loop, int on);
void luaws_batch_free(luaws_loop *loop);

/* tls.c: TLS on a socket, in the socket's lws per-session space (see tls.c) */
typedef int (*luaws_tls_sink)(void *arg, unsigned char *plain, size_t n);
typedef struct ssl_ctx_st SSL_CTX;
int luaws_tls_start(struct lws *wsi, SSL_CTX *ctx, int server, const char *name);
luaws_tls *luaws_tls_of(struct lws *wsi);
int luaws_tls_rx(luaws_tls *t, const unsigned char *in, size_t len, luaws_tls_sink sink,
		 void *arg);
ssize_t luaws_tls_write(luaws_tls *t, const unsigned char *a, size_t an,
			const unsigned char *b, size_t bn);
int luaws_tls_writeable(luaws_tls *t);
int luaws_tls_let_go(luaws_tls *t, const unsigned char *p, size_t n, unsigned char **out,
		     size_t *out_len);
const char *luaws_tls_error(struct lws *wsi);
void luaws_tls_read_last(struct lws *wsi);
int luaws_tls_idle(struct lws *wsi);
void luaws_tls_close_notify(struct lws *wsi);
void luaws_tls_free(struct lws *wsi);
void luaws_tls_push_state(lua_State *L, struct lws *wsi);
/* tls_config.c: luaws.TLSConfig (an SSL_CTX); tls.c tells it when an SSL takes or drops
 * a reference to one */
SSL_CTX *luaws_tls_check_config(lua_State *L, int idx, int server);
void luaws_tls_ctx_took(SSL_CTX *ctx);
void luaws_tls_ctx_dropped(SSL_CTX *ctx);
struct x509_store_ctx_st;
int luaws_tls_verified(int ok, struct x509_store_ctx_st *store);
SSL_CTX *luaws_tls_config_ref(SSL_CTX *ctx);
void luaws_tls_config_unref(SSL_CTX *ctx);
int luaws_tls_config_open(lua_State *L);
int luaws_tls_open(lua_State *L);

/* server.c */
int luaws_server_event(struct lws *wsi, enum lws_callback_reasons reason, void *in,
		       size_t len);
int luaws_server_open(lua_State *L);

/* client.c */
int luaws_client_event(luaws_conn *c, struct lws *wsi, enum lws_callback_reasons reason,
		       void *in, size_t len);
void luaws_dial_detach(luaws_dial *d);
int luaws_client_open(lua_State *L);

/* proxy.c: the exchange with an HTTP (CONNECT) or SOCKS5 proxy before the tunnel to the
 * server is up (see there) */
typedef struct luaws_proxy luaws_proxy;
enum luaws_proxy_result { LUAWS_PROXY_MORE, LUAWS_PROXY_UP, LUAWS_PROXY_FAILED };
luaws_proxy *luaws_proxy_new(lua_State *L, int idx);
void luaws_proxy_free(luaws_proxy *p);
int luaws_proxy_start(luaws_proxy *p, luaws_conn *c);
int luaws_proxy_waiting(const luaws_proxy *p);
enum luaws_proxy_result luaws_proxy_rx(luaws_proxy *p, luaws_conn *c, const unsigned char *in,
				       size_t len, size_t *used, luaws_buf *head, int *status,
				       luaws_buf *headers, char *why, size_t wl);
const char *luaws_proxy_closed(const luaws_proxy *p, char *why, size_t wl);

/* timer.c, signal.c, process.c */
int luaws_timer_open(lua_State *L);
int luaws_process_open(lua_State *L);
int luaws_signal_open(lua_State *L);

/* headers.c: header lists "name\0value\0..." */
void luaws_push_headers(lua_State *L, const luaws_buf *list);
void luaws_fill_headers(lua_State *L, int idx, const luaws_buf *list);
int luaws_headers_next(const luaws_buf *b, size_t *off, const char **name, const char **value);
int luaws_headers_append(luaws_buf *out, const luaws_buf *list);
void luaws_headers_store(lua_State *L, int idx, luaws_buf *out);

/* utf8.c: st holds the state of a sequence split across calls (zeroed at a message's
 * start); the text is whole and valid when this returned 1 and st[0] is 0 */
int luaws_utf8_valid(unsigned char st[3], const unsigned char *p, size_t n);

/* address.c */
void luaws_socket_address(int fd, int peer, char *out, size_t len);
void luaws_format_address(const struct sockaddr *sa, char *out, size_t len);

/* time.c: seconds from Lua to libuv milliseconds. luaws_check_seconds raises an argument
 * error for NaN; luaws_ms rounds up, gives 0 for a passed time (-inf included) and
 * LUAWS_NEVER for a time too far away to matter (+inf included). */
#define LUAWS_NEVER UINT64_MAX
double luaws_check_seconds(lua_State *L, int arg);
double luaws_opt_seconds(lua_State *L, int arg, double def);
uint64_t luaws_ms(double seconds);

/* http.c: the HTTP side of the handshake */
#define LUAWS_HEAD_MAX (16 * 1024)
long luaws_http_feed(luaws_buf *head, const unsigned char *in, size_t len, size_t max);
int luaws_http_parse_request(luaws_buf *head, char **method, char **target, luaws_buf *out);
int luaws_http_parse_response(luaws_buf *head, int *status, luaws_buf *out);
const char *luaws_http_header(const luaws_buf *list, const char *name);
int luaws_http_has_token(const luaws_buf *list, const char *name, const char *token);
void luaws_ws_accept(const char *key, char out[32]);
void luaws_ws_new_key(char out[32]);

/* deflate.c: permessage-deflate (RFC 7692). What one side asks for (a server imposes
 * it, a client offers it): CompressionOptions. */
typedef struct luaws_pmd_config {
	unsigned char server_no_takeover, client_no_takeover;
	unsigned char server_bits, client_bits; /* 8..15, 0: not set */
	signed char level;                      /* -2..9, as gorilla */
	unsigned char mem_level;                /* 1..9 */
} luaws_pmd_config;

/* What a connection agreed, seen from its side: tx is what it compresses, rx what it
 * inflates. */
typedef struct luaws_pmd_params {
	unsigned char tx_no_takeover, rx_no_takeover, tx_bits, rx_bits, mem_level;
	signed char level;
} luaws_pmd_params;

/* Takes a piece of inflated output: 0 to go on, 1 to stop for now (the reader is
 * behind), -1 when it failed the connection. */
typedef int (*luaws_pmd_sink)(luaws_conn *c, const unsigned char *p, size_t n);
#define LUAWS_PMD_HELD (-2)

void luaws_pmd_default_config(luaws_pmd_config *cfg);
void luaws_pmd_read_config(lua_State *L, int idx, luaws_pmd_config *cfg);
/* Server: the first acceptable offer: 1 and its answer appended to head (a header
 * line), 0 when none is, -1 when out of memory. */
int luaws_pmd_negotiate(const char *offers, const luaws_pmd_config *cfg, luaws_pmd_params *out,
			luaws_buf *head);
/* Client: the offer (a header line), and the check of the server's answer (0: valid). */
int luaws_pmd_offer(const luaws_pmd_config *cfg, luaws_buf *out);
int luaws_pmd_check_answer(const char *answer, const luaws_pmd_config *cfg, luaws_pmd_params *out);
int luaws_pmd_attach(luaws_conn *c, const luaws_pmd_params *p);
void luaws_pmd_release(luaws_conn *c);
void luaws_pmd_free(luaws_conn *c);
void luaws_pmd_pool_free(luaws_loop *loop);
int luaws_pmd_compresses(const luaws_conn *c);
int luaws_pmd_takeover(const luaws_conn *c);
void luaws_pmd_key(const luaws_conn *c, int *bits, int *mem_level, int *level);
int luaws_pmd_write(luaws_conn *c, int *opcode, int fin, const unsigned char **data, size_t *len);
int luaws_pmd_compress_alone(luaws_loop *loop, int bits, int mem_level, int level,
			     const unsigned char *p, size_t n, luaws_buf *out);
int luaws_pmd_rx_begin(luaws_conn *c);
int luaws_pmd_inflate(luaws_conn *c, const unsigned char *in, size_t n, int final,
		      uint64_t max_out, luaws_pmd_sink sink, const char **why,
		      const unsigned char **rest, size_t *rest_len);
int luaws_deflate_open(lua_State *L);

/* igzip.c: whole messages with no context, by ISA-L (levels 1 to 3, 15-bit window) */
struct luaws_igzip_pool;
int luaws_igzip_level(int level);
int luaws_igzip_compress(struct luaws_igzip_pool **poolp, int level, const unsigned char *p,
			 size_t n, luaws_buf *out);
void luaws_igzip_pool_free(struct luaws_igzip_pool *pool);

/* prepared.c */
int luaws_prepared_open(lua_State *L);
const unsigned char *luaws_prepared_frame(lua_State *L, int idx, int *opcode, size_t *len,
					  const unsigned char **payload, size_t *plen);
const unsigned char *luaws_prepared_deflated(lua_State *L, int idx, luaws_conn *c, size_t *len,
					     const unsigned char **payload, size_t *plen);

#endif
