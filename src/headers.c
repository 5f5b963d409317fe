/*
 * Header lists: "name\0value\0..." in C memory. Received headers (http.c parses them,
 * names in lower case) become Lua tables; headers from Lua (a flat {name, value, ...}
 * list) are checked and stored, then written into a request or response head.
 */
#include <string.h>

#include "luaws.h"

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

/* Append the list to out as "Name: value\r\n" lines; -1 when out of memory. */
int luaws_headers_append(luaws_buf *out, const luaws_buf *list)
{
	const char *name, *value;
	size_t off = 0;
	while (luaws_headers_next(list, &off, &name, &value))
		if (luaws_buf_printf(out, "%s: %s\r\n", name, value))
			return -1;
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
		size_t nl, vl, k;
		const char *name, *value;
		lua_rawgeti(L, idx, i);
		lua_rawgeti(L, idx, i + 1);
		name = lua_tolstring(L, -2, &nl);
		value = lua_tolstring(L, -1, &vl);
		if (!name || !value || nl == 0 || nl > 100 || memchr(value, '\r', vl) ||
		    memchr(value, '\n', vl) || memchr(value, '\0', vl))
			luaL_error(L, "invalid header %s", name ? name : "?");
		for (k = 0; k < nl; k++)
			if ((unsigned char)name[k] <= 32 || name[k] == ':' || name[k] == 127)
				luaL_error(L, "invalid header %s", name);
		if (luaws_buf_reserve(out, nl + vl + 2))
			luaL_error(L, "luaws: out of memory");
		memcpy(out->data + out->len, name, nl + 1);
		out->len += nl + 1;
		memcpy(out->data + out->len, value, vl + 1);
		out->len += vl + 1;
		lua_pop(L, 2);
	}
}

/* Add the list's pairs to the table at idx (raw sets): name -> value, or
 * name -> {value, ...} when repeated. */
void luaws_fill_headers(lua_State *L, int idx, const luaws_buf *list)
{
	const char *name, *value;
	size_t off = 0;
	idx = lua_absindex(L, idx);
	while (luaws_headers_next(list, &off, &name, &value)) {
		/* raw access with counted strings: lua_getfield/lua_pushstring would look each
		 * C string up in Lua's string cache (a strcmp per call) */
		int t;
		lua_pushlstring(L, name, (size_t)(value - name) - 1);
		lua_pushvalue(L, -1);
		t = lua_rawget(L, idx);
		if (t == LUA_TNIL) {
			lua_pop(L, 1);
			lua_pushlstring(L, value, strlen(value));
			lua_rawset(L, idx);
		} else if (t == LUA_TSTRING) {
			lua_createtable(L, 2, 0);
			lua_insert(L, -2);
			lua_rawseti(L, -2, 1);
			lua_pushlstring(L, value, strlen(value));
			lua_rawseti(L, -2, 2);
			lua_rawset(L, idx);
		} else {
			lua_pushlstring(L, value, strlen(value));
			lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
			lua_pop(L, 2);
		}
	}
}

/* Push the list as a table (see luaws_fill_headers). */
void luaws_push_headers(lua_State *L, const luaws_buf *list)
{
	const char *name, *value;
	size_t off = 0;
	int n = 0;
	while (luaws_headers_next(list, &off, &name, &value))
		n++;
	lua_createtable(L, 0, n); /* sized once, not grown header by header */
	luaws_fill_headers(L, -1, list);
}
