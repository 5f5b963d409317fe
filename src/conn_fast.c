/*
 * Conn:ReadMessage and Conn:WriteMessage for their common case, in C: a whole message
 * read while conn.lua has nothing to run between waits (no Lua ping or pong handler, no
 * open NextReader, no error, no Lua reader: what its sync_fast tells c:_fast), parking
 * the handler in the scheduler (sched.c) when none has arrived; a data message written
 * while no NextWriter is open and no write failed. Everything else goes to conn.lua's
 * methods, which these wrap. A message's round trip then runs no Lua function of
 * luaws's own.
 */
#include "luaws.h"

/* Upvalues of both: */
#define UP_CONN_MT lua_upvalueindex(1) /* luaws.Conn's metatable (for luaws_test) */
#define UP_SLOW lua_upvalueindex(2)    /* conn.lua's method, for all other cases */
#define UP_THEN lua_upvalueindex(3)    /* read_ended(c, code, text, cause) /
					* sent(c, ok, reason) */

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
	luaws_conn *c = luaws_test(L, 1);
	if (!c || lua_gettop(L) != 1 || c->slow_read || c->fast_reading)
		return call_on(L, UP_SLOW, 1);
	return read_on(L, LUA_OK, 0);
}

/* The loop of read_message, with the Conn at 1; also where it goes on after parking
 * (status LUA_YIELD). */
static int read_on(lua_State *L, int status, lua_KContext ctx)
{
	luaws_conn *c = lua_touserdata(L, 1);
	luaws_loop *loop = c->loop;
	(void)ctx;
	lua_settop(L, 1);
	if (status == LUA_YIELD) {
		c->fast_reading = 0;
		if (c->slow_read) /* a handler or reader came meanwhile */
			return call_on(L, UP_SLOW, 1);
	}
	luaws_conn_read(L, c);
	if (lua_isinteger(L, 2))
		return 2; /* mt, data */
	if (lua_isnil(L, 2)) { /* the read side ended: nil, code, text, cause */
		lua_remove(L, 2);
		return call_on(L, UP_THEN, 1); /* read_ended(c, code, text, cause) */
	}
	/* false: nothing yet, c is armed */
	lua_settop(L, 1);
	if (loop->current != L) /* the main chunk: conn.lua drives the loop */
		return call_on(L, UP_SLOW, 1);
	c->fast_reading = 1; /* for a second reader to see (concurrent reads) */
	return luaws_sched_park_slot(L, loop, c->waitable.slot, read_on); /* armed: has one */
}

/* c:WriteMessage(messageType, data) -> true | nil, err (see conn.lua) */
static int write_message(lua_State *L)
{
	luaws_conn *c = luaws_test(L, 1);
	lua_Integer mt;
	const char *data;
	size_t len;
	if (!c || c->slow_write || lua_type(L, 3) != LUA_TSTRING || !lua_isinteger(L, 2) ||
	    ((mt = lua_tointeger(L, 2)) != 1 && mt != 2))
		return call_on(L, UP_SLOW, 1);
	lua_settop(L, 3);
	data = lua_tolstring(L, 3, &len);
	if (luaws_conn_write(L, c, (int)mt, (const unsigned char *)data, len, 1) == 1 &&
	    lua_toboolean(L, -1))
		return 1; /* true */
	lua_rotate(L, 2, -2);
	lua_settop(L, lua_gettop(L) - 2); /* c, ok, reason */
	return call_on(L, UP_THEN, 1); /* sent(c, ok, reason): waits, or the error */
}

/* c:_fast(read, write): whether the fast paths may read / write without conn.lua */
static int l_fast(lua_State *L)
{
	luaws_conn *c = luaws_conn_check(L);
	c->slow_read = !lua_toboolean(L, 2);
	c->slow_write = !lua_toboolean(L, 3);
	return 0;
}

/* c:_fast_reading() -> whether a reader is parked in the fast ReadMessage */
static int l_fast_reading(lua_State *L)
{
	luaws_conn *c = luaws_conn_check(L);
	lua_pushboolean(L, c->fast_reading);
	return 1;
}

/* core.conn_fast(slow_read, read_ended, slow_write, sent) -> ReadMessage, WriteMessage */
static int l_conn_fast(lua_State *L)
{
	int i;
	for (i = 1; i <= 4; i++)
		luaL_checktype(L, i, LUA_TFUNCTION);
	lua_settop(L, 4);
	for (i = 0; i < 2; i++) {
		luaL_getmetatable(L, LUAWS_CONN_MT);
		lua_pushvalue(L, 1 + 2 * i);
		lua_pushvalue(L, 2 + 2 * i);
		lua_pushcclosure(L, i ? write_message : read_message, 3);
	}
	return 2;
}

static const luaL_Reg fast_methods[] = {
	{"_fast", l_fast},
	{"_fast_reading", l_fast_reading},
	{NULL, NULL},
};

int luaws_conn_fast_open(lua_State *L)
{
	luaws_conn_add_methods(L, fast_methods);
	lua_pushcfunction(L, l_conn_fast);
	lua_setfield(L, -2, "conn_fast");
	return 0;
}
