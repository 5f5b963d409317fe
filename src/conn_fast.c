/*
 * Conn:ReadMessage and Conn:WriteMessage for their common case, in C: a whole message
 * read on a connection with nothing to run between waits (no Lua ping or pong handler,
 * no open NextReader, no error yet: conn.lua's st.plain), parking the handler in the
 * scheduler when none has arrived; a data message written with no NextWriter open.
 * Everything else goes to conn.lua's methods, which these wrap. A message's round trip
 * then runs no Lua function of luaws's own.
 */
#include "luaws.h"

/* Upvalues of both: */
#define UP_CONN_MT lua_upvalueindex(1) /* luaws.Conn's metatable */
#define UP_LOOP lua_upvalueindex(2)    /* the loop (light userdata) */
#define UP_SLOW lua_upvalueindex(3)    /* conn.lua's method, for all other cases */
#define UP_THEN lua_upvalueindex(4)    /* read_ended(c, st, code, text, cause) /
					* sent(c, st, ok, reason) */
/* the state table's fields, as Lua strings (no lookup of a C string per access) */
#define UP_KEY(i) lua_upvalueindex(4 + (i))
enum { KEY_PLAIN = 1, KEY_READER, KEY_WRITER, KEY_WRITE_ERR, NKEYS = KEY_WRITE_ERR };
static const char *const keys[NKEYS] = {"plain", "reader", "writer", "write_err"};

/* The Conn at index 1, or NULL. */
static luaws_conn *test_conn(lua_State *L)
{
	int same;
	if (!lua_getmetatable(L, 1))
		return NULL;
	same = lua_rawequal(L, -1, UP_CONN_MT);
	lua_pop(L, 1);
	return same ? lua_touserdata(L, 1) : NULL;
}

/* The state table's field (at index 2): pushed; type returned. */
static int st_get(lua_State *L, int key)
{
	lua_pushvalue(L, UP_KEY(key));
	return lua_rawget(L, 2);
}

/* Set it to the value at the top (popped). */
static void st_set(lua_State *L, int key)
{
	lua_pushvalue(L, UP_KEY(key));
	lua_insert(L, -2);
	lua_rawset(L, 2);
}

static int all_results(lua_State *L, int status, lua_KContext ctx)
{
	(void)status;
	(void)ctx;
	return lua_gettop(L);
}

/* Call fn (an upvalue) with the values from index first to the top as arguments, and
 * return all its results: it may yield. */
static int call_on(lua_State *L, int fn, int first)
{
	lua_pushvalue(L, fn);
	lua_insert(L, first);
	lua_callk(L, lua_gettop(L) - first, LUA_MULTRET, 0, all_results);
	return lua_gettop(L);
}

static int read_on(lua_State *L, int status, lua_KContext ctx);

/* c:ReadMessage() -> messageType, data | nil, nil, err (see conn.lua) */
static int read_message(lua_State *L)
{
	luaws_conn *c = test_conn(L);
	if (!c || lua_gettop(L) != 1 || lua_getiuservalue(L, 1, 1) != LUA_TTABLE ||
	    st_get(L, KEY_PLAIN) != LUA_TBOOLEAN || !lua_toboolean(L, 3) ||
	    st_get(L, KEY_READER) != LUA_TNIL) {
		lua_settop(L, 1);
		return call_on(L, UP_SLOW, 1);
	}
	return read_on(L, LUA_OK, 0);
}

/* The loop of read_message, with the Conn and its state at 1 and 2; also where it goes
 * on after parking (status LUA_YIELD). */
static int read_on(lua_State *L, int status, lua_KContext ctx)
{
	luaws_conn *c = lua_touserdata(L, 1);
	luaws_loop *loop = lua_touserdata(L, UP_LOOP);
	(void)ctx;
	lua_settop(L, 2);
	if (status == LUA_YIELD) {
		lua_pushnil(L);
		st_set(L, KEY_READER);
		if (st_get(L, KEY_PLAIN) != LUA_TBOOLEAN || !lua_toboolean(L, 3)) {
			/* a handler or reader came meanwhile */
			lua_settop(L, 1);
			return call_on(L, UP_SLOW, 1);
		}
		lua_settop(L, 2);
	}
	luaws_conn_read(L, c);
	if (lua_isinteger(L, 3))
		return 2; /* mt, data */
	if (lua_isnil(L, 3)) { /* the read side ended: nil, code, text, cause */
		lua_remove(L, 3);
		return call_on(L, UP_THEN, 1); /* read_ended(c, st, code, text, cause) */
	}
	/* false: nothing yet, c is armed */
	if (loop->current != L) { /* the main chunk: conn.lua drives the loop */
		lua_settop(L, 1);
		return call_on(L, UP_SLOW, 1);
	}
	lua_settop(L, 2);
	lua_pushthread(L);
	st_set(L, KEY_READER); /* for a second reader to see (concurrent reads) */
	return luaws_sched_park(L, loop, 1, 0, read_on);
}

/* c:WriteMessage(messageType, data) -> true | nil, err (see conn.lua) */
static int write_message(lua_State *L)
{
	luaws_conn *c = test_conn(L);
	lua_Integer mt;
	const char *data;
	size_t len;
	if (!c || lua_type(L, 3) != LUA_TSTRING || !lua_isinteger(L, 2) ||
	    ((mt = lua_tointeger(L, 2)) != 1 && mt != 2))
		return call_on(L, UP_SLOW, 1);
	lua_settop(L, 3);
	if (lua_getiuservalue(L, 1, 1) != LUA_TTABLE) {
		lua_settop(L, 3);
		return call_on(L, UP_SLOW, 1);
	}
	lua_replace(L, 2); /* c, st, data */
	if (st_get(L, KEY_WRITER) != LUA_TNIL || st_get(L, KEY_WRITE_ERR) != LUA_TNIL) {
		lua_settop(L, 3);
		lua_pushinteger(L, mt);
		lua_replace(L, 2); /* c, mt, data again */
		return call_on(L, UP_SLOW, 1);
	}
	lua_settop(L, 3);
	data = lua_tolstring(L, 3, &len);
	if (luaws_conn_write(L, c, (int)mt, (const unsigned char *)data, len, 1) == 1 &&
	    lua_toboolean(L, -1))
		return 1; /* true */
	lua_remove(L, 3);
	return call_on(L, UP_THEN, 1); /* sent(c, st, ok, reason): waits, or the error */
}

/* core.conn_fast(slow_read, read_ended, slow_write, sent) -> ReadMessage, WriteMessage */
static int l_conn_fast(lua_State *L)
{
	luaws_loop *loop = luaws_loop_get(L);
	int i, k;
	for (i = 1; i <= 4; i++)
		luaL_checktype(L, i, LUA_TFUNCTION);
	lua_settop(L, 4);
	for (i = 0; i < 2; i++) {
		luaL_getmetatable(L, LUAWS_CONN_MT);
		lua_pushlightuserdata(L, loop);
		lua_pushvalue(L, 1 + 2 * i);
		lua_pushvalue(L, 2 + 2 * i);
		for (k = 0; k < NKEYS; k++)
			lua_pushstring(L, keys[k]);
		lua_pushcclosure(L, i ? write_message : read_message, 4 + NKEYS);
	}
	return 2;
}

int luaws_conn_fast_open(lua_State *L)
{
	lua_pushcfunction(L, l_conn_fast);
	lua_setfield(L, -2, "conn_fast");
	return 0;
}
