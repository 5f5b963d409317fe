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
 * scan. So luaws sets the soft limit to the table size it wants while lws_create_context
 * runs, and restores it at once, but only where no one can see the change: in a process
 * with one thread (counted in /proc/self/stat), with every signal held. In a process with
 * more threads, another could open a file (EMFILE) or fork (its child would keep the
 * lowered limit) meanwhile, so there lws sizes the table by the soft limit, as it would
 * alone, unless the program asked for a size (SetMaxOpenFiles, $LUAWS_MAX_FDS). The
 * accept path refuses descriptors beyond the table (server.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
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

/* The table size the program asked for (SetMaxOpenFiles, then $LUAWS_MAX_FDS), or 0. */
static long fd_table_asked(const luaws_loop *loop)
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
	return 0;
}

/* Whether this process runs one thread: field 20 (num_threads) of /proc/self/stat, which
 * follows the command name in parentheses. Unknown counts as more than one. */
static int single_threaded(void)
{
	char buf[512], *p, *save = NULL;
	ssize_t n;
	int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC), field;

	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	p = strrchr(buf, ')');
	if (!p)
		return 0;
	/* after ')': field 3 (state) ... field 20 */
	for (field = 3, p = strtok_r(p + 1, " ", &save); p && field < 20; field++)
		p = strtok_r(NULL, " ", &save);
	return p && strcmp(p, "1") == 0;
}

/* lws_create_context with a descriptor table of min(soft limit, cap) slots, cap 0 meaning
 * the program's size or FD_TABLE_DEFAULT; stores the size in *table. When the soft limit
 * is above the cap and the change could be seen (more than one thread, nothing asked), the
 * table is the soft limit's size, or with must_cap no context is made (NULL, *table 0).
 * The soft limit is as it was when this returns. */
struct lws_context *luaws_create_context(luaws_loop *loop,
					 struct lws_context_creation_info *info, long cap,
					 int must_cap, int *table)
{
	struct rlimit was, during;
	struct lws_context *ctx;
	sigset_t all, held;
	long n, asked = fd_table_asked(loop);
	int lowered = 0, unset = 0;

	if (!cap)
		cap = asked ? asked : FD_TABLE_DEFAULT;
	if (__atomic_compare_exchange_n(&lws_log_level_chosen, &unset, 1, 0, __ATOMIC_SEQ_CST,
					__ATOMIC_SEQ_CST))
		lws_set_log_level(LLL_ERR, NULL);
	/* (RLIM_INFINITY is the largest rlim_t) */
	if (getrlimit(RLIMIT_NOFILE, &was) == 0 && was.rlim_cur > (rlim_t)cap) {
		if (asked || single_threaded()) {
			sigfillset(&all);
			sigprocmask(SIG_BLOCK, &all, &held);
			during = was;
			during.rlim_cur = (rlim_t)cap;
			lowered = setrlimit(RLIMIT_NOFILE, &during) == 0;
			if (!lowered)
				sigprocmask(SIG_SETMASK, &held, NULL);
		}
		if (!lowered && must_cap) {
			*table = 0;
			return NULL;
		}
	}
	/* what lws will read, and its own rule for it */
	n = sysconf(_SC_OPEN_MAX);
	*table = n == -1 || n > FD_TABLE_MAX ? 2560 : (int)n;
	ctx = lws_create_context(info);
	if (lowered) {
		setrlimit(RLIMIT_NOFILE, &was);
		sigprocmask(SIG_SETMASK, &held, NULL);
	}
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
