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

/* Longest subprotocol name luaws negotiates (lws tokenizes names into 64 bytes). */
#define LUAWS_SUBPROTOCOL_MAX 64

/* What a wsi's opaque user data points at: every such struct starts with this tag. */
enum luaws_kind { LUAWS_KIND_REQUEST = 1, LUAWS_KIND_CONN };

/*
 * A C object a coroutine can wait on. While armed it holds a registry reference to its
 * own userdata; luaws_wake hands that reference to the loop, and the next step gives
 * the userdata to the Lua scheduler, which resumes whoever waits on it.
 */
typedef struct luaws_waitable {
	int ref; /* LUA_NOREF when nobody waits */
} luaws_waitable;

/* A growable byte buffer. */
typedef struct luaws_buf {
	unsigned char *data;
	size_t len, cap;
} luaws_buf;

typedef struct luaws_loop {
	lua_State *L;             /* the thread inside luaws_step, for request callbacks */
	uv_loop_t uv;
	struct lws_context *ctx;
	struct lws_vhost *client_vhost;
	uv_timer_t step_timer;
	int *woken;               /* registry refs handed over by luaws_wake */
	size_t nwoken, cap_woken, narmed;
	luaws_buf scratch;        /* LWS_PRE + payload for direct writes */
	char sel_name[LUAWS_SUBPROTOCOL_MAX]; /* name of the subprotocol slot (see server.c) */
	const char *sel_pending;  /* subprotocol the upgrade in progress will answer with */
	luaws_buf upgrade_headers; /* Upgrade's response headers, for ADD_HEADERS */
	struct lws_protocols *protocols;
	int need_cancel;          /* lws was called from outside its callbacks */
	int stepping, closing;
	unsigned live_conns;
} luaws_loop;

/* loop.c */
luaws_loop *luaws_loop_get(lua_State *L);
int luaws_loop_context(lua_State *L, luaws_loop *loop);
void luaws_arm(lua_State *L, luaws_loop *loop, luaws_waitable *w, int idx);
void luaws_wake(luaws_loop *loop, luaws_waitable *w);
void luaws_unarm(lua_State *L, luaws_loop *loop, luaws_waitable *w);
void luaws_touched_lws(luaws_loop *loop);
int luaws_pcall(lua_State *L, int nargs, int nresults);
int luaws_buf_reserve(luaws_buf *b, size_t extra);
void luaws_buf_free(luaws_buf *b);
int luaws_fail(lua_State *L, const char *msg);
int luaws_loop_open(lua_State *L);

/* protocol.c: the one lws protocol callback and the protocol table */
extern const struct lws_protocols luaws_protocol_template[3];
int luaws_protocol_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
			    void *in, size_t len);

/* conn.c */
enum luaws_conn_state {
	LUAWS_CONNECTING, /* client: resolving, connecting, handshaking */
	LUAWS_UPGRADING,  /* server: Upgrade accepted, 101 not sent yet */
	LUAWS_OPEN,
	LUAWS_CLOSED      /* the wsi is gone; close_code says why */
};

typedef struct luaws_frame {
	struct luaws_frame *next;
	size_t len;
	int opcode;
	unsigned char data[]; /* LWS_PRE bytes of headroom, then the payload */
} luaws_frame;

typedef struct luaws_dial luaws_dial;

typedef struct luaws_conn {
	enum luaws_kind kind;
	luaws_loop *loop;
	struct lws *wsi;
	luaws_waitable waitable;
	enum luaws_conn_state state;
	unsigned is_client : 1, close_sent : 1, close_received : 1, rx_paused : 1, rx_failed : 1;
	unsigned char utf8_need, utf8_lo, utf8_hi; /* UTF-8 check across text fragments */
	/* Received messages, each a record: type byte, size_t length, payload. */
	luaws_buf in;
	size_t in_head, in_msgs, partial;
	luaws_frame *out_head, *out_tail;
	size_t out_bytes;
	int close_code;
	char close_text[124];
	char error[96];           /* why a dial failed, or why the connection broke */
	luaws_dial *dial;
	char subprotocol[LUAWS_SUBPROTOCOL_MAX];
	char remote[56], local[56];
} luaws_conn;

luaws_conn *luaws_conn_new(lua_State *L, luaws_loop *loop, int is_client);
void luaws_conn_attach(luaws_conn *c, struct lws *wsi);
void luaws_conn_closed(luaws_conn *c, const char *error);
struct lws *luaws_conn_detach(luaws_conn *c);
void luaws_conn_abandon(luaws_conn *c);
void luaws_socket_address(int fd, int peer, char *out, size_t len);
int luaws_conn_event(luaws_conn *c, struct lws *wsi, enum lws_callback_reasons reason,
		     void *in, size_t len);
int luaws_conn_open(lua_State *L);

/* server.c */
int luaws_server_event(struct lws *wsi, enum lws_callback_reasons reason, void *user,
		       void *in, size_t len);
int luaws_server_open(lua_State *L);

/* client.c */
int luaws_client_event(luaws_conn *c, struct lws *wsi, enum lws_callback_reasons reason,
		       void *in, size_t len);
void luaws_dial_detach(luaws_dial *d);
int luaws_client_open(lua_State *L);

/* timer.c, signal.c */
int luaws_timer_open(lua_State *L);
int luaws_signal_open(lua_State *L);

/* headers: copy every header lws parsed on wsi into a table on the Lua stack (server.c) */
void luaws_push_headers(lua_State *L, struct lws *wsi);
/* the same, as "name\0value\0...\0" in C memory, for use inside callbacks */
int luaws_collect_headers(struct lws *wsi, luaws_buf *out);
void luaws_push_collected_headers(lua_State *L, const luaws_buf *in);
int luaws_headers_next(const luaws_buf *b, size_t *off, const char **name, const char **value);
int luaws_headers_write(const luaws_buf *b, char **p, const char *end);
void luaws_headers_store(lua_State *L, int idx, luaws_buf *out);

#endif
