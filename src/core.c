/* luaws.core: the C half of luaws. Each file registers its own part. */
#include "luaws.h"

#define LUAWS_EXPORT __attribute__((visibility("default")))

LUAWS_EXPORT int luaopen_luaws_core(lua_State *L);

LUAWS_EXPORT int luaopen_luaws_core(lua_State *L)
{
	lua_newtable(L);
	luaws_loop_open(L);
	luaws_conn_open(L);
	luaws_server_open(L);
	luaws_client_open(L);
	luaws_timer_open(L);
	luaws_signal_open(L);
	luaws_process_open(L);
	luaws_prepared_open(L);
	luaws_limits_open(L);
	luaws_tls_config_open(L);
	luaws_tls_open(L);
	lua_pushstring(L, lws_get_library_version());
	lua_setfield(L, -2, "lws_version");
	return 1;
}
