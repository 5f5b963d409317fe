/*
 * Time values from Lua: seconds as Lua numbers (math.huge and -math.huge included)
 * turned into the whole milliseconds libuv takes, without undefined float-to-integer
 * conversions.
 */
#include <math.h>

#include "luaws.h"

/* Beyond this many milliseconds (about 285 million years) a time is "never". */
#define MS_MAX 9.0e18

double luaws_check_seconds(lua_State *L, int arg)
{
	double s = luaL_checknumber(L, arg);
	if (isnan(s))
		luaL_argerror(L, arg, "number of seconds expected, got NaN");
	return s;
}

double luaws_opt_seconds(lua_State *L, int arg, double def)
{
	return lua_isnoneornil(L, arg) ? def : luaws_check_seconds(L, arg);
}

uint64_t luaws_ms(double seconds)
{
	double ms = ceil(seconds * 1000);
	if (!(ms > 0)) /* negative, -inf, or NaN (callers refused it already) */
		return 0;
	if (ms >= MS_MAX)
		return LUAWS_NEVER;
	return (uint64_t)ms;
}
