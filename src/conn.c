/*
 * luaws.Conn: one WebSocket connection, server or client side, on a raw lws socket.
 * Owns the message rules on top of frame.c (reassembly, UTF-8, read limit, control
 * frames, the close handshake), the queue of received messages, flow control both ways,
 * and deadlines. What it sends goes through sender.c.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "luaws.h"

/* Stop reading from the socket while this many bytes of messages wait unread. */
#define RX_PAUSE_BYTES (256 * 1024)
/* Pings and pongs kept for Lua handlers before the reader runs them. */
#define CTL_IN_MAX (8 * 1024)
/* Seconds the peer has to answer our close frame, and to close TCP after it. */
#define CLOSE_TIMEOUT 5
#define LINGER_TIMEOUT 2
/* The read limit of a new connection (SetReadLimit changes it; 0: none). Received
 * messages are whole in memory before ReadMessage returns them, so the limit bounds
 * what one peer can make a connection hold: twice the largest message of the interop
 * table (16 MiB). Node's ws allows 100 MiB, Python's websockets 1 MiB. */
#define DEFAULT_READ_LIMIT (32 * 1024 * 1024)
#define NO_PARTIAL ((size_t)-1)
#define RECORD_HEADER (1 + sizeof(size_t))

struct luaws_deadlines {
	uv_timer_t timer;
	luaws_conn *conn;        /* NULL once the conn is gone */
	uint64_t read_at, write_at; /* uv_now() milliseconds; 0: none */
};

static const char *const state_names[] = {"connecting", "upgrading", "open", "closed"};

luaws_conn *luaws_conn_new(lua_State *L, luaws_loop *loop, int is_client)
{
	luaws_conn *c = lua_newuserdatauv(L, sizeof(*c), 1);
	memset(c, 0, sizeof(*c));
	c->kind = LUAWS_KIND_CONN;
	c->loop = loop;
	c->waitable.ref = LUA_NOREF;
	c->state = is_client ? LUAWS_CONNECTING : LUAWS_UPGRADING;
	c->is_client = is_client;
	c->partial = NO_PARTIAL;
	c->read_limit = DEFAULT_READ_LIMIT;
	c->parser.expect_masked = !is_client;
	luaL_setmetatable(L, LUAWS_CONN_MT);
	return c;
}

/* The methods carry the metatable as upvalue 1: comparing with it is cheaper than
 * luaL_checkudata's lookup by name, which the per-message calls would pay each time. */
static luaws_conn *check_conn(lua_State *L)
{
	if (lua_getmetatable(L, 1)) {
		int same = lua_rawequal(L, -1, lua_upvalueindex(1));
		lua_pop(L, 1);
		if (same)
			return lua_touserdata(L, 1);
	}
	return luaL_checkudata(L, 1, LUAWS_CONN_MT);
}

void luaws_conn_attach(luaws_conn *c, struct lws *wsi)
{
	c->wsi = wsi;
	lws_set_opaque_user_data(wsi, c);
	c->loop->live_conns++;
}

/* Cut the link between c and its wsi (lws events for it are ignored from now on);
 * returns the wsi it had. */
struct lws *luaws_conn_detach(luaws_conn *c)
{
	struct lws *wsi = c->wsi;
	if (wsi) {
		lws_set_opaque_user_data(wsi, NULL);
		c->wsi = NULL;
		c->loop->live_conns--;
	}
	return wsi;
}

/* Let go of the wsi and have lws drop it soon, without telling c. */
void luaws_conn_abandon(luaws_conn *c)
{
	struct lws *wsi = luaws_conn_detach(c);
	if (wsi && !c->loop->closing) {
		lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
		luaws_touched_lws(c->loop);
	}
}

static void drop_partial(luaws_conn *c)
{
	if (c->partial != NO_PARTIAL) {
		c->in.len = c->partial;
		if (c->in_head > c->in.len)
			c->in_head = c->in.len;
		c->partial = NO_PARTIAL;
		c->head_taken = 0;
	}
}

/* The wsi is gone (or never came): record why and wake everyone waiting. */
void luaws_conn_closed(luaws_conn *c, enum luaws_err kind, const char *error)
{
	luaws_conn_detach(c);
	if (c->state != LUAWS_CLOSED) {
		c->state = LUAWS_CLOSED;
		if (!c->close_received && !c->rx_failed) {
			c->close_code = 1006;
			c->close_text[0] = '\0';
		}
		if (error && !c->error[0]) {
			c->error_kind = kind;
			lws_strncpy(c->error, error, sizeof(c->error));
		}
	}
	luaws_sender_free(c);
	drop_partial(c); /* a half-received message is lost; whole ones stay readable */
	luaws_wake(c->loop, &c->waitable);
}


/* Has the read side ended (close frame received, connection failed or gone)? */
static int read_ended(const luaws_conn *c)
{
	return c->state == LUAWS_CLOSED || c->close_received || c->rx_failed;
}

/* Should reading from the socket stop? Above limit bytes unread (unless the unread
 * message is one a whole-message reader waits to complete), or a full send queue. */
static int rx_should_pause(const luaws_conn *c, size_t limit)
{
	if (luaws_sender_full(c))
		return 1;
	if (c->in.len - c->in_head < limit)
		return 0;
	return !(c->in_msgs == 0 && c->partial != NO_PARTIAL && !c->streaming);
}

static void update_rx(luaws_conn *c)
{
	if (!c->wsi || read_ended(c) || c->fail_code)
		return;
	if (!c->rx_paused && rx_should_pause(c, RX_PAUSE_BYTES)) {
		c->rx_paused = 1;
		lws_rx_flow_control(c->wsi, 0);
		luaws_touched_lws(c->loop);
	} else if (c->rx_paused && !rx_should_pause(c, RX_PAUSE_BYTES / 2)) {
		c->rx_paused = 0;
		lws_rx_flow_control(c->wsi, 1);
		luaws_touched_lws(c->loop);
	}
}

/* Close TCP ourselves. A server whose close handshake completed closes at once (RFC
 * 6455 §7.1.1: the server closes first; the peer sends nothing after its close frame).
 * Otherwise stop sending (FIN after everything written) and give the peer a moment to
 * close its side, reading and dropping whatever it still sends: a failed connection's
 * peer may still be writing, and closing on unread bytes would reset the connection
 * before our close frame is read; a client waits for the server to close. */
static void linger(luaws_conn *c)
{
	if (!c->is_client && c->close_sent && c->close_received && !c->rx_failed) {
		lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_ACK, LWS_TO_KILL_ASYNC);
		luaws_touched_lws(c->loop);
		return;
	}
	shutdown(lws_get_socket_fd(c->wsi), SHUT_WR);
	lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_ACK, LINGER_TIMEOUT);
	luaws_touched_lws(c->loop);
}

/* The close handshake is over or the connection failed: close TCP once what is queued
 * has gone out (luaws_conn_tx_changed). */
static void close_when_flushed(luaws_conn *c)
{
	if (c->closing_tcp || !c->wsi || luaws_sender_flush(c))
		return;
	c->closing_tcp = 1;
	if (luaws_sender_idle(c))
		linger(c);
}

/* The sender wrote (drained) or queued past its limit. */
void luaws_conn_tx_changed(luaws_conn *c, int drained)
{
	if (!drained) {
		update_rx(c);
		return;
	}
	if (c->closing_tcp && luaws_sender_idle(c))
		linger(c);
	if (!luaws_sender_full(c)) {
		luaws_wake(c->loop, &c->waitable);
		update_rx(c);
	}
}

/* Fail the connection (RFC 6455 §7.1.7): send a close frame with code, drop whatever
 * the peer sends from now on, report code and why to the reader. What was written
 * before still goes out ahead of the close frame, as it would have from gorilla's
 * synchronous writes (frames never interleave); the peer has CLOSE_TIMEOUT to take it. */
static int fail_now(luaws_conn *c, int code, const char *why)
{
	unsigned char payload[125];
	size_t n = strlen(why);
	if (c->rx_failed)
		return -1;
	c->rx_failed = 1;
	c->close_code = code;
	lws_strncpy(c->close_text, why, sizeof(c->close_text));
	drop_partial(c);
	if (c->wsi && !c->close_sent) {
		if (n > sizeof(payload) - 2)
			n = sizeof(payload) - 2;
		payload[0] = (unsigned char)(code >> 8);
		payload[1] = (unsigned char)code;
		memcpy(payload + 2, why, n);
		c->close_sent = 1;
		luaws_send_frame(c, 8, 1, payload, n + 2, 0);
	}
	if (c->wsi) {
		lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_ACK, CLOSE_TIMEOUT);
		luaws_touched_lws(c->loop);
		close_when_flushed(c);
	}
	luaws_wake(c->loop, &c->waitable);
	return -1;
}

/* A protocol error in what the peer sent (why: a static string). Whole messages that
 * arrived before it are still delivered, in order, as gorilla's reader would meet them
 * first: reading from the socket stops (so at most what was already read waits), and
 * the connection fails when the reader has taken them (push_no_message), or after
 * CLOSE_TIMEOUT if nobody reads. */
static int fail(luaws_conn *c, int code, const char *why)
{
	if (!c->in_msgs || read_ended(c) || !c->wsi)
		return fail_now(c, code, why);
	if (!c->fail_code) {
		c->fail_code = code;
		c->fail_why = why;
		drop_partial(c);
		if (!c->rx_paused) {
			c->rx_paused = 1;
			lws_rx_flow_control(c->wsi, 0);
		}
		lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_ACK, CLOSE_TIMEOUT);
		luaws_touched_lws(c->loop);
		luaws_wake(c->loop, &c->waitable);
	}
	return -1;
}

/* A message over the read limit (the reader gets ErrReadLimit). */
static int fail_read_limit(luaws_conn *c)
{
	if (!c->rx_failed)
		c->read_limit_hit = 1;
	return fail(c, 1009, "message too big");
}

static int text_chunk_valid(luaws_conn *c, const unsigned char *p, size_t n, int final)
{
	unsigned char st[3] = {c->utf8_need, c->utf8_lo, c->utf8_hi};
	int ok = luaws_utf8_valid(st, p, n) && !(final && st[0]);
	c->utf8_need = st[0];
	c->utf8_lo = st[1];
	c->utf8_hi = st[2];
	return ok;
}

/* Room for extra more bytes in the inbox. An empty inbox that must grow past 64 KiB takes
 * the loop's spare buffer, so that big messages do not cost a malloc/free (and an
 * mmap/munmap or brk) each. */
static int reserve_in(luaws_conn *c, size_t extra)
{
	luaws_buf *spare = &c->loop->spare_in;
	if (c->in.len + extra <= c->in.cap)
		return 0;
	if (c->in.len == 0 && c->in.len + extra > 64 * 1024 && spare->cap >= extra) {
		free(c->in.data);
		c->in = *spare;
		c->in.len = 0;
		memset(spare, 0, sizeof(*spare));
		return 0;
	}
	return luaws_buf_reserve(&c->in, extra);
}

/* The inbox is empty again: a large buffer goes back to the loop (one is kept). */
static void release_in(luaws_conn *c)
{
	luaws_buf *spare = &c->loop->spare_in;
	if (c->in.cap <= 64 * 1024)
		return;
	if (c->in.cap > spare->cap && c->in.cap <= 64 * 1024 * 1024 && !c->loop->closing) {
		luaws_buf_free(spare);
		*spare = c->in;
		spare->len = 0;
		memset(&c->in, 0, sizeof(c->in));
	} else
		luaws_buf_free(&c->in);
}

/* A chunk of a text or binary message. */
static int data_chunk(luaws_conn *c, const luaws_frame_event *ev)
{
	int final = ev->last && ev->fin;
	if (ev->first) {
		if (ev->opcode) {
			c->msg_len = 0;
			c->utf8_need = 0;
			if (reserve_in(c, RECORD_HEADER + ev->len))
				return fail(c, 1011, "out of memory");
			c->partial = c->in.len;
			c->in.data[c->in.len] = (unsigned char)ev->opcode;
			memset(c->in.data + c->in.len + 1, 0, sizeof(size_t));
			c->in.len += RECORD_HEADER;
		}
		/* refused on what the header claims, before any of the payload */
		if (c->read_limit > 0 && c->msg_len + ev->frame_len > (uint64_t)c->read_limit)
			return fail_read_limit(c);
	}
	c->msg_len += ev->len;
	if (c->in.data[c->partial] == 1 && !text_chunk_valid(c, ev->data, ev->len, final))
		return fail(c, 1007, "invalid UTF-8 in text message");
	if (ev->len && !c->discarding) {
		if (reserve_in(c, ev->len))
			return fail(c, 1011, "out of memory");
		memcpy(c->in.data + c->in.len, ev->data, ev->len);
		c->in.len += ev->len;
	}
	if (final && c->discarding) {
		c->discarding = 0;
		c->in.len = c->partial;
		c->partial = NO_PARTIAL;
	} else if (final) {
		size_t stored = c->in.len - c->partial - RECORD_HEADER;
		memcpy(c->in.data + c->partial + 1, &stored, sizeof(stored));
		c->partial = NO_PARTIAL;
		c->in_msgs++;
		luaws_wake(c->loop, &c->waitable);
	} else if (c->streaming && ev->len) {
		luaws_wake(c->loop, &c->waitable);
	}
	return 0;
}

/* Close codes a peer may send (RFC 6455 §7.4; 1012-1014 registered since, and gorilla
 * accepts them). */
static int valid_close_code(int code)
{
	return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
	       (code >= 3000 && code <= 4999);
}

static void queue_control(luaws_conn *c, int opcode)
{
	if (c->ctl_in.len + 2 + c->ctl_len > CTL_IN_MAX ||
	    luaws_buf_reserve(&c->ctl_in, 2 + (size_t)c->ctl_len))
		return; /* the reader is far behind: drop it, as a busy peer would */
	c->ctl_in.data[c->ctl_in.len++] = (unsigned char)opcode;
	c->ctl_in.data[c->ctl_in.len++] = c->ctl_len;
	memcpy(c->ctl_in.data + c->ctl_in.len, c->ctl, c->ctl_len);
	c->ctl_in.len += c->ctl_len;
	luaws_wake(c->loop, &c->waitable);
}

/* The peer's close frame (in c->ctl). */
static int peer_close(luaws_conn *c)
{
	int code = 1005;
	size_t tl = 0;
	if (c->ctl_len == 1)
		return fail(c, 1002, "close frame with a 1-byte payload");
	if (c->ctl_len >= 2) {
		unsigned char st[3] = {0, 0, 0};
		code = c->ctl[0] << 8 | c->ctl[1];
		if (!valid_close_code(code))
			return fail(c, 1002, "invalid close code");
		tl = (size_t)c->ctl_len - 2;
		if (!luaws_utf8_valid(st, c->ctl + 2, tl) || st[0])
			return fail(c, 1007, "invalid UTF-8 in close reason");
	}
	c->close_received = 1;
	c->close_code = code;
	memcpy(c->close_text, c->ctl + 2, tl);
	c->close_text[tl] = '\0';
	drop_partial(c);
	luaws_wake(c->loop, &c->waitable);
	if (c->close_sent) {
		close_when_flushed(c); /* the answer to ours */
	} else {
		/* answered when the reader gets to it, as in gorilla (so what the handler
		 * writes about earlier messages still goes out); the peer waits no longer than
		 * CLOSE_TIMEOUT for a handler that never reads */
		c->close_reply_due = 1;
		if (c->wsi) {
			lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_ACK, CLOSE_TIMEOUT);
			luaws_touched_lws(c->loop);
		}
	}
	return 0;
}

/* The reader reached the peer's close: gorilla's default close handler answers it with
 * the same code and no text (unless a Lua close handler does the answering). */
static void answer_close(luaws_conn *c)
{
	unsigned char reply[2] = {(unsigned char)(c->close_code >> 8), (unsigned char)c->close_code};
	c->close_reply_due = 0;
	if (c->lua_close || c->close_sent || !c->wsi)
		return;
	c->close_sent = 1;
	luaws_send_frame(c, 8, 1, reply, c->close_code == 1005 ? 0 : 2, 0);
	close_when_flushed(c);
}

/* A chunk of a control frame (at most 125 bytes in all; frame.c checked). */
static int control_chunk(luaws_conn *c, const luaws_frame_event *ev)
{
	if (ev->first)
		c->ctl_len = 0;
	memcpy(c->ctl + c->ctl_len, ev->data, ev->len);
	c->ctl_len = (unsigned char)(c->ctl_len + ev->len);
	if (!ev->last)
		return 0;
	switch (ev->opcode) {
	case 8:
		return peer_close(c);
	case 9:
		if (c->lua_ping)
			queue_control(c, 9);
		else if (!c->close_sent)
			luaws_send_frame(c, 10, 1, c->ctl, c->ctl_len, 1);
		return 0;
	default:
		if (c->lua_pong)
			queue_control(c, 10);
		return 0;
	}
}

/* Bytes from the socket. */
static void conn_rx(luaws_conn *c, unsigned char *in, size_t len)
{
	luaws_frame_event ev;
	int rc;
	if (read_ended(c) || c->fail_code)
		return; /* after a close frame or a failure nothing the peer sends counts */
	while ((rc = luaws_frame_next(&c->parser, &in, &len, &ev)) > 0) {
		if ((ev.opcode & 8) ? control_chunk(c, &ev) : data_chunk(c, &ev))
			return;
		if (read_ended(c) || c->fail_code)
			return;
	}
	if (rc < 0) {
		fail(c, ev.code, ev.reason);
		return;
	}
	update_rx(c);
}

/* The handshake is done: the connection is open; early holds bytes that came with it. */
void luaws_conn_start(luaws_conn *c, const unsigned char *early, size_t len)
{
	c->state = LUAWS_OPEN;
	if (!c->remote[0]) /* a server conn has it from accept; the local end is looked up
			    * when asked for */
		luaws_socket_address(lws_get_socket_fd(c->wsi), 1, c->remote, sizeof(c->remote));
	if (len) {
		/* the parser unmasks in place: work on a copy */
		unsigned char *copy = malloc(len);
		if (copy) {
			memcpy(copy, early, len);
			conn_rx(c, copy, len);
			free(copy);
		} else
			fail(c, 1011, "out of memory");
	}
	luaws_wake(c->loop, &c->waitable);
}

/* lws is closing the socket, maybe on a hang-up or reset reported together with data
 * it did not read (libuv reports the error without the readable flag): what the peer
 * sent before it went is still in the kernel and still counts. */
static void read_last_words(luaws_conn *c)
{
	unsigned char buf[16 * 1024];
	int fd = lws_get_socket_fd(c->wsi);
	ssize_t n;
	luaws_conn_detach(c); /* nothing goes out on it any more */
	if (fd < 0)
		return;
	while (!read_ended(c) && (n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0)
		conn_rx(c, buf, (size_t)n);
}

/* Events of the connection's raw socket, from protocol.c. */
int luaws_conn_event(luaws_conn *c, enum lws_callback_reasons reason, void *in, size_t len)
{
	switch (reason) {
	case LWS_CALLBACK_RAW_RX:
		if (c->state == LUAWS_OPEN)
			conn_rx(c, in, len);
		return 0;
	case LWS_CALLBACK_RAW_WRITEABLE:
		if (luaws_sender_writeable(c))
			return -1;
		return 0;
	case LWS_CALLBACK_RAW_CLOSE:
		if (c->state == LUAWS_OPEN)
			read_last_words(c);
		luaws_conn_closed(c, LUAWS_ERR_NONE, NULL);
		return 0;
	default:
		return 0;
	}
}

static void deadline_closed(uv_handle_t *h)
{
	free(h->data);
}

static void deadline_fired(uv_timer_t *t);

static void rearm(luaws_deadlines *d)
{
	uint64_t next = d->read_at && (!d->write_at || d->read_at < d->write_at) ? d->read_at :
										d->write_at;
	uint64_t now = uv_now(d->timer.loop);
	if (!next)
		uv_timer_stop(&d->timer);
	else
		uv_timer_start(&d->timer, deadline_fired, next > now ? next - now : 0, 0);
}

static void deadline_fired(uv_timer_t *t)
{
	luaws_deadlines *d = t->data;
	luaws_conn *c = d->conn;
	uint64_t now = uv_now(t->loop);
	if (!c)
		return;
	if (d->read_at && now >= d->read_at) {
		d->read_at = 0;
		c->read_timed_out = 1;
		luaws_wake(c->loop, &c->waitable);
	}
	if (d->write_at && now >= d->write_at) {
		d->write_at = 0;
		c->write_timed_out = 1;
		if (c->wsi && c->tx.head) {
			/* a frame is stuck half-written: the connection is no use any more */
			luaws_conn_abandon(c);
			luaws_conn_closed(c, LUAWS_ERR_TIMEOUT, "write timeout");
		}
		luaws_wake(c->loop, &c->waitable);
	}
	rearm(d);
}

/* conn:_deadline("read" | "write", seconds from now | nil) */
static int l_deadline(lua_State *L)
{
	luaws_conn *c = check_conn(L);
	int which = luaL_checkoption(L, 2, NULL, (const char *const[]){"read", "write", NULL});
	double secs = luaL_optnumber(L, 3, -1);
	int clear = lua_isnoneornil(L, 3);
	luaws_deadlines *d = c->deadlines;
	uint64_t at;

	if (which == 0)
		c->read_timed_out = 0;
	else
		c->write_timed_out = 0;
	if (!clear && secs <= 0) {
		/* already passed */
		if (which == 0)
			c->read_timed_out = 1;
		else
			c->write_timed_out = 1;
		luaws_wake(c->loop, &c->waitable);
		clear = 1;
	}
	if (!d) {
		if (clear)
			return 0;
		d = calloc(1, sizeof(*d));
		if (!d)
			return luaL_error(L, "luaws: out of memory");
		uv_timer_init(&c->loop->uv, &d->timer);
		d->timer.data = d;
		d->conn = c;
		c->deadlines = d;
	}
	uv_update_time(&c->loop->uv);
	at = clear ? 0 : uv_now(&c->loop->uv) + (uint64_t)(secs * 1000 + 0.999);
	if (which == 0)
		d->read_at = at;
	else
		d->write_at = at;
	rearm(d);
	return 0;
}

/* Drop the head record (whole and consumed). */
static void pop_head(luaws_conn *c, size_t len)
{
	c->in_head += RECORD_HEADER + len;
	c->in_msgs--;
	c->head_taken = 0;
	if (c->in_head == c->in.len) {
		c->in_head = c->in.len = 0;
		release_in(c);
	} else if (c->in_head > c->in.cap / 2) {
		memmove(c->in.data, c->in.data + c->in_head, c->in.len - c->in_head);
		c->in.len -= c->in_head;
		if (c->partial != NO_PARTIAL)
			c->partial -= c->in_head;
		c->in_head = 0;
	}
}

static size_t record_len(const luaws_conn *c)
{
	size_t len;
	memcpy(&len, c->in.data + c->in_head + 1, sizeof(len));
	return len;
}

/* Push what a reader gets when no message is left: false (wait), or nil, code, text,
 * cause (the read side ended: "peer" sent a close frame, "limit": a message over the read
 * limit, "failed": luaws failed the connection, "gone": TCP ended without a close), or
 * nil, -1, "i/o timeout". */
static int push_no_message(lua_State *L, luaws_conn *c)
{
	if (c->read_timed_out) {
		luaL_pushfail(L);
		lua_pushinteger(L, -1);
		lua_pushliteral(L, "i/o timeout");
		return 3;
	}
	if (c->fail_code && !read_ended(c))
		fail_now(c, c->fail_code, c->fail_why); /* the reader got there */
	if (!read_ended(c)) {
		/* the caller is about to wait for c: arm it now, saving it a call */
		luaws_arm(L, c->loop, &c->waitable, 1);
		lua_pushboolean(L, 0);
		return 1;
	}
	if (c->close_reply_due)
		answer_close(c);
	luaL_pushfail(L);
	lua_pushinteger(L, c->close_code);
	lua_pushstring(L, c->close_text);
	lua_pushstring(L, c->read_limit_hit ? "limit" : c->rx_failed ? "failed" :
			  c->close_received ? "peer" : "gone");
	return 4;
}

/* conn:_read() -> mt, data | false (nothing yet; c is armed) | nil, code, text,
 * peer_close */
static int l_read(lua_State *L)
{
	luaws_conn *c = check_conn(L);
	c->streaming = 0;
	if (c->read_timed_out)
		return push_no_message(L, c);
	if (c->in_msgs) {
		size_t len = record_len(c);
		lua_pushinteger(L, c->in.data[c->in_head]);
		lua_pushlstring(L, (const char *)c->in.data + c->in_head + RECORD_HEADER +
					   c->head_taken, len - c->head_taken);
		pop_head(c, len);
		update_rx(c);
		return 2;
	}
	update_rx(c); /* a whole-message reader may need reading to resume */
	return push_no_message(L, c);
}

/* conn:_next() -> mt (a message has begun: read it with _read_part) | as _read */
static int l_next(lua_State *L)
{
	luaws_conn *c = check_conn(L);
	c->streaming = 1;
	if (c->read_timed_out)
		return push_no_message(L, c);
	if (c->in_msgs || (c->partial != NO_PARTIAL && c->partial == c->in_head)) {
		lua_pushinteger(L, c->in.data[c->in_head]);
		update_rx(c);
		return 1;
	}
	return push_no_message(L, c);
}

/* conn:_read_part(max) -> data, eof (eof: the message ends with data) | as _read */
static int l_read_part(lua_State *L)
{
	luaws_conn *c = check_conn(L);
	size_t max = (size_t)luaL_optinteger(L, 2, 64 * 1024), len, avail, n;
	const char *p;
	if (max == 0)
		max = 1;
	if (c->read_timed_out)
		return push_no_message(L, c);
	if (c->in_msgs) {
		len = record_len(c);
		avail = len - c->head_taken;
		n = avail < max ? avail : max;
		p = (const char *)c->in.data + c->in_head + RECORD_HEADER + c->head_taken;
		lua_pushlstring(L, p, n);
		c->head_taken += n;
		if (c->head_taken == len) {
			pop_head(c, len);
			c->streaming = 0;
			lua_pushboolean(L, 1);
		} else
			lua_pushboolean(L, 0);
		update_rx(c);
		return 2;
	}
	if (c->partial != NO_PARTIAL && c->partial == c->in_head) {
		len = c->in.len - c->partial - RECORD_HEADER;
		avail = len - c->head_taken;
		if (avail) {
			n = avail < max ? avail : max;
			p = (const char *)c->in.data + c->partial + RECORD_HEADER + c->head_taken;
			lua_pushlstring(L, p, n);
			c->head_taken += n;
			if (c->head_taken == len) {
				/* all that arrived is consumed: forget it */
				c->in.len = c->partial + RECORD_HEADER;
				c->head_taken = 0;
			}
			lua_pushboolean(L, 0);
			update_rx(c);
			return 2;
		}
	}
	return push_no_message(L, c);
}

/* conn:_discard(): drop the message a streaming reader left unfinished (the rest of it
 * is skipped as it arrives). */
static int l_discard(lua_State *L)
{
	luaws_conn *c = check_conn(L);
	c->streaming = 0;
	if (c->in_msgs) {
		pop_head(c, record_len(c));
	} else if (c->partial != NO_PARTIAL && c->partial == c->in_head) {
		c->in.len = c->partial + RECORD_HEADER;
		c->head_taken = 0;
		c->discarding = 1;
	}
	update_rx(c);
	return 0;
}

/* conn:_control() -> opcode, payload of the next ping/pong kept for Lua | nothing */
static int l_control(lua_State *L)
{
	luaws_conn *c = check_conn(L);
	size_t n;
	if (!c->ctl_in.len)
		return 0;
	n = c->ctl_in.data[1];
	lua_pushinteger(L, c->ctl_in.data[0]);
	lua_pushlstring(L, (const char *)c->ctl_in.data + 2, n);
	memmove(c->ctl_in.data, c->ctl_in.data + 2 + n, c->ctl_in.len - 2 - n);
	c->ctl_in.len -= 2 + n;
	return 2;
}

/* conn:_handlers(ping, pong, close): which control frames Lua handlers take. */
static int l_handlers(lua_State *L)
{
	luaws_conn *c = check_conn(L);
	c->lua_ping = lua_toboolean(L, 2);
	c->lua_pong = lua_toboolean(L, 3);
	c->lua_close = lua_toboolean(L, 4);
	return 0;
}

/* conn:_read_limit(n): 0 for none. Messages already waiting are held to it too: the
 * first one over it fails the connection (those before it stay readable). */
static int l_read_limit(lua_State *L)
{
	luaws_conn *c = check_conn(L);
	lua_Integer n = luaL_checkinteger(L, 2);
	size_t off = c->in_head, i;
	c->read_limit = n > 0 ? n : 0;
	if (!c->read_limit || read_ended(c))
		return 0;
	for (i = 0; i < c->in_msgs; i++) {
		size_t len;
		memcpy(&len, c->in.data + off + 1, sizeof(len));
		if (len > (size_t)c->read_limit) {
			c->in.len = off; /* this one and everything after it are dropped */
			c->in_msgs = i;
			c->partial = NO_PARTIAL;
			c->discarding = 0;
			fail_read_limit(c);
			return 0;
		}
		off += RECORD_HEADER + len;
	}
	if (c->partial != NO_PARTIAL && c->msg_len > (uint64_t)c->read_limit)
		fail_read_limit(c);
	return 0;
}

/* nil, why a write cannot go out: "timeout", "close_sent" or "closed"; 0 when it can */
static int write_refused(lua_State *L, luaws_conn *c)
{
	if (c->write_timed_out)
		return luaws_fail(L, "timeout");
	if (c->close_sent)
		return luaws_fail(L, "close_sent");
	if (c->state != LUAWS_OPEN || !c->wsi)
		return luaws_fail(L, "closed");
	return 0;
}

/* After a close frame went out. */
static void sent_close(luaws_conn *c)
{
	c->close_sent = 1;
	if (c->close_received)
		close_when_flushed(c);
	else if (c->wsi) {
		lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_ACK, CLOSE_TIMEOUT);
		luaws_touched_lws(c->loop);
	}
}

/* What a write returns once the sender took the frame (rc from it). */
static int push_written(lua_State *L, luaws_conn *c, int opcode, int rc)
{
	if (rc)
		return c->wsi ? luaL_error(L, "luaws: out of memory") : luaws_fail(L, "closed");
	if (opcode == 8)
		sent_close(c);
	lua_pushboolean(L, !luaws_sender_full(c));
	return 1;
}

/* conn:_write(opcode, data [, fin]) -> true (sent or buffered) | false (queued: wait for
 * _drained) | nil, reason (as write_refused) */
static int l_write(lua_State *L)
{
	luaws_conn *c = check_conn(L);
	int opcode = (int)luaL_checkinteger(L, 2);
	size_t len;
	const char *data = luaL_checklstring(L, 3, &len);
	int fin = lua_isnoneornil(L, 4) || lua_toboolean(L, 4);

	if (!(opcode <= 2 || (opcode >= 8 && opcode <= 10)))
		return luaL_argerror(L, 2, "unknown message type");
	if (opcode >= 8 && (len > 125 || !fin))
		return luaL_argerror(L, 3, "invalid control frame");
	if (write_refused(L, c))
		return 2;
	/* pings and pongs go ahead of queued data; a close frame goes after it */
	return push_written(L, c, opcode,
			    luaws_send_frame(c, opcode, fin, (const unsigned char *)data, len,
					     opcode == 9 || opcode == 10));
}

/* conn:_write_prepared(pm) -> as _write */
static int l_write_prepared(lua_State *L)
{
	luaws_conn *c = check_conn(L);
	int opcode, urgent;
	size_t flen, plen;
	const unsigned char *payload;
	const unsigned char *frame = luaws_prepared_frame(L, 2, &opcode, &flen, &payload, &plen);

	if (write_refused(L, c))
		return 2;
	urgent = opcode == 9 || opcode == 10;
	/* a client masks with a fresh key: it frames the payload again */
	return push_written(L, c, opcode,
			    c->is_client ? luaws_send_frame(c, opcode, 1, payload, plen, urgent) :
					   luaws_send_bytes(c, frame, flen, urgent));
}

/* conn:_drained() -> true when a waiting writer may go on, nil, reason when the
 * connection broke, false to keep waiting. */
static int l_drained(lua_State *L)
{
	luaws_conn *c = check_conn(L);
	if (c->write_timed_out)
		return luaws_fail(L, "timeout");
	if (c->state == LUAWS_CLOSED)
		return luaws_fail(L, "closed");
	lua_pushboolean(L, !luaws_sender_full(c));
	return 1;
}

/* Let go of the socket as Close() does: what c has queued or batched is left to an
 * orphan (sender.c) that sends it, then closes; now: at once, else at the next step
 * (from __gc). Reports the close to waiting coroutines. */
static void hand_over(luaws_conn *c, int now)
{
	struct lws *wsi = luaws_conn_detach(c);
	if (wsi && !c->loop->closing && luaws_orphan(c->loop, wsi, c, NULL, 0, now)) {
		/* out of memory: drop the socket */
		lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
		luaws_touched_lws(c->loop);
	}
}

/* conn:_close([code, text]): without a code, close the connection like gorilla's Close:
 * no close frame, but what was written before still goes out. With one (1011 for a
 * failed handler), send that close frame and let the peer answer it (within the close
 * timeout). */
static int l_close(lua_State *L)
{
	luaws_conn *c = check_conn(L);
	int code = (int)luaL_optinteger(L, 2, 0);
	size_t tl;
	const char *text = luaL_optlstring(L, 3, "", &tl);
	unsigned char payload[125];

	if (!c->wsi || c->state == LUAWS_CLOSED) {
		c->state = LUAWS_CLOSED;
		return 0;
	}
	if (code && !c->close_sent && c->state == LUAWS_OPEN) {
		if (tl > sizeof(payload) - 2)
			tl = sizeof(payload) - 2;
		payload[0] = (unsigned char)(code >> 8);
		payload[1] = (unsigned char)code;
		memcpy(payload + 2, text, tl);
		if (luaws_send_frame(c, 8, 1, payload, tl + 2, 0) == 0)
			sent_close(c);
		return 0;
	}
	if (c->state == LUAWS_OPEN)
		hand_over(c, 1);
	else
		luaws_conn_abandon(c);
	luaws_conn_closed(c, LUAWS_ERR_CLOSED, "use of closed connection");
	return 0;
}

static int l_arm(lua_State *L)
{
	luaws_conn *c = check_conn(L);
	luaws_arm(L, c->loop, &c->waitable, 1);
	return 0;
}

/* conn:_state() -> "connecting" | "upgrading" | "open" | "closed", close_sent */
static int l_state(lua_State *L)
{
	luaws_conn *c = check_conn(L);
	lua_pushstring(L, state_names[c->state]);
	lua_pushboolean(L, c->close_sent);
	return 2;
}

/* conn:_error() -> message, kind: why the connection broke or the dial failed (kind as
 * error_names), or nothing */
static int l_error(lua_State *L)
{
	static const char *const error_names[] = {"none", "closed", "write", "timeout",
						  "lookup", "connect", "handshake", "eof"};
	luaws_conn *c = check_conn(L);
	if (!c->error[0])
		return 0;
	lua_pushstring(L, c->error);
	lua_pushstring(L, error_names[c->error_kind]);
	return 2;
}

static int l_subprotocol(lua_State *L)
{
	lua_pushstring(L, check_conn(L)->subprotocol);
	return 1;
}

static int l_remote(lua_State *L)
{
	lua_pushstring(L, check_conn(L)->remote);
	return 1;
}

static int l_local(lua_State *L)
{
	luaws_conn *c = check_conn(L);
	if (!c->local[0] && c->wsi)
		luaws_socket_address(lws_get_socket_fd(c->wsi), 0, c->local, sizeof(c->local));
	lua_pushstring(L, c->local);
	return 1;
}

static int l_tostring(lua_State *L)
{
	luaws_conn *c = check_conn(L);
	lua_pushfstring(L, "luaws.Conn: %p (%s%s%s)", (void *)c, state_names[c->state],
			c->remote[0] ? ", " : "", c->remote);
	return 1;
}

/* __gc only releases: a socket still open goes to an orphan, which the loop sends
 * what was written to and closes at its next step. */
static int l_gc(lua_State *L)
{
	luaws_conn *c = check_conn(L);
	if (c->dial)
		luaws_dial_detach(c->dial);
	c->dial = NULL;
	hand_over(c, 0);
	c->state = LUAWS_CLOSED;
	if (c->deadlines) {
		c->deadlines->conn = NULL;
		if (!c->loop->closing)
			uv_close((uv_handle_t *)&c->deadlines->timer, deadline_closed);
		else
			free(c->deadlines);
		c->deadlines = NULL;
	}
	luaws_sender_free(c);
	luaws_buf_free(&c->in);
	luaws_buf_free(&c->ctl_in);
	return 0;
}

static const luaL_Reg conn_methods[] = {
	{"_read", l_read},
	{"_next", l_next},
	{"_read_part", l_read_part},
	{"_discard", l_discard},
	{"_control", l_control},
	{"_handlers", l_handlers},
	{"_read_limit", l_read_limit},
	{"_deadline", l_deadline},
	{"_write", l_write},
	{"_write_prepared", l_write_prepared},
	{"_drained", l_drained},
	{"_close", l_close},
	{"_arm", l_arm},
	{"_state", l_state},
	{"_error", l_error},
	{"Subprotocol", l_subprotocol},
	{"RemoteAddr", l_remote},
	{"LocalAddr", l_local},
	{NULL, NULL},
};

/* core.conn_methods() -> the __index table of luaws.Conn (for the Lua front to extend),
 * its metatable */
static int l_conn_methods(lua_State *L)
{
	luaL_getmetatable(L, LUAWS_CONN_MT);
	lua_getfield(L, -1, "__index");
	lua_insert(L, -2);
	return 2;
}

int luaws_conn_open(lua_State *L)
{
	luaL_newmetatable(L, LUAWS_CONN_MT);
	luaL_newlibtable(L, conn_methods);
	lua_pushvalue(L, -2);
	luaL_setfuncs(L, conn_methods, 1);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, l_tostring);
	lua_setfield(L, -2, "__tostring");
	lua_pushcfunction(L, l_gc);
	lua_setfield(L, -2, "__gc");
	lua_pop(L, 1);
	lua_pushcfunction(L, l_conn_methods);
	lua_setfield(L, -2, "conn_methods");
	return 0;
}
