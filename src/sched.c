/*
 * The scheduler's hot path, in C: which coroutine the scheduler is running, parking it
 * on a waitable (by the waitable's armed slot for a reader parked by conn_fast.c, else
 * in sched.lua's waiters table) and resuming coroutines, those a step woke and those
 * sched.lua's ready queue holds. A message's round trip parks and resumes its handler
 * once, and runs no Lua function of the scheduler's own (callgrind, with conn_fast.c:
 * 12.0k -> 6.8k instructions per echo). The ready queue, channels and the exit hooks
 * stay in lua/luaws/sched.lua, which hands its waiters table and its finish function
 * over once (core.sched_bind). */
#include "luaws.h"

/* What a coroutine parked by the scheduler yields (sched.lua's PARKED). */
static const char parked_key = 'P';
#define PARKED ((void *)&parked_key)

static luaws_loop *upvalue_loop(lua_State *L)
{
	luaws_loop *loop = lua_touserdata(L, lua_upvalueindex(1));
	if (loop->closing)
		luaL_error(L, "luaws: the event loop of this Lua state is closed");
	return loop;
}

/* The loop, for the functions that need sched.lua's tables. */
static luaws_loop *bound_loop(lua_State *L)
{
	luaws_loop *loop = upvalue_loop(L);
	if (loop->sched_finish_ref == LUA_NOREF)
		luaL_error(L, "luaws: the scheduler (luaws.sched) is not loaded");
	return loop;
}

/* An object's key in the waiters table: its userdata's address, an integer (a lookup
 * by userdata value hashes it the generic way, several times dearer). Armed while it
 * has waiters, the object cannot be collected, so the address stays its own. */
static lua_Integer waiter_key(lua_State *L, int obj_idx)
{
	return (lua_Integer)(intptr_t)lua_touserdata(L, obj_idx);
}

/* co (at index co_idx of L) ended, or could not be resumed: hand it to sched.lua's
 * finish(co, ok, value), which reports an error and runs its exit hook. The value is at
 * the top of L. */
static void finish(lua_State *L, luaws_loop *loop, int co_idx, int ok)
{
	lua_rawgeti(L, LUA_REGISTRYINDEX, loop->sched_finish_ref);
	lua_pushvalue(L, co_idx);
	lua_pushboolean(L, ok);
	lua_rotate(L, -4, -1); /* finish, co, ok, value */
	lua_call(L, 3, 0);
}

/* Resume the coroutine at co_idx of L with the nargs values at L's top (popped), as
 * the one the scheduler runs. A coroutine that parks or yields anything else simply
 * stays suspended, as in coroutine.resume; one that ends goes to finish. */
void luaws_sched_resume(lua_State *L, luaws_loop *loop, int co_idx, int nargs)
{
	lua_State *co = lua_tothread(L, co_idx), *prev;
	int status, nres;

	if (!co)
		luaL_error(L, "luaws: resuming something that is not a coroutine");
	if (lua_status(co) == LUA_OK && lua_gettop(co) == 0) {
		lua_pop(L, nargs);
		lua_pushliteral(L, "cannot resume dead coroutine");
		finish(L, loop, co_idx, 0);
		return;
	}
	if (!lua_checkstack(co, nargs + 1)) {
		lua_pop(L, nargs);
		lua_pushliteral(L, "too many arguments to resume");
		finish(L, loop, co_idx, 0);
		return;
	}
	lua_xmove(L, co, nargs);
	prev = loop->current;
	loop->current = co;
	status = lua_resume(co, L, nargs, &nres);
	loop->current = prev;
	if (status == LUA_YIELD) {
		lua_pop(co, nres);
		return;
	}
	if (status == LUA_OK) {
		if (nres > 0) {
			lua_pop(co, nres - 1);
			lua_xmove(co, L, 1);
		} else {
			lua_pushnil(L);
		}
		finish(L, loop, co_idx, 1);
		return;
	}
	lua_xmove(co, L, 1); /* the error object */
	finish(L, loop, co_idx, 0);
}

/* The object at obj_idx of L was woken, and co_idx holds the coroutine parked on its
 * slot in C (or nil): resume that one and the object's waiter here. Returns 1 with a
 * list of coroutines pushed when the object had several waiters (sched.lua queues
 * them), else 0. Waiters are taken before anything runs: one that parks on the object
 * meanwhile waits for its next wake-up. */
int luaws_sched_wake(lua_State *L, luaws_loop *loop, int obj_idx, int co_idx)
{
	int t = LUA_TNIL, top = lua_gettop(L);
	if (loop->sched_waiters_ref == LUA_NOREF) {
		lua_pushvalue(L, obj_idx); /* nothing bound: the object to the caller */
		return 1;
	}
	if (loop->nwaiting) {
		lua_Integer key = waiter_key(L, obj_idx);
		lua_rawgeti(L, LUA_REGISTRYINDEX, loop->sched_waiters_ref);
		t = lua_rawgeti(L, -1, key);
		if (t != LUA_TNIL) {
			lua_pushnil(L);
			lua_rawseti(L, -3, key); /* waiters[obj] = nil */
			loop->nwaiting--;
		}
	}
	if (!lua_isnil(L, co_idx))
		luaws_sched_resume(L, loop, co_idx, 0);
	if (t == LUA_TTHREAD) {
		luaws_sched_resume(L, loop, top + 2, 0);
	} else if (t == LUA_TTABLE) {
		lua_replace(L, top + 1);
		lua_settop(L, top + 1);
		return 1;
	}
	lua_settop(L, top);
	return 0;
}

/* Park L, the coroutine the scheduler runs, on the armed object of this slot (a
 * reader in conn_fast.c: at most one per object): yields, never returns; resumed, it
 * goes on in k. Cheaper than by object: the slot is an array index. */
int luaws_sched_park_slot(lua_State *L, luaws_loop *loop, int slot, lua_KFunction k)
{
	if (loop->current != L)
		return luaL_error(L, "luaws: park outside the scheduler's coroutine");
	lua_rawgeti(L, LUA_REGISTRYINDEX, loop->parked_ref);
	lua_pushthread(L);
	lua_rawseti(L, -2, slot);
	lua_pop(L, 1);
	lua_pushlightuserdata(L, PARKED);
	return lua_yieldk(L, 1, 0, k);
}

/* core.sched_bind(waiters, finish): the table the waiters are kept in (object's key ->
 * the coroutine, or a list of them) and sched.lua's finish(co, ok, value). */
static int l_sched_bind(lua_State *L)
{
	luaws_loop *loop = upvalue_loop(L);
	luaL_checktype(L, 1, LUA_TTABLE);
	luaL_checktype(L, 2, LUA_TFUNCTION);
	lua_settop(L, 2);
	luaL_unref(L, LUA_REGISTRYINDEX, loop->sched_finish_ref);
	loop->sched_finish_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	luaL_unref(L, LUA_REGISTRYINDEX, loop->sched_waiters_ref);
	loop->sched_waiters_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	return 0;
}

/* core.run(co, ...): resume co with the arguments, as the coroutine the scheduler
 * runs (see luaws_sched_resume). */
static int l_run(lua_State *L)
{
	luaws_loop *loop = bound_loop(L);
	luaL_checktype(L, 1, LUA_TTHREAD);
	luaws_sched_resume(L, loop, 1, lua_gettop(L) - 1);
	return 0;
}

/* core.current() -> co | nil, busy: the calling coroutine when it is the one the
 * scheduler runs (it may park); else nil, and whether the scheduler is running one
 * (then the caller is a coroutine of the program's own inside it). */
static int l_current(lua_State *L)
{
	luaws_loop *loop = upvalue_loop(L);
	if (loop->current == L) {
		lua_pushthread(L);
		return 1;
	}
	lua_pushnil(L);
	lua_pushboolean(L, loop->current != NULL);
	return 2;
}

/* core.park(obj) -> the values the coroutine is resumed with: park the calling
 * coroutine (the one the scheduler runs) until obj, armed, is woken. It becomes the
 * object's waiter (the second makes a list), and yields. */
static int l_park(lua_State *L)
{
	luaws_loop *loop = bound_loop(L);
	lua_Integer key;
	luaL_checktype(L, 1, LUA_TUSERDATA);
	lua_settop(L, 1);
	if (loop->current != L)
		return luaL_error(L, "luaws: park outside the scheduler's coroutine");
	key = waiter_key(L, 1);
	lua_rawgeti(L, LUA_REGISTRYINDEX, loop->sched_waiters_ref);
	switch (lua_rawgeti(L, -1, key)) {
	case LUA_TNIL: /* the one waiter */
		lua_pop(L, 1);
		lua_pushthread(L);
		lua_rawseti(L, -2, key);
		loop->nwaiting++;
		break;
	case LUA_TTHREAD: /* the second: a list of them */
		lua_createtable(L, 2, 0);
		lua_insert(L, -2);
		lua_rawseti(L, -2, 1);
		lua_pushthread(L);
		lua_rawseti(L, -2, 2);
		lua_rawseti(L, -2, key);
		break;
	default: /* more */
		lua_pushthread(L);
		lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
	lua_pushlightuserdata(L, PARKED);
	return lua_yield(L, 1);
}

/* core.forget(obj): nobody waits on obj any more (a stopped ticker) */
static int l_forget(lua_State *L)
{
	luaws_loop *loop = upvalue_loop(L);
	luaL_checkany(L, 1);
	lua_settop(L, 1);
	if (loop->sched_waiters_ref == LUA_NOREF)
		return 0;
	if (lua_type(L, 1) != LUA_TUSERDATA)
		return 0;
	lua_rawgeti(L, LUA_REGISTRYINDEX, loop->sched_waiters_ref);
	if (lua_rawgeti(L, 2, waiter_key(L, 1)) != LUA_TNIL) {
		lua_pushnil(L);
		lua_rawseti(L, 2, waiter_key(L, 1));
		loop->nwaiting--;
	}
	return 0;
}

static const luaL_Reg sched_functions[] = {
	{"forget", l_forget},
	{"sched_bind", l_sched_bind},
	{"run", l_run},
	{"current", l_current},
	{"park", l_park},
	{NULL, NULL},
};

/* Into the core table below the loop's userdata (popped: the functions' upvalue). */
void luaws_sched_open(lua_State *L)
{
	luaL_setfuncs(L, sched_functions, 1);
	lua_pushlightuserdata(L, PARKED);
	lua_setfield(L, -2, "PARKED");
}
