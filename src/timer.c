/*
 * luaws.Timer: a libuv timer a coroutine can wait on (Sleep, After, NewTicker and
 * deadlines are built on it in Lua). The uv handle lives in C memory so that it can
 * outlive its userdata until libuv has closed it.
 */
#include <stdlib.h>

#include "luaws.h"

typedef struct luaws_timer {
	luaws_loop *loop;
	uv_timer_t *handle; /* handle->data points back here; NULL after __gc */
	luaws_waitable waitable;
	lua_Integer fired;  /* expirations not yet taken by _take */
} luaws_timer;

static luaws_timer *check_timer(lua_State *L)
{
	luaws_timer *t = luaws_check(L, 1, LUAWS_TIMER_MT);
	if (!t->handle)
		luaL_argerror(L, 1, "timer is closed");
	return t;
}

static void on_timer(uv_timer_t *h)
{
	luaws_timer *t = h->data;
	t->fired++;
	luaws_wake(t->loop, &t->waitable);
}

/* core.timer() -> timer */
static int l_timer(lua_State *L)
{
	luaws_loop *loop = luaws_loop_get(L);
	luaws_timer *t = lua_newuserdatauv(L, sizeof(*t), 0);
	t->loop = loop;
	t->fired = 0;
	t->waitable.slot = 0;
	t->handle = malloc(sizeof(*t->handle));
	if (!t->handle)
		return luaL_error(L, "luaws: out of memory");
	uv_timer_init(loop->uv, t->handle);
	t->handle->data = t;
	luaL_setmetatable(L, LUAWS_TIMER_MT);
	return 1;
}

/* timer:_start(seconds [, repeat_seconds]): a time too far away (math.huge) never
 * comes: such a timer is not started, and such an interval does not repeat. */
static int l_start(lua_State *L)
{
	luaws_timer *t = check_timer(L);
	double after = luaws_check_seconds(L, 2), every = luaws_opt_seconds(L, 3, 0);
	uint64_t after_ms = luaws_ms(after), every_ms = luaws_ms(every);
	if (every < 0)
		return luaL_argerror(L, 3, "negative interval");
	t->fired = 0;
	if (after_ms == LUAWS_NEVER) {
		uv_timer_stop(t->handle);
		return 0;
	}
	/* from now, not from libuv's cached time of the last loop turn (a goroutine that
	 * runs before the loop turns again would sleep too short) */
	uv_update_time(t->handle->loop);
	uv_timer_start(t->handle, on_timer, after_ms, every_ms == LUAWS_NEVER ? 0 : every_ms);
	return 0;
}

static int l_stop(lua_State *L)
{
	luaws_timer *t = check_timer(L);
	uv_timer_stop(t->handle);
	t->fired = 0;
	return 0;
}

/* timer:_take() -> number of expirations since the last call */
static int l_take(lua_State *L)
{
	luaws_timer *t = check_timer(L);
	lua_pushinteger(L, t->fired);
	t->fired = 0;
	return 1;
}

static int l_arm(lua_State *L)
{
	luaws_timer *t = check_timer(L);
	luaws_arm(L, t->loop, &t->waitable, 1);
	return 0;
}

static int l_disarm(lua_State *L)
{
	luaws_timer *t = check_timer(L);
	luaws_unarm(L, t->loop, &t->waitable);
	return 0;
}

static void closed(uv_handle_t *h)
{
	free(h);
}

static int l_tostring(lua_State *L)
{
	luaws_timer *t = luaws_check(L, 1, LUAWS_TIMER_MT);
	lua_pushfstring(L, "luaws.Timer: %p (%s)", (void *)t,
			!t->handle ? "closed" : uv_is_active((uv_handle_t *)t->handle) ? "running" :
											 "stopped");
	return 1;
}

/* Also __close. */
static int l_gc(lua_State *L)
{
	luaws_timer *t = luaws_check(L, 1, LUAWS_TIMER_MT);
	if (t->handle) {
		t->handle->data = NULL;
		uv_close((uv_handle_t *)t->handle, closed);
		t->handle = NULL;
	}
	return 0;
}

static const luaL_Reg timer_methods[] = {
	{"_start", l_start},
	{"_stop", l_stop},
	{"_take", l_take},
	{"_arm", l_arm},
	{"_disarm", l_disarm},
	{NULL, NULL},
};

int luaws_timer_open(lua_State *L)
{
	luaws_new_type(L, LUAWS_TIMER_MT, timer_methods, l_tostring, l_gc, l_gc);
	lua_pushcfunction(L, l_timer);
	lua_setfield(L, -2, "timer");
	return 0;
}
