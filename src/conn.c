/*
 * luaws.Conn: one WebSocket connection, server or client side. Owns the queue of
 * received messages (fragments reassembled in C), the send queue and the direct-write
 * path (../shared/DESIGN.md §4), rx flow control, and the close state.
 */
#include <stdlib.h>
#include <string.h>

#include "luaws.h"

/* Stop reading from the socket while this many bytes of whole messages wait unread. */
#define RX_PAUSE_BYTES (256 * 1024)
/* A writer waits (WriteMessage yields) while more than this is queued. */
#define TX_WAIT_BYTES (1024 * 1024)
#define NO_PARTIAL ((size_t)-1)
#define RECORD_HEADER (1 + sizeof(size_t))
/* lws frames a close itself with this write type; it is private to lws 4.1
 * (roles/ws/private-lib-roles-ws.h) but lws_write accepts it. */
#define LUAWS_WRITE_CLOSE 4

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
	luaL_setmetatable(L, LUAWS_CONN_MT);
	return c;
}

static luaws_conn *check_conn(lua_State *L)
{
	return luaL_checkudata(L, 1, LUAWS_CONN_MT);
}

void luaws_conn_attach(luaws_conn *c, struct lws *wsi)
{
	c->wsi = wsi;
	lws_set_opaque_user_data(wsi, c);
	c->loop->live_conns++;
}

static void free_out_queue(luaws_conn *c)
{
	luaws_frame *f = c->out_head, *next;
	for (; f; f = next) {
		next = f->next;
		free(f);
	}
	c->out_head = c->out_tail = NULL;
	c->out_bytes = 0;
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

/* The wsi is gone (or never came): record why and wake everyone waiting. */
void luaws_conn_closed(luaws_conn *c, const char *error)
{
	luaws_conn_detach(c);
	if (c->state != LUAWS_CLOSED) {
		c->state = LUAWS_CLOSED;
		if (!c->close_received) {
			c->close_code = 1006;
			c->close_text[0] = '\0';
		}
		if (error && !c->error[0])
			lws_strncpy(c->error, error, sizeof(c->error));
	}
	free_out_queue(c);
	/* a half-assembled message is dropped; whole ones stay readable */
	if (c->partial != NO_PARTIAL) {
		c->in.len = c->partial;
		c->partial = NO_PARTIAL;
	}
	luaws_wake(c->loop, &c->waitable);
}

/* Ask lws to drop the connection soon, from outside its callbacks. */
static void kill_wsi(luaws_conn *c)
{
	lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
	luaws_touched_lws(c->loop);
}

/* "ip:port" (or "[ip6]:port") of either end of a socket. */
void luaws_socket_address(int fd, int peer, char *out, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[INET6_ADDRSTRLEN];

	out[0] = '\0';
	if ((peer ? getpeername(fd, (struct sockaddr *)&ss, &sl) :
		    getsockname(fd, (struct sockaddr *)&ss, &sl)))
		return;
	if (ss.ss_family == AF_INET6) {
		uv_ip6_name((struct sockaddr_in6 *)&ss, host, sizeof(host));
		lws_snprintf(out, len, "[%s]:%u", host,
			     ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
	} else if (ss.ss_family == AF_INET) {
		uv_ip4_name((struct sockaddr_in *)&ss, host, sizeof(host));
		lws_snprintf(out, len, "%s:%u", host, ntohs(((struct sockaddr_in *)&ss)->sin_port));
	}
}

static void addresses(luaws_conn *c, struct lws *wsi)
{
	int fd = lws_get_socket_fd(wsi);
	luaws_socket_address(fd, 1, c->remote, sizeof(c->remote));
	luaws_socket_address(fd, 0, c->local, sizeof(c->local));
}

static int lws_opcode(int opcode)
{
	switch (opcode) {
	case 1: return LWS_WRITE_TEXT;
	case 2: return LWS_WRITE_BINARY;
	case 8: return LUAWS_WRITE_CLOSE;
	case 9: return LWS_WRITE_PING;
	case 10: return LWS_WRITE_PONG;
	default: return -1;
	}
}

/* Write queued frames while lws holds no partial write. Returns -1 when the
 * connection must close. */
static int drain_out_queue(luaws_conn *c)
{
	while (c->out_head && !lws_partial_buffered(c->wsi)) {
		luaws_frame *f = c->out_head;
		int n = lws_write(c->wsi, f->data + LWS_PRE, f->len,
				  (enum lws_write_protocol)lws_opcode(f->opcode));
		c->out_head = f->next;
		if (!c->out_head)
			c->out_tail = NULL;
		c->out_bytes -= f->len;
		free(f);
		if (n < 0)
			return -1;
	}
	if (c->out_head)
		lws_callback_on_writable(c->wsi);
	if (c->out_bytes <= TX_WAIT_BYTES)
		luaws_wake(c->loop, &c->waitable);
	return 0;
}

static void resume_rx_if_drained(luaws_conn *c)
{
	if (c->rx_paused && c->wsi && c->in.len - c->in_head < RX_PAUSE_BYTES / 2) {
		c->rx_paused = 0;
		lws_rx_flow_control(c->wsi, 1);
		luaws_touched_lws(c->loop);
	}
}

/* Check the next bytes of a text message (RFC 3629), carrying the state of a sequence
 * split across fragments. luaws does this rather than lws: lws 4.1.6's client-side
 * check overruns its receive buffer when it fails on a large frame. */
static int utf8_valid(luaws_conn *c, const unsigned char *p, size_t n)
{
	unsigned need = c->utf8_need, lo = c->utf8_lo, hi = c->utf8_hi;
	size_t i;
	for (i = 0; i < n; i++) {
		unsigned b = p[i];
		if (need) {
			if (b < lo || b > hi)
				return 0;
			need--;
			lo = 0x80;
			hi = 0xBF;
			continue;
		}
		if (b < 0x80)
			continue;
		lo = 0x80;
		hi = 0xBF;
		if (b >= 0xC2 && b <= 0xDF)
			need = 1;
		else if (b == 0xE0)
			need = 2, lo = 0xA0;
		else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF)
			need = 2;
		else if (b == 0xED)
			need = 2, hi = 0x9F;
		else if (b == 0xF0)
			need = 3, lo = 0x90;
		else if (b >= 0xF1 && b <= 0xF3)
			need = 3;
		else if (b == 0xF4)
			need = 3, hi = 0x8F;
		else
			return 0;
	}
	c->utf8_need = (unsigned char)need;
	c->utf8_lo = (unsigned char)lo;
	c->utf8_hi = (unsigned char)hi;
	return 1;
}

static int send_frame(luaws_conn *c, int opcode, const char *data, size_t len);

/* The peer broke the protocol: send it a close frame with this code, drop whatever else
 * it sends, and report the code to the reader. (Returning -1 from a receive callback
 * mid-frame makes lws 4.1.6's client overrun its buffer.) */
static int fail_rx(luaws_conn *c, int code, const char *why)
{
	char payload[125];
	size_t n = strlen(why);
	if (c->rx_failed)
		return 0;
	c->rx_failed = 1;
	c->close_received = 1;
	c->close_code = code;
	lws_strncpy(c->close_text, why, sizeof(c->close_text));
	if (c->partial != NO_PARTIAL) {
		c->in.len = c->partial;
		c->partial = NO_PARTIAL;
	}
	if (c->close_sent)
		return 0;
	payload[0] = (char)(code >> 8);
	payload[1] = (char)code;
	memcpy(payload + 2, why, n);
	return send_frame(c, 8, payload, n + 2) == -2 ? -1 : 0;
}

static int receive(luaws_conn *c, struct lws *wsi, const void *in, size_t len)
{
	unsigned char *rec;
	size_t have;

	if (c->rx_failed)
		return 0;
	if (c->partial == NO_PARTIAL)
		c->utf8_need = 0;
	if (!lws_frame_is_binary(wsi) &&
	    (!utf8_valid(c, in, len) || (lws_is_final_fragment(wsi) && c->utf8_need)))
		return fail_rx(c, 1007, "invalid UTF-8");
	if (c->partial == NO_PARTIAL) {
		if (luaws_buf_reserve(&c->in, RECORD_HEADER + len))
			return -1;
		c->partial = c->in.len;
		c->in.data[c->in.len] = lws_frame_is_binary(wsi) ? 2 : 1;
		memset(c->in.data + c->in.len + 1, 0, sizeof(size_t));
		c->in.len += RECORD_HEADER;
	} else if (luaws_buf_reserve(&c->in, len))
		return -1;
	if (len) {
		memcpy(c->in.data + c->in.len, in, len);
		c->in.len += len;
	}
	if (!lws_is_final_fragment(wsi))
		return 0;
	rec = c->in.data + c->partial;
	have = c->in.len - c->partial - RECORD_HEADER;
	memcpy(rec + 1, &have, sizeof(have));
	c->partial = NO_PARTIAL;
	c->in_msgs++;
	luaws_wake(c->loop, &c->waitable);
	if (!c->rx_paused && c->in.len - c->in_head >= RX_PAUSE_BYTES) {
		c->rx_paused = 1;
		lws_rx_flow_control(wsi, 0);
	}
	return 0;
}

static void peer_close(luaws_conn *c, const unsigned char *in, size_t len)
{
	if (c->rx_failed)
		return; /* the reader sees why we failed the connection */
	c->close_received = 1;
	if (len >= 2) {
		size_t tl = len - 2 < sizeof(c->close_text) - 1 ? len - 2 : sizeof(c->close_text) - 1;
		c->close_code = (in[0] << 8) | in[1];
		memcpy(c->close_text, in + 2, tl);
		c->close_text[tl] = '\0';
	} else {
		c->close_code = 1005; /* no status received */
		c->close_text[0] = '\0';
	}
}

/* Events of an established (or establishing) connection, from protocol.c. */
int luaws_conn_event(luaws_conn *c, struct lws *wsi, enum lws_callback_reasons reason,
		     void *in, size_t len)
{
	switch (reason) {
	case LWS_CALLBACK_ESTABLISHED:
	case LWS_CALLBACK_CLIENT_ESTABLISHED:
		if (c->state == LUAWS_CLOSED)
			return -1; /* closed while upgrading */
		c->state = LUAWS_OPEN;
		addresses(c, wsi);
		if (c->out_head)
			lws_callback_on_writable(wsi);
		luaws_wake(c->loop, &c->waitable);
		return 0;

	case LWS_CALLBACK_RECEIVE:
	case LWS_CALLBACK_CLIENT_RECEIVE:
		return receive(c, wsi, in, len);

	case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
		peer_close(c, in, len);
		luaws_wake(c->loop, &c->waitable);
		/* 0: lws echoes the close frame; we already sent ours: just close */
		return c->close_sent ? 1 : 0;

	case LWS_CALLBACK_SERVER_WRITEABLE:
	case LWS_CALLBACK_CLIENT_WRITEABLE:
		return drain_out_queue(c);

	case LWS_CALLBACK_CLOSED:
	case LWS_CALLBACK_CLIENT_CLOSED:
	case LWS_CALLBACK_WSI_DESTROY:
		luaws_conn_closed(c, NULL);
		return 0;

	default:
		return 0;
	}
}

/* conn:_read() -> mt, data | false (nothing yet) | nil, code, text (closed) */
static int l_read(lua_State *L)
{
	luaws_conn *c = check_conn(L);
	if (c->in_msgs) {
		unsigned char *rec = c->in.data + c->in_head;
		size_t len;
		memcpy(&len, rec + 1, sizeof(len));
		lua_pushinteger(L, rec[0]);
		lua_pushlstring(L, (const char *)rec + RECORD_HEADER, len);
		c->in_head += RECORD_HEADER + len;
		c->in_msgs--;
		if (c->in_head == c->in.len) {
			c->in_head = c->in.len = 0;
			if (c->in.cap > 64 * 1024)
				luaws_buf_free(&c->in);
		} else if (c->in_head > c->in.cap / 2 && c->partial == NO_PARTIAL) {
			memmove(c->in.data, c->in.data + c->in_head, c->in.len - c->in_head);
			c->in.len -= c->in_head;
			c->in_head = 0;
		}
		resume_rx_if_drained(c);
		return 2;
	}
	if (c->state != LUAWS_CLOSED) {
		lua_pushboolean(L, 0);
		return 1;
	}
	luaL_pushfail(L);
	lua_pushinteger(L, c->close_code);
	lua_pushstring(L, c->close_text);
	return 3;
}

static int enqueue(luaws_conn *c, int opcode, const char *data, size_t len)
{
	luaws_frame *f = malloc(sizeof(*f) + LWS_PRE + len);
	if (!f)
		return -1;
	f->next = NULL;
	f->len = len;
	f->opcode = opcode;
	memcpy(f->data + LWS_PRE, data, len);
	if (c->out_tail)
		c->out_tail->next = f;
	else
		c->out_head = f;
	c->out_tail = f;
	c->out_bytes += len;
	return 0;
}

/* Send one frame: at once when nothing is queued and lws holds no partial write,
 * else after what is queued. -1 when the socket failed (the conn is being killed). */
static int send_frame(luaws_conn *c, int opcode, const char *data, size_t len)
{
	luaws_loop *loop = c->loop;
	if (opcode == 8)
		c->close_sent = 1;
	if (c->state == LUAWS_OPEN && !c->out_head && !lws_partial_buffered(c->wsi)) {
		if (luaws_buf_reserve(&loop->scratch, LWS_PRE + len))
			return -2;
		memcpy(loop->scratch.data + LWS_PRE, data, len);
		if (lws_write(c->wsi, loop->scratch.data + LWS_PRE, len,
			      (enum lws_write_protocol)lws_opcode(opcode)) < 0) {
			kill_wsi(c);
			return -1;
		}
		if (lws_partial_buffered(c->wsi))
			luaws_touched_lws(loop);
	} else {
		if (enqueue(c, opcode, data, len))
			return -2;
		if (c->state == LUAWS_OPEN) {
			lws_callback_on_writable(c->wsi);
			luaws_touched_lws(loop);
		}
	}
	if (opcode == 8 && c->wsi) {
		/* the peer has a bounded time to answer our close */
		lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_ACK, 5);
		luaws_touched_lws(loop);
	}
	return 0;
}

/* conn:_write(opcode, data) -> true (sent or buffered by lws) | false (queued: wait for
 * _drained) | nil, reason ("closed", "close sent") */
static int l_write(lua_State *L)
{
	luaws_conn *c = check_conn(L);
	int opcode = (int)luaL_checkinteger(L, 2);
	size_t len;
	const char *data = luaL_checklstring(L, 3, &len);
	int rc;

	if (lws_opcode(opcode) < 0)
		return luaL_argerror(L, 2, "unknown message type");
	if (c->state == LUAWS_CLOSED)
		return luaws_fail(L, c->close_sent ? "close sent" : "closed");
	if (c->close_sent)
		return luaws_fail(L, "close sent");
	rc = send_frame(c, opcode, data, len);
	if (rc == -2)
		return luaL_error(L, "luaws: out of memory");
	if (rc == -1)
		return luaws_fail(L, "write failed");
	lua_pushboolean(L, c->out_bytes <= TX_WAIT_BYTES);
	return 1;
}

/* conn:_drained() -> true when a waiting writer may go on, nil, reason when the
 * connection broke, false to keep waiting. */
static int l_drained(lua_State *L)
{
	luaws_conn *c = check_conn(L);
	if (c->state == LUAWS_CLOSED && c->out_bytes)
		return luaws_fail(L, "closed");
	lua_pushboolean(L, c->out_bytes <= TX_WAIT_BYTES);
	return 1;
}

/* conn:_close([code, text]): without a code, drop the connection like gorilla's Close:
 * no close frame. With one (1011 for a failed handler), send that close frame and let
 * the peer answer it (within the close timeout). */
static int l_close(lua_State *L)
{
	luaws_conn *c = check_conn(L);
	int code = (int)luaL_optinteger(L, 2, 0);
	size_t tl;
	const char *text = luaL_optlstring(L, 3, "", &tl);
	char payload[125];

	if (!c->wsi || c->state == LUAWS_CLOSED) {
		c->state = LUAWS_CLOSED;
		return 0;
	}
	if (c->state == LUAWS_UPGRADING) {
		/* the 101 is not out yet: ESTABLISHED refuses it */
		c->state = LUAWS_CLOSED;
		c->close_code = 1006;
		lws_strncpy(c->error, "use of closed connection", sizeof(c->error));
		return 0;
	}
	if (code && !c->close_sent) {
		if (tl > sizeof(payload) - 2)
			tl = sizeof(payload) - 2;
		payload[0] = (char)(code >> 8);
		payload[1] = (char)code;
		memcpy(payload + 2, text, tl);
		if (send_frame(c, 8, payload, tl + 2) == -2)
			return luaL_error(L, "luaws: out of memory");
		return 0;
	}
	kill_wsi(c);
	c->state = LUAWS_CLOSED;
	if (!c->close_received)
		c->close_code = 1006;
	lws_strncpy(c->error, "use of closed connection", sizeof(c->error));
	luaws_wake(c->loop, &c->waitable);
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

static int l_error(lua_State *L)
{
	luaws_conn *c = check_conn(L);
	if (!c->error[0])
		return 0;
	lua_pushstring(L, c->error);
	return 1;
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
	lua_pushstring(L, check_conn(L)->local);
	return 1;
}

static int l_tostring(lua_State *L)
{
	luaws_conn *c = check_conn(L);
	lua_pushfstring(L, "luaws.Conn: %p (%s%s%s)", (void *)c, state_names[c->state],
			c->remote[0] ? ", " : "", c->remote);
	return 1;
}

static int l_gc(lua_State *L)
{
	luaws_conn *c = check_conn(L);
	if (c->dial)
		luaws_dial_detach(c->dial);
	c->dial = NULL;
	luaws_conn_abandon(c);
	c->state = LUAWS_CLOSED;
	free_out_queue(c);
	luaws_buf_free(&c->in);
	return 0;
}

static const luaL_Reg conn_methods[] = {
	{"_read", l_read},
	{"_write", l_write},
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
	luaL_newlib(L, conn_methods);
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
