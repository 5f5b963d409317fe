/*
 * Reading the HTTP headers lws parsed on a wsi (a request on the server, the handshake
 * response on the client) into Lua tables: lower-case name -> value, a repeated header
 * joined by ", " as lws stores it. lws 4.1 cannot list headers it has no token for;
 * those are reachable by name while the request is being handled (server.c).
 */
#include <string.h>

#include "luaws.h"

/* The name of a real header token ("host:"), or NULL for request-line and internal ones. */
static const char *header_name(int tok, size_t *nlen)
{
	const char *name = (const char *)lws_token_to_string((enum lws_token_indexes)tok);
	size_t n;
	if (!name || tok >= _WSI_TOKEN_CLIENT_SENT_PROTOCOLS)
		return NULL;
	n = strlen(name);
	if (n < 2 || name[0] == ':' || name[n - 1] != ':')
		return NULL;
	*nlen = n - 1;
	return name;
}

/* Append every header of wsi to out as "name\0value\0"; -1 when out of memory. */
int luaws_collect_headers(struct lws *wsi, luaws_buf *out)
{
	int tok;
	for (tok = 0; tok < WSI_TOKEN_COUNT; tok++) {
		size_t nlen;
		const char *name = header_name(tok, &nlen);
		int vlen;
		if (!name)
			continue;
		vlen = lws_hdr_total_length(wsi, (enum lws_token_indexes)tok);
		if (vlen <= 0)
			continue;
		if (luaws_buf_reserve(out, nlen + 1 + (size_t)vlen + 1))
			return -1;
		memcpy(out->data + out->len, name, nlen);
		out->data[out->len + nlen] = '\0';
		out->len += nlen + 1;
		if (lws_hdr_copy(wsi, (char *)out->data + out->len, vlen + 1,
				 (enum lws_token_indexes)tok) < 0)
			vlen = 0;
		out->data[out->len + (size_t)vlen] = '\0';
		out->len += (size_t)vlen + 1;
	}
	return 0;
}

/* Step through a "name\0value\0" list: 1 and the next pair, or 0 at its end. */
int luaws_headers_next(const luaws_buf *b, size_t *off, const char **name, const char **value)
{
	if (*off >= b->len)
		return 0;
	*name = (const char *)b->data + *off;
	*value = *name + strlen(*name) + 1;
	*off = (size_t)(*value - (const char *)b->data) + strlen(*value) + 1;
	return 1;
}

/* Write the list as "Name: value\r\n" lines at *p (before end); -1 when out of room. */
int luaws_headers_write(const luaws_buf *b, char **p, const char *end)
{
	const char *name, *value;
	size_t off = 0;
	while (luaws_headers_next(b, &off, &name, &value)) {
		int w = lws_snprintf(*p, (size_t)(end - *p), "%s: %s\r\n", name, value);
		if (w >= end - *p)
			return -1;
		*p += w;
	}
	return 0;
}

/* Replace out with the pairs of the flat Lua list {name, value, ...} at idx (nil: none).
 * Raises on names or values that are not strings or would break the header block. */
void luaws_headers_store(lua_State *L, int idx, luaws_buf *out)
{
	lua_Integer i, n;
	out->len = 0;
	if (lua_isnoneornil(L, idx))
		return;
	luaL_checktype(L, idx, LUA_TTABLE);
	n = luaL_len(L, idx);
	for (i = 1; i + 1 <= n; i += 2) {
		size_t nl, vl;
		const char *name, *value;
		lua_rawgeti(L, idx, i);
		lua_rawgeti(L, idx, i + 1);
		name = lua_tolstring(L, -2, &nl);
		value = lua_tolstring(L, -1, &vl);
		if (!name || !value || nl == 0 || nl > 100 || memchr(name, '\r', nl) ||
		    memchr(name, '\n', nl) || memchr(value, '\r', vl) || memchr(value, '\n', vl))
			luaL_error(L, "invalid header %s", name ? name : "?");
		if (luaws_buf_reserve(out, nl + vl + 2))
			luaL_error(L, "luaws: out of memory");
		memcpy(out->data + out->len, name, nl + 1);
		out->len += nl + 1;
		memcpy(out->data + out->len, value, vl + 1);
		out->len += vl + 1;
		lua_pop(L, 2);
	}
}

void luaws_push_collected_headers(lua_State *L, const luaws_buf *in)
{
	const char *name, *value;
	size_t off = 0;
	lua_newtable(L);
	while (luaws_headers_next(in, &off, &name, &value)) {
		lua_pushstring(L, value);
		lua_setfield(L, -2, name);
	}
}

void luaws_push_headers(lua_State *L, struct lws *wsi)
{
	luaws_buf b = {0};
	if (luaws_collect_headers(wsi, &b)) {
		luaws_buf_free(&b);
		luaL_error(L, "luaws: out of memory");
	}
	luaws_push_collected_headers(L, &b);
	luaws_buf_free(&b);
}
