/*
 * The exchange with a proxy before the tunnel to the server is up, for client.c: HTTP
 * CONNECT (RFC 9110 §9.3.6, the answer's head parsed by http.c) and SOCKS5 (RFC 1928,
 * with RFC 1929 user name and password), as gorilla 1.5 does them: its proxy.go, and
 * the SOCKS5 dialer it vendors from golang.org/x/net/proxy, with that code's error texts.
 * Bytes go out through the sender (luaws_send_bytes) like everything a connection sends.
 */
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>

#include "luaws.h"

enum proxy_stage {
	STAGE_IDLE,   /* TCP to the proxy is not up yet */
	STAGE_HTTP,   /* CONNECT sent, its answer's head awaited */
	STAGE_METHOD, /* SOCKS5 greeting sent, the chosen method awaited */
	STAGE_AUTH,   /* SOCKS5 user name and password sent, their verdict awaited */
	STAGE_REPLY,  /* SOCKS5 connect request sent, the reply awaited */
	STAGE_UP      /* the tunnel is up */
};

struct luaws_proxy {
	enum proxy_stage stage;
	int socks;
	int port;             /* the server's, for the SOCKS5 request */
	char *addr;           /* the proxy's "host:port", for messages */
	char *to;             /* the server's "host:port": CONNECT's target */
	char *host;           /* the server's host, for the SOCKS5 request */
	char *authorization;  /* HTTP: the Proxy-Authorization value, or NULL */
	char *user, *password; /* SOCKS5: credentials, or NULL */
	luaws_buf in;         /* SOCKS5: the reply being collected */
};

/* gorilla's proxy_socks5Errors, by SOCKS5 reply code */
static const char *const socks_errors[] = {
	"", "general failure", "connection forbidden", "network unreachable",
	"host unreachable", "connection refused", "TTL expired", "command not supported",
	"address type not supported",
};

void luaws_proxy_free(luaws_proxy *p)
{
	if (!p)
		return;
	free(p->addr);
	free(p->to);
	free(p->host);
	free(p->authorization);
	free(p->user);
	free(p->password);
	luaws_buf_free(&p->in);
	free(p);
}

/* A string field of the table at idx, copied (NULL when absent); -1 in *bad when out of
 * memory or when it holds CR or LF (it goes into a request head). */
static char *field(lua_State *L, int idx, const char *name, int *bad)
{
	const char *s;
	char *copy = NULL;
	lua_getfield(L, idx, name);
	s = lua_tostring(L, -1);
	if (s) {
		copy = strdup(s);
		if (!copy || strpbrk(s, "\r\n"))
			*bad = -1;
	}
	lua_pop(L, 1);
	return copy;
}

/* The proxy of a dial from Dial's table at idx ({socks =, addr =, to =, host =, port =,
 * authorization =, user =, password =}), or NULL when that is nil. Raises on a bad
 * table. */
luaws_proxy *luaws_proxy_new(lua_State *L, int idx)
{
	luaws_proxy *p;
	int bad = 0;
	if (lua_isnoneornil(L, idx))
		return NULL;
	luaL_checktype(L, idx, LUA_TTABLE);
	p = calloc(1, sizeof(*p));
	if (!p)
		luaL_error(L, "luaws: out of memory");
	lua_getfield(L, idx, "socks");
	p->socks = lua_toboolean(L, -1);
	lua_getfield(L, idx, "port");
	p->port = (int)lua_tointeger(L, -1);
	lua_pop(L, 2);
	p->addr = field(L, idx, "addr", &bad);
	p->to = field(L, idx, "to", &bad);
	p->host = field(L, idx, "host", &bad);
	p->authorization = field(L, idx, "authorization", &bad);
	p->user = field(L, idx, "user", &bad);
	p->password = field(L, idx, "password", &bad);
	if (bad || !p->addr || !p->to || !p->host || p->port < 1 || p->port > 65535 ||
	    strlen(p->host) > 255) {
		luaws_proxy_free(p);
		luaL_argerror(L, idx, "invalid proxy");
	}
	return p;
}

/* Is the exchange going on (started, tunnel not up yet)? */
int luaws_proxy_waiting(const luaws_proxy *p)
{
	return p->stage != STAGE_IDLE && p->stage != STAGE_UP;
}

static int send_connect(luaws_proxy *p, luaws_conn *c)
{
	luaws_buf out = {0};
	int rc = -1;
	if (!luaws_buf_printf(&out, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n", p->to, p->to) &&
	    (!p->authorization ||
	     !luaws_buf_printf(&out, "Proxy-Authorization: %s\r\n", p->authorization)) &&
	    !luaws_buf_append(&out, "\r\n", 2) && !luaws_send_bytes(c, out.data, out.len, 0))
		rc = 0;
	luaws_buf_free(&out);
	p->stage = STAGE_HTTP;
	return rc;
}

/* As gorilla: user name and password are offered when the user name is not empty and
 * both fit in a byte of length. */
static int socks_offers_auth(const luaws_proxy *p)
{
	size_t ul = p->user ? strlen(p->user) : 0, pl = p->password ? strlen(p->password) : 0;
	return ul > 0 && ul < 256 && pl < 256;
}

static int send_greeting(luaws_proxy *p, luaws_conn *c)
{
	static const unsigned char none[] = {5, 1, 0}, both[] = {5, 2, 0, 2};
	p->stage = STAGE_METHOD;
	if (socks_offers_auth(p))
		return luaws_send_bytes(c, both, sizeof(both), 0);
	return luaws_send_bytes(c, none, sizeof(none), 0);
}

static int send_auth(luaws_proxy *p, luaws_conn *c)
{
	unsigned char msg[3 + 255 + 255];
	size_t ul = p->user ? strlen(p->user) : 0, pl = p->password ? strlen(p->password) : 0;
	if (ul > 255)
		ul = 255;
	if (pl > 255)
		pl = 255;
	msg[0] = 1;
	msg[1] = (unsigned char)ul;
	memcpy(msg + 2, p->user ? p->user : "", ul);
	msg[2 + ul] = (unsigned char)pl;
	memcpy(msg + 3 + ul, p->password ? p->password : "", pl);
	p->stage = STAGE_AUTH;
	return luaws_send_bytes(c, msg, 3 + ul + pl, 0);
}

/* CONNECT to the server: an IPv4 or IPv6 address as such, anything else as a name (the
 * proxy resolves it). */
static int send_request(luaws_proxy *p, luaws_conn *c)
{
	unsigned char msg[4 + 1 + 255 + 2], a6[16];
	size_t n = 4;
	msg[0] = 5;
	msg[1] = 1;
	msg[2] = 0;
	if (inet_pton(AF_INET, p->host, msg + 4) == 1) {
		msg[3] = 1;
		n += 4;
	} else if (inet_pton(AF_INET6, p->host, a6) == 1) {
		if (IN6_IS_ADDR_V4MAPPED((struct in6_addr *)a6)) {
			msg[3] = 1; /* Go's To4() */
			memcpy(msg + 4, a6 + 12, 4);
			n += 4;
		} else {
			msg[3] = 4;
			memcpy(msg + 4, a6, 16);
			n += 16;
		}
	} else {
		size_t hl = strlen(p->host); /* at most 255: luaws_proxy_new */
		msg[3] = 3;
		msg[4] = (unsigned char)hl;
		memcpy(msg + 5, p->host, hl);
		n += 1 + hl;
	}
	msg[n++] = (unsigned char)(p->port >> 8);
	msg[n++] = (unsigned char)(p->port & 0xff);
	p->stage = STAGE_REPLY;
	return luaws_send_bytes(c, msg, n, 0);
}

/* TCP to the proxy is up: send CONNECT, or the SOCKS5 greeting. 0, or -1 when the
 * connection failed. */
int luaws_proxy_start(luaws_proxy *p, luaws_conn *c)
{
	return p->socks ? send_greeting(p, c) : send_connect(p, c);
}

static void consume(luaws_buf *b, size_t n)
{
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
}

/* The SOCKS5 replies in p->in, as far as they go. */
static enum luaws_proxy_result socks_step(luaws_proxy *p, luaws_conn *c, char *why,
					  size_t wl)
{
	for (;;) {
		unsigned char *b = p->in.data;
		size_t have = p->in.len, need;
		switch (p->stage) {
		case STAGE_METHOD:
			if (have < 2)
				return LUAWS_PROXY_MORE;
			if (b[0] != 5) {
				lws_snprintf(why, wl, "proxy: SOCKS5 proxy at %s has unexpected version %d",
					     p->addr, b[0]);
				return LUAWS_PROXY_FAILED;
			}
			if (b[1] == 0xff) {
				lws_snprintf(why, wl, "proxy: SOCKS5 proxy at %s requires authentication",
					     p->addr);
				return LUAWS_PROXY_FAILED;
			}
			need = b[1]; /* the method: gorilla answers 2 and goes on after any other */
			consume(&p->in, 2);
			if ((need == 2 ? send_auth(p, c) : send_request(p, c)))
				goto gone;
			break;
		case STAGE_AUTH:
			if (have < 2)
				return LUAWS_PROXY_MORE;
			if (b[1] != 0) {
				lws_snprintf(why, wl, "proxy: SOCKS5 proxy at %s rejected username/password",
					     p->addr);
				return LUAWS_PROXY_FAILED;
			}
			consume(&p->in, 2);
			if (send_request(p, c))
				goto gone;
			break;
		case STAGE_REPLY:
			if (have < 4)
				return LUAWS_PROXY_MORE;
			if (b[1] != 0) {
				lws_snprintf(why, wl, "proxy: SOCKS5 proxy at %s failed to connect: %s",
					     p->addr,
					     b[1] < sizeof(socks_errors) / sizeof(*socks_errors)
						     ? socks_errors[b[1]] : "unknown error");
				return LUAWS_PROXY_FAILED;
			}
			/* the bound address and port follow: skipped */
			if (b[3] == 1)
				need = 4 + 4 + 2;
			else if (b[3] == 4)
				need = 4 + 16 + 2;
			else if (b[3] == 3)
				need = have < 5 ? 5 : 5 + (size_t)b[4] + 2;
			else {
				lws_snprintf(why, wl,
					     "proxy: got unknown address type %d from SOCKS5 proxy at %s",
					     b[3], p->addr);
				return LUAWS_PROXY_FAILED;
			}
			if (have < need)
				return LUAWS_PROXY_MORE;
			consume(&p->in, need);
			p->stage = STAGE_UP;
			return LUAWS_PROXY_UP;
		default:
			return LUAWS_PROXY_UP;
		}
	}
gone:
	lws_snprintf(why, wl, "proxy: failed to write to SOCKS5 proxy at %s", p->addr);
	return LUAWS_PROXY_FAILED;
}

/* The proxy's answer to CONNECT. 200 opens the tunnel (head, status and headers are
 * cleared for the server's answer); anything else is the dial's result, with the
 * proxy's status and headers, and, as gorilla, the status text as the error. */
static enum luaws_proxy_result http_step(luaws_proxy *p, const unsigned char *in, size_t len,
					 size_t *used, luaws_buf *head, int *status,
					 luaws_buf *headers, char *why, size_t wl)
{
	long n = luaws_http_feed(head, in, len, LUAWS_HEAD_MAX);
	const char *line;
	if (n == 0)
		return LUAWS_PROXY_MORE;
	if (n < 0 || luaws_http_parse_response(head, status, headers)) {
		*status = 0;
		lws_snprintf(why, wl, "proxy: malformed HTTP response");
		return LUAWS_PROXY_FAILED;
	}
	if (*status != 200) {
		/* parsing left the status line NUL-terminated at the head's start */
		line = (const char *)head->data;
		lws_snprintf(why, wl, "%s", line[12] == ' ' && line[13] ? line + 13 : line + 9);
		return LUAWS_PROXY_FAILED;
	}
	*status = 0;
	head->len = 0;
	headers->len = 0;
	*used = (size_t)n;
	p->stage = STAGE_UP;
	return LUAWS_PROXY_UP;
}

/* Bytes from the proxy during the exchange. LUAWS_PROXY_UP: the tunnel is up, and the
 * first *used bytes of in were the proxy's (the rest are the server's);
 * LUAWS_PROXY_FAILED: why says why (for an HTTP proxy's refusal, *status and headers
 * are its answer's, the head its status line). head, status and headers are the dial's,
 * for its response. */
enum luaws_proxy_result luaws_proxy_rx(luaws_proxy *p, luaws_conn *c, const unsigned char *in,
				       size_t len, size_t *used, luaws_buf *head, int *status,
				       luaws_buf *headers, char *why, size_t wl)
{
	enum luaws_proxy_result r;
	if (!p->socks)
		return http_step(p, in, len, used, head, status, headers, why, wl);
	if (luaws_buf_append(&p->in, in, len)) {
		lws_snprintf(why, wl, "luaws: out of memory");
		return LUAWS_PROXY_FAILED;
	}
	r = socks_step(p, c, why, wl);
	if (r == LUAWS_PROXY_UP) {
		/* what is left came with this read: every complete reply before it was taken */
		*used = len - p->in.len;
		luaws_buf_free(&p->in);
	}
	return r;
}

/* The proxy closed the connection during the exchange: gorilla's message for that
 * moment, or NULL when the dial's own ("connection closed during the handshake") says
 * it. */
const char *luaws_proxy_closed(const luaws_proxy *p, char *why, size_t wl)
{
	static const char *const what[] = {
		[STAGE_METHOD] = "greeting", [STAGE_AUTH] = "authentication reply",
		[STAGE_REPLY] = "connect reply",
	};
	if (!p->socks || !luaws_proxy_waiting(p))
		return NULL;
	lws_snprintf(why, wl, "proxy: failed to read %s from SOCKS5 proxy at %s: %s",
		     what[p->stage], p->addr, p->in.len ? "unexpected EOF" : "EOF");
	return why;
}
