/*
 * luaws.PreparedMessage: a message framed once (server side: the exact bytes on the
 * wire) and sent to many connections with WritePreparedMessage. Client connections
 * mask every frame with a fresh key, so they frame the payload again. For connections
 * that compress without context takeover it also keeps the compressed frame, one per
 * set of compression parameters (as gorilla keys its frames by compression level);
 * with context takeover every connection compresses it against its own window.
 */
#include <stdlib.h>
#include <string.h>

#include "luaws.h"

#define LUAWS_PREPARED_MT "luaws.PreparedMessage"

/* The message compressed alone with these parameters, framed with RSV1. */
typedef struct prepared_deflated {
	struct prepared_deflated *next;
	int bits, mem_level, level;
	size_t frame_len, payload_len;
	unsigned char frame[];
} prepared_deflated;

typedef struct luaws_prepared {
	int opcode;
	size_t frame_len, payload_len; /* the payload starts frame_len - payload_len in */
	prepared_deflated *deflated;
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
	pm->deflated = NULL;
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

/* The prepared message at idx compressed as c (no context takeover) compresses: its
 * frame (server side), the payload in it; NULL when out of memory. */
const unsigned char *luaws_prepared_deflated(lua_State *L, int idx, luaws_conn *c, size_t *len,
					     const unsigned char **payload, size_t *plen)
{
	luaws_prepared *pm = luaL_checkudata(L, idx, LUAWS_PREPARED_MT);
	prepared_deflated *v;
	luaws_buf z = {0};
	unsigned char hdr[14];
	size_t hl;
	int bits, mem_level, level;
	luaws_pmd_key(c, &bits, &mem_level, &level);
	for (v = pm->deflated; v; v = v->next)
		if (v->bits == bits && v->mem_level == mem_level && v->level == level)
			goto found;
	if (luaws_pmd_compress_alone(c->loop, bits, mem_level, level,
				     pm->frame + pm->frame_len - pm->payload_len, pm->payload_len,
				     &z)) {
		luaws_buf_free(&z);
		return NULL;
	}
	hl = luaws_frame_header(hdr, 1, pm->opcode | LUAWS_RSV1, z.len, NULL);
	v = malloc(sizeof(*v) + hl + z.len);
	if (!v) {
		luaws_buf_free(&z);
		return NULL;
	}
	v->bits = bits;
	v->mem_level = mem_level;
	v->level = level;
	v->frame_len = hl + z.len;
	v->payload_len = z.len;
	memcpy(v->frame, hdr, hl);
	if (z.len)
		memcpy(v->frame + hl, z.data, z.len);
	luaws_buf_free(&z);
	v->next = pm->deflated;
	pm->deflated = v;
found:
	*len = v->frame_len;
	*payload = v->frame + v->frame_len - v->payload_len;
	*plen = v->payload_len;
	return v->frame;
}

static int l_gc(lua_State *L)
{
	luaws_prepared *pm = luaws_check(L, 1, LUAWS_PREPARED_MT);
	prepared_deflated *v, *next;
	for (v = pm->deflated; v; v = next) {
		next = v->next;
		free(v);
	}
	pm->deflated = NULL;
	return 0;
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
	luaws_new_type(L, LUAWS_PREPARED_MT, no_methods, l_tostring, l_gc, NULL);
	lua_pushcfunction(L, l_prepare);
	lua_setfield(L, -2, "prepare");
	return 0;
}
