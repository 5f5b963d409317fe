/*
 * luaws.Signal: delivery of one POSIX signal (SIGINT, SIGTERM, ...) through a libuv
 * signal watcher, as an object a coroutine can wait on (websocket.Notify).
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "luaws.h"

typedef struct luaws_signal {
	luaws_loop *loop;
	uv_signal_t *handle;
	luaws_waitable waitable;
	lua_Integer received;
} luaws_signal;

static const struct {
	const char *name;
	int signum;
} signal_names[] = {
	{"SIGINT", SIGINT}, {"SIGTERM", SIGTERM}, {"SIGHUP", SIGHUP},
	{"SIGQUIT", SIGQUIT}, {"SIGUSR1", SIGUSR1}, {"SIGUSR2", SIGUSR2},
};

static void on_signal(uv_signal_t *h, int signum)
{
	luaws_signal *s = h->data;
	(void)signum;
	s->received++;
	luaws_wake(s->loop, &s->waitable);
}

/* core.signal(name) -> signal: starts catching the signal. */
static int l_signal(lua_State *L)
{
	luaws_loop *loop = luaws_loop_get(L);
	const char *name = luaL_checkstring(L, 1);
	int signum = 0;
	size_t i;
	luaws_signal *s;

	for (i = 0; i < sizeof(signal_names) / sizeof(*signal_names); i++)
		if (!strcmp(name, signal_names[i].name))
			signum = signal_names[i].signum;
	if (!signum)
		return luaL_argerror(L, 1, "unknown signal name");
	s = lua_newuserdatauv(L, sizeof(*s), 0);
	s->loop = loop;
	s->received = 0;
	s->waitable.slot = 0;
	s->handle = malloc(sizeof(*s->handle));
	if (!s->handle)
		return luaL_error(L, "luaws: out of memory");
	uv_signal_init(loop->uv, s->handle);
	s->handle->data = s;
	luaL_setmetatable(L, LUAWS_SIGNAL_MT);
	/* referenced: a wait for nothing but a signal polls for it (libuv's run does not
	 * poll at all when only unreferenced handles are left) */
	uv_signal_start(s->handle, on_signal, signum);
	return 1;
}

static luaws_signal *check_signal(lua_State *L)
{
	luaws_signal *s = luaws_check(L, 1, LUAWS_SIGNAL_MT);
	if (!s->handle)
		luaL_argerror(L, 1, "signal watcher is closed");
	return s;
}

/* sig:_take() -> deliveries since the last call */
static int l_take(lua_State *L)
{
	luaws_signal *s = check_signal(L);
	lua_pushinteger(L, s->received);
	s->received = 0;
	return 1;
}

static int l_arm(lua_State *L)
{
	luaws_signal *s = check_signal(L);
	luaws_arm(L, s->loop, &s->waitable, 1);
	return 0;
}

static void closed(uv_handle_t *h)
{
	free(h);
}

static int l_tostring(lua_State *L)
{
	luaws_signal *s = luaws_check(L, 1, LUAWS_SIGNAL_MT);
	lua_pushfstring(L, "luaws.Signal: %p (%s)", (void *)s, s->handle ? "catching" : "stopped");
	return 1;
}

/* sig:_stop(): stop catching; the default action applies again. Also __gc, __close. */
static int l_stop(lua_State *L)
{
	luaws_signal *s = luaws_check(L, 1, LUAWS_SIGNAL_MT);
	if (s->handle) {
		s->handle->data = NULL;
		uv_close((uv_handle_t *)s->handle, closed);
		s->handle = NULL;
	}
	return 0;
}

static const luaL_Reg signal_methods[] = {
	{"_take", l_take},
	{"_arm", l_arm},
	{"_stop", l_stop},
	{NULL, NULL},
};

int luaws_signal_open(lua_State *L)
{
	luaws_new_type(L, LUAWS_SIGNAL_MT, signal_methods, l_tostring, l_stop, l_stop);
	lua_pushcfunction(L, l_signal);
	lua_setfield(L, -2, "signal");
	return 0;
}
