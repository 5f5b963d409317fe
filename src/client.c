/*
 * Dialing: a luaws.Conn in the "connecting" state plus the dial record below. The host
 * name is resolved with uv_getaddrinfo (lws 4.1's own lookup blocks the loop), each
 * address is tried in turn until one accepts (lws connects a raw socket). Through a
 * proxy, that host is the proxy's, and proxy.c has it open a tunnel to the server
 * (HTTP CONNECT or SOCKS5) first. Once the byte stream to the server is up (tunnel_up), luaws
 * sends the upgrade request and checks the response itself (http.c); the response
 * (status and headers, or the proxy's refusal) is kept for the Lua side, on failure
 * too. A timer bounds the whole dial. For wss:// TLS starts on the stream first
 * (tls.c), inside the tunnel when there is one; the upgrade request waits in the
 * sender until the TLS handshake is done.
 */
#include <stdlib.h>
#include <string.h>

#include "luaws.h"

struct luaws_dial {
	luaws_conn *conn;  /* NULL once the conn no longer needs this record */
	luaws_loop *loop;
	uv_getaddrinfo_t gai;
	uv_timer_t *timer;
	struct addrinfo *addrs, *next_addr;
	int gai_active, connecting_now, port, status, timed_out, tcp_up;
	int deflate;                /* permessage-deflate offered, as pmd_cfg says */
	luaws_pmd_config pmd_cfg;
	char *host, *path, *host_header, *origin, *subprotocols;
	luaws_proxy *proxy;         /* the proxy the dial goes through, or NULL */
	SSL_CTX *tls;               /* wss://: the client TLS config, or NULL */
	char *server_name;          /* wss://: SNI and the name verified */
	char key[32];               /* Sec-WebSocket-Key */
	luaws_buf request_headers;  /* "name\0value\0" */
	luaws_buf head;             /* the response head as it arrives */
	luaws_buf response_headers; /* "name\0value\0" */
};

static const lws_retry_bo_t no_idle_pings = {
	.secs_since_valid_ping = 0, .secs_since_valid_hangup = 0,
};

static void dial_free(luaws_dial *d)
{
	if (d->addrs)
		uv_freeaddrinfo(d->addrs);
	free(d->host);
	free(d->path);
	free(d->host_header);
	free(d->origin);
	free(d->subprotocols);
	free(d->server_name);
	luaws_proxy_free(d->proxy);
	luaws_tls_config_unref(d->tls);
	luaws_buf_free(&d->request_headers);
	luaws_buf_free(&d->head);
	luaws_buf_free(&d->response_headers);
	free(d);
}

static void timer_closed(uv_handle_t *h)
{
	luaws_dial *d = h->data;
	free(h);
	d->timer = NULL;
	if (!d->gai_active && !d->conn)
		dial_free(d);
}

/* The conn lets go of its dial record (finished, or the conn was collected). */
void luaws_dial_detach(luaws_dial *d)
{
	d->conn = NULL;
	if (d->timer) {
		if (!uv_is_closing((uv_handle_t *)d->timer))
			uv_close((uv_handle_t *)d->timer, timer_closed);
		return;
	}
	if (!d->gai_active)
		dial_free(d);
}

static void dial_failed(luaws_dial *d, enum luaws_err kind, const char *why)
{
	luaws_conn *c = d->conn;
	char msg[sizeof(c->error)];
	if (!c || c->state != LUAWS_CONNECTING)
		return;
	if (d->timer)
		uv_timer_stop(d->timer);
	lws_snprintf(msg, sizeof(msg), "%s", why);
	luaws_conn_closed(c, kind, msg);
}

static void connect_next(luaws_dial *d)
{
	struct lws_client_connect_info ci;
	luaws_conn *c = d->conn;
	char ip[64];
	struct lws *wsi = NULL;

	while (d->next_addr) {
		struct addrinfo *ai = d->next_addr;
		d->next_addr = ai->ai_next;
		if (ai->ai_family == AF_INET)
			uv_ip4_name((struct sockaddr_in *)ai->ai_addr, ip, sizeof(ip));
		else if (ai->ai_family == AF_INET6)
			uv_ip6_name((struct sockaddr_in6 *)ai->ai_addr, ip, sizeof(ip));
		else
			continue;
		memset(&ci, 0, sizeof(ci));
		ci.context = d->loop->ctx;
		ci.vhost = d->loop->vhost;
		ci.address = ip;
		ci.port = d->port;
		ci.method = "RAW";
		ci.local_protocol_name = luaws_protocols[0].name;
		ci.opaque_user_data = c;
		ci.retry_and_idle_policy = &no_idle_pings;
		ci.pwsi = &wsi;
		d->connecting_now = 1;
		wsi = lws_client_connect_via_info(&ci);
		d->connecting_now = 0;
		luaws_touched_lws(d->loop);
		if (wsi) {
			luaws_conn_attach(c, wsi);
			return;
		}
	}
	dial_failed(d, LUAWS_ERR_CONNECT, "connection refused");
}

static void resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	luaws_dial *d = req->data;
	struct addrinfo **tail, *ai, *v6 = NULL, **v6tail = &v6;
	char msg[96];

	d->gai_active = 0;
	if (!d->conn) {
		if (res)
			uv_freeaddrinfo(res);
		if (!d->timer)
			dial_free(d);
		return;
	}
	if (status) {
		lws_snprintf(msg, sizeof(msg), "lookup %s: %s", d->host, uv_strerror(status));
		dial_failed(d, LUAWS_ERR_LOOKUP, msg);
		return;
	}
	/* IPv4 addresses first, as the server side listens on 127.0.0.1 for "localhost" */
	d->addrs = res;
	tail = &d->addrs;
	ai = res;
	d->addrs = NULL;
	while (ai) {
		struct addrinfo *next = ai->ai_next;
		ai->ai_next = NULL;
		if (ai->ai_family == AF_INET6) {
			*v6tail = ai;
			v6tail = &ai->ai_next;
		} else {
			*tail = ai;
			tail = &ai->ai_next;
		}
		ai = next;
	}
	*tail = v6;
	d->next_addr = d->addrs;
	connect_next(d);
}

static void dial_timeout(uv_timer_t *t)
{
	luaws_dial *d = t->data;
	luaws_conn *c = d->conn;
	if (!c || c->state != LUAWS_CONNECTING)
		return;
	d->timed_out = 1;
	luaws_conn_abandon(c);
	dial_failed(d, LUAWS_ERR_TIMEOUT, "i/o timeout");
}

/* TCP is up: send the upgrade request. */
static int send_request(luaws_dial *d, luaws_conn *c)
{
	luaws_buf out = {0};
	int rc = -1;
	luaws_ws_new_key(d->key);
	if (luaws_buf_printf(&out, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
			     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
			     "Sec-WebSocket-Version: 13\r\n", d->path, d->host_header, d->key) ||
	    (d->origin && luaws_buf_printf(&out, "Origin: %s\r\n", d->origin)) ||
	    (d->subprotocols &&
	     luaws_buf_printf(&out, "Sec-WebSocket-Protocol: %s\r\n", d->subprotocols)) ||
	    (d->deflate && luaws_pmd_offer(&d->pmd_cfg, &out)) ||
	    luaws_headers_append(&out, &d->request_headers) || luaws_buf_append(&out, "\r\n", 2))
		goto done;
	if (!luaws_send_bytes(c, out.data, out.len, 0))
		rc = 0;
done:
	luaws_buf_free(&out);
	return rc;
}

/* The byte stream to the server is up (TCP connected, or the proxy's tunnel open): start
 * TLS for wss://, and send the upgrade request (over TLS it waits for the TLS
 * handshake). */
static int tunnel_up(luaws_dial *d, luaws_conn *c, struct lws *wsi)
{
	if (d->tls && luaws_tls_start(wsi, d->tls, 0, d->server_name)) {
		const char *why = luaws_tls_error(wsi);
		lws_set_opaque_user_data(wsi, NULL);
		luaws_conn_detach(c);
		dial_failed(d, LUAWS_ERR_TLS, why ? why : "tls: cannot start");
		return -1;
	}
	return send_request(d, c);
}

/* Is name one of the subprotocols we offered? */
static int offered(const luaws_dial *d, const char *name)
{
	const char *p = d->subprotocols;
	size_t nl = strlen(name);
	while (p && *p) {
		const char *e;
		while (*p == ' ' || *p == ',')
			p++;
		e = p;
		while (*e && *e != ',' && *e != ' ')
			e++;
		if ((size_t)(e - p) == nl && !strncmp(p, name, nl))
			return 1;
		p = e;
	}
	return 0;
}

/* Every Sec-WebSocket-Extensions header of the response, as one list in out (a
 * string), or 0 when there is none. -1 when out of memory. */
static int response_extensions(const luaws_dial *d, luaws_buf *out)
{
	const char *n, *v;
	size_t off = 0;
	int found = 0;
	while (luaws_headers_next(&d->response_headers, &off, &n, &v)) {
		if (strcmp(n, "sec-websocket-extensions"))
			continue;
		if ((found && luaws_buf_append(out, ", ", 2)) ||
		    (*v && luaws_buf_append(out, v, strlen(v))))
			return -1;
		found = 1;
	}
	return found && luaws_buf_append(out, "", 1) ? -1 : found;
}

/* The server's answer to our permessage-deflate offer, if any: 0 when it is one we
 * can take (c then compresses as agreed), -1 when it is not (or we offered nothing). */
static int check_extensions(luaws_dial *d, luaws_conn *c)
{
	luaws_buf ext = {0};
	luaws_pmd_params pmd;
	int rc = response_extensions(d, &ext);
	if (rc > 0)
		rc = !d->deflate || luaws_pmd_check_answer((const char *)ext.data, &d->pmd_cfg, &pmd) ||
			     luaws_pmd_attach(c, &pmd) ? -1 : 0;
	luaws_buf_free(&ext);
	return rc;
}

/* The response head is complete: 0 when it accepts the upgrade. */
static int check_response(luaws_dial *d, luaws_conn *c)
{
	char accept[32];
	const char *got, *sub;
	if (luaws_http_parse_response(&d->head, &d->status, &d->response_headers))
		return -1;
	if (d->status != 101 || !luaws_http_has_token(&d->response_headers, "upgrade", "websocket") ||
	    !luaws_http_has_token(&d->response_headers, "connection", "upgrade"))
		return -1;
	luaws_ws_accept(d->key, accept);
	got = luaws_http_header(&d->response_headers, "sec-websocket-accept");
	if (!got || strcmp(got, accept))
		return -1;
	if (check_extensions(d, c))
		return -1;
	sub = luaws_http_header(&d->response_headers, "sec-websocket-protocol");
	if (sub && *sub) {
		if (!offered(d, sub) || strlen(sub) >= sizeof(c->subprotocol))
			return -1;
		lws_strncpy(c->subprotocol, sub, sizeof(c->subprotocol));
	}
	return 0;
}

/* The answer ends the dial: let go of the socket (lws closes it). */
static int answer_failed(luaws_dial *d, luaws_conn *c, struct lws *wsi, enum luaws_err kind,
			 const char *why)
{
	lws_set_opaque_user_data(wsi, NULL);
	luaws_conn_detach(c);
	dial_failed(d, kind, why);
	return -1;
}

static int response_rx(luaws_dial *d, luaws_conn *c, struct lws *wsi, const unsigned char *in,
		       size_t len)
{
	long n = luaws_http_feed(&d->head, in, len, LUAWS_HEAD_MAX);
	if (n == 0)
		return 0;
	if (n < 0 || check_response(d, c))
		return answer_failed(d, c, wsi, LUAWS_ERR_HANDSHAKE, "bad handshake");
	if (d->timer)
		uv_timer_stop(d->timer);
	luaws_conn_start(c, in + n, len - (size_t)n);
	return 0;
}

/* Bytes from the proxy while it opens the tunnel: once it is up, bytes after the
 * proxy's take the socket's way in as if just read (through TLS once tunnel_up started
 * it). */
static int proxy_rx(luaws_dial *d, luaws_conn *c, struct lws *wsi, const unsigned char *in,
		    size_t len)
{
	char why[sizeof(c->error)];
	size_t used = 0;
	switch (luaws_proxy_rx(d->proxy, c, in, len, &used, &d->head, &d->status,
			       &d->response_headers, why, sizeof(why))) {
	case LUAWS_PROXY_MORE:
		return 0;
	case LUAWS_PROXY_FAILED:
		return answer_failed(d, c, wsi, LUAWS_ERR_PROXY, why);
	case LUAWS_PROXY_UP:
		break;
	}
	if (tunnel_up(d, c, wsi))
		return -1;
	if (used < len)
		return luaws_protocol_callback(wsi, LWS_CALLBACK_RAW_RX, lws_wsi_user(wsi),
					       (void *)(in + used), len - used);
	return 0;
}

int luaws_client_event(luaws_conn *c, struct lws *wsi, enum lws_callback_reasons reason,
		       void *in, size_t len)
{
	luaws_dial *d = c->dial;
	if (!d)
		return 0;

	switch (reason) {
	case LWS_CALLBACK_RAW_CONNECTED:
		d->tcp_up = 1;
		return d->proxy ? luaws_proxy_start(d->proxy, c) : tunnel_up(d, c, wsi);

	case LWS_CALLBACK_RAW_RX:
		if (d->proxy && luaws_proxy_waiting(d->proxy))
			return proxy_rx(d, c, wsi, in, len);
		return response_rx(d, c, wsi, in, len);

	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
		if (c->state != LUAWS_CONNECTING)
			return 0;
		lws_set_opaque_user_data(wsi, NULL);
		if (c->wsi == wsi)
			luaws_conn_detach(c);
		if (d->connecting_now)
			return 0; /* connect_next goes on with the next address */
		if (d->next_addr) {
			connect_next(d);
			return 0;
		}
		/* the last address did not accept the connection (lws's text in `in` names the
		 * step that failed, not why) */
		dial_failed(d, LUAWS_ERR_CONNECT, "connection refused");
		return 0;

	case LWS_CALLBACK_RAW_CLOSE:
		if (c->state == LUAWS_CONNECTING && !d->connecting_now) {
			char why[sizeof(c->error)];
			lws_set_opaque_user_data(wsi, NULL);
			if (c->wsi == wsi)
				luaws_conn_detach(c);
			if (!d->tcp_up && d->next_addr) {
				connect_next(d);
				return 0;
			}
			luaws_tls_read_last(wsi); /* a TLS alert says why */
			if (luaws_tls_error(wsi))
				dial_failed(d, LUAWS_ERR_TLS, luaws_tls_error(wsi));
			else if (d->proxy && luaws_proxy_closed(d->proxy, why, sizeof(why)))
				dial_failed(d, LUAWS_ERR_PROXY, why);
			else if (d->tcp_up)
				dial_failed(d, LUAWS_ERR_EOF, "connection closed during the handshake");
			else
				dial_failed(d, LUAWS_ERR_CONNECT, "connection refused");
		}
		return 0;

	default:
		return 0;
	}
}

static char *dup_opt(lua_State *L, int idx)
{
	const char *s = luaL_optstring(L, idx, NULL);
	char *copy;
	if (!s)
		return NULL;
	copy = strdup(s);
	if (!copy)
		luaL_error(L, "luaws: out of memory");
	return copy;
}

/* core.dial(host, port, path, host_header, origin, subprotocols, headers, timeout
 * [, tls, server_name [, proxy [, compression]]]) -> conn (connecting). headers: flat
 * list {name, value, ...}. tls: a client luaws.TLSConfig for wss://, server_name the
 * name to verify. proxy: a table for proxy.c; then host and port are the proxy's.
 * compression: offer permessage-deflate with these CompressionOptions (a table). */
static int l_dial(lua_State *L)
{
	luaws_loop *loop = luaws_loop_get(L);
	luaL_checkstring(L, 1);
	lua_Integer port = luaL_checkinteger(L, 2);
	double timeout = luaws_opt_seconds(L, 8, 0);
	SSL_CTX *tls = lua_isnoneornil(L, 9) ? NULL : luaws_tls_check_config(L, 9, 0);
	struct addrinfo hints;
	luaws_conn *c;
	luaws_dial *d;
	int rc;

	luaws_proxy *proxy;
	luaws_pmd_config pmd_cfg;
	int deflate = !lua_isnoneornil(L, 12);

	lua_settop(L, 12); /* the conn goes above the arguments */
	luaL_checkstring(L, 3);
	luaL_checkstring(L, 4);
	if (deflate)
		luaws_pmd_read_config(L, 12, &pmd_cfg);
	for (rc = 3; rc <= 6; rc++) {
		/* path, Host, Origin, subprotocols go into the request head as they are */
		const char *v = luaL_optstring(L, rc, "");
		if (strpbrk(v, "\r\n"))
			return luaL_argerror(L, rc, "invalid header value");
	}
	if (port <= 0 || port > 65535)
		return luaL_argerror(L, 2, "port out of range");
	luaws_loop_context(L, loop);

	proxy = luaws_proxy_new(L, 11);
	d = calloc(1, sizeof(*d));
	if (!d) {
		luaws_proxy_free(proxy);
		return luaL_error(L, "luaws: out of memory");
	}
	d->proxy = proxy;
	c = luaws_conn_new(L, loop, 1);
	c->dial = d;
	d->conn = c;
	d->loop = loop;
	d->port = (int)port;
	d->host = dup_opt(L, 1);
	d->path = dup_opt(L, 3);
	d->host_header = dup_opt(L, 4);
	d->origin = dup_opt(L, 5);
	d->subprotocols = dup_opt(L, 6);
	luaws_headers_store(L, 7, &d->request_headers);
	d->tls = luaws_tls_config_ref(tls);
	if (tls)
		d->server_name = dup_opt(L, 10);
	d->deflate = deflate;
	if (deflate)
		d->pmd_cfg = pmd_cfg;

	/* 0 or less: no timeout; math.huge: none either */
	if (timeout > 0 && luaws_ms(timeout) != LUAWS_NEVER) {
		d->timer = malloc(sizeof(*d->timer));
		if (!d->timer)
			return luaL_error(L, "luaws: out of memory");
		uv_timer_init(loop->uv, d->timer);
		d->timer->data = d;
		uv_update_time(loop->uv); /* from now, not from the last loop turn */
		uv_timer_start(d->timer, dial_timeout, luaws_ms(timeout), 0);
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	d->gai.data = d;
	rc = uv_getaddrinfo(loop->uv, &d->gai, resolved, d->host, NULL, &hints);
	if (rc) {
		char msg[96];
		lws_snprintf(msg, sizeof(msg), "lookup %s: %s", d->host, uv_strerror(rc));
		dial_failed(d, LUAWS_ERR_LOOKUP, msg);
	} else
		d->gai_active = 1;
	return 1;
}

/* conn:_dial_result() -> status, headers, timed_out, status text: the handshake
 * response, or the proxy's refusal (status 0 when nobody answered; the text is Go's
 * resp.Status, "407 Proxy Authentication Required"). Releases the dial record. */
static int l_dial_result(lua_State *L)
{
	luaws_conn *c = luaws_conn_check(L);
	luaws_dial *d = c->dial;
	if (!d)
		return 0;
	lua_pushinteger(L, d->status);
	luaws_push_headers(L, &d->response_headers);
	lua_pushboolean(L, d->timed_out);
	/* parsing left the status line NUL-terminated at the head's start */
	lua_pushstring(L, d->status > 0 ? (const char *)d->head.data + 9 : "");
	if (c->state != LUAWS_CONNECTING) {
		c->dial = NULL;
		luaws_dial_detach(d);
	}
	return 4;
}

int luaws_client_open(lua_State *L)
{
	static const luaL_Reg dial_methods[] = {{"_dial_result", l_dial_result}, {NULL, NULL}};
	luaws_conn_add_methods(L, dial_methods);
	lua_pushcfunction(L, l_dial);
	lua_setfield(L, -2, "dial");
	return 0;
}
