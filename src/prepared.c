/*
 * luaws.PreparedMessage: a message framed once (server side: the exact bytes on the
 * wire) and sent to many connections with WritePreparedMessage. Client connections
 * mask every frame with a fresh key, so they frame the payload again.
 */
#include <string.h>

#include "luaws.h"

#define LUAWS_PREPARED_MT "luaws.PreparedMessage"

typedef struct luaws_prepared {
	int opcode;
	size_t frame_len, payload_len; /* the payload starts frame_len - payload_len in */
	unsigned char frame[];
} luaws_prepared;

/* core.prepare(opcode, data) -> prepared message */
static int l_prepare(lua_State *L)
{
	int opcode = (int)luaL_checkinteger(L, 1);
	size_t len, hl;
	const char *data = luaL_checklstring(L, 2, &len);
	unsigned char hdr[14];
	luaws_prepared *pm;

	if (!(opcode == 1 || opcode == 2 || (opcode >= 8 && opcode <= 10)))
		return luaL_argerror(L, 1, "unknown message type");
	if (opcode >= 8 && len > 125)
		return luaL_argerror(L, 2, "invalid control frame");
	hl = luaws_frame_header(hdr, 1, opcode, len, NULL);
	pm = lua_newuserdatauv(L, sizeof(*pm) + hl + len, 0);
	pm->opcode = opcode;
	pm->frame_len = hl + len;
	pm->payload_len = len;
	memcpy(pm->frame, hdr, hl);
	memcpy(pm->frame + hl, data, len);
	luaL_setmetatable(L, LUAWS_PREPARED_MT);
	return 1;
}

/* The frame of the prepared message at idx (raises if it is not one). */
const unsigned char *luaws_prepared_frame(lua_State *L, int idx, int *opcode, size_t *len,
					  const unsigned char **payload, size_t *plen)
{
	luaws_prepared *pm = luaL_checkudata(L, idx, LUAWS_PREPARED_MT);
	*opcode = pm->opcode;
	*len = pm->frame_len;
	*payload = pm->frame + pm->frame_len - pm->payload_len;
	*plen = pm->payload_len;
	return pm->frame;
}

static int l_tostring(lua_State *L)
{
	luaws_prepared *pm = luaws_check(L, 1, LUAWS_PREPARED_MT);
	lua_pushfstring(L, "luaws.PreparedMessage: %p (type %d, %d bytes)", (void *)pm,
			pm->opcode, (int)pm->payload_len);
	return 1;
}

int luaws_prepared_open(lua_State *L)
{
	static const luaL_Reg no_methods[] = {{NULL, NULL}};
	luaws_new_type(L, LUAWS_PREPARED_MT, no_methods, l_tostring, NULL, NULL);
	lua_pushcfunction(L, l_prepare);
	lua_setfield(L, -2, "prepare");
	return 0;
}
