/*
 * luaws.Server (a listening vhost) and luaws.Request (one HTTP request, the `w` of a
 * handler). A request runs its Lua handler inside the lws callback that delivered it,
 * because lws 4.1 decides an upgrade synchronously in HTTP_CONFIRM_UPGRADE; the handler
 * answers through the request: upgrade (becoming a luaws.Conn) or a plain response.
 *
 * Subprotocols: lws picks the answer from the vhost's protocol names, fixed when the
 * vhost is created, and drops a client whose list matches none (gorilla answers without
 * a subprotocol). Protocol slot 1 therefore has a name luaws sets per upgrade (lws
 * copies the protocol table but keeps the name pointer): the subprotocol the Upgrader
 * chose, or, when it chose none, the first name the client offered, blanked when lws
 * binds the slot so that the 101 names no subprotocol.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>
#include <errno.h>

#include "luaws.h"

enum request_decision { UNDECIDED, UPGRADED, RESPONDED };

typedef struct luaws_request {
	enum luaws_kind kind;
	luaws_loop *loop;
	struct lws *wsi;
	struct lws *callback_wsi; /* headers stay readable here while the handler runs */
	int is_upgrade, in_callback;
	enum request_decision decision;
	int status, response_ready;
	luaws_buf headers; /* "name\0value\0" pairs to send */
	luaws_buf body;
} luaws_request;

typedef struct luaws_server {
	luaws_loop *loop;
	struct lws_vhost *vhost;
	int port;
} luaws_server;

static const lws_retry_bo_t no_idle_pings = {
	.secs_since_valid_ping = 0, .secs_since_valid_hangup = 0,
};

static luaws_request *check_request(lua_State *L)
{
	return luaL_checkudata(L, 1, LUAWS_REQUEST_MT);
}

static void request_detach(luaws_request *r)
{
	if (r->wsi && lws_get_opaque_user_data(r->wsi) == r)
		lws_set_opaque_user_data(r->wsi, NULL);
	r->wsi = NULL;
}

/* Write the stored response on the wsi: headers, then the body. */
static int write_response(luaws_request *r, struct lws *wsi)
{
	unsigned char *start, *p, *end;
	luaws_buf out = {0};
	size_t off = 0, need = 512 + r->headers.len * 2;
	const char *n, *v;
	int ret = -1;

	if (luaws_buf_reserve(&out, LWS_PRE + need + r->body.len))
		return -1;
	start = p = out.data + LWS_PRE;
	end = start + need;
	if (lws_add_http_header_status(wsi, (unsigned int)r->status, &p, end))
		goto done;
	while (luaws_headers_next(&r->headers, &off, &n, &v)) {
		char name[128];
		lws_snprintf(name, sizeof(name), "%s:", n);
		if (lws_add_http_header_by_name(wsi, (unsigned char *)name, (unsigned char *)v,
						(int)strlen(v), &p, end))
			goto done;
	}
	if (lws_add_http_header_content_length(wsi, r->body.len, &p, end) ||
	    lws_finalize_http_header(wsi, &p, end))
		goto done;
	/* one write: headers and body together */
	memcpy(p, r->body.data, r->body.len);
	p += r->body.len;
	if (lws_write(wsi, start, (size_t)(p - start), LWS_WRITE_HTTP_FINAL) < 0)
		goto done;
	ret = 0;
done:
	luaws_buf_free(&out);
	return ret;
}

/* Call the server's Lua on_request(w, method, path, query, headers, remote) for a
 * request lws just parsed. */
static void run_handler(luaws_loop *loop, struct lws *wsi, luaws_request *r)
{
	lua_State *L = loop->L;
	char *uri = NULL, buf[256];
	int urilen = 0, meth, n, i;
	static const char *const methods[] = {"GET", "POST", "OPTIONS", "PUT", "PATCH",
					      "DELETE", "CONNECT", "HEAD", ":path"};
	luaws_server *s = lws_vhost_user(lws_get_vhost(wsi));

	lua_rawgetp(L, LUA_REGISTRYINDEX, s); /* on_request */
	lua_pushlightuserdata(L, r);
	lua_rawget(L, LUA_REGISTRYINDEX); /* the request userdata, anchored below */
	meth = lws_http_get_uri_and_method(wsi, &uri, &urilen);
	lua_pushstring(L, meth >= 0 && meth < (int)(sizeof(methods) / sizeof(*methods)) ?
				  methods[meth] : "GET");
	lua_pushlstring(L, uri ? uri : "/", uri ? (size_t)urilen : 1);
	lua_newtable(L); /* query arguments, as lws split them */
	for (i = 0; i < 64; i++) {
		n = lws_hdr_copy_fragment(wsi, buf, sizeof(buf), WSI_TOKEN_HTTP_URI_ARGS, i);
		if (n <= 0)
			break;
		lua_pushlstring(L, buf, (size_t)n);
		lua_rawseti(L, -2, i + 1);
	}
	luaws_push_headers(L, wsi);
	luaws_socket_address(lws_get_socket_fd(wsi), 1, buf, sizeof(buf));
	lua_pushstring(L, buf);
	r->in_callback = 1;
	r->callback_wsi = wsi;
	luaws_pcall(L, 6, 0);
	r->in_callback = 0;
	r->callback_wsi = NULL;
}

static luaws_request *new_request(lua_State *L, luaws_loop *loop, struct lws *wsi, int upgrade)
{
	luaws_request *r = lua_newuserdatauv(L, sizeof(*r), 0);
	memset(r, 0, sizeof(*r));
	r->kind = LUAWS_KIND_REQUEST;
	r->loop = loop;
	r->wsi = wsi;
	r->is_upgrade = upgrade;
	luaL_setmetatable(L, LUAWS_REQUEST_MT);
	lws_set_opaque_user_data(wsi, r);
	/* keep it alive while the handler starts: registry[r] = userdata */
	lua_rawsetp(L, LUA_REGISTRYINDEX, r);
	return r;
}

static int protected_new_request(lua_State *L)
{
	luaws_loop *loop = lua_touserdata(L, 1);
	struct lws *wsi = lua_touserdata(L, 2);
	new_request(L, loop, wsi, lua_toboolean(L, 3));
	return 0;
}

/* A request arrived: run its handler, then act on what it decided. Returns what the
 * lws callback returns. */
static int handle_request(luaws_loop *loop, struct lws *wsi, int upgrade)
{
	lua_State *L = loop->L;
	luaws_request *r;

	if (loop->closing || !L)
		return -1;
	lua_pushcfunction(L, protected_new_request);
	lua_pushlightuserdata(L, loop);
	lua_pushlightuserdata(L, wsi);
	lua_pushboolean(L, upgrade);
	if (luaws_pcall(L, 3, 0) != LUA_OK)
		return -1;
	r = lws_get_opaque_user_data(wsi);
	run_handler(loop, wsi, r);
	lua_pushnil(L);
	lua_rawsetp(L, LUA_REGISTRYINDEX, r); /* from now on Lua's references keep it */

	if (r->decision == UPGRADED)
		return 0; /* lws goes on with the handshake; opaque data is the Conn */
	if (upgrade && r->decision == UNDECIDED) {
		/* the handler yielded before deciding: too late for this upgrade */
		fprintf(stderr, "luaws: handler for a WebSocket upgrade yielded before calling "
				"Upgrade; request refused with 500\n");
		request_detach(r);
		r->decision = RESPONDED;
		lws_return_http_status(wsi, HTTP_STATUS_INTERNAL_SERVER_ERROR, NULL);
		return 1;
	}
	if (r->decision == UNDECIDED)
		return 0; /* plain request answered later from HTTP_WRITEABLE */
	request_detach(r);
	if (write_response(r, wsi))
		return -1;
	if (upgrade)
		return 1;
	return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* Make lws bind slot 1 for this upgrade and answer with `chosen` (NULL: no
 * subprotocol), whatever the client offered (see the top of this file). */
static void steer_subprotocol(luaws_loop *loop, struct lws *wsi, const char *chosen)
{
	char list[256];
	struct lws_tokenize ts;
	lws_tokenize_elem e;
	int n = lws_hdr_copy(wsi, list, sizeof(list), WSI_TOKEN_PROTOCOL);

	loop->sel_pending = NULL;
	if (n <= 0)
		return; /* no list: lws binds slot 0 and names no subprotocol */
	if (chosen) {
		lws_strncpy(loop->sel_name, chosen, sizeof(loop->sel_name));
		return;
	}
	/* none chosen: match the first name lws will try, blank it once bound */
	lws_tokenize_init(&ts, list, LWS_TOKENIZE_F_COMMA_SEP_LIST |
			  LWS_TOKENIZE_F_MINUS_NONTERM | LWS_TOKENIZE_F_DOT_NONTERM |
			  LWS_TOKENIZE_F_RFC7230_DELIMS);
	ts.len = (size_t)n;
	do {
		e = lws_tokenize(&ts);
		if (e == LWS_TOKZE_TOKEN &&
		    !lws_tokenize_cstr(&ts, loop->sel_name, sizeof(loop->sel_name))) {
			loop->sel_pending = "";
			return;
		}
	} while (e > 0);
}

int luaws_server_event(struct lws *wsi, enum lws_callback_reasons reason, void *user,
		       void *in, size_t len)
{
	luaws_loop *loop = lws_context_user(lws_get_context(wsi));
	luaws_request *r = lws_get_opaque_user_data(wsi);
	(void)user;

	switch (reason) {
	case LWS_CALLBACK_HTTP:
		return handle_request(loop, wsi, 0);

	case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
		if (strcasecmp((const char *)in, "websocket")) {
			lws_return_http_status(wsi, HTTP_STATUS_BAD_REQUEST, NULL);
			return 1;
		}
		return handle_request(loop, wsi, 1);

	case LWS_CALLBACK_HTTP_BIND_PROTOCOL:
		if (loop->sel_pending && lws_get_protocol(wsi)->name == loop->sel_name) {
			lws_strncpy(loop->sel_name, loop->sel_pending, sizeof(loop->sel_name));
			loop->sel_pending = NULL;
		}
		return 0;

	case LWS_CALLBACK_ADD_HEADERS: {
		struct lws_process_html_args *args = in;
		char *start = args->p;
		int rc = luaws_headers_write(&loop->upgrade_headers, &args->p,
					     args->p + args->max_len);
		args->max_len -= (int)(args->p - start);
		loop->upgrade_headers.len = 0;
		return rc;
	}

	case LWS_CALLBACK_HTTP_WRITEABLE:
		if (!r || r->kind != LUAWS_KIND_REQUEST || !r->response_ready)
			return 0;
		request_detach(r);
		if (write_response(r, wsi))
			return -1;
		return lws_http_transaction_completed(wsi) ? -1 : 0;

	case LWS_CALLBACK_CLOSED_HTTP:
	case LWS_CALLBACK_WSI_DESTROY:
		if (r && r->kind == LUAWS_KIND_REQUEST)
			request_detach(r);
		return 0;

	default:
		(void)len;
		return 0;
	}
}

/* w:_upgrade(subprotocol, headers) -> conn | nil, reason */
static int l_upgrade(lua_State *L)
{
	luaws_request *r = check_request(L);
	const char *sub = luaL_optstring(L, 2, NULL);
	luaws_loop *loop = r->loop;
	luaws_conn *c;

	if (!r->is_upgrade)
		return luaws_fail(L, "not a WebSocket upgrade request");
	if (r->decision != UNDECIDED)
		return luaws_fail(L, "the request was already answered");
	if (!r->in_callback || !r->wsi)
		return luaws_fail(L, "Upgrade must be called before the handler yields");
	if (sub && strlen(sub) >= LUAWS_SUBPROTOCOL_MAX)
		return luaL_argerror(L, 2, "subprotocol name too long");
	luaws_headers_store(L, 3, &loop->upgrade_headers);
	c = luaws_conn_new(L, loop, 0);
	if (sub)
		lws_strncpy(c->subprotocol, sub, sizeof(c->subprotocol));
	r->decision = UPGRADED;
	steer_subprotocol(loop, r->wsi, sub && *sub ? c->subprotocol : NULL);
	luaws_socket_address(lws_get_socket_fd(r->wsi), 1, c->remote, sizeof(c->remote));
	luaws_socket_address(lws_get_socket_fd(r->wsi), 0, c->local, sizeof(c->local));
	luaws_conn_attach(c, r->wsi);
	r->wsi = NULL;
	return 1;
}

/* w:_respond(status, headers, body) -> true | nil, reason */
static int l_respond(lua_State *L)
{
	luaws_request *r = check_request(L);
	int status = (int)luaL_checkinteger(L, 2);
	size_t blen;
	const char *body = luaL_optlstring(L, 4, "", &blen);

	if (status < 100 || status > 999)
		return luaL_argerror(L, 2, "invalid HTTP status");
	if (r->decision != UNDECIDED)
		return luaws_fail(L, "the request was already answered");
	if (!r->wsi)
		return luaws_fail(L, "the client has gone");
	luaws_headers_store(L, 3, &r->headers);
	r->body.len = 0;
	if (luaws_buf_reserve(&r->body, blen))
		return luaL_error(L, "luaws: out of memory");
	memcpy(r->body.data, body, blen);
	r->body.len = blen;
	r->status = status;
	r->decision = RESPONDED;
	if (!r->in_callback) {
		r->response_ready = 1;
		lws_callback_on_writable(r->wsi);
		luaws_touched_lws(r->loop);
	}
	lua_pushboolean(L, 1);
	return 1;
}

/* w:_header(name) -> value | nil: a header lws has no token for, by name, while the
 * request is being handled. */
static int l_header(lua_State *L)
{
	luaws_request *r = check_request(L);
	size_t nl;
	const char *name = luaL_checklstring(L, 2, &nl);
	char key[128], val[1024];
	int n;
	if (!r->callback_wsi || nl > sizeof(key) - 2)
		return 0;
	lws_snprintf(key, sizeof(key), "%s:", name);
	n = lws_hdr_custom_copy(r->callback_wsi, val, sizeof(val), key, (int)nl + 1);
	if (n < 0)
		return 0;
	lua_pushlstring(L, val, (size_t)n);
	return 1;
}

static int request_gc(lua_State *L)
{
	luaws_request *r = check_request(L);
	if (r->wsi && !r->loop->closing && r->decision == UNDECIDED) {
		/* the handler vanished without answering */
		lws_set_timeout(r->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
		luaws_touched_lws(r->loop);
	}
	request_detach(r);
	luaws_buf_free(&r->headers);
	luaws_buf_free(&r->body);
	return 0;
}

static int request_tostring(lua_State *L)
{
	luaws_request *r = check_request(L);
	lua_pushfstring(L, "luaws.Request: %p", (void *)r);
	return 1;
}

/* The address must be free: find out here, for a clear error, before lws binds it. */
static const char *probe_bind(const struct sockaddr *sa, socklen_t sl)
{
	int fd = socket(sa->sa_family, SOCK_STREAM, 0), one = 1;
	const char *err = NULL;
	if (fd < 0)
		return strerror(errno);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, sa, sl))
		err = strerror(errno);
	close(fd);
	return err;
}

/* core.listen(ip | nil, port, on_request) -> server, port | nil, reason */
static int l_listen(lua_State *L)
{
	luaws_loop *loop = luaws_loop_get(L);
	const char *ip = luaL_optstring(L, 1, NULL);
	lua_Integer port = luaL_checkinteger(L, 2);
	struct lws_context_creation_info info;
	struct sockaddr_storage ss;
	const char *err;
	luaws_server *s;

	luaL_checktype(L, 3, LUA_TFUNCTION);
	if (port < 0 || port > 65535)
		return luaL_argerror(L, 2, "port out of range");
	memset(&ss, 0, sizeof(ss));
	if (ip && uv_ip4_addr(ip, (int)port, (struct sockaddr_in *)&ss) &&
	    uv_ip6_addr(ip, (int)port, (struct sockaddr_in6 *)&ss))
		return luaws_fail(L, "not an IP address");
	if (!ip)
		uv_ip6_addr("::", (int)port, (struct sockaddr_in6 *)&ss);
	err = probe_bind((struct sockaddr *)&ss, ss.ss_family == AF_INET6 ?
			 sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
	if (err)
		return luaws_fail(L, err);
	luaws_loop_context(L, loop);

	s = lua_newuserdatauv(L, sizeof(*s), 0);
	memset(s, 0, sizeof(*s));
	s->loop = loop;
	luaL_setmetatable(L, LUAWS_SERVER_MT);
	memset(&info, 0, sizeof(info));
	info.port = port ? (int)port : 0;
	info.iface = ip;
	info.protocols = loop->protocols;
	info.vhost_name = "luaws";
	info.user = s;
	info.retry_and_idle_policy = &no_idle_pings;
	if (ip && strchr(ip, '.'))
		info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
	s->vhost = lws_create_vhost(loop->ctx, &info);
	if (!s->vhost)
		return luaws_fail(L, "cannot listen");
	s->port = lws_get_vhost_listen_port(s->vhost);
	lua_pushvalue(L, 3);
	lua_rawsetp(L, LUA_REGISTRYINDEX, s);
	lua_pushinteger(L, s->port);
	return 2;
}

static luaws_server *check_server(lua_State *L)
{
	return luaL_checkudata(L, 1, LUAWS_SERVER_MT);
}

static int server_port(lua_State *L)
{
	lua_pushinteger(L, check_server(L)->port);
	return 1;
}

/* server:_close(): stop listening. Established connections stay. */
static int server_close(lua_State *L)
{
	luaws_server *s = check_server(L);
	if (s->vhost && !s->loop->closing) {
		lws_vhost_destroy(s->vhost);
		luaws_touched_lws(s->loop);
	}
	s->vhost = NULL;
	lua_pushnil(L);
	lua_rawsetp(L, LUA_REGISTRYINDEX, s);
	return 0;
}

static int server_tostring(lua_State *L)
{
	luaws_server *s = check_server(L);
	lua_pushfstring(L, "luaws.Server: %p (%s, port %d)", (void *)s,
			s->vhost ? "listening" : "closed", s->port);
	return 1;
}

static const luaL_Reg request_methods[] = {
	{"_upgrade", l_upgrade},
	{"_respond", l_respond},
	{"_header", l_header},
	{NULL, NULL},
};

static const luaL_Reg server_methods[] = {
	{"_port", server_port},
	{"_close", server_close},
	{NULL, NULL},
};

int luaws_server_open(lua_State *L)
{
	luaL_newmetatable(L, LUAWS_REQUEST_MT);
	luaL_newlib(L, request_methods);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, request_gc);
	lua_setfield(L, -2, "__gc");
	lua_pushcfunction(L, request_tostring);
	lua_setfield(L, -2, "__tostring");
	lua_pop(L, 1);

	luaL_newmetatable(L, LUAWS_SERVER_MT);
	luaL_newlib(L, server_methods);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, server_tostring);
	lua_setfield(L, -2, "__tostring");
	lua_pop(L, 1);

	lua_pushcfunction(L, l_listen);
	lua_setfield(L, -2, "listen");
	return 0;
}
