/*
 * The inbox of a connection: received messages waiting for the reader, in one buffer
 * of records (type byte, size_t length, payload), with the message still arriving at
 * its end. A streaming reader (NextReader) takes the head message in pieces, even
 * before it is whole; what it leaves is discarded as it arrives. Pure: no sockets, no
 * Lua, so the unit specs drive it directly.
 *
 * Large buffers come from and go back to a pool the caller keeps (one per loop, a few
 * buffers of bounded total size, as gorilla pools its buffers), so that big messages
 * cost no malloc/free each: freeing them let glibc hand the top of the heap back to the
 * kernel and take it again, a page fault per 4 KiB of every message (benchmark d ran at
 * two thirds of its speed whenever that happened).
 */
#include <stdlib.h>
#include <string.h>

#include "luaws.h"

#define RECORD_HEADER (1 + sizeof(size_t))
/* Buffers up to this size stay with their inbox when it empties. */
#define SMALL_INBOX (64 * 1024)
/* The pool keeps no buffer larger than this, and at most POOL_BYTES in all. */
#define POOL_BUF_MAX (16 * 1024 * 1024)
#define POOL_BYTES (32 * 1024 * 1024)

void luaws_inbox_init(luaws_inbox *in)
{
	memset(in, 0, sizeof(*in));
	in->partial = LUAWS_NO_PARTIAL;
}

void luaws_inbox_free(luaws_inbox *in)
{
	luaws_buf_free(&in->buf);
	luaws_inbox_init(in);
}

static size_t record_len(const luaws_inbox *in, size_t off)
{
	size_t len;
	memcpy(&len, in->buf.data + off + 1, sizeof(len));
	return len;
}

/* Room for extra more bytes. An inbox that holds no more than a record header (empty,
 * or a message whose header came alone in its read) and must grow past SMALL_INBOX
 * takes the smallest pooled buffer that is big enough, with what it holds. */
static int reserve(luaws_inbox *in, size_t extra, luaws_inbox_pool *pool)
{
	luaws_buf *b = &in->buf;
	int i, best = -1;
	if (b->len + extra <= b->cap)
		return 0;
	if (pool && b->len <= RECORD_HEADER && extra > SMALL_INBOX) {
		for (i = 0; i < pool->n; i++)
			if (pool->bufs[i].cap >= b->len + extra &&
			    (best < 0 || pool->bufs[i].cap < pool->bufs[best].cap))
				best = i;
	}
	if (best >= 0) {
		luaws_buf was = *b;
		*b = pool->bufs[best];
		pool->bytes -= b->cap;
		pool->bufs[best] = pool->bufs[--pool->n];
		if (was.len)
			memcpy(b->data, was.data, was.len);
		b->len = was.len;
		free(was.data);
		return 0;
	}
	return luaws_buf_reserve(b, extra);
}

/* The inbox is empty again: a large buffer goes to the pool when there is room, else
 * is freed. */
static void release(luaws_inbox *in, luaws_inbox_pool *pool)
{
	luaws_buf *b = &in->buf;
	if (b->cap <= SMALL_INBOX)
		return;
	if (pool && pool->n < LUAWS_INBOX_POOL && b->cap <= POOL_BUF_MAX &&
	    pool->bytes + b->cap <= POOL_BYTES) {
		b->len = 0;
		pool->bufs[pool->n++] = *b;
		pool->bytes += b->cap;
		memset(b, 0, sizeof(*b));
	} else
		luaws_buf_free(b);
}

void luaws_inbox_pool_free(luaws_inbox_pool *pool)
{
	while (pool->n)
		luaws_buf_free(&pool->bufs[--pool->n]);
	pool->bytes = 0;
}

int luaws_inbox_begin(luaws_inbox *in, int type, size_t hint, luaws_inbox_pool *pool)
{
	luaws_buf *b = &in->buf;
	if (reserve(in, RECORD_HEADER + hint, pool))
		return -1;
	in->partial = b->len;
	in->discarding = 0;
	b->data[b->len] = (unsigned char)type;
	memset(b->data + b->len + 1, 0, sizeof(size_t));
	b->len += RECORD_HEADER;
	return 0;
}

int luaws_inbox_append(luaws_inbox *in, const unsigned char *p, size_t n,
		       luaws_inbox_pool *pool)
{
	luaws_buf *b = &in->buf;
	if (!n || in->discarding)
		return 0;
	if (reserve(in, n, pool))
		return -1;
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

int luaws_inbox_finish(luaws_inbox *in)
{
	luaws_buf *b = &in->buf;
	size_t stored;
	if (in->partial == LUAWS_NO_PARTIAL)
		return 0;
	if (in->discarding) {
		in->discarding = 0;
		b->len = in->partial;
		in->partial = LUAWS_NO_PARTIAL;
		return 0;
	}
	stored = b->len - in->partial - RECORD_HEADER;
	memcpy(b->data + in->partial + 1, &stored, sizeof(stored));
	in->partial = LUAWS_NO_PARTIAL;
	in->msgs++;
	return 1;
}

void luaws_inbox_drop_partial(luaws_inbox *in)
{
	if (in->partial == LUAWS_NO_PARTIAL)
		return;
	/* what a reader took counts only for the dropped message when it was the head */
	if (in->head == in->partial)
		in->taken = 0;
	in->buf.len = in->partial;
	in->partial = LUAWS_NO_PARTIAL;
	in->discarding = 0;
}

int luaws_inbox_partial_type(const luaws_inbox *in)
{
	return in->partial == LUAWS_NO_PARTIAL ? 0 : in->buf.data[in->partial];
}

/* Is the message being received at the head (the next one a reader gets)? One being
 * discarded is not: a reader must not be offered it again. */
static int partial_at_head(const luaws_inbox *in)
{
	return in->partial != LUAWS_NO_PARTIAL && in->partial == in->head && !in->discarding;
}

int luaws_inbox_head_type(const luaws_inbox *in)
{
	return in->msgs || partial_at_head(in) ? in->buf.data[in->head] : 0;
}

size_t luaws_inbox_peek(const luaws_inbox *in, size_t max, const unsigned char **p)
{
	size_t len, avail;
	if (in->msgs)
		len = record_len(in, in->head);
	else if (partial_at_head(in))
		len = in->buf.len - in->partial - RECORD_HEADER;
	else {
		*p = NULL;
		return 0;
	}
	avail = len - in->taken;
	*p = in->buf.data + in->head + RECORD_HEADER + in->taken;
	return avail < max ? avail : max;
}

/* Drop the head record (whole and consumed). */
static void pop(luaws_inbox *in, luaws_inbox_pool *pool)
{
	luaws_buf *b = &in->buf;
	in->head += RECORD_HEADER + record_len(in, in->head);
	in->msgs--;
	in->taken = 0;
	if (in->head == b->len) {
		in->head = b->len = 0;
		release(in, pool);
	} else if (in->head > b->cap / 2) {
		memmove(b->data, b->data + in->head, b->len - in->head);
		b->len -= in->head;
		if (in->partial != LUAWS_NO_PARTIAL)
			in->partial -= in->head;
		in->head = 0;
	}
}

int luaws_inbox_consume(luaws_inbox *in, size_t n, luaws_inbox_pool *pool)
{
	in->taken += n;
	if (in->msgs) {
		if (in->taken < record_len(in, in->head))
			return 0;
		pop(in, pool);
		return 1;
	}
	if (partial_at_head(in) && in->taken == in->buf.len - in->partial - RECORD_HEADER) {
		/* all that arrived is consumed: forget it */
		in->buf.len = in->partial + RECORD_HEADER;
		in->taken = 0;
	}
	return 0;
}

void luaws_inbox_discard(luaws_inbox *in, luaws_inbox_pool *pool)
{
	if (in->msgs) {
		pop(in, pool);
	} else if (partial_at_head(in)) {
		in->buf.len = in->partial + RECORD_HEADER;
		in->taken = 0;
		in->discarding = 1;
	}
}

size_t luaws_inbox_unread(const luaws_inbox *in)
{
	return in->buf.len - in->head;
}

int luaws_inbox_cut_over(luaws_inbox *in, size_t limit)
{
	size_t off = in->head, i;
	for (i = 0; i < in->msgs; i++) {
		size_t len = record_len(in, off);
		if (len > limit) {
			in->buf.len = off;
			in->msgs = i;
			in->partial = LUAWS_NO_PARTIAL;
			in->discarding = 0;
			if (i == 0)
				in->taken = 0;
			return 1;
		}
		off += RECORD_HEADER + len;
	}
	return 0;
}
