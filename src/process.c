/*
 * Worker processes (ListenAndServe's Workers): forking a process with a loop of its
 * own, passing a signal on to it, and reaping it once it has ended.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "luaws.h"

/* core.fork() -> pid (0 in the child) | nil, reason: a worker process with a loop of
 * its own. Only before any socket exists (the lws context would be shared). The child
 * gets SIGTERM when its parent dies. */
static int l_fork(lua_State *L)
{
	luaws_loop *loop = luaws_loop_get(L);
	pid_t parent = getpid(), pid;
	if (loop->ctx)
		return luaws_fail(L, "workers must start before any connection or listener exists");
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return luaws_fail(L, strerror(errno));
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent) /* the parent is already gone */
			_exit(1);
		uv_loop_fork(loop->uv);
	}
	lua_pushinteger(L, pid);
	return 1;
}

/* core.kill(pid, "SIGTERM" | "SIGINT" | "SIGKILL") -> true | nil, reason */
static int l_kill(lua_State *L)
{
	static const int signums[] = {SIGTERM, SIGINT, SIGKILL};
	lua_Integer pid = luaL_checkinteger(L, 1);
	int sig = luaL_checkoption(L, 2, "SIGTERM",
				   (const char *const[]){"SIGTERM", "SIGINT", "SIGKILL", NULL});
	if (pid <= 0)
		return luaL_argerror(L, 1, "process id expected");
	if (kill((pid_t)pid, signums[sig]))
		return luaws_fail(L, strerror(errno));
	lua_pushboolean(L, 1);
	return 1;
}

/* core.reap(pid) -> exit status (128 + signal for a signal death) once the child has
 * ended, false while it runs, nil, reason when it is not a child of ours. Never waits. */
static int l_reap(lua_State *L)
{
	lua_Integer pid = luaL_checkinteger(L, 1);
	int status;
	pid_t got;
	if (pid <= 0)
		return luaL_argerror(L, 1, "process id expected");
	got = waitpid((pid_t)pid, &status, WNOHANG);
	if (got < 0)
		return luaws_fail(L, strerror(errno));
	if (got == 0) {
		lua_pushboolean(L, 0);
		return 1;
	}
	lua_pushinteger(L, WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
	return 1;
}

static int l_getpid(lua_State *L)
{
	lua_pushinteger(L, getpid());
	return 1;
}

static const luaL_Reg process_functions[] = {
	{"getpid", l_getpid},
	{"fork", l_fork},
	{"kill", l_kill},
	{"reap", l_reap},
	{NULL, NULL},
};

int luaws_process_open(lua_State *L)
{
	luaL_setfuncs(L, process_functions, 0);
	return 0;
}
