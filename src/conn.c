/*
 * luaws.Conn: one WebSocket connection, server or client side, on a raw lws socket.
 * Owns its life, as one state with a function per transition (open, close sent, close
 * received, closing, closed, and failing the connection), flow control of reading,
 * and the Lua methods that read messages, write frames and close. What it receives
 * goes through receiver.c into its inbox (inbox.c), what it sends through sender.c
 * (compressed first by deflate.c when permessage-deflate was negotiated); deadlines are
 * deadline.c's.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "luaws.h"

/* Stop reading from the socket while this many bytes of messages wait unread. */
#define RX_PAUSE_BYTES (256 * 1024)
/* Seconds the peer has to answer our close frame (or the reader to get to the peer's),
 * and to close TCP after it. */
#define CLOSE_TIMEOUT 5
#define LINGER_TIMEOUT 2

static const char *const state_names[] = {"connecting", "upgrading",      "open", "close_sent",
					  "close_received", "closing", "closed"};

luaws_conn *luaws_conn_new(lua_State *L, luaws_loop *loop, int is_client)
{
	/* user value 1: conn.lua's state table for it (core.conn_state) */
	luaws_conn *c = lua_newuserdatauv(L, sizeof(*c), 1);
	memset(c, 0, sizeof(*c));
	c->kind = LUAWS_KIND_CONN;
	c->loop = loop;
	c->waitable.slot = 0;
	c->state = is_client ? LUAWS_CONNECTING : LUAWS_UPGRADING;
	c->is_client = is_client;
	luaws_inbox_init(&c->inbox);
	luaws_receiver_init(&c->rx, is_client);
	luaL_setmetatable(L, LUAWS_CONN_MT);
	return c;
}

/* The methods carry the metatable as upvalue 1 (see object.c): the per-message calls
 * check self without a lookup by name. */
luaws_conn *luaws_conn_check(lua_State *L)
{
	return luaws_check(L, 1, LUAWS_CONN_MT);
}

void luaws_conn_add_methods(lua_State *L, const luaL_Reg *methods)
{
	luaws_add_methods(L, LUAWS_CONN_MT, methods);
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
		c->plain_sock = 0;
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

/* Transition: the wsi is gone (or never came). Record why and wake everyone waiting. */
void luaws_conn_closed(luaws_conn *c, enum luaws_err kind, const char *error)
{
	luaws_conn_detach(c);
	if (c->state != LUAWS_CLOSED) {
		c->state = LUAWS_CLOSED;
		if (c->read_end == LUAWS_READING) {
			c->read_end = LUAWS_READ_GONE;
			c->close_code = 1006;
			c->close_text[0] = '\0';
		}
		if (error && !c->error[0]) {
			c->error_kind = kind;
			lws_strncpy(c->error, error, sizeof(c->error));
		}
	}
	luaws_sender_free(c);
	luaws_pmd_release(c);
	luaws_receiver_drop_held(&c->rx);
	luaws_inbox_drop_partial(&c->inbox); /* whole messages stay readable */
	luaws_wake(c->loop, &c->waitable);
}

/* Does what the peer sends still count (no close frame, failure or hang-up yet)? */
int luaws_conn_reading(const luaws_conn *c)
{
	return c->read_end == LUAWS_READING && !c->rx.fail_code && c->state != LUAWS_CLOSED;
}

/* Has the close frame been sent (writes get ErrCloseSent)? */
static int close_sent(const luaws_conn *c)
{
	return c->state == LUAWS_CLOSE_SENT || c->state == LUAWS_CLOSING;
}

/* Should reading from the socket stop? Above limit bytes unread (unless the unread
 * message is one a whole-message reader waits to complete), or a full send queue. */
static int rx_should_pause(const luaws_conn *c, size_t limit)
{
	if (luaws_sender_full(c))
		return 1;
	if (luaws_inbox_unread(&c->inbox) < limit)
		return 0;
	return !(c->inbox.msgs == 0 && luaws_inbox_partial_type(&c->inbox) && !c->streaming);
}

static void set_rx(luaws_conn *c, int paused)
{
	c->rx_paused = (unsigned)paused;
	lws_rx_flow_control(c->wsi, !paused);
	luaws_touched_lws(c->loop);
}

void luaws_conn_update_rx(luaws_conn *c)
{
	if (c->rx.holding)
		luaws_receive_resume(c); /* the reader may have caught up */
	if (!c->wsi || !luaws_conn_reading(c))
		return;
	if (c->rx.holding) {
		/* inflating stopped: so does reading (what comes meanwhile waits after it) */
		if (!c->rx_paused)
			set_rx(c, 1);
		return;
	}
	if (!c->rx_paused && rx_should_pause(c, RX_PAUSE_BYTES))
		set_rx(c, 1);
	else if (c->rx_paused && !rx_should_pause(c, RX_PAUSE_BYTES / 2))
		set_rx(c, 0);
}

/* The receiver has something for the reader (a message, part of one, a control frame
 * for a Lua handler). */
void luaws_conn_received(luaws_conn *c)
{
	luaws_wake(c->loop, &c->waitable);
}

/* Close TCP ourselves. A server whose close handshake completed closes at once (RFC
 * 6455 §7.1.1: the server closes first; the peer sends nothing after its close frame).
 * Otherwise stop sending (FIN after everything written) and give the peer a moment to
 * close its side, reading and dropping whatever it still sends: a failed connection's
 * peer may still be writing, and closing on unread bytes would reset the connection
 * before our close frame is read; a client waits for the server to close. */
static void linger(luaws_conn *c)
{
	luaws_tls_close_notify(c->wsi);
	if (!c->is_client && c->read_end == LUAWS_READ_PEER_CLOSE) {
		lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_ACK, LWS_TO_KILL_ASYNC);
		luaws_touched_lws(c->loop);
		return;
	}
	shutdown(lws_get_socket_fd(c->wsi), SHUT_WR);
	lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_ACK, LINGER_TIMEOUT);
	luaws_touched_lws(c->loop);
}

/* Transition to closing: the close handshake is over or the connection failed. TCP
 * closes once what is queued has gone out (luaws_conn_tx_changed). */
static void to_closing(luaws_conn *c)
{
	c->state = LUAWS_CLOSING;
	if (!c->wsi || luaws_sender_flush(c))
		return;
	if (luaws_sender_idle(c))
		linger(c);
}

/* The sender wrote (drained) or queued past its limit. */
void luaws_conn_tx_changed(luaws_conn *c, int drained)
{
	if (!drained) {
		luaws_conn_update_rx(c);
		return;
	}
	if (c->state == LUAWS_CLOSING && luaws_sender_idle(c))
		linger(c);
	if (!luaws_sender_full(c)) {
		luaws_wake(c->loop, &c->waitable);
		luaws_conn_update_rx(c);
	}
}

/* Bound the time until TCP closes (the peer's answer, a reader that never reads). */
static void close_timeout(luaws_conn *c)
{
	if (c->wsi) {
		lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_ACK, CLOSE_TIMEOUT);
		luaws_touched_lws(c->loop);
	}
}

/* Transition: our close frame went out (a Lua write, Close with a code, our answer to
 * the peer's). */
static void sent_close(luaws_conn *c)
{
	c->close_went = 1;
	if (c->state == LUAWS_CLOSE_RECEIVED) {
		to_closing(c);
	} else if (c->state == LUAWS_OPEN) {
		c->state = LUAWS_CLOSE_SENT;
		close_timeout(c);
	}
}

/* A close frame with code (none for 1005) and text, cut to fit. */
static int close_frame(luaws_conn *c, int code, const char *text, size_t tl)
{
	unsigned char payload[125];
	if (tl > sizeof(payload) - 2)
		tl = sizeof(payload) - 2;
	payload[0] = (unsigned char)(code >> 8);
	payload[1] = (unsigned char)code;
	memcpy(payload + 2, text, tl);
	return luaws_send_frame(c, 8, 1, payload, code == 1005 ? 0 : tl + 2, 0);
}

static int send_close(luaws_conn *c, int code, const char *text, size_t tl)
{
	int rc = close_frame(c, code, text, tl);
	if (!rc)
		sent_close(c);
	return rc;
}

/* Transition: fail the connection (RFC 6455 §7.1.7): send a close frame with code
 * unless ours went out already, drop whatever the peer sends from now on, report code
 * and why to the reader. What was written before still goes out ahead of the close
 * frame, as it would have from gorilla's synchronous writes (frames never interleave);
 * the peer has CLOSE_TIMEOUT to take it. */
static int fail_now(luaws_conn *c, int code, const char *why, enum luaws_read_end end)
{
	if (c->read_end != LUAWS_READING)
		return -1;
	c->read_end = end;
	c->rx.fail_code = 0;
	c->close_code = code;
	lws_strncpy(c->close_text, why, sizeof(c->close_text));
	luaws_inbox_drop_partial(&c->inbox);
	if (c->wsi && (c->state == LUAWS_OPEN || c->state == LUAWS_CLOSE_SENT)) {
		if (c->state == LUAWS_OPEN)
			close_frame(c, code, why, strlen(why));
		close_timeout(c);
		to_closing(c);
	}
	luaws_wake(c->loop, &c->waitable);
	return -1;
}

/* A protocol error in what the peer sent (why: a static string). Whole messages that
 * arrived before it are still delivered, in order, as gorilla's reader would meet them
 * first: reading from the socket stops (so at most what was already read waits), and
 * the connection fails when the reader has taken them (push_no_message), or TCP closes
 * after CLOSE_TIMEOUT if nobody reads. */
static int fail(luaws_conn *c, int code, const char *why, enum luaws_read_end end)
{
	luaws_receiver *rx = &c->rx;
	if (!c->inbox.msgs || !luaws_conn_reading(c) || !c->wsi)
		return fail_now(c, code, why, end);
	rx->fail_code = code;
	rx->fail_why = why;
	rx->fail_end = end;
	luaws_inbox_drop_partial(&c->inbox);
	if (!c->rx_paused)
		set_rx(c, 1);
	close_timeout(c);
	luaws_wake(c->loop, &c->waitable);
	return -1;
}

int luaws_conn_fail(luaws_conn *c, int code, const char *why)
{
	return fail(c, code, why, LUAWS_READ_FAILED);
}

/* A message over the read limit (the reader gets ErrReadLimit). */
int luaws_conn_fail_read_limit(luaws_conn *c)
{
	return fail(c, 1009, "message too big", LUAWS_READ_LIMIT);
}

/* Transition: the peer's close frame (code, text: valid, checked by the receiver). */
int luaws_conn_peer_close(luaws_conn *c, int code, const unsigned char *text, size_t tl)
{
	c->read_end = LUAWS_READ_PEER_CLOSE;
	c->close_code = code;
	memcpy(c->close_text, text, tl);
	c->close_text[tl] = '\0';
	luaws_inbox_drop_partial(&c->inbox);
	luaws_wake(c->loop, &c->waitable);
	if (c->state == LUAWS_CLOSE_SENT) {
		to_closing(c); /* the answer to ours */
	} else {
		/* answered when the reader gets to it, as in gorilla (so what the handler
		 * writes about earlier messages still goes out); the peer waits no longer than
		 * CLOSE_TIMEOUT for a handler that never reads */
		c->state = LUAWS_CLOSE_RECEIVED;
		close_timeout(c);
	}
	return 0;
}

/* The reader reached the peer's close: gorilla's default close handler answers it with
 * the same code and no text (unless a Lua close handler does the answering). */
static void answer_close(luaws_conn *c)
{
	if (c->state == LUAWS_CLOSE_RECEIVED && !c->lua_close && c->wsi)
		send_close(c, c->close_code, "", 0);
}

/* Transition: the handshake is done and the connection open; early holds bytes that
 * came with the handshake. */
void luaws_conn_start(luaws_conn *c, const unsigned char *early, size_t len)
{
	c->state = LUAWS_OPEN;
	/* TLS, if any, started before the connection opened and stays to its end */
	if (!luaws_tls_of(c->wsi))
		c->plain_sock = lws_get_socket_fd(c->wsi) + 1;
	if (!c->remote[0]) /* a server conn has it from accept; the local end is looked up
			    * when asked for */
		luaws_socket_address(lws_get_socket_fd(c->wsi), 1, c->remote, sizeof(c->remote));
	if (len) {
		/* the parser unmasks in place: work on a copy */
		unsigned char *copy = malloc(len);
		if (copy) {
			memcpy(copy, early, len);
			luaws_receive(c, copy, len);
			free(copy);
		} else
			luaws_conn_fail(c, 1011, "out of memory");
	}
	luaws_wake(c->loop, &c->waitable);
}

/* Events of the connection's raw socket, from protocol.c. */
int luaws_conn_event(luaws_conn *c, enum lws_callback_reasons reason, void *in, size_t len)
{
	switch (reason) {
	case LWS_CALLBACK_RAW_RX:
		if (c->state >= LUAWS_OPEN)
			luaws_receive(c, in, len);
		return 0;
	case LWS_CALLBACK_RAW_WRITEABLE:
		return luaws_sender_writeable(c);
	case LWS_CALLBACK_RAW_CLOSE: {
		int fd = lws_get_socket_fd(c->wsi);
		luaws_tls *tls = luaws_tls_of(c->wsi);
		luaws_conn_detach(c); /* nothing goes out on it any more */
		if (c->state >= LUAWS_OPEN)
			luaws_receive_last(c, fd, tls);
		luaws_conn_closed(c, LUAWS_ERR_NONE, NULL);
		return 0;
	}
	default:
		return 0;
	}
}

/* Reading */

/* Push what a reader gets when no message is left: false (wait), or nil, code, text,
 * cause (the read side ended: "peer" sent a close frame, "limit": a message over the read
 * limit, "failed": luaws failed the connection, "gone": TCP ended without a close), or
 * nil, -1, "i/o timeout". */
static int push_no_message(lua_State *L, luaws_conn *c)
{
	static const char *const causes[] = {"", "peer", "failed", "limit", "gone"};
	if (c->read_timed_out) {
		luaL_pushfail(L);
		lua_pushinteger(L, -1);
		lua_pushliteral(L, "i/o timeout");
		return 3;
	}
	if (c->rx.fail_code)
		fail_now(c, c->rx.fail_code, c->rx.fail_why, c->rx.fail_end); /* got there */
	if (c->read_end == LUAWS_READING) {
		/* the caller is about to wait for c: arm it now, saving it a call */
		luaws_arm(L, c->loop, &c->waitable, 1);
		lua_pushboolean(L, 0);
		return 1;
	}
	answer_close(c);
	luaL_pushfail(L);
	lua_pushinteger(L, c->close_code);
	lua_pushstring(L, c->close_text);
	lua_pushstring(L, causes[c->read_end]);
	return 4;
}

/* The pool of big buffers c's inbox takes from and gives back to (none once the loop
 * is closing: what is freed then is freed). */
luaws_inbox_pool *luaws_conn_rx_pool(luaws_conn *c)
{
	return c->loop->closing ? NULL : &c->loop->rx_pool;
}

/* conn:_read() -> mt, data | false (nothing yet; c is armed) | nil, code, text, cause */
static int l_read(lua_State *L)
{
	return luaws_conn_read(L, luaws_conn_check(L));
}

/* _read's work, for c (the userdata at index 1 of L): pushes what _read returns. */
int luaws_conn_read(lua_State *L, luaws_conn *c)
{
	c->streaming = 0;
	if (c->read_timed_out)
		return push_no_message(L, c);
	if (c->inbox.msgs) {
		const unsigned char *p;
		size_t n = luaws_inbox_peek(&c->inbox, (size_t)-1, &p);
		lua_pushinteger(L, luaws_inbox_head_type(&c->inbox));
		lua_pushlstring(L, (const char *)p, n);
		luaws_inbox_consume(&c->inbox, n, luaws_conn_rx_pool(c));
		luaws_conn_update_rx(c);
		return 2;
	}
	luaws_conn_update_rx(c); /* a whole-message reader may need reading to resume */
	return push_no_message(L, c);
}

/* conn:_next() -> mt (a message has begun: read it with _read_part) | as _read */
static int l_next(lua_State *L)
{
	luaws_conn *c = luaws_conn_check(L);
	int type;
	c->streaming = 1;
	if (c->read_timed_out)
		return push_no_message(L, c);
	type = luaws_inbox_head_type(&c->inbox);
	if (type) {
		lua_pushinteger(L, type);
		luaws_conn_update_rx(c);
		return 1;
	}
	return push_no_message(L, c);
}

/* conn:_read_part(max) -> data, eof (eof: the message ends with data) | as _read */
static int l_read_part(lua_State *L)
{
	luaws_conn *c = luaws_conn_check(L);
	lua_Integer max = luaL_optinteger(L, 2, 64 * 1024);
	const unsigned char *p;
	size_t n;
	int whole = c->inbox.msgs > 0, ended;
	if (c->read_timed_out)
		return push_no_message(L, c);
	n = luaws_inbox_peek(&c->inbox, max > 0 ? (size_t)max : 1, &p);
	if (!whole && !n)
		return push_no_message(L, c);
	lua_pushlstring(L, (const char *)p, n);
	ended = luaws_inbox_consume(&c->inbox, n, luaws_conn_rx_pool(c));
	if (ended)
		c->streaming = 0;
	lua_pushboolean(L, ended);
	luaws_conn_update_rx(c);
	return 2;
}

/* conn:_discard(): drop the message a streaming reader left unfinished (the rest of it
 * is skipped as it arrives). */
static int l_discard(lua_State *L)
{
	luaws_conn *c = luaws_conn_check(L);
	c->streaming = 0;
	luaws_inbox_discard(&c->inbox, luaws_conn_rx_pool(c));
	luaws_conn_update_rx(c);
	return 0;
}

/* Writing */

/* nil, why a write cannot go out: "timeout", "close_sent" or "closed"; 0 when it can */
static int write_refused(lua_State *L, luaws_conn *c)
{
	if (c->write_timed_out)
		return luaws_fail(L, "timeout");
	/* as gorilla, even once the socket has closed (over TLS the peer's close frame
	 * and its close_notify often come in one read, and close it at once) */
	if (close_sent(c) || c->close_went)
		return luaws_fail(L, "close_sent");
	if ((c->state != LUAWS_OPEN && c->state != LUAWS_CLOSE_RECEIVED) || !c->wsi)
		return luaws_fail(L, "closed");
	return 0;
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
	luaws_conn *c = luaws_conn_check(L);
	int opcode = (int)luaL_checkinteger(L, 2);
	size_t len;
	const unsigned char *data;
	int fin = lua_isnoneornil(L, 4) || lua_toboolean(L, 4);

	if (lua_type(L, 3) != LUA_TSTRING) /* WriteMessage's short path: it raises */
		return luaws_fail(L, "type");
	data = (const unsigned char *)lua_tolstring(L, 3, &len);

	if (!(opcode <= 2 || (opcode >= 8 && opcode <= 10)))
		return luaL_argerror(L, 2, "unknown message type");
	if (opcode >= 8 && (len > 125 || !fin))
		return luaL_argerror(L, 3, "invalid control frame");
	return luaws_conn_write(L, c, opcode, data, len, fin);
}

/* _write's work once its arguments are checked: pushes what _write returns. */
int luaws_conn_write(lua_State *L, luaws_conn *c, int opcode, const unsigned char *data,
		     size_t len, int fin)
{
	int frame_op;
	if (write_refused(L, c))
		return 2;
	frame_op = opcode;
	if (c->pmd && opcode <= 2) {
		/* compressed before framing (deflate.c): maybe nothing to send yet */
		int rc = luaws_pmd_write(c, &frame_op, fin, &data, &len);
		if (rc < 0)
			return luaL_error(L, "luaws: out of memory");
		if (!rc) {
			lua_pushboolean(L, !luaws_sender_full(c));
			return 1;
		}
	}
	/* pings and pongs go ahead of queued data; a close frame goes after it */
	return push_written(L, c, opcode,
			    luaws_send_frame(c, frame_op, fin, data, len,
					     opcode == 9 || opcode == 10));
}

/* conn:_write_prepared(pm) -> as _write */
static int l_write_prepared(lua_State *L)
{
	luaws_conn *c = luaws_conn_check(L);
	int opcode, urgent;
	size_t flen, plen;
	const unsigned char *payload;
	const unsigned char *frame = luaws_prepared_frame(L, 2, &opcode, &flen, &payload, &plen);

	if (write_refused(L, c))
		return 2;
	urgent = opcode == 9 || opcode == 10;
	if (opcode <= 2 && luaws_pmd_compresses(c)) {
		if (luaws_pmd_takeover(c)) {
			/* compressed against this connection's window: no frame to share */
			int frame_op = opcode;
			if (luaws_pmd_write(c, &frame_op, 1, &payload, &plen) < 0)
				return luaL_error(L, "luaws: out of memory");
			return push_written(L, c, opcode,
					    luaws_send_frame(c, frame_op, 1, payload, plen, 0));
		}
		/* the same compressed frame for every connection with the same parameters */
		frame = luaws_prepared_deflated(L, 2, c, &flen, &payload, &plen);
		if (!frame)
			return luaL_error(L, "luaws: out of memory");
		opcode |= LUAWS_RSV1;
	}
	/* a client masks with a fresh key: it frames the payload again */
	return push_written(L, c, opcode,
			    c->is_client ? luaws_send_frame(c, opcode, 1, payload, plen, urgent) :
					   luaws_send_bytes(c, frame, flen, urgent));
}

/* conn:_drained() -> true when a waiting writer may go on, nil, reason when the
 * connection broke, false to keep waiting. */
static int l_drained(lua_State *L)
{
	luaws_conn *c = luaws_conn_check(L);
	if (c->write_timed_out)
		return luaws_fail(L, "timeout");
	if (c->state == LUAWS_CLOSED)
		return luaws_fail(L, "closed");
	lua_pushboolean(L, !luaws_sender_full(c));
	return 1;
}

/* Closing */

/* Let go of the socket as Close() does: what c has queued or batched is left to an
 * orphan (sender.c) that sends it, then closes; now: at once, else at the next step
 * (from __gc). */
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
	luaws_conn *c = luaws_conn_check(L);
	int code = (int)luaL_optinteger(L, 2, 0);
	size_t tl;
	const char *text = luaL_optlstring(L, 3, "", &tl);

	if (!c->wsi || c->state == LUAWS_CLOSED) {
		c->state = LUAWS_CLOSED;
		return 0;
	}
	if (code && (c->state == LUAWS_OPEN || c->state == LUAWS_CLOSE_RECEIVED)) {
		send_close(c, code, text, tl);
		return 0;
	}
	if (c->state == LUAWS_CLOSING && luaws_sender_idle(c))
		luaws_conn_detach(c); /* TCP is closing already (linger): let it */
	else if (c->state >= LUAWS_OPEN)
		hand_over(c, 1);
	else
		luaws_conn_abandon(c);
	luaws_conn_closed(c, LUAWS_ERR_CLOSED, "use of closed connection");
	return 0;
}

static int l_arm(lua_State *L)
{
	luaws_conn *c = luaws_conn_check(L);
	luaws_arm(L, c->loop, &c->waitable, 1);
	return 0;
}

/* conn:_state() -> the state's name (state_names) */
static int l_state(lua_State *L)
{
	lua_pushstring(L, state_names[luaws_conn_check(L)->state]);
	return 1;
}

/* conn:_error() -> message, kind: why the connection broke or the dial failed (kind as
 * error_names), or nothing */
static int l_error(lua_State *L)
{
	static const char *const error_names[] = {"none", "closed", "write", "timeout",
						  "lookup", "connect", "handshake", "eof", "tls",
						  "proxy"};
	luaws_conn *c = luaws_conn_check(L);
	if (!c->error[0])
		return 0;
	lua_pushstring(L, c->error);
	lua_pushstring(L, error_names[c->error_kind]);
	return 2;
}

static int l_subprotocol(lua_State *L)
{
	lua_pushstring(L, luaws_conn_check(L)->subprotocol);
	return 1;
}

static int l_remote(lua_State *L)
{
	lua_pushstring(L, luaws_conn_check(L)->remote);
	return 1;
}

static int l_local(lua_State *L)
{
	luaws_conn *c = luaws_conn_check(L);
	if (!c->local[0] && c->wsi)
		luaws_socket_address(lws_get_socket_fd(c->wsi), 0, c->local, sizeof(c->local));
	lua_pushstring(L, c->local);
	return 1;
}

/* __close: `local c <close> = ...` closes it as Close() does. */
static int l_close_var(lua_State *L)
{
	lua_settop(L, 1);
	return l_close(L);
}

static int l_tostring(lua_State *L)
{
	luaws_conn *c = luaws_conn_check(L);
	lua_pushfstring(L, "luaws.Conn: %p (%s%s%s)", (void *)c, state_names[c->state],
			c->remote[0] ? ", " : "", c->remote);
	return 1;
}

/* __gc only releases: a socket still open goes to an orphan, which the loop sends
 * what was written to and closes at its next step. */
static int l_gc(lua_State *L)
{
	luaws_conn *c = luaws_conn_check(L);
	if (c->dial)
		luaws_dial_detach(c->dial);
	c->dial = NULL;
	hand_over(c, 0);
	c->state = LUAWS_CLOSED;
	luaws_deadlines_free(c);
	luaws_sender_free(c);
	luaws_pmd_free(c);
	luaws_inbox_free(&c->inbox);
	luaws_receiver_free(&c->rx);
	return 0;
}

/* conn:_tls() -> the connection's tls.ConnectionState table, or nil (plain, or closed) */
static int l_tls(lua_State *L)
{
	luaws_tls_push_state(L, luaws_conn_check(L)->wsi);
	return 1;
}

static const luaL_Reg conn_methods[] = {
	{"_tls", l_tls},
	{"_read", l_read},
	{"_next", l_next},
	{"_read_part", l_read_part},
	{"_discard", l_discard},
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

/* core.conn_state(c [, st]) -> the Lua-side state table conn.lua keeps in c's user
 * value (nil until it sets one); with st, sets it. Internal: conn.lua's only. */
static int l_conn_state(lua_State *L)
{
	if (lua_type(L, 1) != LUA_TUSERDATA)
		return 0;
	if (lua_gettop(L) >= 2) {
		lua_settop(L, 2);
		lua_setiuservalue(L, 1, 1);
		return 0;
	}
	lua_getiuservalue(L, 1, 1);
	return 1;
}

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
	luaws_new_type(L, LUAWS_CONN_MT, conn_methods, l_tostring, l_gc, l_close_var);
	lua_pushcfunction(L, l_conn_methods);
	lua_setfield(L, -2, "conn_methods");
	lua_pushcfunction(L, l_conn_state);
	lua_setfield(L, -2, "conn_state");
	luaws_receiver_open(L);
	luaws_conn_fast_open(L);
	luaws_deadline_open(L);
	luaws_deflate_open(L);
	return 0;
}
