/*
 * luaws_unit: a test-only Lua module over the pure parts of the C core (frame.c,
 * inbox.c, utf8.c, buf.c), so the unit specs drive them without sockets. Never
 * installed; `make unit` builds it next to core.so.
 *
 * Bytes handed to C are copied into a buffer of exactly their size (at an optional
 * offset, for alignment cases), so that ASan sees any read past them.
 */
#include <stdlib.h>
#include <string.h>

#include "../../src/luaws.h"

#define UNIT_EXPORT __attribute__((visibility("default")))

#define PARSER_MT "luaws_unit.Parser"
#define INBOX_MT "luaws_unit.Inbox"
#define POOL_MT "luaws_unit.Pool"

/* A copy of s (n bytes) at offset off of a fresh allocation of off + n bytes. */
static unsigned char *unit_copy(lua_State *L, const char *s, size_t n, size_t off,
				unsigned char **block)
{
	*block = malloc(off + n + (off + n == 0));
	if (!*block)
		luaL_error(L, "out of memory");
	memcpy(*block + off, s, n);
	return *block + off;
}

static size_t unit_offset(lua_State *L, int arg)
{
	lua_Integer off = luaL_optinteger(L, arg, 0);
	luaL_argcheck(L, off >= 0 && off < 64, arg, "offset out of 0..63");
	return (size_t)off;
}

/* unit.parser(expect_masked) -> a frame parser */
static int unit_parser_new(lua_State *L)
{
	luaws_frame_parser *fp = lua_newuserdatauv(L, sizeof(*fp), 0);
	memset(fp, 0, sizeof(*fp));
	fp->expect_masked = (unsigned char)lua_toboolean(L, 1);
	luaL_setmetatable(L, PARSER_MT);
	return 1;
}

/* p:feed(bytes) -> events, bytes left unused. Each event is a table
 * {opcode, fin, first, last, data, frame_len, mask_pos} (mask_pos: the parser's
 * after it), or {error = code, reason = text}, which ends the list. */
static int unit_parser_feed(lua_State *L)
{
	luaws_frame_parser *fp = luaL_checkudata(L, 1, PARSER_MT);
	size_t n;
	const char *s = luaL_checklstring(L, 2, &n);
	unsigned char *block, *p = unit_copy(L, s, n, 0, &block);
	int i = 0;

	lua_newtable(L);
	for (;;) {
		luaws_frame_event ev;
		int r;
		memset(&ev, 0, sizeof(ev));
		r = luaws_frame_next(fp, &p, &n, &ev);
		if (r == 0)
			break;
		lua_createtable(L, 0, 8);
		if (r < 0) {
			lua_pushinteger(L, ev.code);
			lua_setfield(L, -2, "error");
			lua_pushstring(L, ev.reason);
			lua_setfield(L, -2, "reason");
			lua_rawseti(L, -2, ++i);
			break;
		}
		lua_pushinteger(L, ev.opcode);
		lua_setfield(L, -2, "opcode");
		lua_pushboolean(L, ev.fin);
		lua_setfield(L, -2, "fin");
		lua_pushboolean(L, ev.first);
		lua_setfield(L, -2, "first");
		lua_pushboolean(L, ev.last);
		lua_setfield(L, -2, "last");
		lua_pushlstring(L, (const char *)ev.data, ev.len);
		lua_setfield(L, -2, "data");
		lua_pushinteger(L, (lua_Integer)ev.frame_len);
		lua_setfield(L, -2, "frame_len");
		lua_pushinteger(L, (lua_Integer)fp->mask_pos);
		lua_setfield(L, -2, "mask_pos");
		lua_rawseti(L, -2, ++i);
	}
	free(block);
	lua_pushinteger(L, (lua_Integer)n);
	return 2;
}

/* unit.header(fin, opcode, len [, mask]) -> the frame header's bytes */
static int unit_header(lua_State *L)
{
	unsigned char out[14];
	int fin = lua_toboolean(L, 1);
	int opcode = (int)luaL_checkinteger(L, 2);
	uint64_t len = (uint64_t)luaL_checkinteger(L, 3);
	size_t kl = 0;
	const char *key = luaL_optlstring(L, 4, NULL, &kl);
	size_t n;
	luaL_argcheck(L, !key || kl == 4, 4, "mask key of 4 bytes expected");
	n = luaws_frame_header(out, fin, opcode, len, (const unsigned char *)key);
	lua_pushlstring(L, (const char *)out, n);
	return 1;
}

/* unit.mask(bytes, key, pos [, offset]) -> the bytes XORed with the key from position
 * pos, done at byte offset `offset` of an allocation (alignment cases) */
static int unit_mask(lua_State *L)
{
	size_t n, kl;
	const char *s = luaL_checklstring(L, 1, &n);
	const char *key = luaL_checklstring(L, 2, &kl);
	lua_Integer pos = luaL_optinteger(L, 3, 0);
	size_t off = unit_offset(L, 4);
	unsigned char *block, *p;
	luaL_argcheck(L, kl == 4, 2, "mask key of 4 bytes expected");
	luaL_argcheck(L, pos >= 0, 3, "position must not be negative");
	p = unit_copy(L, s, n, off, &block);
	luaws_mask(p, n, (const unsigned char *)key, (size_t)pos);
	lua_pushlstring(L, (const char *)p, n);
	free(block);
	return 1;
}

/* unit.utf8(st, bytes [, offset]) -> valid, st. st: 3 bytes of state ("\0\0\0" or nil
 * at a message's start); the text is whole and valid when valid and st:byte(1) == 0. */
static int unit_utf8(lua_State *L)
{
	unsigned char st[3] = { 0, 0, 0 };
	size_t sl = 0, n;
	const char *s0 = luaL_optlstring(L, 1, NULL, &sl);
	const char *s = luaL_checklstring(L, 2, &n);
	size_t off = unit_offset(L, 3);
	unsigned char *block, *p;
	int ok;
	luaL_argcheck(L, !s0 || sl == 3, 1, "state of 3 bytes expected");
	if (s0)
		memcpy(st, s0, 3);
	p = unit_copy(L, s, n, off, &block);
	ok = luaws_utf8_valid(st, p, n);
	free(block);
	lua_pushboolean(L, ok);
	lua_pushlstring(L, (const char *)st, 3);
	return 2;
}

/* A pool of big buffers of its own, to hand to the inbox. */
static luaws_inbox_pool *unit_checkpool(lua_State *L, int arg)
{
	return luaL_checkudata(L, arg, POOL_MT);
}

static luaws_inbox_pool *unit_optpool(lua_State *L, int arg)
{
	return lua_isnoneornil(L, arg) ? NULL : unit_checkpool(L, arg);
}

/* unit.pool() -> an empty pool */
static int unit_pool_new(lua_State *L)
{
	luaws_inbox_pool *pool = lua_newuserdatauv(L, sizeof(*pool), 0);
	memset(pool, 0, sizeof(*pool));
	luaL_setmetatable(L, POOL_MT);
	return 1;
}

/* pool:stock(cap): add a buffer with room for cap bytes (as if an inbox gave it back) */
static int unit_pool_stock(lua_State *L)
{
	luaws_inbox_pool *pool = unit_checkpool(L, 1);
	lua_Integer cap = luaL_checkinteger(L, 2);
	luaws_buf b = {0};
	luaL_argcheck(L, cap > 0, 2, "capacity must be positive");
	luaL_argcheck(L, pool->n < LUAWS_INBOX_POOL, 1, "pool is full");
	if (luaws_buf_reserve(&b, (size_t)cap))
		return luaL_error(L, "out of memory");
	pool->bufs[pool->n++] = b;
	pool->bytes += b.cap;
	return 0;
}

/* pool:info() -> total bytes, { {cap =, data = address}, ... } */
static int unit_pool_info(lua_State *L)
{
	luaws_inbox_pool *pool = unit_checkpool(L, 1);
	int i;
	lua_pushinteger(L, (lua_Integer)pool->bytes);
	lua_createtable(L, pool->n, 0);
	for (i = 0; i < pool->n; i++) {
		lua_createtable(L, 0, 2);
		lua_pushinteger(L, (lua_Integer)pool->bufs[i].cap);
		lua_setfield(L, -2, "cap");
		lua_pushinteger(L, (lua_Integer)(uintptr_t)pool->bufs[i].data);
		lua_setfield(L, -2, "data");
		lua_rawseti(L, -2, i + 1);
	}
	return 2;
}

static int unit_pool_gc(lua_State *L)
{
	luaws_inbox_pool_free(unit_checkpool(L, 1));
	return 0;
}

static luaws_inbox *unit_checkinbox(lua_State *L)
{
	return luaL_checkudata(L, 1, INBOX_MT);
}

/* unit.inbox() -> an empty inbox */
static int unit_inbox_new(lua_State *L)
{
	luaws_inbox *in = lua_newuserdatauv(L, sizeof(*in), 0);
	luaws_inbox_init(in);
	luaL_setmetatable(L, INBOX_MT);
	return 1;
}

static int unit_inbox_gc(lua_State *L)
{
	luaws_inbox_free(unit_checkinbox(L));
	return 0;
}

/* in:begin(type [, hint [, pool]]) -> true, or false when out of memory */
static int unit_inbox_begin(lua_State *L)
{
	luaws_inbox *in = unit_checkinbox(L);
	int type = (int)luaL_checkinteger(L, 2);
	lua_Integer hint = luaL_optinteger(L, 3, 0);
	luaL_argcheck(L, hint >= 0, 3, "hint must not be negative");
	lua_pushboolean(L, luaws_inbox_begin(in, type, (size_t)hint, unit_optpool(L, 4)) == 0);
	return 1;
}

/* in:append(bytes [, pool]) -> true, or false when out of memory */
static int unit_inbox_append(lua_State *L)
{
	luaws_inbox *in = unit_checkinbox(L);
	size_t n;
	const char *s = luaL_checklstring(L, 2, &n);
	lua_pushboolean(L, luaws_inbox_append(in, (const unsigned char *)s, n,
					      unit_optpool(L, 3)) == 0);
	return 1;
}

static int unit_inbox_finish(lua_State *L)
{
	lua_pushboolean(L, luaws_inbox_finish(unit_checkinbox(L)));
	return 1;
}

static int unit_inbox_drop_partial(lua_State *L)
{
	luaws_inbox_drop_partial(unit_checkinbox(L));
	return 0;
}

static int unit_inbox_partial_type(lua_State *L)
{
	lua_pushinteger(L, luaws_inbox_partial_type(unit_checkinbox(L)));
	return 1;
}

static int unit_inbox_head_type(lua_State *L)
{
	lua_pushinteger(L, luaws_inbox_head_type(unit_checkinbox(L)));
	return 1;
}

/* in:peek([max]) -> up to max (default: all) bytes of the head message not taken yet */
static int unit_inbox_peek(lua_State *L)
{
	luaws_inbox *in = unit_checkinbox(L);
	lua_Integer max = luaL_optinteger(L, 2, LUA_MAXINTEGER);
	const unsigned char *p;
	size_t n;
	luaL_argcheck(L, max >= 0, 2, "max must not be negative");
	n = luaws_inbox_peek(in, (size_t)max, &p);
	lua_pushlstring(L, p ? (const char *)p : "", n);
	return 1;
}

/* in:consume(n [, pool]) -> true when that ended the message */
static int unit_inbox_consume(lua_State *L)
{
	luaws_inbox *in = unit_checkinbox(L);
	lua_Integer n = luaL_checkinteger(L, 2);
	luaL_argcheck(L, n >= 0, 2, "count must not be negative");
	lua_pushboolean(L, luaws_inbox_consume(in, (size_t)n, unit_optpool(L, 3)));
	return 1;
}

static int unit_inbox_discard(lua_State *L)
{
	luaws_inbox *in = unit_checkinbox(L);
	luaws_inbox_discard(in, unit_optpool(L, 2));
	return 0;
}

static int unit_inbox_unread(lua_State *L)
{
	lua_pushinteger(L, (lua_Integer)luaws_inbox_unread(unit_checkinbox(L)));
	return 1;
}

static int unit_inbox_cut_over(lua_State *L)
{
	luaws_inbox *in = unit_checkinbox(L);
	lua_Integer limit = luaL_checkinteger(L, 2);
	luaL_argcheck(L, limit >= 0, 2, "limit must not be negative");
	lua_pushboolean(L, luaws_inbox_cut_over(in, (size_t)limit));
	return 1;
}

/* in:state() -> {msgs, head, partial (false: none), taken, discarding, len, cap, data} */
static int unit_inbox_state(lua_State *L)
{
	luaws_inbox *in = unit_checkinbox(L);
	lua_createtable(L, 0, 8);
	lua_pushinteger(L, (lua_Integer)in->msgs);
	lua_setfield(L, -2, "msgs");
	lua_pushinteger(L, (lua_Integer)in->head);
	lua_setfield(L, -2, "head");
	if (in->partial == LUAWS_NO_PARTIAL)
		lua_pushboolean(L, 0);
	else
		lua_pushinteger(L, (lua_Integer)in->partial);
	lua_setfield(L, -2, "partial");
	lua_pushinteger(L, (lua_Integer)in->taken);
	lua_setfield(L, -2, "taken");
	lua_pushboolean(L, in->discarding);
	lua_setfield(L, -2, "discarding");
	lua_pushinteger(L, (lua_Integer)in->buf.len);
	lua_setfield(L, -2, "len");
	lua_pushinteger(L, (lua_Integer)in->buf.cap);
	lua_setfield(L, -2, "cap");
	lua_pushinteger(L, (lua_Integer)(uintptr_t)in->buf.data);
	lua_setfield(L, -2, "data");
	return 1;
}

static void unit_new_type(lua_State *L, const char *name, const luaL_Reg *methods,
			  lua_CFunction gc)
{
	luaL_newmetatable(L, name);
	lua_newtable(L);
	luaL_setfuncs(L, methods, 0);
	lua_setfield(L, -2, "__index");
	if (gc) {
		lua_pushcfunction(L, gc);
		lua_setfield(L, -2, "__gc");
	}
	lua_pop(L, 1);
}

UNIT_EXPORT int luaopen_luaws_unit(lua_State *L);

UNIT_EXPORT int luaopen_luaws_unit(lua_State *L)
{
	static const luaL_Reg parser_methods[] = {
		{ "feed", unit_parser_feed },
		{ NULL, NULL },
	};
	static const luaL_Reg inbox_methods[] = {
		{ "begin", unit_inbox_begin },
		{ "append", unit_inbox_append },
		{ "finish", unit_inbox_finish },
		{ "drop_partial", unit_inbox_drop_partial },
		{ "partial_type", unit_inbox_partial_type },
		{ "head_type", unit_inbox_head_type },
		{ "peek", unit_inbox_peek },
		{ "consume", unit_inbox_consume },
		{ "discard", unit_inbox_discard },
		{ "unread", unit_inbox_unread },
		{ "cut_over", unit_inbox_cut_over },
		{ "state", unit_inbox_state },
		{ NULL, NULL },
	};
	static const luaL_Reg pool_methods[] = {
		{ "stock", unit_pool_stock },
		{ "info", unit_pool_info },
		{ NULL, NULL },
	};
	static const luaL_Reg functions[] = {
		{ "parser", unit_parser_new },
		{ "header", unit_header },
		{ "mask", unit_mask },
		{ "utf8", unit_utf8 },
		{ "inbox", unit_inbox_new },
		{ "pool", unit_pool_new },
		{ NULL, NULL },
	};
	unit_new_type(L, PARSER_MT, parser_methods, NULL);
	unit_new_type(L, INBOX_MT, inbox_methods, unit_inbox_gc);
	unit_new_type(L, POOL_MT, pool_methods, unit_pool_gc);
	luaL_newlib(L, functions);
	lua_pushinteger(L, (lua_Integer)(1 + sizeof(size_t)));
	lua_setfield(L, -2, "RECORD_HEADER");
	lua_pushinteger(L, LUAWS_INBOX_POOL);
	lua_setfield(L, -2, "POOL_BUFFERS");
	return 1;
}
