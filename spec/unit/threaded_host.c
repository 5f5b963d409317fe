/* Test only, never installed: a host process with a second thread, for the spec of
 * issue 11's "luaws changes no process-wide state unless asked" (spec/fd_tables_spec.lua).
 * The second thread reads the process's soft limit on open files in a loop and keeps the
 * lowest value it saw, while the main thread runs a Lua script (argv[1]) in a fresh Lua
 * state with the standard libraries. Prints "watched <reads> <lowest soft limit>" after
 * the script, and exits with the script's status (0 when it ran without error).
 *
 * Build: make test (-> build/threaded-host). Usage: threaded-host script.lua */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <sys/resource.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

struct watch {
	int stop; /* set by the main thread (atomic) */
	unsigned long reads;
	rlim_t lowest;
};

static void *watch_limit(void *arg)
{
	struct watch *w = arg;
	struct rlimit rl;

	while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < w->lowest)
			w->lowest = rl.rlim_cur;
		w->reads++;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	struct watch w = {0, 0, RLIM_INFINITY};
	pthread_t watcher;
	lua_State *L;
	int status;

	if (argc != 2) {
		fprintf(stderr, "usage: %s script.lua\n", argv[0]);
		return 2;
	}
	if (pthread_create(&watcher, NULL, watch_limit, &w) != 0) {
		perror("pthread_create");
		return 2;
	}
	L = luaL_newstate();
	luaL_openlibs(L);
	status = luaL_dofile(L, argv[1]);
	if (status != LUA_OK)
		fprintf(stderr, "threaded-host: %s\n", lua_tostring(L, -1));
	lua_close(L);
	__atomic_store_n(&w.stop, 1, __ATOMIC_RELEASE);
	pthread_join(watcher, NULL);
	printf("watched %lu %llu\n", w.reads, (unsigned long long)w.lowest);
	return status == LUA_OK ? 0 : 1;
}
