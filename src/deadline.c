/*
 * Read and write deadlines of a connection (SetReadDeadline, SetWriteDeadline): one
 * libuv timer per connection that has any, set to the earlier of the two. A passed read
 * deadline makes reads return a timeout; a passed write deadline makes writes fail, and
 * drops the connection if a frame is stuck half-written.
 */
#include <stdlib.h>

#include "luaws.h"

struct luaws_deadlines {
	uv_timer_t timer;
	luaws_conn *conn;           /* NULL once the conn is gone */
	uint64_t read_at, write_at; /* uv_now() milliseconds; 0: none */
};

static void deadline_fired(uv_timer_t *t);

static void rearm(luaws_deadlines *d)
{
	uint64_t next = d->read_at && (!d->write_at || d->read_at < d->write_at) ? d->read_at :
										d->write_at;
	uint64_t now = uv_now(d->timer.loop);
	if (!next)
		uv_timer_stop(&d->timer);
	else
		uv_timer_start(&d->timer, deadline_fired, next > now ? next - now : 0, 0);
}

static void deadline_fired(uv_timer_t *t)
{
	luaws_deadlines *d = t->data;
	luaws_conn *c = d->conn;
	uint64_t now = uv_now(t->loop);
	if (!c)
		return;
	if (d->read_at && now >= d->read_at) {
		d->read_at = 0;
		c->read_timed_out = 1;
		luaws_wake(c->loop, &c->waitable);
	}
	if (d->write_at && now >= d->write_at) {
		d->write_at = 0;
		c->write_timed_out = 1;
		if (c->wsi && c->tx.head) {
			/* a frame is stuck half-written: the connection is no use any more */
			luaws_conn_abandon(c);
			luaws_conn_closed(c, LUAWS_ERR_TIMEOUT, "write timeout");
		}
		luaws_wake(c->loop, &c->waitable);
	}
	rearm(d);
}

static void deadline_closed(uv_handle_t *h)
{
	free(h->data);
}

void luaws_deadlines_free(luaws_conn *c)
{
	luaws_deadlines *d = c->deadlines;
	if (!d)
		return;
	c->deadlines = NULL;
	d->conn = NULL;
	if (!c->loop->closing)
		uv_close((uv_handle_t *)&d->timer, deadline_closed);
	else
		free(d); /* the loop closed the handle itself */
}

/* conn:_deadline("read" | "write", seconds from now | nil): nil clears it, a time that
 * has passed (-math.huge too) sets it off at once, math.huge never. */
static int l_deadline(lua_State *L)
{
	luaws_conn *c = luaws_conn_check(L);
	int which = luaL_checkoption(L, 2, NULL, (const char *const[]){"read", "write", NULL});
	int clear = lua_isnoneornil(L, 3);
	uint64_t ms = clear ? LUAWS_NEVER : luaws_ms(luaws_check_seconds(L, 3));
	luaws_deadlines *d = c->deadlines;
	uint64_t at = 0;

	if (which == 0)
		c->read_timed_out = ms == 0;
	else
		c->write_timed_out = ms == 0;
	if (ms == 0)
		luaws_wake(c->loop, &c->waitable);
	if (ms != 0 && ms != LUAWS_NEVER) {
		if (!d) {
			d = calloc(1, sizeof(*d));
			if (!d)
				return luaL_error(L, "luaws: out of memory");
			uv_timer_init(c->loop->uv, &d->timer);
			d->timer.data = d;
			d->conn = c;
			c->deadlines = d;
		}
		uv_update_time(c->loop->uv);
		at = uv_now(c->loop->uv) + ms;
	}
	if (d) {
		if (which == 0)
			d->read_at = at;
		else
			d->write_at = at;
		rearm(d);
	}
	return 0;
}

static const luaL_Reg deadline_methods[] = {
	{"_deadline", l_deadline},
	{NULL, NULL},
};

int luaws_deadline_open(lua_State *L)
{
	luaws_conn_add_methods(L, deadline_methods);
	return 0;
}
