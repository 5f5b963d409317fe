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

void luaws_push_collected_headers(lua_State *L, const luaws_buf *in)
{
	size_t off = 0;
	lua_newtable(L);
	while (off < in->len) {
		const char *name = (const char *)in->data + off;
		const char *value = name + strlen(name) + 1;
		lua_pushstring(L, value);
		lua_setfield(L, -2, name);
		off = (size_t)(value - (const char *)in->data) + strlen(value) + 1;
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
