/*
 * The Lua types of luaws.core. One helper makes each type's metatable: __name, an
 * __index table of methods, __tostring, __gc and __close, every function with the
 * metatable as upvalue 1, so that checking self is one comparison instead of
 * luaL_checkudata's lookup by name (which the per-message calls would pay each time).
 */
#include "luaws.h"

static void set_meta(lua_State *L, const char *field, lua_CFunction fn)
{
	if (!fn)
		return;
	lua_pushvalue(L, -1);
	lua_pushcclosure(L, fn, 1);
	lua_setfield(L, -2, field);
}

/* Leaves the stack as it was. */
void luaws_new_type(lua_State *L, const char *name, const luaL_Reg *methods,
		    lua_CFunction tostring, lua_CFunction gc, lua_CFunction close)
{
	luaL_newmetatable(L, name);
	lua_newtable(L);
	lua_pushvalue(L, -2);
	luaL_setfuncs(L, methods, 1);
	lua_setfield(L, -2, "__index");
	set_meta(L, "__tostring", tostring);
	set_meta(L, "__gc", gc);
	set_meta(L, "__close", close);
	lua_pop(L, 1);
}

/* More methods for a type made by luaws_new_type (from another file). */
void luaws_add_methods(lua_State *L, const char *name, const luaL_Reg *methods)
{
	luaL_getmetatable(L, name);
	lua_getfield(L, -1, "__index");
	lua_pushvalue(L, -2);
	luaL_setfuncs(L, methods, 1);
	lua_pop(L, 2);
}

/* The userdata at idx when its metatable is the calling function's upvalue 1, else
 * NULL. */
void *luaws_test(lua_State *L, int idx)
{
	int same;
	if (!lua_getmetatable(L, idx))
		return NULL;
	same = lua_rawequal(L, -1, lua_upvalueindex(1));
	lua_pop(L, 1);
	return same ? lua_touserdata(L, idx) : NULL;
}

/* The userdata at idx, of the type whose metatable is the calling function's upvalue 1
 * (else found by name, raising an argument error for anything else). */
void *luaws_check(lua_State *L, int idx, const char *name)
{
	void *p = luaws_test(L, idx);
	return p ? p : luaL_checkudata(L, idx, name);
}
