/*
 * What luaws touches outside its own objects: the size of libwebsockets' descriptor
 * table (and, only when the program asks, the process's open-files limit) and lws's log
 * level. Loading luaws changes neither.
 *
 * lws 4.1.6 sizes its fd -> wsi table from sysconf(_SC_OPEN_MAX), the soft limit on open
 * files, when its context is created (lib/core/context.c), and in Debian's build (_DEBUG)
 * reads all of it at every socket close (sanity_assert_no_sockfd_traces, unix-fds.c):
 * with a container's limit of 1048576 that is 8 MB per closed connection. Its own knob,
 * fd_limit_per_thread, is worse: below the limit it switches every fd lookup to a linear
 * scan. So luaws lowers the soft limit only while lws_create_context runs, to the table
 * size it wants, and restores it at once; the accept path refuses descriptors beyond the
 * table (server.c).
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>

#include "luaws.h"

/* Slots in lws's table unless the program or $LUAWS_MAX_FDS says otherwise. */
#define FD_TABLE_DEFAULT 16384
#define FD_TABLE_MIN 64
/* lws takes a limit above this as a misconfiguration and uses 2560 slots instead. */
#define FD_TABLE_MAX 10000000

/* Whether luaws or the program has set lws's log level (process-wide, as lws's level
 * is): luaws sets it once, at its first context, and never over the program's choice. */
static int lws_log_level_chosen;

static long fd_table_cap(const luaws_loop *loop)
{
	const char *env;
	if (loop->fd_table_cap)
		return loop->fd_table_cap;
	env = getenv("LUAWS_MAX_FDS");
	if (env && *env) {
		char *end;
		long n = strtol(env, &end, 10);
		if (!*end && n >= FD_TABLE_MIN && n <= FD_TABLE_MAX)
			return n;
	}
	return FD_TABLE_DEFAULT;
}

/* lws_create_context with a descriptor table of min(soft limit, cap) slots (cap 0: the
 * program's SetMaxOpenFiles, $LUAWS_MAX_FDS or the default); stores the size in *table.
 * The soft limit is as it was when this returns. */
struct lws_context *luaws_create_context(luaws_loop *loop,
					 struct lws_context_creation_info *info, long cap,
					 int *table)
{
	struct rlimit was, during;
	struct lws_context *ctx;
	long n;
	int lowered = 0, unset = 0;

	if (!cap)
		cap = fd_table_cap(loop);
	if (__atomic_compare_exchange_n(&lws_log_level_chosen, &unset, 1, 0, __ATOMIC_SEQ_CST,
					__ATOMIC_SEQ_CST))
		lws_set_log_level(LLL_ERR, NULL);
	/* (RLIM_INFINITY is the largest rlim_t) */
	if (getrlimit(RLIMIT_NOFILE, &was) == 0 && was.rlim_cur > (rlim_t)cap) {
		during = was;
		during.rlim_cur = (rlim_t)cap;
		lowered = setrlimit(RLIMIT_NOFILE, &during) == 0;
	}
	/* what lws will read, and its own rule for it */
	n = sysconf(_SC_OPEN_MAX);
	*table = n == -1 || n > FD_TABLE_MAX ? 2560 : (int)n;
	ctx = lws_create_context(info);
	if (lowered)
		setrlimit(RLIMIT_NOFILE, &was);
	return ctx;
}

/* core.set_max_open_files(n) -> soft limit, table size: raise the soft limit on open
 * files to n (within the hard limit; never lowered) and size lws's table at n slots, or
 * at the soft limit if that stayed lower. Before the first Listen or Dial only. */
static int l_set_max_open_files(lua_State *L)
{
	luaws_loop *loop = luaws_loop_get(L);
	lua_Integer want = luaL_checkinteger(L, 1);
	struct rlimit rl;

	if (want < FD_TABLE_MIN || want > FD_TABLE_MAX)
		return luaL_argerror(L, 1, lua_pushfstring(L, "number of files from %d to %d "
							"expected", FD_TABLE_MIN,
							FD_TABLE_MAX));
	if (loop->ctx)
		return luaL_error(L, "luaws: SetMaxOpenFiles must come before the first Listen "
				     "or Dial (libwebsockets has sized its descriptor table)");
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return luaws_fail(L, strerror(errno));
	if (rl.rlim_cur < (rlim_t)want) {
		rl.rlim_cur = rl.rlim_max < (rlim_t)want ? rl.rlim_max : (rlim_t)want;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			return luaws_fail(L, strerror(errno));
	}
	loop->fd_table_cap = (int)want;
	if (rl.rlim_cur == RLIM_INFINITY)
		lua_pushnumber(L, HUGE_VAL);
	else
		lua_pushinteger(L, (lua_Integer)rl.rlim_cur);
	lua_pushinteger(L, rl.rlim_cur < (rlim_t)want ? (lua_Integer)rl.rlim_cur : want);
	return 2;
}

/* core.set_lws_log_level(mask): lws's LLL_* bits (1 errors, 2 warnings, 4 notices, ...);
 * luaws does not set the level after this. */
static int l_set_lws_log_level(lua_State *L)
{
	lua_Integer mask = luaL_checkinteger(L, 1);
	if (mask < 0 || mask >= (1 << LLL_COUNT))
		return luaL_argerror(L, 1, "libwebsockets log level bits expected");
	__atomic_store_n(&lws_log_level_chosen, 1, __ATOMIC_SEQ_CST);
	lws_set_log_level((int)mask, NULL);
	return 0;
}

/* core._fd_tables() -> slots in lws's main descriptor table, in the low one (0: none;
 * see loop.c). For the specs. */
static int l_fd_tables(lua_State *L)
{
	luaws_loop *loop = luaws_loop_get(L);
	lua_pushinteger(L, loop->max_fds);
	lua_pushinteger(L, loop->low_fds);
	return 2;
}

int luaws_limits_open(lua_State *L)
{
	lua_pushcfunction(L, l_fd_tables);
	lua_setfield(L, -2, "_fd_tables");
	lua_pushcfunction(L, l_set_max_open_files);
	lua_setfield(L, -2, "set_max_open_files");
	lua_pushcfunction(L, l_set_lws_log_level);
	lua_setfield(L, -2, "set_lws_log_level");
	return 0;
}
