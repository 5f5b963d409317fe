/*
 * The inbox of a connection: received messages waiting for the reader, in one buffer
 * of records (type byte, size_t length, payload), with the message still arriving at
 * its end. A streaming reader (NextReader) takes the head message in pieces, even
 * before it is whole; what it leaves is discarded as it arrives. Pure: no sockets, no
 * Lua, so the unit specs drive it directly.
 *
 * A large buffer comes from and goes back to a spare one the caller keeps (the loop's),
 * so that big messages do not cost a malloc/free (and an mmap/munmap) each.
 */
#include <stdlib.h>
#include <string.h>

#include "luaws.h"

#define RECORD_HEADER (1 + sizeof(size_t))
/* Buffers up to this size stay with their inbox when it empties. */
#define SMALL_INBOX (64 * 1024)
/* The spare buffer keeps at most this much. */
#define SPARE_MAX (64 * 1024 * 1024)

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

/* Room for extra more bytes. An empty inbox that must grow past SMALL_INBOX takes the
 * spare buffer when it is big enough. */
static int reserve(luaws_inbox *in, size_t extra, luaws_buf *spare)
{
	luaws_buf *b = &in->buf;
	if (b->len + extra <= b->cap)
		return 0;
	if (spare && b->len == 0 && extra > SMALL_INBOX && spare->cap >= extra) {
		free(b->data);
		*b = *spare;
		b->len = 0;
		memset(spare, 0, sizeof(*spare));
		return 0;
	}
	return luaws_buf_reserve(b, extra);
}

/* The inbox is empty again: a large buffer goes to the spare (the larger one is kept)
 * or is freed. */
static void release(luaws_inbox *in, luaws_buf *spare)
{
	luaws_buf *b = &in->buf;
	if (b->cap <= SMALL_INBOX)
		return;
	if (spare && b->cap > spare->cap && b->cap <= SPARE_MAX) {
		luaws_buf_free(spare);
		*spare = *b;
		spare->len = 0;
		memset(b, 0, sizeof(*b));
	} else
		luaws_buf_free(b);
}

int luaws_inbox_begin(luaws_inbox *in, int type, size_t hint, luaws_buf *spare)
{
	luaws_buf *b = &in->buf;
	if (reserve(in, RECORD_HEADER + hint, spare))
		return -1;
	in->partial = b->len;
	in->discarding = 0;
	b->data[b->len] = (unsigned char)type;
	memset(b->data + b->len + 1, 0, sizeof(size_t));
	b->len += RECORD_HEADER;
	return 0;
}

int luaws_inbox_append(luaws_inbox *in, const unsigned char *p, size_t n, luaws_buf *spare)
{
	luaws_buf *b = &in->buf;
	if (!n || in->discarding)
		return 0;
	if (reserve(in, n, spare))
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
static void pop(luaws_inbox *in, luaws_buf *spare)
{
	luaws_buf *b = &in->buf;
	in->head += RECORD_HEADER + record_len(in, in->head);
	in->msgs--;
	in->taken = 0;
	if (in->head == b->len) {
		in->head = b->len = 0;
		release(in, spare);
	} else if (in->head > b->cap / 2) {
		memmove(b->data, b->data + in->head, b->len - in->head);
		b->len -= in->head;
		if (in->partial != LUAWS_NO_PARTIAL)
			in->partial -= in->head;
		in->head = 0;
	}
}

int luaws_inbox_consume(luaws_inbox *in, size_t n, luaws_buf *spare)
{
	in->taken += n;
	if (in->msgs) {
		if (in->taken < record_len(in, in->head))
			return 0;
		pop(in, spare);
		return 1;
	}
	if (partial_at_head(in) && in->taken == in->buf.len - in->partial - RECORD_HEADER) {
		/* all that arrived is consumed: forget it */
		in->buf.len = in->partial + RECORD_HEADER;
		in->taken = 0;
	}
	return 0;
}

void luaws_inbox_discard(luaws_inbox *in, luaws_buf *spare)
{
	if (in->msgs) {
		pop(in, spare);
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
