/*
 * luaws.Server (a listening vhost of raw sockets) and luaws.Request (one HTTP request,
 * the `w` of a handler). luaws reads the request head itself (http.c), hands it to the
 * Lua handler, and answers as the handler decides: a 101 that turns the socket into a
 * luaws.Conn, or a plain response after which the socket closes.
 */
#define _GNU_SOURCE /* accept4 */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <ctype.h>

#include "luaws.h"

/* Bytes a client may send after its request head before the handler decided. */
#define EARLY_MAX (64 * 1024)

enum request_decision { UNDECIDED, UPGRADED, RESPONDED };

typedef struct luaws_request {
	enum luaws_kind kind;
	luaws_loop *loop;
	struct lws *wsi;
	int head_done, rx_paused;
	int ref; /* C's reference to the userdata (LUA_NOREF once dropped): a luaL_ref, an
		  * integer key, since a key per request in the registry's hash part made
		  * Lua rebuild that part every few requests */
	enum request_decision decision;
	char remote[56];   /* the client's address, from accept */
	luaws_buf head;    /* the request head as it arrives */
	luaws_buf early;   /* what came after the head */
	luaws_buf headers; /* parsed: "name\0value\0", inside head (http.c) */
} luaws_request;

/* Accepting pauses this long when the process is out of descriptors. */
#define ACCEPT_BACKOFF_MS 100

/* The listening socket: luaws accepts and hands each connection to lws. */
typedef struct luaws_listener {
	enum luaws_kind kind; /* LUAWS_KIND_LISTENER: the opaque data of adopted sockets */
	luaws_loop *loop;
	uv_poll_t poll;
	uv_timer_t backoff;
	int fd, closing, open_handles;
	int told_fd_table;     /* the "beyond lws's table" message was logged */
	int handshake_timeout; /* seconds a client has to send its request head */
	char accepted_from[56]; /* peer of the socket being adopted, for its request */
	SSL_CTX *tls;          /* HTTPS and wss:// (tls.c), or NULL */
} luaws_listener;

typedef struct luaws_server {
	luaws_listener *listener; /* NULL once closed */
	int port;
} luaws_server;

static void on_backoff_done(uv_timer_t *t);

static luaws_request *check_request(lua_State *L)
{
	return luaws_check(L, 1, LUAWS_REQUEST_MT);
}

/* A whole response (status line, headers, body) in out, after LWS_PRE bytes of
 * headroom. -1 when out of memory. */
static int format_response(luaws_buf *out, int status, const char *reason,
			   const luaws_buf *headers, const char *body, size_t blen)
{
	if (luaws_buf_reserve(out, LWS_PRE + 256))
		return -1;
	out->len = LWS_PRE;
	return luaws_buf_printf(out, "HTTP/1.1 %d %s\r\n", status, reason) ||
			       (headers && luaws_headers_append(out, headers)) ||
			       luaws_buf_printf(out, "Content-Length: %zu\r\nConnection: close\r\n\r\n",
						blen) ||
			       luaws_buf_append(out, body, blen) ?
		       -1 :
		       0;
}

/* Write a whole response and close the socket after it. */
static int respond(luaws_request *r, int status, const char *reason, const luaws_buf *headers,
		   const char *body, size_t blen)
{
	luaws_buf out = {0};
	int rc = -1;
	if (!format_response(&out, status, reason, headers, body, blen)) {
		r->decision = RESPONDED;
		rc = luaws_send_detached(r->loop, r->wsi, out.data + LWS_PRE, out.len - LWS_PRE);
		r->wsi = NULL;
	}
	luaws_buf_free(&out);
	return rc;
}

static int protected_new_request(lua_State *L)
{
	luaws_loop *loop = lua_touserdata(L, 1);
	struct lws *wsi = lua_touserdata(L, 2);
	luaws_listener *l = lua_touserdata(L, 3);
	luaws_request *r;
	if (loop->fault_request) {
		loop->fault_request = 0;
		return luaL_error(L, "luaws: out of memory (injected fault)");
	}
	r = lua_newuserdatauv(L, sizeof(*r), 1);
	memset(r, 0, sizeof(*r));
	r->kind = LUAWS_KIND_REQUEST;
	r->ref = LUA_NOREF;
	r->loop = loop;
	r->wsi = wsi;
	lws_strncpy(r->remote, l->accepted_from, sizeof(r->remote));
	luaL_setmetatable(L, LUAWS_REQUEST_MT);
	lua_rawgetp(L, LUA_REGISTRYINDEX, l); /* the server's on_request */
	lua_setiuservalue(L, -2, 1);
	/* C holds it until the handler has it */
	r->ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lws_set_opaque_user_data(wsi, r);
	return 0;
}

/* A client connected: a request object starts collecting its head. Until it exists the
 * wsi's opaque data is the listener (lws's adopt copies it); a refused socket must not
 * carry that pointer into its close event. */
static int request_adopt(luaws_loop *loop, struct lws *wsi)
{
	lua_State *L = loop->L;
	luaws_listener *l = lws_get_opaque_user_data(wsi);
	if (loop->closing || !L || !l || l->kind != LUAWS_KIND_LISTENER || l->closing) {
		lws_set_opaque_user_data(wsi, NULL);
		return -1;
	}
	lua_pushcfunction(L, protected_new_request);
	lua_pushlightuserdata(L, loop);
	lua_pushlightuserdata(L, wsi);
	lua_pushlightuserdata(L, l);
	if (luaws_pcall(L, 3, 0) != LUA_OK) {
		lws_set_opaque_user_data(wsi, NULL);
		return -1;
	}
	if (l->tls && luaws_tls_start(wsi, l->tls, 1, NULL))
		return -1; /* out of memory: the close event releases the request */
	if (l->handshake_timeout > 0)
		lws_set_timeout(wsi, PENDING_TIMEOUT_HTTP_KEEPALIVE_IDLE, l->handshake_timeout);
	return 0;
}

/* Drop C's reference to the request (whichever path comes first: the handler got it,
 * it was answered early, the socket closed). */
static void release(luaws_request *r)
{
	lua_State *L = r->loop->L;
	if (r->ref == LUA_NOREF || r->loop->closing || !L)
		return;
	luaL_unref(L, LUA_REGISTRYINDEX, r->ref);
	r->ref = LUA_NOREF;
}

static int hex_digit(char c)
{
	return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

/* Push s with %XX escapes decoded, as http.lua's unescape did (Go's URL.Path: "%2F"
 * stays a byte of the path); s itself when it has none. */
static void push_unescaped(lua_State *L, const char *s, size_t len)
{
	const char *pct = memchr(s, '%', len);
	luaL_Buffer b;
	size_t i;
	if (!pct) {
		lua_pushlstring(L, s, len);
		return;
	}
	luaL_buffinit(L, &b);
	luaL_addlstring(&b, s, (size_t)(pct - s));
	for (i = (size_t)(pct - s); i < len; i++) {
		if (s[i] == '%' && i + 2 < len && isxdigit((unsigned char)s[i + 1]) &&
		    isxdigit((unsigned char)s[i + 2])) {
			luaL_addchar(&b, (char)(hex_digit(s[i + 1]) << 4 | hex_digit(s[i + 2])));
			i += 2;
		} else {
			luaL_addchar(&b, s[i]);
		}
	}
	luaL_pushresult(&b);
}

/* The head is complete: call the Lua on_request(w, method, target, rawpath, path, query,
 * host, remote, tls): the target split at '?' (the path also decoded), the Host header
 * (nil without one) and the TLS connection state (nil on plain HTTP). The headers stay
 * here until Lua asks for them (w:_headers, w:_ws_headers): most WebSocket handlers
 * never read r.Header, and a Lua table of them was a tenth of a handshake's Lua work. */
static void run_handler(luaws_request *r)
{
	lua_State *L = r->loop->L;
	char *method, *target, *q;
	const char *host;
	size_t tl;

	if (luaws_http_parse_request(&r->head, &method, &target, &r->headers)) {
		static const char msg[] = "400 Bad Request";
		respond(r, 400, "Bad Request", NULL, msg, sizeof(msg) - 1);
		release(r);
		return;
	}
	lua_rawgeti(L, LUA_REGISTRYINDEX, r->ref);
	lua_getiuservalue(L, -1, 1);
	lua_insert(L, -2);
	lua_pushlstring(L, method, strlen(method));
	tl = strlen(target);
	lua_pushlstring(L, target, tl);
	q = memchr(target, '?', tl);
	if (q)
		lua_pushlstring(L, target, (size_t)(q - target));
	else
		lua_pushvalue(L, -1);
	push_unescaped(L, target, q ? (size_t)(q - target) : tl);
	if (q)
		lua_pushlstring(L, q + 1, tl - (size_t)(q - target) - 1);
	else
		lua_pushliteral(L, "");
	host = luaws_http_header(&r->headers, "host");
	if (host)
		lua_pushlstring(L, host, strlen(host));
	else
		lua_pushnil(L);
	lua_pushlstring(L, r->remote, strlen(r->remote));
	luaws_tls_push_state(L, r->wsi);
	release(r); /* from now on the handler's references keep it */
	luaws_pcall(L, 9, 0);
}

static int request_rx(luaws_request *r, const unsigned char *in, size_t len)
{
	long n;
	if (r->head_done) {
		/* the handler has not decided yet: keep it for the connection */
		if (r->early.len + len > EARLY_MAX)
			return -1;
		if (luaws_buf_reserve(&r->early, len))
			return -1;
		memcpy(r->early.data + r->early.len, in, len);
		r->early.len += len;
		return 0;
	}
	n = luaws_http_feed(&r->head, in, len, LUAWS_HEAD_MAX);
	if (n < 0) {
		static const char msg[] = "431 Request Header Fields Too Large";
		respond(r, 431, "Request Header Fields Too Large", NULL, msg, sizeof(msg) - 1);
		release(r);
		return 0;
	}
	if (n == 0)
		return 0;
	r->head_done = 1;
	lws_set_timeout(r->wsi, NO_PENDING_TIMEOUT, 0);
	if ((size_t)n < len && request_rx(r, in + n, len - (size_t)n))
		return -1;
	run_handler(r);
	if (r->decision == UNDECIDED && r->wsi) {
		/* the handler waits for something first: stop reading until it decides */
		r->rx_paused = 1;
		lws_rx_flow_control(r->wsi, 0);
	}
	return 0;
}

int luaws_server_event(struct lws *wsi, enum lws_callback_reasons reason, void *in,
		       size_t len)
{
	luaws_loop *loop = lws_context_user(lws_get_context(wsi));
	luaws_request *r = lws_get_opaque_user_data(wsi);

	switch (reason) {
	case LWS_CALLBACK_RAW_ADOPT:
		return request_adopt(loop, wsi);
	case LWS_CALLBACK_RAW_RX:
		return request_rx(r, in, len);
	case LWS_CALLBACK_RAW_CLOSE:
		r->wsi = NULL;
		lws_set_opaque_user_data(wsi, NULL);
		release(r);
		return 0;
	default:
		return 0;
	}
}

/* Answer r with 101 and push the new luaws.Conn (1 result), or nil and the reason (2).
 * sub: the subprotocol or NULL; extra_idx: a flat {name, value, ...} list of more
 * response headers at that index, or 0; offers: the client's Sec-WebSocket-Extensions
 * (permessage-deflate is negotiated with the CompressionOptions table at cfg_idx, or
 * the defaults when 0), or NULL for no compression. */
static int upgrade(lua_State *L, luaws_request *r, const char *key, const char *sub,
		   int extra_idx, const char *offers, int cfg_idx)
{
	/* the fixed part without printf: this runs for every connection */
	static const char head101[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
				      "Connection: Upgrade\r\nSec-WebSocket-Accept: ";
	luaws_loop *loop = r->loop;
	luaws_buf extra = {0}, out = {0};
	unsigned char small[sizeof(head101) + 32];
	const unsigned char *answer;
	size_t alen;
	char accept[32];
	struct lws *wsi = r->wsi;
	luaws_conn *c;
	luaws_pmd_config pmd_cfg;
	luaws_pmd_params pmd;
	int n, rc = 0, deflate = 0;

	if (r->decision != UNDECIDED)
		return luaws_fail(L, "the request was already answered");
	if (!wsi)
		return luaws_fail(L, "the client has gone");
	if (sub && (strlen(sub) >= LUAWS_SUBPROTOCOL_MAX || strpbrk(sub, "\r\n")))
		return luaL_argerror(L, 3, "invalid subprotocol name");
	if (offers)
		luaws_pmd_read_config(L, cfg_idx, &pmd_cfg);
	if (extra_idx)
		luaws_headers_store(L, extra_idx, &extra);
	luaws_ws_accept(key, accept);
	if (!sub && !offers && !extra.len) {
		/* the common answer, 129 bytes: on the stack (the sender copies what it keeps) */
		memcpy(small, head101, sizeof(head101) - 1);
		memcpy(small + sizeof(head101) - 1, accept, 28);
		memcpy(small + sizeof(head101) - 1 + 28, "\r\n\r\n", 4);
		answer = small;
		alen = sizeof(head101) - 1 + 28 + 4;
	} else {
		rc = luaws_buf_reserve(&out, 256);
		rc = rc || luaws_buf_append(&out, head101, sizeof(head101) - 1) ||
		     luaws_buf_append(&out, accept, strlen(accept)) ||
		     luaws_buf_append(&out, "\r\n", 2) ||
		     (sub && *sub && luaws_buf_printf(&out, "Sec-WebSocket-Protocol: %s\r\n", sub)) ||
		     (offers && (deflate = luaws_pmd_negotiate(offers, &pmd_cfg, &pmd, &out)) < 0) ||
		     luaws_headers_append(&out, &extra) || luaws_buf_append(&out, "\r\n", 2);
		luaws_buf_free(&extra);
		answer = out.data;
		alen = out.len;
	}
	if (rc) {
		luaws_buf_free(&out);
		return luaL_error(L, "luaws: out of memory");
	}

	c = luaws_conn_new(L, loop, 0);
	if (deflate && luaws_pmd_attach(c, &pmd)) {
		luaws_buf_free(&out);
		return luaL_error(L, "luaws: out of memory");
	}
	if (sub)
		lws_strncpy(c->subprotocol, sub, sizeof(c->subprotocol));
	r->decision = UPGRADED;
	r->wsi = NULL;
	luaws_conn_attach(c, wsi);
	n = luaws_send_bytes(c, answer, alen, 0);
	luaws_buf_free(&out);
	if (n < 0) {
		if (c->wsi) {
			luaws_conn_abandon(c);
			luaws_conn_closed(c, LUAWS_ERR_CLOSED, "out of memory");
		}
		return luaws_fail(L, "write failed");
	}
	if (r->rx_paused)
		lws_rx_flow_control(wsi, 1);
	luaws_touched_lws(loop);
	lws_strncpy(c->remote, r->remote, sizeof(c->remote));
	luaws_conn_start(c, r->early.data, r->early.len);
	luaws_buf_free(&r->early);
	return 1;
}

/* w:_upgrade(key, subprotocol, headers [, offers, compression]) -> conn | nil, reason:
 * answer 101. offers: the client's Sec-WebSocket-Extensions (permessage-deflate is
 * negotiated with the CompressionOptions table compression when given). */
static int l_upgrade(lua_State *L)
{
	luaws_request *r = check_request(L);
	const char *key = luaL_checkstring(L, 2);
	const char *sub = luaL_optstring(L, 3, NULL);
	const char *offers = luaL_optstring(L, 5, NULL);
	return upgrade(L, r, key, sub, 4, offers, 6);
}

/* w:_respond(status, reason, headers, body) -> true | nil, reason */
static int l_respond(lua_State *L)
{
	luaws_request *r = check_request(L);
	int status = (int)luaL_checkinteger(L, 2);
	const char *reason = luaL_checkstring(L, 3);
	size_t blen;
	const char *body = luaL_optlstring(L, 5, "", &blen);
	luaws_buf headers = {0};
	int rc;

	if (status < 100 || status > 999)
		return luaL_argerror(L, 2, "invalid HTTP status");
	if (strpbrk(reason, "\r\n"))
		return luaL_argerror(L, 3, "invalid reason phrase");
	if (r->decision != UNDECIDED)
		return luaws_fail(L, "the request was already answered");
	if (!r->wsi)
		return luaws_fail(L, "the client has gone");
	luaws_headers_store(L, 4, &headers);
	rc = respond(r, status, reason, &headers, body, blen);
	luaws_buf_free(&headers);
	if (rc)
		return luaws_fail(L, "write failed");
	lua_pushboolean(L, 1);
	return 1;
}

/* __gc only releases: a request the handler dropped without answering gets its 500
 * from the loop (an orphan, sender.c), not from here. */
static int request_gc(lua_State *L)
{
	luaws_request *r = check_request(L);
	if (r->wsi && !r->loop->closing) {
		static const char msg[] = "500 Internal Server Error";
		luaws_buf out = {0};
		if (format_response(&out, 500, "Internal Server Error", NULL, msg, sizeof(msg) - 1) ||
		    luaws_orphan(r->loop, r->wsi, NULL, out.data + LWS_PRE, out.len - LWS_PRE, 0))
			/* out of memory: drop the socket without an answer */
			lws_set_opaque_user_data(r->wsi, NULL);
		luaws_buf_free(&out);
	}
	r->wsi = NULL;
	luaws_buf_free(&r->head);
	luaws_buf_free(&r->early);
	r->headers.data = NULL; /* it points into head */
	r->headers.len = 0;
	return 0;
}

static int request_tostring(lua_State *L)
{
	luaws_request *r = check_request(L);
	lua_pushfstring(L, "luaws.Request: %p", (void *)r);
	return 1;
}

/* Accept what is waiting (a bounded batch per wake-up, for fairness) and hand each
 * socket to lws as a raw socket. When out of descriptors, or given one beyond lws's
 * table (limits.c), log it and pause accepting briefly instead of spinning on the
 * listen socket. */
static void on_listen_ready(uv_poll_t *h, int status, int events)
{
	luaws_listener *l = h->data;
	int i;
	(void)events;
	if (status < 0 || l->closing)
		return;
	for (i = 0; i < 64; i++) {
		lws_adopt_desc_t info;
		struct sockaddr_storage peer;
		socklen_t pl = sizeof(peer);
		int fd = accept4(l->fd, (struct sockaddr *)&peer, &pl,
					  SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			fprintf(stderr, "luaws: accept: %s; accepting again in %d ms\n",
				strerror(errno), ACCEPT_BACKOFF_MS);
			uv_poll_stop(&l->poll);
			uv_timer_start(&l->backoff, on_backoff_done, ACCEPT_BACKOFF_MS, 0);
			break;
		}
		if (fd >= l->loop->max_fds) {
			/* lws would refuse it ("Socket fd too high"): the table is full */
			close(fd);
			if (!l->told_fd_table)
				fprintf(stderr, "luaws: descriptor %d is beyond libwebsockets' table "
					"of %d; refusing connections while it is full (see "
					"websocket.SetMaxOpenFiles)\n", fd, l->loop->max_fds);
			l->told_fd_table = 1;
			uv_poll_stop(&l->poll);
			uv_timer_start(&l->backoff, on_backoff_done, ACCEPT_BACKOFF_MS, 0);
			break;
		}
		luaws_format_address((struct sockaddr *)&peer, l->accepted_from,
				     sizeof(l->accepted_from));
		memset(&info, 0, sizeof(info));
		info.vh = fd < l->loop->low_fds ? l->loop->low_vhost : l->loop->vhost;
		info.type = LWS_ADOPT_SOCKET;
		info.fd.sockfd = fd;
		info.vh_prot_name = luaws_protocols[0].name;
		info.opaque = l;
		if (!lws_adopt_descriptor_vhost_via_info(&info))
			fprintf(stderr, "luaws: cannot adopt an accepted connection\n");
	}
	luaws_touched_lws(l->loop);
}

static void on_backoff_done(uv_timer_t *t)
{
	luaws_listener *l = t->data;
	if (!l->closing)
		uv_poll_start(&l->poll, UV_READABLE, on_listen_ready);
}

static void listener_handle_closed(uv_handle_t *h)
{
	luaws_listener *l = h->data;
	if (--l->open_handles == 0) {
		luaws_tls_config_unref(l->tls);
		free(l);
	}
}

/* Stop listening and free the port at once; established connections stay. */
static void listener_close(luaws_listener *l)
{
	if (l->closing)
		return;
	l->closing = 1;
	uv_poll_stop(&l->poll);
	close(l->fd);
	uv_close((uv_handle_t *)&l->poll, listener_handle_closed);
	uv_close((uv_handle_t *)&l->backoff, listener_handle_closed);
}

/* core.listen(ip | nil, port, on_request [, handshake_timeout [, reuseport [, tls]]]) ->
 * server, port | nil, reason. on_request(w, method, target, headers, remote) runs for
 * each request head. tls: a server luaws.TLSConfig (every connection speaks TLS). */
static int l_listen(lua_State *L)
{
	luaws_loop *loop = luaws_loop_get(L);
	const char *ip = luaL_optstring(L, 1, NULL);
	lua_Integer port = luaL_checkinteger(L, 2);
	double hs_timeout = luaws_opt_seconds(L, 4, 10);
	int reuseport = lua_toboolean(L, 5), one = 1, zero = 0, fd;
	SSL_CTX *tls = lua_isnoneornil(L, 6) ? NULL : luaws_tls_check_config(L, 6, 1);
	struct sockaddr_storage ss;
	socklen_t sl;
	luaws_server *s;
	luaws_listener *l;

	luaL_checktype(L, 3, LUA_TFUNCTION);
	if (port < 0 || port > 65535)
		return luaL_argerror(L, 2, "port out of range");
	memset(&ss, 0, sizeof(ss));
	if (ip && uv_ip4_addr(ip, (int)port, (struct sockaddr_in *)&ss) &&
	    uv_ip6_addr(ip, (int)port, (struct sockaddr_in6 *)&ss))
		return luaws_fail(L, "not an IP address");
	if (!ip)
		uv_ip6_addr("::", (int)port, (struct sockaddr_in6 *)&ss);
	sl = ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	luaws_loop_context(L, loop);
	luaws_loop_low_context(loop);

	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return luaws_fail(L, strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* accepted sockets inherit it (Linux): no setsockopt per connection */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (reuseport)
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (!ip) /* every interface, IPv4 too */
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	if (bind(fd, (struct sockaddr *)&ss, sl) || listen(fd, SOMAXCONN)) {
		int err = errno;
		close(fd);
		return luaws_fail(L, strerror(err));
	}
	sl = sizeof(ss);
	getsockname(fd, (struct sockaddr *)&ss, &sl);

	l = calloc(1, sizeof(*l));
	if (!l) {
		close(fd);
		return luaL_error(L, "luaws: out of memory");
	}
	l->kind = LUAWS_KIND_LISTENER;
	l->loop = loop;
	l->fd = fd;
	l->tls = luaws_tls_config_ref(tls);
	/* whole seconds for lws_set_timeout (rounded up); 0 or less, or beyond what its int
	 * holds (math.huge), is no timeout */
	l->handshake_timeout = hs_timeout > 0 && hs_timeout < INT_MAX ? (int)ceil(hs_timeout) : 0;
	uv_poll_init_socket(loop->uv, &l->poll, fd);
	uv_timer_init(loop->uv, &l->backoff);
	l->poll.data = l->backoff.data = l;
	l->open_handles = 2;
	uv_poll_start(&l->poll, UV_READABLE, on_listen_ready);

	s = lua_newuserdatauv(L, sizeof(*s), 0);
	s->listener = l;
	s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port :
						   ((struct sockaddr_in *)&ss)->sin_port);
	luaL_setmetatable(L, LUAWS_SERVER_MT);
	lua_pushvalue(L, 3);
	lua_rawsetp(L, LUA_REGISTRYINDEX, l); /* registry[listener] = on_request */
	lua_pushinteger(L, s->port);
	return 2;
}

static luaws_server *check_server(lua_State *L)
{
	return luaws_check(L, 1, LUAWS_SERVER_MT);
}

static int server_port(lua_State *L)
{
	lua_pushinteger(L, check_server(L)->port);
	return 1;
}

/* server:_close(): stop listening. Established connections stay. Also __gc and
 * __close. */
static int server_close(lua_State *L)
{
	luaws_server *s = check_server(L);
	luaws_listener *l = s->listener;
	if (l) {
		s->listener = NULL;
		lua_pushnil(L);
		lua_rawsetp(L, LUA_REGISTRYINDEX, l);
		if (!l->loop->closing) {
			listener_close(l);
		} else {
			/* the loop went first and closed the handles itself */
			if (!l->closing)
				close(l->fd);
			free(l);
		}
	}
	return 0;
}

static int server_tostring(lua_State *L)
{
	luaws_server *s = check_server(L);
	lua_pushfstring(L, "luaws.Server: %p (%s, port %d)", (void *)s,
			s->listener ? "listening" : "closed", s->port);
	return 1;
}

/* Does the header value v hold token (lower case, tl bytes) among its comma-separated
 * values, exactly as header.lua's has_token finds it in r.Header: each piece between
 * commas trimmed of Lua's %s (isspace), compared through tolower, as string.lower does. */
static int value_has_token(const char *v, const char *token, size_t tl)
{
	for (;;) {
		const char *e = strchr(v, ','), *t = v;
		size_t l, i;
		if (!e)
			e = v + strlen(v);
		while (t < e && isspace((unsigned char)*t))
			t++;
		l = (size_t)(e - t);
		while (l && isspace((unsigned char)t[l - 1]))
			l--;
		if (l == tl) {
			for (i = 0; i < l && tolower((unsigned char)t[i]) == token[i]; i++)
				;
			if (i == l)
				return 1;
		}
		if (!*e)
			return 0;
		v = e + 1;
	}
}

/* What Upgrade reads of the request headers, found in one pass: whether Connection holds
 * "upgrade", Upgrade "websocket" and Sec-WebSocket-Version "13" (any of their lines),
 * and the first Sec-WebSocket-Key and Origin (NULL when absent). */
struct ws_headers {
	int connection, upgrade, version;
	const char *key, *origin;
};

static void scan_ws_headers(const luaws_buf *list, struct ws_headers *o)
{
	const char *n, *v;
	size_t off = 0;
	memset(o, 0, sizeof(*o));
	while (luaws_headers_next(list, &off, &n, &v)) {
		switch (n[0]) {
		case 'c':
			if (!o->connection && !strcmp(n, "connection"))
				o->connection = value_has_token(v, "upgrade", 7);
			break;
		case 'u':
			if (!o->upgrade && !strcmp(n, "upgrade"))
				o->upgrade = value_has_token(v, "websocket", 9);
			break;
		case 'o':
			if (!o->origin && !strcmp(n, "origin"))
				o->origin = v;
			break;
		case 's':
			if (!strcmp(n, "sec-websocket-key")) {
				if (!o->key)
					o->key = v;
			} else if (!o->version && !strcmp(n, "sec-websocket-version")) {
				o->version = value_has_token(v, "13", 2);
			}
			break;
		}
	}
}

static void push_or_nil(lua_State *L, const char *s)
{
	if (s)
		lua_pushlstring(L, s, strlen(s));
	else
		lua_pushnil(L);
}

/* w:_ws_headers(extensions) -> connection_upgrade, upgrade_websocket, version_13, key,
 * origin [, extensions]: what Upgrade reads of a request whose r.Header was never
 * touched, the same answers header.lua would give from the table: the three token
 * checks, the first Sec-WebSocket-Key and Origin (nil when absent), and when asked
 * every Sec-WebSocket-Extensions value joined with ", " (nil when absent). */
static int l_request_ws_headers(lua_State *L)
{
	luaws_request *r = check_request(L);
	const luaws_buf *h = &r->headers;
	struct ws_headers ws;
	scan_ws_headers(h, &ws);
	lua_pushboolean(L, ws.connection);
	lua_pushboolean(L, ws.upgrade);
	lua_pushboolean(L, ws.version);
	push_or_nil(L, ws.key);
	push_or_nil(L, ws.origin);
	if (!lua_toboolean(L, 2))
		return 5;
	{
		const char *n, *v;
		size_t off = 0;
		int found = 0;
		luaL_Buffer b;
		luaL_buffinit(L, &b);
		while (luaws_headers_next(h, &off, &n, &v)) {
			if (strcmp(n, "sec-websocket-extensions"))
				continue;
			if (found++)
				luaL_addstring(&b, ", ");
			luaL_addstring(&b, v);
		}
		luaL_pushresult(&b);
		if (!found) {
			lua_pop(L, 1);
			lua_pushnil(L);
		}
	}
	return 6;
}

/* upgrader.lua's origin_allowed: is there no Origin, or does the host of origin (the
 * part after "scheme://" up to '/', '?' or '#', user info removed) equal host, ignoring
 * case? The same steps as its Lua patterns, with the same ctype classes. */
static int origin_allowed(const char *origin, const char *host, size_t hl)
{
	const char *p = origin, *h, *e, *at;
	size_t i;
	if (!origin)
		return 1;
	if (!isalpha((unsigned char)*p))
		return 0;
	for (p++; isalnum((unsigned char)*p) || *p == '+' || *p == '.' || *p == '-'; p++)
		;
	if (strncmp(p, "://", 3))
		return 0;
	h = p + 3;
	for (e = h; *e && *e != '/' && *e != '?' && *e != '#'; e++)
		;
	for (at = e; at > h && at[-1] != '@'; at--)
		;
	if (at > h)
		h = at;
	if ((size_t)(e - h) != hl)
		return 0;
	for (i = 0; i < hl; i++)
		if (tolower((unsigned char)h[i]) != tolower((unsigned char)host[i]))
			return 0;
	return 1;
}

/* w:_ws_upgrade(host) -> conn | false | nil, reason: Upgrade's whole way for the common
 * case (an Upgrader without CheckOrigin, Subprotocols or compression, no response
 * headers, r.Header untouched and this request's, method GET, host r.Host): the
 * checks of the handshake, in C, then the 101. false when a check fails or anything is
 * unusual (nothing was done: Upgrade takes its general way, which finds the same and
 * answers it); nil and the reason as from _upgrade. */
static int l_request_ws_upgrade(lua_State *L)
{
	luaws_request *r = check_request(L);
	struct ws_headers ws;
	const char *host = "";
	size_t hl = 0;
	if (lua_type(L, 2) == LUA_TSTRING)
		host = lua_tolstring(L, 2, &hl);
	else if (!lua_isnil(L, 2))
		goto general;
	if (r->decision != UNDECIDED || !r->wsi)
		goto general;
	scan_ws_headers(&r->headers, &ws);
	if (!ws.connection || !ws.upgrade || !ws.version || !ws.key || !*ws.key ||
	    !origin_allowed(ws.origin, host, hl))
		goto general;
	lua_settop(L, 1);
	return upgrade(L, r, ws.key, NULL, 0, NULL, 0);
general:
	lua_pushboolean(L, 0);
	return 1;
}

/* w:_headers(t): add every request header to t (raw sets), as r.Header holds them. */
static int l_request_headers(lua_State *L)
{
	luaws_request *r = check_request(L);
	luaL_checktype(L, 2, LUA_TTABLE);
	luaws_fill_headers(L, 2, &r->headers);
	return 0;
}

/* w:_tls() -> the connection's tls.ConnectionState table, or nil (plain HTTP) */
static int l_request_tls(lua_State *L)
{
	luaws_tls_push_state(L, check_request(L)->wsi);
	return 1;
}

static const luaL_Reg request_methods[] = {
	{"_upgrade", l_upgrade},
	{"_tls", l_request_tls},
	{"_ws_headers", l_request_ws_headers},
	{"_ws_upgrade", l_request_ws_upgrade},
	{"_headers", l_request_headers},
	{"_respond", l_respond},
	{NULL, NULL},
};

static const luaL_Reg server_methods[] = {
	{"_port", server_port},
	{"_close", server_close},
	{NULL, NULL},
};

int luaws_server_open(lua_State *L)
{
	luaws_new_type(L, LUAWS_REQUEST_MT, request_methods, request_tostring, request_gc, NULL);
	luaws_new_type(L, LUAWS_SERVER_MT, server_methods, server_tostring, server_close,
		       server_close);

	lua_pushcfunction(L, l_listen);
	lua_setfield(L, -2, "listen");
	return 0;
}
