/*
 * What a connection receives, by the message rules of RFC 6455 on top of frame.c:
 * reassembly of fragments into the inbox, the read limit (checked on what a frame's
 * header claims, before its payload), UTF-8 of text messages, and control frames (pings
 * answered at once unless a Lua handler takes them, pongs for a Lua handler, the peer's
 * close frame handed to the close handshake in conn.c). Compressed messages
 * (permessage-deflate) are inflated by deflate.c on the way in. A protocol error goes
 * to luaws_conn_fail.
 */
#include <string.h>
#include <sys/socket.h>

#include "luaws.h"

/* Pings and pongs kept for Lua handlers before the reader runs them. */
#define CTL_IN_MAX (8 * 1024)
/* The read limit of a new connection (SetReadLimit changes it; 0: none). Received
 * messages are whole in memory before ReadMessage returns them, so the limit bounds
 * what one peer can make a connection hold: twice the largest message of the interop
 * table (16 MiB). Node's ws allows 100 MiB, Python's websockets 1 MiB. */
#define DEFAULT_READ_LIMIT (32 * 1024 * 1024)

void luaws_receiver_init(luaws_receiver *rx, int is_client)
{
	rx->read_limit = DEFAULT_READ_LIMIT;
	rx->parser.expect_masked = !is_client;
}

void luaws_receiver_drop_held(luaws_receiver *rx)
{
	rx->holding = 0;
	luaws_buf_free(&rx->held_payload);
	luaws_buf_free(&rx->held_raw);
}

void luaws_receiver_free(luaws_receiver *rx)
{
	luaws_buf_free(&rx->ctl_in);
	luaws_receiver_drop_held(rx);
}

/* A streaming reader that is behind stops inflating at this many unread bytes. */
#define HOLD_BYTES (1024 * 1024)

/* Should inflating stop until the reader catches up? Not for the message a
 * whole-message reader waits to complete (the read limit bounds that one). */
static int should_hold(const luaws_conn *c)
{
	if (luaws_inbox_unread(&c->inbox) < HOLD_BYTES)
		return 0;
	return !(c->inbox.msgs == 0 && luaws_inbox_partial_type(&c->inbox) && !c->streaming);
}

/* Room reserved for a message when its first frame begins: the whole frame, up to
 * this, so that it is not grown (and copied) piece by piece and big messages take a
 * pooled buffer. Not more: a header alone must not make a connection allocate more
 * than the unread bytes it may hold anyway before reading pauses (conn.c). */
#define FIRST_RESERVE (256 * 1024)

static size_t first_reserve(const luaws_receiver *rx, uint64_t frame_len)
{
	/* a compressed frame: JSON and text inflate to about 4 times their size */
	uint64_t want = rx->inflating ? (frame_len < FIRST_RESERVE / 4 ? frame_len * 4 : FIRST_RESERVE)
				      : frame_len;
	return want < FIRST_RESERVE ? (size_t)want : FIRST_RESERVE;
}

/* Bytes of the message being received (as they came, or inflated): checked and kept.
 * 1 when inflating should stop for now (should_hold). */
static int message_bytes(luaws_conn *c, const unsigned char *p, size_t n)
{
	luaws_receiver *rx = &c->rx;
	rx->msg_len += n;
	if (luaws_inbox_partial_type(&c->inbox) == 1 && !luaws_utf8_valid(rx->utf8, p, n))
		return luaws_conn_fail(c, 1007, "invalid UTF-8 in text message");
	if (luaws_inbox_append(&c->inbox, p, n, luaws_conn_rx_pool(c)))
		return luaws_conn_fail(c, 1011, "out of memory");
	return rx->inflating && should_hold(c);
}

/* Compressed bytes of a message: inflated, the read limit counting what they inflate to
 * (so a small frame that would inflate to gigabytes is refused once the limit is passed,
 * having cost no more memory than the limit). 0, -1 when the connection failed, or 1
 * when inflating stopped for a reader that is behind: the rest is in held_payload. */
static int inflate_bytes(luaws_conn *c, const unsigned char *p, size_t n, int final)
{
	luaws_receiver *rx = &c->rx;
	uint64_t max = UINT64_MAX;
	const unsigned char *rest;
	size_t rest_len;
	const char *why;
	int code;
	if (rx->read_limit > 0)
		max = rx->msg_len < (uint64_t)rx->read_limit ? (uint64_t)rx->read_limit - rx->msg_len : 0;
	code = luaws_pmd_inflate(c, p, n, final, max, message_bytes, &why, &rest, &rest_len);
	if (code == LUAWS_PMD_HELD) {
		luaws_buf was = rx->held_payload; /* p may point into it: copy, then free */
		memset(&rx->held_payload, 0, sizeof(rx->held_payload));
		if (luaws_buf_append(&rx->held_payload, rest, rest_len) ||
		    luaws_buf_append(&rx->held_payload, "", 1)) {
			luaws_buf_free(&was);
			return luaws_conn_fail(c, 1011, "out of memory");
		}
		rx->held_payload.len--;
		luaws_buf_free(&was);
		rx->held_final = (unsigned char)final;
		rx->holding = 1;
		if (c->streaming)
			luaws_conn_received(c);
		return 1;
	}
	if (code == 1009)
		return luaws_conn_fail_read_limit(c);
	if (code > 0)
		return luaws_conn_fail(c, code, why);
	return code;
}

/* The chunk of a message ended (final: the message did). */
static int chunk_done(luaws_conn *c, int final, uint64_t had)
{
	luaws_receiver *rx = &c->rx;
	if (final && luaws_inbox_partial_type(&c->inbox) == 1 && rx->utf8[0])
		return luaws_conn_fail(c, 1007, "invalid UTF-8 in text message");
	if (final) {
		if (luaws_inbox_finish(&c->inbox))
			luaws_conn_received(c);
	} else if (c->streaming && rx->msg_len > had) {
		luaws_conn_received(c);
	}
	return 0;
}

/* A chunk of a text or binary message. */
static int data_chunk(luaws_conn *c, const luaws_frame_event *ev)
{
	luaws_receiver *rx = &c->rx;
	int final = ev->last && ev->fin;
	uint64_t had;
	if (ev->first) {
		if (ev->opcode) {
			rx->msg_len = 0;
			memset(rx->utf8, 0, sizeof(rx->utf8));
			rx->inflating = (unsigned char)ev->rsv1;
		}
		/* refused on what the header claims, before any of the payload (compressed:
		 * on what it inflates to) */
		if (!rx->inflating && rx->read_limit > 0 &&
		    rx->msg_len + ev->frame_len > (uint64_t)rx->read_limit)
			return luaws_conn_fail_read_limit(c);
		if (ev->opcode &&
		    luaws_inbox_begin(&c->inbox, ev->opcode, first_reserve(rx, ev->frame_len),
				      luaws_conn_rx_pool(c)))
			return luaws_conn_fail(c, 1011, "out of memory");
		if (ev->opcode && rx->inflating && luaws_pmd_rx_begin(c))
			return luaws_conn_fail(c, 1011, "out of memory");
	}
	had = rx->msg_len;
	if (rx->inflating) {
		int rc = inflate_bytes(c, ev->data, ev->len, final);
		if (rc)
			return rc;
	} else if (message_bytes(c, ev->data, ev->len) < 0) {
		return -1;
	}
	return chunk_done(c, final, had);
}

/* Close codes a peer may send (RFC 6455 §7.4; 1012-1014 registered since, and gorilla
 * accepts them). */
static int valid_close_code(int code)
{
	return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
	       (code >= 3000 && code <= 4999);
}

/* Keep the control frame in rx->ctl for a Lua handler. */
static void queue_control(luaws_conn *c, int opcode)
{
	luaws_receiver *rx = &c->rx;
	if (rx->ctl_in.len + 2 + rx->ctl_len > CTL_IN_MAX ||
	    luaws_buf_reserve(&rx->ctl_in, 2 + (size_t)rx->ctl_len))
		return; /* the reader is far behind: drop it, as a busy peer would */
	rx->ctl_in.data[rx->ctl_in.len++] = (unsigned char)opcode;
	rx->ctl_in.data[rx->ctl_in.len++] = rx->ctl_len;
	memcpy(rx->ctl_in.data + rx->ctl_in.len, rx->ctl, rx->ctl_len);
	rx->ctl_in.len += rx->ctl_len;
	luaws_conn_received(c);
}

/* The peer's close frame (in rx->ctl). */
static int close_frame(luaws_conn *c)
{
	luaws_receiver *rx = &c->rx;
	int code = 1005;
	size_t tl = 0;
	if (rx->ctl_len == 1)
		return luaws_conn_fail(c, 1002, "close frame with a 1-byte payload");
	if (rx->ctl_len >= 2) {
		unsigned char st[3] = {0, 0, 0};
		code = rx->ctl[0] << 8 | rx->ctl[1];
		if (!valid_close_code(code))
			return luaws_conn_fail(c, 1002, "invalid close code");
		tl = (size_t)rx->ctl_len - 2;
		if (!luaws_utf8_valid(st, rx->ctl + 2, tl) || st[0])
			return luaws_conn_fail(c, 1007, "invalid UTF-8 in close reason");
	}
	return luaws_conn_peer_close(c, code, rx->ctl + 2, tl);
}

/* A chunk of a control frame (at most 125 bytes in all; frame.c checked). */
static int control_chunk(luaws_conn *c, const luaws_frame_event *ev)
{
	luaws_receiver *rx = &c->rx;
	if (ev->first)
		rx->ctl_len = 0;
	memcpy(rx->ctl + rx->ctl_len, ev->data, ev->len);
	rx->ctl_len = (unsigned char)(rx->ctl_len + ev->len);
	if (!ev->last)
		return 0;
	switch (ev->opcode) {
	case 8:
		return close_frame(c);
	case 9:
		if (c->lua_ping)
			queue_control(c, 9);
		else if (c->state == LUAWS_OPEN || c->state == LUAWS_CLOSE_RECEIVED)
			luaws_send_frame(c, 10, 1, rx->ctl, rx->ctl_len, 1);
		return 0;
	default:
		if (c->lua_pong)
			queue_control(c, 10);
		return 0;
	}
}

void luaws_receive(luaws_conn *c, unsigned char *in, size_t len)
{
	luaws_receiver *rx = &c->rx;
	luaws_frame_event ev;
	int rc = 0;
	if (!luaws_conn_reading(c))
		return; /* after a close frame or a failure nothing the peer sends counts */
	if (rx->holding) {
		/* bytes read before reading paused: after the held ones */
		if (len && luaws_buf_append(&rx->held_raw, in, len))
			luaws_conn_fail(c, 1011, "out of memory");
		return;
	}
	rx->receiving = 1;
	while ((rc = luaws_frame_next(&rx->parser, &in, &len, &ev)) > 0) {
		rc = (ev.opcode & 8) ? control_chunk(c, &ev) : data_chunk(c, &ev);
		if (rc > 0 && len && luaws_buf_append(&rx->held_raw, in, len))
			rc = luaws_conn_fail(c, 1011, "out of memory"); /* the rest waits too */
		if (rc || !luaws_conn_reading(c))
			break;
	}
	rx->receiving = 0;
	if (rc < 0 && luaws_conn_reading(c))
		luaws_conn_fail(c, ev.code, ev.reason);
	else if (rc >= 0)
		luaws_conn_update_rx(c);
}

/* The reader caught up with a message whose inflating stopped: go on with it, then
 * with what was read after it (either may stop again). */
void luaws_receive_resume(luaws_conn *c)
{
	luaws_receiver *rx = &c->rx;
	luaws_buf raw;
	uint64_t had = rx->msg_len;
	if (!rx->holding || rx->receiving)
		return;
	if (!luaws_conn_reading(c)) {
		luaws_receiver_drop_held(rx);
		return;
	}
	if (should_hold(c))
		return;
	rx->holding = 0;
	rx->receiving = 1;
	if (inflate_bytes(c, rx->held_payload.data, rx->held_payload.len, rx->held_final) ||
	    chunk_done(c, rx->held_final, had)) {
		rx->receiving = 0;
		return; /* held again, or failed */
	}
	rx->receiving = 0;
	luaws_buf_free(&rx->held_payload);
	raw = rx->held_raw;
	memset(&rx->held_raw, 0, sizeof(rx->held_raw));
	if (raw.len)
		luaws_receive(c, raw.data, raw.len);
	else
		luaws_conn_update_rx(c);
	luaws_buf_free(&raw);
}

static int receive_plain(void *c, unsigned char *plain, size_t n)
{
	luaws_receive(c, plain, n);
	return !luaws_conn_reading(c);
}

/* lws is closing the socket, maybe on a hang-up or reset reported together with data
 * it did not read (libuv reports the error without the readable flag): what the peer
 * sent before it went is still in the kernel and still counts (decrypted first on a
 * TLS socket). The caller detached c from the socket first: nothing goes out on it any
 * more. */
void luaws_receive_last(luaws_conn *c, int fd, luaws_tls *tls)
{
	unsigned char buf[16 * 1024];
	ssize_t n;
	if (fd < 0)
		return;
	while (luaws_conn_reading(c) && (n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0) {
		if (!tls)
			luaws_receive(c, buf, (size_t)n);
		else if (luaws_tls_rx(tls, buf, (size_t)n, receive_plain, c))
			break;
	}
}

/* Lua methods */

/* conn:_control() -> opcode, payload of the next ping/pong kept for Lua | nothing */
static int l_control(lua_State *L)
{
	luaws_receiver *rx = &luaws_conn_check(L)->rx;
	size_t n;
	if (!rx->ctl_in.len)
		return 0;
	n = rx->ctl_in.data[1];
	lua_pushinteger(L, rx->ctl_in.data[0]);
	lua_pushlstring(L, (const char *)rx->ctl_in.data + 2, n);
	memmove(rx->ctl_in.data, rx->ctl_in.data + 2 + n, rx->ctl_in.len - 2 - n);
	rx->ctl_in.len -= 2 + n;
	return 2;
}

/* conn:_handlers(ping, pong, close): which control frames Lua handlers take. */
static int l_handlers(lua_State *L)
{
	luaws_conn *c = luaws_conn_check(L);
	c->lua_ping = lua_toboolean(L, 2);
	c->lua_pong = lua_toboolean(L, 3);
	c->lua_close = lua_toboolean(L, 4);
	return 0;
}

/* conn:_read_limit(n): 0 for none. Messages already waiting are held to it too: the
 * first one over it fails the connection (those before it stay readable). */
static int l_read_limit(lua_State *L)
{
	luaws_conn *c = luaws_conn_check(L);
	lua_Integer n = luaL_checkinteger(L, 2);
	luaws_receiver *rx = &c->rx;
	rx->read_limit = n > 0 ? n : 0;
	if (!rx->read_limit || !luaws_conn_reading(c))
		return 0;
	if (luaws_inbox_cut_over(&c->inbox, (size_t)rx->read_limit) ||
	    (luaws_inbox_partial_type(&c->inbox) && rx->msg_len > (uint64_t)rx->read_limit))
		luaws_conn_fail_read_limit(c);
	return 0;
}

static const luaL_Reg receiver_methods[] = {
	{"_control", l_control},
	{"_handlers", l_handlers},
	{"_read_limit", l_read_limit},
	{NULL, NULL},
};

int luaws_receiver_open(lua_State *L)
{
	luaws_conn_add_methods(L, receiver_methods);
	return 0;
}
