/*
 * The sender of a connection: every byte a luaws.Conn sends goes through here, and this
 * file is the only caller of send/sendmsg and lws_write. It owns the send queue, write
 * batching across the connections of a loop, partial writes and backpressure.
 *
 * The queue holds whole frames (or HTTP heads), each sent from its first byte to its
 * last before anything else goes: a ping or pong may overtake queued frames that have
 * not started, never the unsent rest of one that has. So a frame never lands inside
 * another, whatever is queued when a control frame or a failure comes.
 *
 * Behind it sits the transport (transport_write): plain sockets, written with send
 * straight from the caller's memory, or TLS (tls.c), which encrypts and sends its
 * ciphertext with luaws_socket_send; the rest of luaws does not know which.
 */
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "luaws.h"

/* A writer waits (WriteMessage yields) while more than this is queued; reading from
 * the peer also stops then, so a peer that never reads cannot grow the queue. */
#define TX_WAIT_BYTES (1024 * 1024)
/* Frames up to this payload are batched (and copied behind their header). */
#define SMALL_FRAME 1024
/* The batch is sent when it grows past this. */
#define BATCH_MAX (256 * 1024)

struct luaws_out {
	struct luaws_out *next;
	size_t len, off;          /* off: bytes of it already written */
	unsigned char started;    /* some of its first frame went out before it was queued */
	unsigned char urgent;     /* a ping or pong put ahead of data */
	unsigned char data[];
};

/* Write batching. While the scheduler runs coroutines (on), small server frames are not
 * sent at once but appended to bytes, in segments that record the connection they
 * belong to; a connection writing several frames in a row extends its last segment.
 * When the step ends luaws_batch_set(loop, 0) sends each segment with one send: a
 * handler that echoes the 16 messages one read brought costs one syscall instead of 16.
 * Anything a connection sends outside the batch first sends its batched segments
 * (unbatch), so its bytes keep their order. */
struct luaws_batch {
	int on;
	luaws_buf bytes;
	struct luaws_batch_seg {
		luaws_conn *c;    /* NULL once sent or dropped */
		size_t off, len;  /* in bytes */
	} *segs;
	size_t nsegs, cap_segs;
};

static int started(const struct luaws_out *o)
{
	return o->started || o->off;
}

/* The transport: write from up to two pieces, as much as the socket takes now. The
 * number of bytes written (0 when the socket is full), or -1 when it failed. */
static ssize_t transport_write(luaws_conn *c, const unsigned char *a, size_t an,
			       const unsigned char *b, size_t bn)
{
	int fd = c->plain_sock - 1;
	ssize_t n;
	if (fd < 0) {
		luaws_tls *tls = luaws_tls_of(c->wsi);
		if (tls)
			return luaws_tls_write(tls, a, an, b, bn);
		fd = lws_get_socket_fd(c->wsi);
	}
	if (!bn) {
		n = send(fd, a, an, MSG_NOSIGNAL | MSG_DONTWAIT);
	} else {
		struct iovec iov[2] = {{(void *)a, an}, {(void *)b, bn}};
		struct msghdr mh;
		memset(&mh, 0, sizeof(mh));
		mh.msg_iov = iov;
		mh.msg_iovlen = 2;
		n = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
	}
	if (n < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
	return n;
}

/* The plain transport's send, for TLS's ciphertext too (tls.c): as transport_write. */
ssize_t luaws_socket_send(int fd, const void *p, size_t n)
{
	ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (w < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
	return w;
}

/* The socket failed: the connection is gone. */
static int write_failed(luaws_conn *c)
{
	luaws_conn_abandon(c);
	luaws_conn_closed(c, LUAWS_ERR_WRITE, "write failed");
	return -1;
}

/* Queue the two pieces (from byte skip of a+b on), at the tail or, urgent, ahead of
 * every frame that has not started (behind the urgent ones already there, so control
 * frames keep their order). */
static int enqueue(luaws_conn *c, const unsigned char *a, size_t an, const unsigned char *b,
		   size_t bn, size_t skip, int urgent)
{
	luaws_sender *tx = &c->tx;
	size_t len = an + bn - skip;
	struct luaws_out *o = malloc(sizeof(*o) + len), **at;
	if (!o)
		return -1;
	o->len = len;
	o->off = 0;
	o->started = skip > 0;
	o->urgent = (unsigned char)urgent;
	if (skip < an) {
		memcpy(o->data, a + skip, an - skip);
		if (bn)
			memcpy(o->data + an - skip, b, bn);
	} else {
		memcpy(o->data, b + (skip - an), len);
	}
	at = &tx->head;
	if (urgent) {
		if (*at && started(*at))
			at = &(*at)->next;
		while (*at && (*at)->urgent)
			at = &(*at)->next;
	} else if (tx->tail) {
		at = &tx->tail->next;
	}
	o->next = *at;
	*at = o;
	if (!o->next)
		tx->tail = o;
	tx->queued += len;
	lws_callback_on_writable(c->wsi);
	if (tx->queued > TX_WAIT_BYTES)
		luaws_conn_tx_changed(c, 0);
	return 0;
}

/* Bytes whose turn has come: to the socket, the rest to the queue. -1 when the socket
 * failed (the connection is then closed) or out of memory. */
static int write_or_queue(luaws_conn *c, const unsigned char *a, size_t an,
			  const unsigned char *b, size_t bn, int urgent)
{
	ssize_t n = 0;
	if (!c->tx.head) {
		n = transport_write(c, a, an, b, bn);
		if (n < 0)
			return write_failed(c);
		if ((size_t)n == an + bn)
			return 0;
	}
	return enqueue(c, a, an, b, bn, (size_t)n, urgent);
}

/* Take c's segments out of the batch, in order: written (send_it, while c has its
 * socket) or dropped. -1 when the socket failed. */
static int batch_take(luaws_conn *c, int send_it)
{
	struct luaws_batch *b = c->loop->batch;
	size_t i;
	int rc = 0;
	for (i = 0; i < b->nsegs && c->tx.batched; i++) {
		struct luaws_batch_seg *sg = &b->segs[i];
		if (sg->c != c)
			continue;
		sg->c = NULL;
		c->tx.batched--;
		if (send_it && !rc && c->wsi &&
		    write_or_queue(c, b->bytes.data + sg->off, sg->len, NULL, 0, 0))
			rc = -1;
	}
	c->tx.batched = 0;
	return rc;
}

/* Before c sends anything outside the batch. -1 when the socket failed (c is then
 * closed). */
static int unbatch(luaws_conn *c)
{
	return c->tx.batched ? batch_take(c, 1) : 0;
}

static void batch_flush(luaws_loop *loop)
{
	struct luaws_batch *b = loop->batch;
	size_t i;
	for (i = 0; i < b->nsegs; i++) {
		struct luaws_batch_seg *sg = &b->segs[i];
		luaws_conn *c = sg->c;
		if (!c)
			continue;
		sg->c = NULL;
		c->tx.batched--;
		if (c->wsi && write_or_queue(c, b->bytes.data + sg->off, sg->len, NULL, 0, 0))
			batch_take(c, 0);
	}
	b->nsegs = 0;
	b->bytes.len = 0;
}

/* Add a frame to the batch. -1 when out of memory (nothing was added). */
static int batch_add(luaws_conn *c, const unsigned char *hdr, size_t hl,
		     const unsigned char *data, size_t len)
{
	struct luaws_batch *b = c->loop->batch;
	size_t off = b->bytes.len;
	if (luaws_buf_reserve(&b->bytes, hl + len))
		return -1;
	if (c->tx.batched && c->tx.last_seg == b->nsegs - 1) {
		b->segs[c->tx.last_seg].len += hl + len;
	} else {
		if (b->nsegs == b->cap_segs) {
			size_t cap = b->cap_segs ? b->cap_segs * 2 : 64;
			struct luaws_batch_seg *p = realloc(b->segs, cap * sizeof(*p));
			if (!p)
				return -1;
			b->segs = p;
			b->cap_segs = cap;
		}
		b->segs[b->nsegs].c = c;
		b->segs[b->nsegs].off = off;
		b->segs[b->nsegs].len = hl + len;
		c->tx.last_seg = b->nsegs++;
		c->tx.batched++;
	}
	memcpy(b->bytes.data + off, hdr, hl);
	if (len)
		memcpy(b->bytes.data + off + hl, data, len);
	b->bytes.len += hl + len;
	if (b->bytes.len >= BATCH_MAX)
		batch_flush(c->loop);
	return 0;
}

/* Send bytes already in wire format: batched (batchable and small, while the batch is
 * on), else written or queued behind what c has batched or queued. */
static int put(luaws_conn *c, const unsigned char *hdr, size_t hl, const unsigned char *data,
	       size_t len, int urgent, int batchable)
{
	unsigned char small[14 + SMALL_FRAME];
	if (!c->wsi)
		return 0;
	if (batchable && !c->tx.head && c->loop->batch->on && hl + len <= sizeof(small))
		return batch_add(c, hdr, hl, data, len); /* -1: out of memory */
	if (unbatch(c))
		return -1;
	if (len && hl + len <= sizeof(small)) {
		/* one contiguous send: cheaper in the kernel than a two-part sendmsg */
		memcpy(small, hdr, hl);
		memcpy(small + hl, data, len);
		return write_or_queue(c, small, hl + len, NULL, 0, urgent);
	}
	return write_or_queue(c, hdr, hl, data, len, urgent);
}

int luaws_send_frame(luaws_conn *c, int opcode, int fin, const unsigned char *data, size_t len,
		     int urgent)
{
	unsigned char hdr[14], key[4], *p;
	luaws_buf *s = &c->loop->scratch;
	size_t hl;
	if (!c->is_client) {
		hl = luaws_frame_header(hdr, fin, opcode, len, NULL);
		return put(c, hdr, hl, data, len, urgent, 1);
	}
	/* a client masks every frame with a fresh key: framed in the loop's scratch buffer */
	s->len = 0;
	if (luaws_buf_reserve(s, 14 + len))
		return -1;
	p = s->data;
	arc4random_buf(key, sizeof(key));
	hl = luaws_frame_header(p, fin, opcode, len, key);
	memcpy(p + hl, data, len);
	luaws_mask(p + hl, len, key, 0);
	return put(c, p, hl + len, NULL, 0, urgent, 0);
}

int luaws_send_bytes(luaws_conn *c, const unsigned char *p, size_t len, int urgent)
{
	return put(c, p, len, NULL, 0, urgent, !c->is_client && len <= SMALL_FRAME);
}

int luaws_sender_writeable(luaws_conn *c)
{
	luaws_sender *tx = &c->tx;
	while (tx->head) {
		struct luaws_out *o = tx->head;
		ssize_t n = transport_write(c, o->data + o->off, o->len - o->off, NULL, 0);
		if (n < 0)
			return write_failed(c);
		o->off += (size_t)n;
		tx->queued -= (size_t)n;
		if (o->off < o->len)
			break;
		tx->head = o->next;
		if (!tx->head)
			tx->tail = NULL;
		free(o);
	}
	if (tx->head)
		lws_callback_on_writable(c->wsi);
	luaws_conn_tx_changed(c, 1);
	return 0;
}

int luaws_sender_flush(luaws_conn *c)
{
	return unbatch(c);
}

int luaws_sender_idle(const luaws_conn *c)
{
	return !c->tx.head && !c->tx.batched && luaws_tls_idle(c->wsi);
}

int luaws_sender_full(const luaws_conn *c)
{
	return c->tx.queued > TX_WAIT_BYTES;
}

void luaws_sender_free(luaws_conn *c)
{
	struct luaws_out *o = c->tx.head, *next;
	if (c->tx.batched)
		batch_take(c, 0);
	for (; o; o = next) {
		next = o->next;
		free(o);
	}
	c->tx.head = c->tx.tail = NULL;
	c->tx.queued = 0;
}

/* Sockets nobody owns any more (an orphan's, a plain HTTP answer's). */

/* Let go of wsi: the n bytes at p (with LWS_PRE bytes of headroom) go to lws to write;
 * once lws has written what it holds, send FIN, read and drop what the peer still
 * sends, and close within secs. -1 when lws refused the bytes. */
static int let_go(luaws_loop *loop, struct lws *wsi, unsigned char *p, size_t n, int secs)
{
	int rc = 0;
	luaws_tls *tls = luaws_tls_of(wsi);
	lws_set_opaque_user_data(wsi, NULL);
	if (tls)
		rc = luaws_tls_let_go(tls, p, n, &p, &n); /* p, n: its ciphertext */
	if (n && lws_write(wsi, p, n, LWS_WRITE_RAW) < 0)
		rc = -1;
	if (lws_partial_buffered(wsi))
		lws_callback_on_writable(wsi); /* the shutdown follows the last byte */
	else
		shutdown(lws_get_socket_fd(wsi), SHUT_WR);
	lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_ACK, secs);
	luaws_touched_lws(loop);
	return rc;
}

/* A let-go socket is writeable. lws drains what it holds before it says so, except
 * when let_go ran inside the read callback of the same wake-up (a handler answering
 * at once): lws then clears the socket's interest in writing and calls here with all
 * of it still held, so ask again (else nothing more goes out until the timeout). */
void luaws_detached_writeable(struct lws *wsi)
{
	if (lws_partial_buffered(wsi))
		lws_callback_on_writable(wsi);
	else
		shutdown(lws_get_socket_fd(wsi), SHUT_WR);
}

/* Orphans. A connection that lets go of its socket (its Close(), its __gc) leaves what
 * it has queued or batched to an orphan record: the bytes go to lws to write (lws_write
 * keeps what the socket does not take and sends it as it can), then the socket lingers
 * (FIN after the last byte) and closes. From __gc (and a request's, with its 500) this
 * is deferred: lws's socket points at the record until the next step runs it, outside
 * every callback, since __gc may only release and never writes or calls into lws. */
struct luaws_orphan {
	enum luaws_kind kind; /* LUAWS_KIND_ORPHAN */
	luaws_deferred deferred;
	luaws_loop *loop;
	struct lws *wsi;      /* NULL once lws closed it */
	size_t len;
	unsigned char data[];
};

static void orphan_run(luaws_loop *loop, luaws_deferred *d)
{
	struct luaws_orphan *o = (struct luaws_orphan *)((char *)d - offsetof(struct luaws_orphan, deferred));
	if (o->wsi && !loop->closing)
		let_go(loop, o->wsi, o->data + LWS_PRE, o->len, 2);
	free(o);
}

void luaws_orphan_closed(struct luaws_orphan *o)
{
	o->wsi = NULL;
}

int luaws_orphan(luaws_loop *loop, struct lws *wsi, luaws_conn *c, const unsigned char *p,
		 size_t n, int now)
{
	struct luaws_batch *b = loop->batch;
	struct luaws_out *q;
	struct luaws_orphan *o;
	size_t len = n, i;
	if (c) {
		for (q = c->tx.head; q; q = q->next)
			len += q->len - q->off;
		for (i = 0; i < b->nsegs && c->tx.batched; i++)
			if (b->segs[i].c == c)
				len += b->segs[i].len;
	}
	o = malloc(sizeof(*o) + LWS_PRE + len);
	if (!o)
		return -1;
	o->kind = LUAWS_KIND_ORPHAN;
	o->loop = loop;
	o->wsi = wsi;
	o->len = 0;
	if (c) {
		/* the queue first (a frame in progress is at its head), then the batch */
		for (q = c->tx.head; q; q = q->next) {
			memcpy(o->data + LWS_PRE + o->len, q->data + q->off, q->len - q->off);
			o->len += q->len - q->off;
		}
		for (i = 0; i < b->nsegs && c->tx.batched; i++) {
			if (b->segs[i].c != c)
				continue;
			memcpy(o->data + LWS_PRE + o->len, b->bytes.data + b->segs[i].off,
			       b->segs[i].len);
			o->len += b->segs[i].len;
		}
		luaws_sender_free(c);
	}
	if (n)
		memcpy(o->data + LWS_PRE + o->len, p, n);
	o->len += n;
	o->deferred.run = orphan_run;
	if (now) {
		orphan_run(loop, &o->deferred);
		return 0;
	}
	lws_set_opaque_user_data(wsi, o);
	luaws_defer(loop, &o->deferred);
	return 0;
}

/* Bytes for a socket that no luaws object owns any more (a plain HTTP answer), at p
 * with LWS_PRE bytes of headroom before it: handed to lws to write, then the socket
 * lingers and closes. -1 when lws refused them. */
int luaws_send_detached(luaws_loop *loop, struct lws *wsi, unsigned char *p, size_t n)
{
	return let_go(loop, wsi, p, n, 5);
}

int luaws_batch_new(luaws_loop *loop)
{
	loop->batch = calloc(1, sizeof(*loop->batch));
	return loop->batch ? 0 : -1;
}

int luaws_batch_set(luaws_loop *loop, int on)
{
	struct luaws_batch *b = loop->batch;
	int was = b->on;
	b->on = on;
	if (!on && b->nsegs)
		batch_flush(loop);
	return was;
}

void luaws_batch_free(luaws_loop *loop)
{
	if (!loop->batch)
		return;
	luaws_buf_free(&loop->batch->bytes);
	free(loop->batch->segs);
	free(loop->batch);
	loop->batch = NULL;
}
