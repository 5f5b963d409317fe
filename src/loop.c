/*
 * The event loop of one Lua state: a libuv loop (luaws's own, or luv's, shared: see
 * luv_adopt), the lws context that runs on it (created on first use), its steps (how
 * long one may wait, and the brief poll before it sleeps: spin), the hand-over of woken
 * objects to the Lua scheduler, and the protected call through which lws callbacks
 * enter Lua.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <signal.h>
#include <sys/prctl.h>

#include "luaws.h"

/* luv's C header (lua-luv-dev): only its luv_ctx_t is used, luaws does not link luv.
 * -DLUAWS_NO_LUV builds as without it. */
#if defined(__has_include) && !defined(LUAWS_NO_LUV)
#if __has_include(<luv/luv.h>)
/* its luv_acquire_vm is declared "()", which -Wstrict-prototypes refuses */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <luv/luv.h>
#pragma GCC diagnostic pop
#define LUAWS_WITH_LUV 1
#endif
#endif

static const char loop_key = 'L';

luaws_loop *luaws_loop_get(lua_State *L)
{
	luaws_loop *loop;
	lua_rawgetp(L, LUA_REGISTRYINDEX, &loop_key);
	loop = lua_touserdata(L, -1);
	lua_pop(L, 1);
	if (!loop || loop->closing)
		luaL_error(L, "luaws: the event loop of this Lua state is closed");
	return loop;
}

int luaws_fail(lua_State *L, const char *msg)
{
	luaL_pushfail(L);
	lua_pushstring(L, msg);
	return 2;
}

/* Arm w (the userdata at idx) so that luaws_wake delivers it to the scheduler. The room
 * for its wake-up is reserved here, where failing is allowed, so luaws_wake never
 * allocates inside an lws callback: every armed object and every one already woken
 * (outside a step: a passed deadline, a close) has a slot until the next step empties
 * the array. */
void luaws_arm(lua_State *L, luaws_loop *loop, luaws_waitable *w, int idx)
{
	size_t need, cap;
	int *p, slot;
	if (w->slot)
		return;
	need = loop->narmed + loop->nwoken + 1;
	if (need > loop->cap_woken) {
		cap = loop->cap_woken ? loop->cap_woken : 64;
		while (cap < need)
			cap *= 2;
		p = realloc(loop->woken, cap * sizeof(*p));
		if (!p)
			luaL_error(L, "luaws: out of memory");
		loop->woken = p;
		loop->cap_woken = cap;
	}
	if (loop->nfree) {
		slot = loop->free_slots[--loop->nfree];
	} else {
		/* a new slot, and room to free it later */
		if (loop->nslots == loop->cap_slots) {
			int ncap = loop->cap_slots ? 2 * loop->cap_slots : 64;
			p = realloc(loop->free_slots, (size_t)ncap * sizeof(*p));
			if (!p)
				luaL_error(L, "luaws: out of memory");
			loop->free_slots = p;
			loop->cap_slots = ncap;
		}
		slot = ++loop->nslots;
	}
	idx = lua_absindex(L, idx);
	lua_rawgeti(L, LUA_REGISTRYINDEX, loop->armed_ref);
	lua_pushvalue(L, idx);
	lua_rawseti(L, -2, slot);
	lua_pop(L, 1);
	w->slot = slot;
	loop->narmed++;
}

/* Empty a slot of the armed table (at index t of L's stack). */
static void free_slot(lua_State *L, luaws_loop *loop, int t, int slot)
{
	lua_pushnil(L);
	lua_rawseti(L, t, slot);
	loop->free_slots[loop->nfree++] = slot;
}

void luaws_wake(luaws_loop *loop, luaws_waitable *w)
{
	if (!w->slot || loop->closing)
		return;
	loop->woken[loop->nwoken++] = w->slot;
	w->slot = 0;
	loop->narmed--;
	/* woken by a timer before the poll phase: do not let this iteration sleep */
	if (loop->stepping)
		uv_stop(loop->uv);
}

/* Drop an armed reference without waking (the object is going away). */
void luaws_unarm(lua_State *L, luaws_loop *loop, luaws_waitable *w)
{
	if (!w->slot)
		return;
	lua_rawgeti(L, LUA_REGISTRYINDEX, loop->parked_ref);
	lua_pushnil(L);
	lua_rawseti(L, -2, w->slot);
	lua_pop(L, 1);
	lua_rawgeti(L, LUA_REGISTRYINDEX, loop->armed_ref);
	free_slot(L, loop, lua_gettop(L), w->slot);
	lua_pop(L, 1);
	w->slot = 0;
	loop->narmed--;
}

/* lws was called from outside its own callbacks: it must look at its timers again
 * before the loop sleeps (see ../shared/DESIGN.md §5). lws's libuv glue does that in
 * an idle callback, which every socket event it handles starts again; starting it
 * ourselves does the same without the eventfd round trip of lws_cancel_service (two
 * syscalls per step). lws_cancel_service is the fallback if the handle was not found. */
void luaws_touched_lws(luaws_loop *loop)
{
	if (loop->closing)
		return;
	if (loop->lws_idle && loop->lws_idle->idle_cb)
		uv_idle_start(loop->lws_idle, loop->lws_idle->idle_cb);
	else
		loop->need_cancel = 1;
	if (loop->low_idle && loop->low_idle->idle_cb)
		uv_idle_start(loop->low_idle, loop->low_idle->idle_cb);
	else if (loop->low_ctx)
		loop->need_cancel = 1;
}

void luaws_defer(luaws_loop *loop, luaws_deferred *d)
{
	d->next = loop->deferred;
	loop->deferred = d;
}

/* Run the deferred work (in the order it was deferred). */
static void run_deferred(luaws_loop *loop)
{
	luaws_deferred *d = loop->deferred, *rev = NULL, *next;
	loop->deferred = NULL;
	for (; d; d = next) {
		next = d->next;
		d->next = rev;
		rev = d;
	}
	for (d = rev; d; d = next) {
		next = d->next;
		d->run(loop, d);
	}
}

/* The one idle handle on our loop is lws's (luaws has none of its own). */
static void find_lws_idle(uv_handle_t *h, void *arg)
{
	luaws_loop *loop = arg;
	if (h->type == UV_IDLE && uv_is_active(h) && !loop->lws_idle)
		loop->lws_idle = (uv_idle_t *)h;
}

/* The idle handles active before the low context was created; after, the new one is
 * its. */
struct idle_walk {
	uv_handle_t *before[16];
	int n;
	uv_idle_t *found;
};

static void list_idles(uv_handle_t *h, void *arg)
{
	struct idle_walk *w = arg;
	if (h->type == UV_IDLE && uv_is_active(h) && w->n < 16)
		w->before[w->n++] = h;
}

static void find_new_idle(uv_handle_t *h, void *arg)
{
	struct idle_walk *w = arg;
	int i;
	if (h->type != UV_IDLE || !uv_is_active(h) || w->found)
		return;
	for (i = 0; i < w->n; i++)
		if (w->before[i] == h)
			return;
	w->found = (uv_idle_t *)h;
}

static int traceback(lua_State *L)
{
	const char *msg = lua_tostring(L, 1);
	if (!msg && !lua_isnoneornil(L, 1))
		msg = luaL_tolstring(L, 1, NULL);
	luaL_traceback(L, L, msg, 1);
	return 1;
}

/* The one way lws and libuv callbacks enter Lua: a protected call that reports errors
 * with a traceback on stderr, so no Lua error unwinds through library frames. */
int luaws_pcall(lua_State *L, int nargs, int nresults)
{
	int base = lua_gettop(L) - nargs, status;
	lua_pushcfunction(L, traceback);
	lua_insert(L, base);
	status = lua_pcall(L, nargs, nresults, base);
	lua_remove(L, base);
	if (status != LUA_OK) {
		lwsl_err("luaws: %s\n", lua_tostring(L, -1));
		fprintf(stderr, "luaws: %s\n", lua_tostring(L, -1));
		lua_pop(L, 1);
	}
	return status;
}

/* What both lws contexts of a loop are created with: on the loop's libuv loop, no
 * listening of lws's own, the loop as the context's user data. */
static void context_info(luaws_loop *loop, struct lws_context_creation_info *info,
			 void *foreign[1])
{
	memset(info, 0, sizeof(*info));
	foreign[0] = loop->uv;
	info->foreign_loops = foreign;
	info->options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_EXPLICIT_VHOSTS |
			LWS_SERVER_OPTION_UV_NO_SIGSEGV_SIGFPE_SPIN |
			LWS_SERVER_OPTION_JUST_USE_RAW_ORIGIN;
	info->port = CONTEXT_PORT_NO_LISTEN;
	info->user = loop;
	/* the one receive buffer of the loop: a 64 KiB message and its header arrive in
	 * one read instead of two (measured: 64 KiB echo 365 -> ~900 MB/s) */
	info->pt_serv_buf_size = 256 * 1024;
}

/* Create the lws context on the loop, the first time a server or client needs it. */
int luaws_loop_context(lua_State *L, luaws_loop *loop)
{
	struct lws_context_creation_info info;
	struct lws_client_connect_info unused;
	void *foreign[1];
	(void)unused;

	if (loop->ctx)
		return 0;
	context_info(loop, &info, foreign);
	loop->ctx = luaws_create_context(loop, &info, 0, 0, &loop->max_fds);
	if (!loop->ctx)
		return luaL_error(L, "luaws: cannot create the libwebsockets context "
				     "(is libwebsockets-evlib-uv installed?)");
	uv_walk(loop->uv, find_lws_idle, loop);

	memset(&info, 0, sizeof(info));
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.protocols = luaws_protocols;
	info.vhost_name = "luaws-client";
	/* Left NULL, lws reads $http_proxy here and sends every dial through that proxy
	 * with its own CONNECT (lib/core-net/vhost.c:775 at v4.1.6), loopback included;
	 * Dialer.Proxy decides instead. ":0" parses to no proxy (port 0). */
	info.http_proxy_address = ":0";
	loop->vhost = lws_create_vhost(loop->ctx, &info);
	if (!loop->vhost)
		return luaL_error(L, "luaws: cannot create the client vhost");
	return 0;
}

/* Slots in the low context's table. */
#define LOW_FD_TABLE 1024

/* A second lws context for the accepted sockets whose descriptors are below
 * LOW_FD_TABLE: lws 4.1.6 as Debian builds it reads its whole descriptor table at every
 * socket close (sanity_assert_no_sockfd_traces, see limits.c), 128 KiB at the default
 * 16384 slots: that was half the instructions of a short WebSocket connection's server
 * side (98k of 181k), and a fifth of its CPU time. The kernel hands out the lowest free
 * descriptor, so a server with fewer than about a thousand sockets open has them all
 * here, and pays for 8 KiB; beyond, they go to the main context, as before. Servers only
 * (dialed sockets are made by lws, in the main context), and only when the main table is
 * bigger. Without it (failure, or no need) everything stays in the main context. */
void luaws_loop_low_context(luaws_loop *loop)
{
	struct lws_context_creation_info info;
	struct idle_walk walk;
	void *foreign[1];
	int table;

	if (loop->low_ctx || !loop->ctx || loop->max_fds <= LOW_FD_TABLE)
		return;
	context_info(loop, &info, foreign);
	memset(&walk, 0, sizeof(walk));
	uv_walk(loop->uv, list_idles, &walk);
	loop->low_ctx = luaws_create_context(loop, &info, LOW_FD_TABLE, 1, &table);
	if (!loop->low_ctx)
		return;
	uv_walk(loop->uv, find_new_idle, &walk);
	loop->low_idle = walk.found;

	memset(&info, 0, sizeof(info));
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.protocols = luaws_protocols;
	info.vhost_name = "luaws-low";
	info.http_proxy_address = ":0"; /* as the main vhost's */
	loop->low_vhost = lws_create_vhost(loop->low_ctx, &info);
	if (loop->low_vhost)
		loop->low_fds = table;
}

#ifdef LUAWS_WITH_LUV
/* luv (1.44, src/luv.c) keeps its luv_ctx_t in a full userdata in the registry under
 * this string key, creates it zeroed on first use, and at require "luv" takes ctx->loop
 * when it is set instead of creating a loop of its own (what luv_set_loop is for). */
#define LUV_CONTEXT_KEY "luv_context"

static luv_ctx_t *luv_ctx_get(lua_State *L)
{
	luv_ctx_t *ctx = NULL;
	lua_pushliteral(L, LUV_CONTEXT_KEY);
	if (lua_rawget(L, LUA_REGISTRYINDEX) == LUA_TUSERDATA &&
	    lua_rawlen(L, -1) == sizeof(luv_ctx_t))
		ctx = lua_touserdata(L, -1);
	lua_pop(L, 1);
	return ctx;
}

/* A program can keep the loops apart (to drive luaws from luv through BackendFd, as a
 * host that cannot share would) by setting package.loaded["luaws.own_loop"] = true
 * before require "luaws". */
static int luv_shared_refused(lua_State *L)
{
	int refused;
	luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
	lua_getfield(L, -1, "luaws.own_loop");
	refused = lua_toboolean(L, -1);
	lua_pop(L, 2);
	return refused;
}

/* One libuv loop for luaws and luv in this Lua state, whichever is loaded first. When
 * luv is loaded already, luaws runs on luv's loop (and luv closes it). */
static void luv_adopt(lua_State *L, luaws_loop *loop)
{
	luv_ctx_t *ctx;
	if (luv_shared_refused(L))
		return;
	ctx = luv_ctx_get(L);
	if (ctx && ctx->loop) {
		loop->uv = ctx->loop;
		loop->luv = ctx;
	}
}

/* Else luaws's own loop (initialised) becomes the one a later require "luv" finds in its
 * context, as if luv_set_loop had been called (and luaws closes it). */
static void luv_offer(lua_State *L, luaws_loop *loop)
{
	luv_ctx_t *ctx;
	if (luv_shared_refused(L))
		return;
	ctx = luv_ctx_get(L);
	if (!ctx) {
		lua_pushliteral(L, LUV_CONTEXT_KEY);
		ctx = lua_newuserdatauv(L, sizeof(*ctx), 1);
		memset(ctx, 0, sizeof(*ctx));
		lua_rawset(L, LUA_REGISTRYINDEX);
	}
	lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
	ctx->L = lua_tothread(L, -1); /* luv's callbacks run on the main thread */
	lua_pop(L, 1);
	ctx->loop = loop->uv;
	ctx->mode = -1;
	loop->luv = ctx;
}

/* uv.loop_mode() tells luv code whether the loop runs (and how) */
static void luv_mode(luaws_loop *loop, int mode)
{
	if (loop->luv)
		((luv_ctx_t *)loop->luv)->mode = mode;
}
#else
static void luv_adopt(lua_State *L, luaws_loop *loop)
{
	(void)L;
	(void)loop;
}

static void luv_offer(lua_State *L, luaws_loop *loop)
{
	(void)L;
	(void)loop;
}

static void luv_mode(luaws_loop *loop, int mode)
{
	(void)loop;
	(void)mode;
}
#endif

static void step_timeout(uv_timer_t *t)
{
	(void)t;
}

/* lws starts its idle handle after every socket event it handles, and libuv 1.44 decides
 * whether uv_run(UV_RUN_ONCE) may sleep before it runs idle callbacks: with the handle
 * active, the poll does not wait even though lws's callback stops the handle. A step
 * after a message would then return with nothing, and the next one sleep: one more
 * epoll_wait and one more turn of the scheduler per message on a quiet connection. So
 * the step runs lws's idle work itself first (what uv_run would run next anyway);
 * 1 when that woke an object (the caller must not sleep), else 0. */
static int run_lws_idle(luaws_loop *loop)
{
	size_t woken = loop->nwoken;
	if (loop->lws_idle && uv_is_active((uv_handle_t *)loop->lws_idle))
		loop->lws_idle->idle_cb(loop->lws_idle);
	if (loop->low_idle && uv_is_active((uv_handle_t *)loop->low_idle))
		loop->low_idle->idle_cb(loop->low_idle);
	return loop->nwoken != woken;
}

/* A step that may sleep until something happens (UV_RUN_ONCE, no timeout of its own)
 * first polls without sleeping for up to loop->spin_ns, as Go's scheduler spins before
 * it parks a thread: on a virtual machine a sleeping thread takes tens of microseconds to
 * wake up, more than the server's whole share of a short message's round trip (measured
 * here, one connection's echo: 82 us round trip sleeping, 22 us spinning). The spin ends
 * at the first event that wakes a goroutine. It is only worth its CPU when it usually
 * finds work: spin_rate follows how often it does (a moving average over about the last
 * 8 spins), and below SPIN_WORTH the step sleeps at once, spinning only once every
 * SPIN_PROBE sleeps to look again. A server whose traffic pauses longer than the window
 * stops spinning after a few spins; one whose traffic never pauses never spins long. */
#define SPIN_DEFAULT_NS 50000 /* websocket.SetBusyPoll changes it */
#define SPIN_ONE 256
#define SPIN_WORTH (SPIN_ONE * 3 / 4)
#define SPIN_PROBE 16

/* Poll for up to spin_ns: 1 when that found work (the step must not sleep after it),
 * else 0. */
static int spin(luaws_loop *loop)
{
	uint64_t until = uv_hrtime() + loop->spin_ns;
	int found = 0;
	luv_mode(loop, UV_RUN_ONCE); /* to luv this is one step that may wait */
	do {
		uv_run(loop->uv, UV_RUN_NOWAIT);
		found = loop->nwoken || loop->nosleep;
	} while (!found && uv_hrtime() < until);
	loop->spin_rate = loop->spin_rate - loop->spin_rate / 8 + (found ? SPIN_ONE / 8 : 0);
	loop->spin_probe = 0;
	return found;
}

/* Whether a step that may sleep polls first, and found work doing so (1), or sleeps
 * (0): polls that rarely find work are tried again only once in SPIN_PROBE sleeps. */
static int spin_first(luaws_loop *loop)
{
	if (!loop->spin_ns)
		return 0;
	if (loop->spin_rate < SPIN_WORTH && ++loop->spin_probe < SPIN_PROBE)
		return 0;
	return spin(loop);
}

/* core.step(timeout, ready) -> n: run the loop once, waiting at most timeout seconds
 * (nil, negative or math.huge: until something happens), then store the woken objects
 * in ready[1..n]. -1 instead when it would wait forever: no timeout and nothing that
 * could ever wake the loop (no socket, timer, request, signal watcher or deferred work). */
static int l_step(lua_State *L)
{
	luaws_loop *loop = luaws_loop_get(L);
	double timeout = luaws_opt_seconds(L, 1, -1);
	uint64_t timeout_ms = luaws_ms(timeout);
	uv_run_mode mode = UV_RUN_ONCE;
	lua_State *outer = loop->L;
	size_t i, n, m = 0;
	int batching, timed = 0;

	luaL_checktype(L, 2, LUA_TTABLE);
	if (loop->stepping)
		return luaL_error(L, "luaws: the loop is already running (blocking call from "
				     "inside a callback?)");
	if (loop->need_cancel && loop->ctx) {
		loop->need_cancel = 0;
		lws_cancel_service(loop->ctx);
		if (loop->low_ctx)
			lws_cancel_service(loop->low_ctx);
	}
	if (loop->nwoken || timeout == 0)
		mode = UV_RUN_NOWAIT;
	else if ((timeout < 0 || timeout_ms == LUAWS_NEVER) && !uv_loop_alive(loop->uv) &&
		 !loop->deferred && !loop->need_cancel) {
		lua_pushinteger(L, -1);
		return 1;
	}
	else if (timeout > 0 && timeout_ms != LUAWS_NEVER) {
		uv_timer_start(&loop->step_timer, step_timeout, timeout_ms, 0);
		timed = 1;
	}

	/* what the coroutines wrote goes out before the loop may sleep; inside lws's
	 * callbacks frames are written at once */
	batching = luaws_batch_set(loop, 0);
	if (loop->deferred)
		run_deferred(loop);
	loop->stepping = 1;
	loop->L = L;
	loop->nosleep = 0;
	if (mode == UV_RUN_ONCE && run_lws_idle(loop))
		mode = UV_RUN_NOWAIT; /* it woke someone: uv_stop made uv_run a no-op */
	if (mode == UV_RUN_NOWAIT || timed) {
		luv_mode(loop, (int)mode);
		uv_run(loop->uv, mode);
	} else if (!spin_first(loop)) {
		luv_mode(loop, UV_RUN_ONCE);
		uv_run(loop->uv, UV_RUN_ONCE);
	}
	luv_mode(loop, -1);
	loop->L = outer;
	loop->stepping = 0;
	if (loop->deferred) /* collections during the callbacks */
		run_deferred(loop);
	luaws_batch_set(loop, batching);
	if (timed)
		uv_timer_stop(&loop->step_timer);

	/* the woken objects onto the stack (what their coroutines wake meanwhile is for
	 * the next step), then each one's waiter resumed; those with several waiters go
	 * to ready[1..m], for the Lua scheduler */
	n = loop->nwoken;
	lua_settop(L, 2);
	if (n) {
		if (n > INT_MAX / 2 - 16 || !lua_checkstack(L, 2 * (int)n + 16))
			return luaL_error(L, "luaws: out of memory");
		lua_rawgeti(L, LUA_REGISTRYINDEX, loop->armed_ref);
		lua_rawgeti(L, LUA_REGISTRYINDEX, loop->parked_ref);
		for (i = 0; i < n; i++) {
			int slot = loop->woken[i];
			lua_rawgeti(L, 3, slot);            /* the object */
			if (lua_rawgeti(L, 4, slot) != LUA_TNIL) { /* who parked in C */
				lua_pushnil(L);
				lua_rawseti(L, 4, slot);
			}
			free_slot(L, loop, 3, slot);
		}
		loop->nwoken = 0;
		lua_remove(L, 3);
		lua_remove(L, 3);
	}
	for (i = 0; i < n; i++)
		if (luaws_sched_wake(L, loop, 3 + 2 * (int)i, 4 + 2 * (int)i))
			lua_rawseti(L, 2, (lua_Integer)++m);
	lua_pushinteger(L, (lua_Integer)m);
	return 1;
}

/* core.batch(on): batch small server frames until core.batch(false), which sends them
 * (the scheduler brackets each step with it; see conn.c). */
/* core.nosleep(): a coroutine became ready inside a libuv callback that is not luaws's
 * (a luv handle's, through websocket.Await or a channel): the step that runs it must not
 * sleep in the poll phase first. */
/* core.set_busy_poll(seconds) -> the previous value: how long a step may poll before it
 * sleeps (see spin); 0 turns it off. The Lua side checks the argument. */
static int l_set_busy_poll(lua_State *L)
{
	luaws_loop *loop = luaws_loop_get(L);
	double s = luaL_checknumber(L, 1);
	lua_pushnumber(L, (double)loop->spin_ns / 1e9);
	loop->spin_ns = (uint64_t)(s * 1e9 + 0.5);
	loop->spin_rate = 0;
	return 1;
}

static int l_nosleep(lua_State *L)
{
	luaws_loop *loop = luaws_loop_get(L);
	if (loop->stepping) {
		loop->nosleep = 1;
		uv_stop(loop->uv);
	}
	return 0;
}

static int l_batch(lua_State *L)
{
	luaws_batch_set(luaws_loop_get(L), lua_toboolean(L, 1));
	return 0;
}

/* core.pending() -> true when objects were woken outside a step (the next step must not
 * sleep). */
static int l_pending(lua_State *L)
{
	luaws_loop *loop = luaws_loop_get(L);
	lua_pushboolean(L, loop->nwoken > 0);
	return 1;
}

static int l_now(lua_State *L)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	lua_pushnumber(L, (double)ts.tv_sec + ts.tv_nsec / 1e9);
	return 1;
}

static int l_monotime(lua_State *L)
{
	lua_pushnumber(L, (double)uv_hrtime() / 1e9);
	return 1;
}

/* For hosts that run their own loop: wait until this fd is readable or backend_timeout
 * seconds pass, then call step(0). Take the timeout right before sleeping. */
static int l_backend_fd(lua_State *L)
{
	luaws_loop *loop = luaws_loop_get(L);
	lua_pushinteger(L, uv_backend_fd(loop->uv));
	return 1;
}

static int l_backend_timeout(lua_State *L)
{
	luaws_loop *loop = luaws_loop_get(L);
	int ms;
	if (loop->need_cancel || loop->nwoken || loop->deferred) {
		lua_pushnumber(L, 0);
		return 1;
	}
	/* nothing active (nothing started yet, or all done): nothing can happen until
	 * the program starts something, which it does from Lua, before asking again.
	 * libuv says 0 ("do not wait") there, and a host that believes it spins. */
	ms = uv_loop_alive(loop->uv) ? uv_backend_timeout(loop->uv) : -1;
	lua_pushnumber(L, ms < 0 ? -1 : ms / 1000.0);
	return 1;
}

static int l_live_conns(lua_State *L)
{
	luaws_loop *loop = luaws_loop_get(L);
	lua_pushinteger(L, loop->live_conns);
	return 1;
}

static void close_leftover(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

static const luaL_Reg no_methods[] = {{NULL, NULL}};

static int loop_tostring(lua_State *L)
{
	luaws_loop *loop = luaws_check(L, 1, LUAWS_LOOP_MT);
	lua_pushfstring(L, "luaws.Loop: %p (%s, %d connections)", (void *)loop,
			loop->closing ? "closed" : "running", (int)loop->live_conns);
	return 1;
}

static void count_closing(uv_handle_t *h, void *arg)
{
	if (uv_is_closing(h))
		(*(int *)arg)++;
}

/* Turn the loop until no handle is left half closed. Not until the loop ends: on a loop
 * shared with luv, luv's handles may still be active (luv closes them itself). */
static void run_closing(uv_loop_t *uv)
{
	int n;
	do {
		uv_run(uv, UV_RUN_NOWAIT);
		n = 0;
		uv_walk(uv, count_closing, &n);
	} while (n > 0);
}

/* Shut down: two lws_context_destroy calls with loop runs between them (lws on a
 * foreign loop), then close whatever handles are left, then the loop, when luaws
 * created it; on luv's loop, luv's own shutdown (later: its loop was made before
 * luaws's) closes the rest and the loop. */
static int loop_gc(lua_State *L)
{
	luaws_loop *loop = lua_touserdata(L, 1);
	if (loop->closing)
		return 0;
	luaws_batch_set(loop, 0);
	loop->closing = 1;
	loop->lws_idle = loop->low_idle = NULL; /* lws frees them with their contexts */
	if (loop->ctx) {
		if (loop->low_ctx)
			lws_context_destroy(loop->low_ctx);
		lws_context_destroy(loop->ctx);
		/* let lws's handles finish closing: their close callbacks live in the evlib
		 * plugin, which the second destroy unloads */
		run_closing(loop->uv);
		if (loop->low_ctx)
			lws_context_destroy(loop->low_ctx);
		lws_context_destroy(loop->ctx);
		loop->ctx = loop->low_ctx = NULL;
	}
	run_deferred(loop); /* after lws closed the sockets they mention */
	uv_close((uv_handle_t *)&loop->step_timer, NULL);
	uv_close((uv_handle_t *)&loop->tls_sweep, NULL);
	run_closing(loop->uv);
	if (loop->owns_uv) {
		uv_walk(loop->uv, close_leftover, NULL);
		uv_run(loop->uv, UV_RUN_DEFAULT);
		uv_loop_close(loop->uv);
	}
	free(loop->woken);
	free(loop->free_slots);
	luaws_buf_free(&loop->scratch);
	luaws_inbox_pool_free(&loop->rx_pool);
	luaws_pmd_pool_free(loop);
	luaws_batch_free(loop);
	return 0;
}


/* core._inject_fault("request"): a test-only hook. The next Request this loop creates
 * fails as if out of memory (spec/issue9_defects_spec.lua), so the refusal path runs. */
static int l_inject_fault(lua_State *L)
{
	luaws_loop *loop = luaws_loop_get(L);
	static const char *const faults[] = {"request", NULL};
	luaL_checkoption(L, 1, NULL, faults);
	loop->fault_request = 1;
	return 0;
}

static const luaL_Reg core_functions[] = {
	{"_inject_fault", l_inject_fault},
	{"step", l_step},
	{"batch", l_batch},
	{"nosleep", l_nosleep},
	{"set_busy_poll", l_set_busy_poll},
	{"pending", l_pending},
	{"now", l_now},
	{"monotime", l_monotime},
	{"backend_fd", l_backend_fd},
	{"backend_timeout", l_backend_timeout},
	{"live_conns", l_live_conns},
	{NULL, NULL},
};

int luaws_loop_open(lua_State *L)
{
	luaws_loop *loop;

	if (lua_rawgetp(L, LUA_REGISTRYINDEX, &loop_key) == LUA_TNIL) {
		lua_pop(L, 1);
		loop = lua_newuserdatauv(L, sizeof(*loop), 0);
		memset(loop, 0, sizeof(*loop));
		luv_adopt(L, loop);
		if (!loop->uv) {
			if (uv_loop_init(&loop->own_uv))
				return luaL_error(L, "luaws: cannot create the libuv loop");
			loop->uv = &loop->own_uv;
			loop->owns_uv = 1;
			luv_offer(L, loop);
		}
		uv_timer_init(loop->uv, &loop->step_timer);
		loop->spin_ns = SPIN_DEFAULT_NS;
		uv_unref((uv_handle_t *)&loop->step_timer);
		uv_timer_init(loop->uv, &loop->tls_sweep);
		uv_unref((uv_handle_t *)&loop->tls_sweep);
		lua_newtable(L);
		loop->armed_ref = luaL_ref(L, LUA_REGISTRYINDEX);
		lua_newtable(L);
		loop->parked_ref = luaL_ref(L, LUA_REGISTRYINDEX);
		if (luaws_batch_new(loop))
			return luaL_error(L, "luaws: out of memory");
		loop->L = L;
		luaws_new_type(L, LUAWS_LOOP_MT, no_methods, loop_tostring, loop_gc, NULL);
		luaL_setmetatable(L, LUAWS_LOOP_MT);
		loop->sched_waiters_ref = loop->sched_finish_ref = LUA_NOREF;
		lua_pushvalue(L, -1);
		lua_rawsetp(L, LUA_REGISTRYINDEX, &loop_key);
	}
	luaws_sched_open(L); /* pops the loop */
	luaL_setfuncs(L, core_functions, 0);
	return 0;
}
