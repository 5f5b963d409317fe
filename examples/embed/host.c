/* A C program with its own epoll loop that embeds Lua 5.4 and luaws: two independent
 * Lua states, each running luaws's echo_pair (an echo server and a client goroutine that
 * sends `count` messages with a websocket.Sleep(gap) after each), driven by one epoll
 * loop in one process. Exits 0 once both are done and both clients saw every echo.
 *
 * The protocol, per Lua state (see docs/API.md, "Embedding"):
 *   - watch websocket.BackendFd() for EPOLLIN (it is itself an epoll fd: level-triggered
 *     is right, and it stays the same for the life of the state);
 *   - right before sleeping, ask websocket.BackendTimeout(): seconds until luaws needs a
 *     turn even if its fd stays quiet, -1 for "only when the fd is readable", 0 for "now";
 *   - after the wait, call websocket.Step(0) for each state whose fd was readable or whose
 *     timeout has passed.
 * Lua is only ever entered through lua_pcall from here, and never from inside luaws.
 *
 * Build: make embed (-> build/embed-host). Run from the repository root:
 *   build/embed-host [count [gap]]
 * The Lua modules are found relative to the executable: <dir>/../lua, <dir>/../examples/embed
 * for echo_pair.lua, and luaws.core in <dir> itself. */
#define _GNU_SOURCE
#include <errno.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#define NSTATES 2

struct host_state {
	lua_State *L;
	int fd;          /* websocket.BackendFd() */
	int pair;        /* registry reference to echo_pair's result table */
	double deadline; /* monotonic time at which luaws wants a turn; <0: none */
	int done;
	long wakeups;
};

static double host_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int host_traceback(lua_State *L)
{
	luaL_traceback(L, L, lua_tostring(L, 1), 1);
	return 1;
}

/* Call websocket.<name>(arg) in state s with nres results left on the stack; on a Lua
 * error, print it and exit (a host would log it and drop that state). */
static void host_call(struct host_state *s, const char *name, int narg, double arg, int nres)
{
	lua_State *L = s->L;
	int base;
	lua_pushcfunction(L, host_traceback);
	base = lua_gettop(L);
	lua_getglobal(L, "websocket");
	lua_getfield(L, -1, name);
	lua_remove(L, -2);
	if (narg)
		lua_pushnumber(L, arg);
	if (lua_pcall(L, narg, nres, base) != LUA_OK) {
		fprintf(stderr, "websocket.%s: %s\n", name, lua_tostring(L, -1));
		exit(1);
	}
	lua_remove(L, base);
}

static const char setup_chunk[] =
	"local root, build, count, gap = ...\n"
	"package.path = root .. '/examples/embed/?.lua;' .. root .. '/lua/?.lua;' ..\n"
	"  root .. '/lua/?/init.lua;' .. package.path\n"
	"package.cpath = build .. '/?.so;' .. package.cpath\n"
	"websocket = require 'luaws'\n"
	"return require('echo_pair').start(count, gap)\n";

static void host_start(struct host_state *s, const char *root, const char *build, int count,
		       double gap)
{
	lua_State *L = luaL_newstate();
	if (!L) {
		fprintf(stderr, "out of memory\n");
		exit(1);
	}
	luaL_openlibs(L);
	s->L = L;
	lua_pushcfunction(L, host_traceback);
	if (luaL_loadbuffer(L, setup_chunk, sizeof setup_chunk - 1, "=setup") != LUA_OK) {
		fprintf(stderr, "setup: %s\n", lua_tostring(L, -1));
		exit(1);
	}
	lua_pushstring(L, root);
	lua_pushstring(L, build);
	lua_pushinteger(L, count);
	lua_pushnumber(L, gap);
	if (lua_pcall(L, 4, 1, 1) != LUA_OK) {
		fprintf(stderr, "setup: %s\n", lua_tostring(L, -1));
		exit(1);
	}
	s->pair = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_pop(L, 1); /* the traceback function */

	host_call(s, "BackendFd", 0, 0, 1);
	s->fd = (int)lua_tointeger(L, -1);
	lua_pop(L, 1);
	s->deadline = 0; /* the first Step runs what start() set up */
}

/* Ask luaws when it needs a turn, right before the loop sleeps. */
static void host_arm(struct host_state *s, double now)
{
	double t;
	host_call(s, "BackendTimeout", 0, 0, 1);
	t = lua_tonumber(s->L, -1);
	lua_pop(s->L, 1);
	s->deadline = t < 0 ? -1 : now + t;
}

static void host_step(struct host_state *s)
{
	lua_State *L = s->L;
	host_call(s, "Step", 1, 0, 0);
	s->wakeups++;
	lua_rawgeti(L, LUA_REGISTRYINDEX, s->pair);
	lua_getfield(L, -1, "done");
	s->done = lua_toboolean(L, -1);
	lua_pop(L, 2);
}

/* Print the state's result line; returns 0 when its client saw every echo. */
static int host_report(struct host_state *s, int i, int count, double elapsed)
{
	lua_State *L = s->L;
	lua_Integer echoed;
	const char *err;
	lua_rawgeti(L, LUA_REGISTRYINDEX, s->pair);
	lua_getfield(L, -1, "echoed");
	echoed = lua_tointeger(L, -1);
	lua_getfield(L, -2, "err");
	err = lua_tostring(L, -1);
	printf("state %d: echoed %lld, wakeups %ld, elapsed %.3f\n", i, (long long)echoed,
	       s->wakeups, elapsed);
	if (err)
		fprintf(stderr, "state %d: client: %s\n", i, err);
	lua_pop(L, 3);
	return err || echoed != count;
}

int main(int argc, char **argv)
{
	struct host_state states[NSTATES];
	struct epoll_event ev, ready[NSTATES];
	char *exe_copy = strdup(argv[0]), *exe_dir, root[4096], build[4096];
	int count = argc > 1 ? atoi(argv[1]) : 5;
	double gap = argc > 2 ? atof(argv[2]) : 0.05;
	double t0 = host_now(), elapsed;
	int epfd, live = NSTATES, failed = 0, i;

	exe_dir = dirname(exe_copy);
	snprintf(build, sizeof build, "%s", exe_dir);
	snprintf(root, sizeof root, "%s/..", exe_dir);

	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0) {
		perror("epoll_create1");
		return 1;
	}
	for (i = 0; i < NSTATES; i++) {
		memset(&states[i], 0, sizeof states[i]);
		host_start(&states[i], root, build, count, gap);
		ev.events = EPOLLIN;
		ev.data.u32 = (uint32_t)i;
		if (epoll_ctl(epfd, EPOLL_CTL_ADD, states[i].fd, &ev) < 0) {
			perror("epoll_ctl");
			return 1;
		}
	}

	while (live > 0) {
		double now = host_now(), next = -1;
		int timeout_ms = -1, n;
		/* step what is due: a readable fd (below) or a passed deadline */
		for (i = 0; i < NSTATES; i++) {
			struct host_state *s = &states[i];
			if (s->done || s->deadline < 0 || s->deadline > now)
				continue;
			host_step(s);
			if (s->done) {
				epoll_ctl(epfd, EPOLL_CTL_DEL, s->fd, NULL);
				live--;
			}
		}
		if (live == 0)
			break;
		/* sleep until the earliest deadline, or a readable fd */
		now = host_now();
		for (i = 0; i < NSTATES; i++) {
			struct host_state *s = &states[i];
			if (s->done)
				continue;
			host_arm(s, now);
			if (s->deadline >= 0 && (next < 0 || s->deadline < next))
				next = s->deadline;
		}
		if (next >= 0)
			timeout_ms = (int)ceil((next - now) * 1000);
		n = epoll_wait(epfd, ready, NSTATES, timeout_ms);
		if (n < 0 && errno != EINTR) {
			perror("epoll_wait");
			return 1;
		}
		for (i = 0; i < n; i++) {
			struct host_state *s = &states[ready[i].data.u32];
			if (s->done)
				continue;
			host_step(s);
			s->deadline = -1; /* stepped: asked again before the next sleep */
			if (s->done) {
				epoll_ctl(epfd, EPOLL_CTL_DEL, s->fd, NULL);
				live--;
			}
		}
	}

	elapsed = host_now() - t0;
	for (i = 0; i < NSTATES; i++) {
		failed |= host_report(&states[i], i, count, elapsed);
		lua_close(states[i].L); /* luaws closes its loop and sockets */
	}
	close(epfd);
	free(exe_copy);
	return failed;
}
