/*
 * permessage-deflate (RFC 7692) on zlib: the negotiation (parsing Sec-WebSocket-Extensions
 * exactly, the server's choice among the client's offers, the client's offer and its
 * check of the server's answer), the streams of each connection, a per-loop pool of
 * streams, compressing what a connection sends and inflating what it receives within a
 * limit. Whole messages without context are compressed by igzip.c instead (ISA-L).
 * frame.c lets RSV1 through when a connection negotiated it, receiver.c and conn.c call
 * in here, sender.c still sends every byte.
 *
 * Memory. A zlib deflate stream costs (1 << (windowBits + 2)) + (1 << (memLevel + 9))
 * bytes plus ~6 KiB (262 KiB at 15 and 8), an inflate stream 1 << windowBits plus ~7 KiB.
 * A direction without context takeover needs its stream only while a message is being
 * compressed or inflated: it takes one from the loop's pool and gives it back at the
 * message's end (as gorilla pools its flate writers), so an idle connection holds
 * none. With context takeover the stream is the connection's from its first
 * compressed message on: the window bits and memLevel the user picks bound it.
 */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "luaws.h"

/* Streams the pool keeps for the next messages; more are freed when given back. */
#define POOL_DEFLATERS 4
#define POOL_INFLATERS 8
/* Inflated bytes are taken in pieces of this size. */
#define INFLATE_CHUNK (64 * 1024)

static const unsigned char tail[4] = {0x00, 0x00, 0xff, 0xff};

typedef struct pmd_z {
	z_stream z;
	struct pmd_z *next;
	unsigned char deflating, bits, mem_level;
	signed char level;
} pmd_z;

struct luaws_pmd_pool {
	pmd_z *deflaters, *inflaters;
	int ndeflaters, ninflaters;
	struct luaws_igzip_pool *igzip; /* igzip.c's streams */
	luaws_buf out;            /* what a message compressed to */
	unsigned char chunk[INFLATE_CHUNK];
};

/* A connection's side of permessage-deflate. */
struct luaws_pmd {
	luaws_pmd_params p;       /* as negotiated */
	signed char level;        /* SetCompressionLevel */
	unsigned char write_on;   /* EnableWriteCompression */
	unsigned char tx_msg;     /* a fragmented message being sent: TX_* */
	unsigned char tx_opcode;  /* its opcode, for its first frame */
	unsigned char tx_sent;    /* a frame of it went out */
	unsigned char rx_msg;     /* a compressed message is being received */
	unsigned char rx_end;     /* its deflate stream ended (a block with BFINAL) */
	unsigned char rx_data;    /* it had some payload */
	unsigned char rx_tail;    /* the empty block the sender left off is being fed */
	pmd_z *tx, *rx;
};

enum { TX_NONE, TX_COMPRESSED, TX_PLAIN };

/* The zlib level and strategy of a gorilla compression level (-2: Huffman only). */
static int zlevel(int level)
{
	return level == -2 ? 1 : level;
}

static int zstrategy(int level)
{
	return level == -2 ? Z_HUFFMAN_ONLY : Z_DEFAULT_STRATEGY;
}

/* zlib's raw deflate cannot do an 8-bit window: it takes 9, whose matches still reach
 * no further back than 250 bytes (w_size - MIN_LOOKAHEAD), within the 256 the peer
 * keeps. */
static int deflate_bits(int bits)
{
	return bits < 9 ? 9 : bits;
}

/* The pool */

static struct luaws_pmd_pool *pool_of(luaws_loop *loop)
{
	if (!loop->pmd_pool && !loop->closing)
		loop->pmd_pool = calloc(1, sizeof(*loop->pmd_pool));
	return loop->pmd_pool;
}

static void z_free(pmd_z *s)
{
	if (s->deflating)
		deflateEnd(&s->z);
	else
		inflateEnd(&s->z);
	free(s);
}

static pmd_z *new_deflater(int bits, int mem_level, int level)
{
	pmd_z *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	if (deflateInit2(&s->z, zlevel(level), Z_DEFLATED, -deflate_bits(bits), mem_level,
			 zstrategy(level)) != Z_OK) {
		free(s);
		return NULL;
	}
	s->deflating = 1;
	s->bits = (unsigned char)bits;
	s->mem_level = (unsigned char)mem_level;
	s->level = (signed char)level;
	return s;
}

static pmd_z *new_inflater(int bits)
{
	pmd_z *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	if (inflateInit2(&s->z, -bits) != Z_OK) {
		free(s);
		return NULL;
	}
	s->bits = (unsigned char)bits;
	return s;
}

/* Set the level of a stream at a message boundary (everything flushed). */
static int set_level(pmd_z *s, int level)
{
	unsigned char none[8];
	if (s->level == level)
		return 0;
	s->z.next_in = NULL;
	s->z.avail_in = 0;
	s->z.next_out = none;
	s->z.avail_out = sizeof(none);
	if (deflateParams(&s->z, zlevel(level), zstrategy(level)) != Z_OK ||
	    s->z.avail_out != sizeof(none))
		return -1;
	s->level = (signed char)level;
	return 0;
}

/* A deflater reset for a new message, from the pool or new. */
static pmd_z *take_deflater(luaws_loop *loop, int bits, int mem_level, int level)
{
	struct luaws_pmd_pool *pool = pool_of(loop);
	pmd_z **at;
	for (at = pool ? &pool->deflaters : NULL; at && *at; at = &(*at)->next) {
		pmd_z *s = *at;
		if (s->bits != bits || s->mem_level != mem_level)
			continue;
		*at = s->next;
		pool->ndeflaters--;
		s->next = NULL;
		deflateReset(&s->z);
		if (set_level(s, level)) {
			z_free(s);
			return NULL;
		}
		return s;
	}
	return new_deflater(bits, mem_level, level);
}

/* Pooled inflaters all have 15-bit windows: they inflate what any window produced. */
static pmd_z *take_inflater(luaws_loop *loop)
{
	struct luaws_pmd_pool *pool = pool_of(loop);
	pmd_z *s = pool ? pool->inflaters : NULL;
	if (!s)
		return new_inflater(15);
	pool->inflaters = s->next;
	pool->ninflaters--;
	s->next = NULL;
	inflateReset(&s->z);
	return s;
}

static void give_back(luaws_loop *loop, pmd_z *s)
{
	struct luaws_pmd_pool *pool = loop->closing ? NULL : loop->pmd_pool;
	if (!s)
		return;
	if (pool && s->deflating && pool->ndeflaters < POOL_DEFLATERS) {
		s->next = pool->deflaters;
		pool->deflaters = s;
		pool->ndeflaters++;
	} else if (pool && !s->deflating && s->bits == 15 && pool->ninflaters < POOL_INFLATERS) {
		s->next = pool->inflaters;
		pool->inflaters = s;
		pool->ninflaters++;
	} else {
		z_free(s);
	}
}

void luaws_pmd_pool_free(luaws_loop *loop)
{
	struct luaws_pmd_pool *pool = loop->pmd_pool;
	pmd_z *s, *next;
	if (!pool)
		return;
	for (s = pool->deflaters; s; s = next) {
		next = s->next;
		z_free(s);
	}
	for (s = pool->inflaters; s; s = next) {
		next = s->next;
		z_free(s);
	}
	luaws_igzip_pool_free(pool->igzip);
	luaws_buf_free(&pool->out);
	free(pool);
	loop->pmd_pool = NULL;
}

/* A connection's state */

int luaws_pmd_attach(luaws_conn *c, const luaws_pmd_params *p)
{
	struct luaws_pmd *d = calloc(1, sizeof(*d));
	if (!d)
		return -1;
	d->p = *p;
	d->level = p->level;
	d->write_on = 1;
	c->pmd = d;
	c->rx.parser.rsv1_ok = 1;
	return 0;
}

/* The connection is closed: its streams go back to the pool (what it received whole
 * stays readable; nothing more is compressed or inflated). */
void luaws_pmd_release(luaws_conn *c)
{
	struct luaws_pmd *d = c->pmd;
	if (!d)
		return;
	give_back(c->loop, d->tx);
	give_back(c->loop, d->rx);
	d->tx = d->rx = NULL;
	d->tx_msg = TX_NONE;
	d->rx_msg = 0;
}

void luaws_pmd_free(luaws_conn *c)
{
	luaws_pmd_release(c);
	free(c->pmd);
	c->pmd = NULL;
}

/* Sending */

/* Compress n bytes at p into the pool's out buffer: all of the input, then (flush) up
 * to a block boundary. 0, or -1 when out of memory. */
static int run_deflate(pmd_z *s, struct luaws_pmd_pool *pool, const unsigned char *p, size_t n,
		       int flush)
{
	luaws_buf *out = &pool->out;
	s->z.next_in = (unsigned char *)p;
	s->z.avail_in = 0;
	for (;;) {
		size_t room;
		int rc;
		if (!s->z.avail_in && n) {
			uInt take = n > (1u << 30) ? (1u << 30) : (uInt)n;
			s->z.avail_in = take;
			n -= take;
		}
		if (luaws_buf_reserve(out, (size_t)s->z.avail_in / 2 + 1024))
			return -1;
		room = out->cap - out->len;
		if (room > (1u << 30))
			room = 1u << 30;
		s->z.next_out = out->data + out->len;
		s->z.avail_out = (uInt)room;
		rc = deflate(&s->z, n ? Z_NO_FLUSH : flush);
		out->len += room - s->z.avail_out;
		if (rc != Z_OK && rc != Z_BUF_ERROR)
			return -1;
		/* done when the input is in and the output had room to spare */
		if (!n && !s->z.avail_in && s->z.avail_out)
			return 0;
	}
}

int luaws_pmd_compresses(const luaws_conn *c)
{
	return c->pmd && c->pmd->write_on;
}

int luaws_pmd_takeover(const luaws_conn *c)
{
	return c->pmd && !c->pmd->p.tx_no_takeover;
}

void luaws_pmd_key(const luaws_conn *c, int *bits, int *mem_level, int *level)
{
	*bits = c->pmd->p.tx_bits;
	*mem_level = c->pmd->p.mem_level;
	*level = c->pmd->level;
}

/* RFC 7692 7.2.1: the empty stored block a sync flush ends with is left off. */
static void drop_flush_block(luaws_buf *out)
{
	if (out->len >= 4 && !memcmp(out->data + out->len - 4, tail, 4))
		out->len -= 4;
}

/* The same for a message's last frame; with nothing new since the last flush, an empty
 * stored block's first byte is sent instead (7.2.3.6). 0, or -1 when out of memory. */
static int strip_tail(luaws_buf *out)
{
	drop_flush_block(out);
	if (!out->len && luaws_buf_append(out, "", 1))
		return -1;
	return 0;
}

/* Whether a whole message of n bytes goes to igzip.c rather than zlib: no context to
 * keep, the full window (igzip's), a level it has, and something to compress (zlib
 * sends an empty message as the single 00 of RFC 7692 7.2.3.6). */
static int whole_by_igzip(int no_takeover, int bits, int level, size_t n)
{
	return no_takeover && bits == 15 && luaws_igzip_level(level) && n > 0;
}

/* The stream for c's next compressed message. */
static pmd_z *tx_stream(luaws_conn *c)
{
	struct luaws_pmd *d = c->pmd;
	if (!d->tx) {
		d->tx = take_deflater(c->loop, d->p.tx_bits, d->p.mem_level, d->level);
	} else if (d->tx_msg == TX_NONE && set_level(d->tx, d->level)) {
		z_free(d->tx);
		d->tx = NULL;
	}
	return d->tx;
}

/* A frame of a data message is about to be sent (opcode 1 or 2 starts a message, 0
 * continues one). When the message is compressed: compress data; 1 with *data, *len
 * and *opcode (RSV1 on the message's first frame) replaced by what to send, 0 when
 * there is nothing to send yet (zlib holds the input), -1 when out of memory. A
 * message begun while write compression was off stays uncompressed, and the other
 * way round. */
int luaws_pmd_write(luaws_conn *c, int *opcode, int fin, const unsigned char **data, size_t *len)
{
	struct luaws_pmd *d = c->pmd;
	struct luaws_pmd_pool *pool = pool_of(c->loop);
	luaws_buf *out;
	pmd_z *s = NULL;
	if (*opcode) {
		if (d->tx_msg == TX_COMPRESSED && d->tx) {
			/* the last message was never finished: start from a fresh stream */
			z_free(d->tx);
			d->tx = NULL;
		}
		if (!d->write_on) {
			d->tx_msg = fin ? TX_NONE : TX_PLAIN;
			return 1;
		}
		d->tx_opcode = (unsigned char)*opcode;
		d->tx_sent = 0;
	} else if (d->tx_msg != TX_COMPRESSED) {
		if (fin)
			d->tx_msg = TX_NONE;
		return 1;
	}
	if (!pool)
		return -1;
	out = &pool->out;
	out->len = 0;
	if (*opcode && fin && whole_by_igzip(d->p.tx_no_takeover, d->p.tx_bits, d->level, *len)) {
		/* a whole message with no context: igzip.c */
		if (luaws_igzip_compress(&pool->igzip, d->level, *data, *len, out))
			return -1;
	} else {
		if (!(s = tx_stream(c)))
			return -1;
		d->tx_msg = TX_COMPRESSED;
		if (run_deflate(s, pool, *data, *len, fin ? Z_SYNC_FLUSH : Z_NO_FLUSH)) {
			/* the stream is in an unknown state: a new message starts afresh */
			z_free(s);
			d->tx = NULL;
			d->tx_msg = TX_NONE;
			return -1;
		}
	}
	if (fin) {
		if (strip_tail(out))
			return -1;
		d->tx_msg = TX_NONE;
		if (s && d->p.tx_no_takeover) {
			give_back(c->loop, s);
			d->tx = NULL;
		}
	} else if (!out->len) {
		return 0;
	}
	*opcode = d->tx_sent ? 0 : d->tx_opcode | LUAWS_RSV1;
	d->tx_sent = 1;
	*data = out->data;
	*len = out->len;
	return 1;
}

/* A whole message compressed alone, with no context (a prepared message for the
 * connections without context takeover), into out. 0, or -1 when out of memory. */
int luaws_pmd_compress_alone(luaws_loop *loop, int bits, int mem_level, int level,
			     const unsigned char *p, size_t n, luaws_buf *out)
{
	struct luaws_pmd_pool *pool = pool_of(loop);
	pmd_z *s;
	if (!pool)
		return -1;
	pool->out.len = 0;
	if (whole_by_igzip(1, bits, level, n)) {
		if (luaws_igzip_compress(&pool->igzip, level, p, n, &pool->out))
			return -1;
	} else {
		if (!(s = take_deflater(loop, bits, mem_level, level)))
			return -1;
		if (run_deflate(s, pool, p, n, Z_SYNC_FLUSH)) {
			z_free(s);
			return -1;
		}
		give_back(loop, s);
	}
	drop_flush_block(&pool->out);
	return luaws_buf_append(out, pool->out.data, pool->out.len);
}

/* Receiving */

/* A compressed message begins. 0, or -1 when out of memory. */
int luaws_pmd_rx_begin(luaws_conn *c)
{
	struct luaws_pmd *d = c->pmd;
	if (!d->rx)
		d->rx = d->p.rx_no_takeover ? take_inflater(c->loop) : new_inflater(d->p.rx_bits);
	else if (d->p.rx_no_takeover)
		inflateReset(&d->rx->z); /* the last message never ended: no context */
	d->rx_msg = 1;
	d->rx_end = 0;
	d->rx_data = 0;
	d->rx_tail = 0;
	return d->rx ? 0 : -1;
}

/* The peer's deflate stream ended inside a message (a block with BFINAL): with context
 * takeover the next message goes on from the same window, so keep it across the
 * reset. */
static int restart_keeping_window(pmd_z *s)
{
	unsigned char window[1 << 15];
	uInt n = sizeof(window);
	if (inflateGetDictionary(&s->z, window, &n) != Z_OK || inflateReset(&s->z) != Z_OK)
		return -1;
	return n && inflateSetDictionary(&s->z, window, n) != Z_OK ? -1 : 0;
}

/* The message ended: its stream goes back to the pool without context takeover. */
static int rx_end(luaws_conn *c)
{
	struct luaws_pmd *d = c->pmd;
	d->rx_msg = 0;
	if (d->p.rx_no_takeover) {
		give_back(c->loop, d->rx);
		d->rx = NULL;
	} else if (d->rx_end && restart_keeping_window(d->rx)) {
		return -1;
	}
	return 0;
}

/* Inflate n bytes of the compressed message being received (final: they end it, and
 * the empty stored block the sender left off is put back), handing each piece of
 * output to sink. At most max_out bytes are produced (UINT64_MAX: no bound). 0, or the
 * close code to fail the connection with (*why says why): 1007 for invalid compressed
 * data, 1009 when the output would pass max_out, 1011 when out of memory; -1 when sink
 * refused a piece (it failed the connection itself); LUAWS_PMD_HELD when sink asked to
 * stop for now (the reader is behind): *rest and *rest_len are the input not inflated
 * yet (maybe none, maybe part of the put-back block), to pass again, with final, when
 * the reader has caught up. */
int luaws_pmd_inflate(luaws_conn *c, const unsigned char *in, size_t n, int final,
		      uint64_t max_out, luaws_pmd_sink sink, const char **why,
		      const unsigned char **rest, size_t *rest_len)
{
	struct luaws_pmd *d = c->pmd;
	struct luaws_pmd_pool *pool = pool_of(c->loop);
	pmd_z *s = d->rx;
	int full = 0;
	uint64_t produced = 0;
	*why = "out of memory";
	if (!pool || !s)
		return 1011;
	if (n && !d->rx_tail)
		d->rx_data = 1;
	/* an empty payload is an empty message (RFC 7692 wants at least one byte, 0x00;
	 * Python's websockets and Node's ws take none as well) */
	if (final && !d->rx_data)
		d->rx_tail = 1;
	s->z.next_in = (unsigned char *)in;
	s->z.avail_in = (uInt)n;
	for (;;) {
		size_t room = sizeof(pool->chunk), got;
		int rc;
		if (d->rx_end)
			break; /* after a block with BFINAL the rest of the message is padding */
		if (!s->z.avail_in && !full) {
			if (!final || d->rx_tail)
				break;
			s->z.next_in = (unsigned char *)tail;
			s->z.avail_in = sizeof(tail);
			d->rx_tail = 1;
		}
		if (max_out != UINT64_MAX && room > max_out - produced + 1)
			room = (size_t)(max_out - produced + 1);
		s->z.next_out = pool->chunk;
		s->z.avail_out = (uInt)room;
		rc = inflate(&s->z, Z_SYNC_FLUSH);
		got = room - s->z.avail_out;
		full = s->z.avail_out == 0;
		if (rc == Z_STREAM_END) {
			d->rx_end = 1;
		} else if (rc == Z_MEM_ERROR) {
			return 1011;
		} else if (rc != Z_OK && rc != Z_BUF_ERROR) {
			*why = "invalid compressed data";
			return 1007;
		}
		produced += got;
		if (max_out != UINT64_MAX && produced > max_out) {
			*why = "message too big";
			return 1009;
		}
		if (got) {
			int held = sink(c, pool->chunk, got);
			if (held < 0)
				return -1;
			if (held && (s->z.avail_in || full || (final && !d->rx_tail))) {
				*rest = s->z.next_in;
				*rest_len = s->z.avail_in;
				return LUAWS_PMD_HELD;
			}
		}
		if (!got && rc == Z_BUF_ERROR && s->z.avail_in) {
			*why = "invalid compressed data";
			return 1007;
		}
	}
	if (!final)
		return 0;
	/* the message must end where a block ends: else what was sent is cut short */
	if (d->rx_data && !d->rx_end && !(s->z.data_type & 128)) {
		*why = "truncated compressed data";
		return 1007;
	}
	return rx_end(c) ? 1011 : 0;
}

/* Negotiation: Sec-WebSocket-Extensions (RFC 6455 9.1, RFC 7230 3.2.6 and 7):
 *   extension-list = 1#( token *( OWS ";" OWS token [ OWS "=" OWS ( token / quoted-string ) ] ) )
 * An element that breaks the grammar is skipped up to the next comma outside quotes;
 * empty elements are allowed. A quoted value, unescaped, must be a token (RFC 6455). */

static int tchar(int ch)
{
	return ch > 0x20 && ch < 0x7f && !strchr("\"(),/:;<=>?@[\\]{}", ch);
}

static const char *ows(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

static const char *token_end(const char *p)
{
	while (*p && tchar((unsigned char)*p))
		p++;
	return p;
}

/* permessage-deflate's parameters as one element gives them. */
typedef struct pmd_offer {
	int server_no_takeover, client_no_takeover;
	int server_bits;  /* 0: absent */
	int client_bits;  /* 0: absent, -1: without a value */
} pmd_offer;

/* A window-bits value: "8" to "15", exactly. */
static int window_bits(const char *v, size_t n)
{
	if (n == 1 && v[0] >= '8' && v[0] <= '9')
		return v[0] - '0';
	if (n == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5')
		return 10 + v[1] - '0';
	return 0;
}

/* Record parameter name=value (value NULL: none) in o: -1 if permessage-deflate has no
 * such parameter, it came already, or its value is wrong (response: client_max_window_bits
 * needs a value). */
static int offer_param(pmd_offer *o, const char *name, size_t nl, const char *value, size_t vl,
		       int response)
{
#define IS(lit) (nl == sizeof(lit) - 1 && !memcmp(name, lit, nl))
	if (IS("server_no_context_takeover")) {
		if (o->server_no_takeover || value)
			return -1;
		o->server_no_takeover = 1;
	} else if (IS("client_no_context_takeover")) {
		if (o->client_no_takeover || value)
			return -1;
		o->client_no_takeover = 1;
	} else if (IS("server_max_window_bits")) {
		if (o->server_bits || !value || !(o->server_bits = window_bits(value, vl)))
			return -1;
	} else if (IS("client_max_window_bits")) {
		if (o->client_bits)
			return -1;
		if (!value) {
			if (response)
				return -1;
			o->client_bits = -1;
		} else if (!(o->client_bits = window_bits(value, vl)))
			return -1;
	} else {
		return -1;
	}
	return 0;
#undef IS
}

/* Parse the element at *pp (up to the comma that ends it, or the end), moving *pp past
 * it. 1 when it is a valid permessage-deflate element (*o), 0 when it is another
 * extension or a permessage-deflate with bad parameters, -1 when it breaks the
 * grammar, 2 when it is empty. */
static int parse_element(const char **pp, pmd_offer *o, int response)
{
	const char *p = ows(*pp), *name, *e;
	int ok = 1;
	char value[16];
	memset(o, 0, sizeof(*o));
	if (*p == ',' || !*p) {
		*pp = *p ? p + 1 : p;
		return 2;
	}
	name = p;
	e = token_end(p);
	if (e == name)
		goto bad;
	if (!(e - name == 18 && !memcmp(name, "permessage-deflate", 18)))
		ok = 0;
	p = ows(e);
	while (*p == ';') {
		const char *pn, *pe;
		size_t vl = 0;
		int has_value = 0;
		p = ows(p + 1);
		pn = p;
		pe = token_end(p);
		if (pe == pn)
			goto bad;
		p = ows(pe);
		if (*p == '=') {
			p = ows(p + 1);
			has_value = 1;
			if (*p == '"') {
				p++;
				while (*p && *p != '"') {
					unsigned char ch;
					if (*p == '\\') {
						p++;
						if (!*p)
							goto bad;
					}
					ch = (unsigned char)*p++;
					if (ch < 0x20 && ch != '\t')
						goto bad;
					if (!tchar(ch))
						ok = 0; /* unescaped, a value must be a token */
					if (vl < sizeof(value))
						value[vl] = (char)ch;
					vl++;
				}
				if (*p != '"')
					goto bad;
				p++;
				if (!vl)
					ok = 0;
			} else {
				const char *ve = token_end(p);
				if (ve == p)
					goto bad;
				vl = (size_t)(ve - p);
				memcpy(value, p, vl < sizeof(value) ? vl : sizeof(value));
				p = ve;
			}
			if (vl > sizeof(value))
				ok = 0;
		}
		if (ok && offer_param(o, pn, (size_t)(pe - pn), has_value ? value : NULL, vl,
				      response))
			ok = 0;
		p = ows(p);
	}
	if (*p && *p != ',')
		goto bad;
	*pp = *p ? p + 1 : p;
	return ok;
bad:
	/* skip to the comma that ends the element, outside quotes */
	{
		int quoted = 0;
		while (*p && (quoted || *p != ',')) {
			if (*p == '"')
				quoted = !quoted;
			else if (quoted && *p == '\\' && p[1])
				p++;
			p++;
		}
		*pp = *p ? p + 1 : p;
	}
	return -1;
}

static int min_bits(int a, int b)
{
	return a && b ? (a < b ? a : b) : a ? a : b;
}

void luaws_pmd_default_config(luaws_pmd_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	/* gorilla's: no context takeover either way, level 1 */
	cfg->server_no_takeover = cfg->client_no_takeover = 1;
	cfg->level = 1;
	cfg->mem_level = 8;
}

int luaws_pmd_negotiate(const char *offers, const luaws_pmd_config *cfg, luaws_pmd_params *out,
			luaws_buf *answer)
{
	const char *p = offers;
	pmd_offer o;
	while (*p) {
		int server_bits, client_bits = 0;
		if (parse_element(&p, &o, 0) != 1)
			continue;
		/* the first valid offer: everything it asks can be granted */
		memset(out, 0, sizeof(*out));
		out->tx_no_takeover = o.server_no_takeover || cfg->server_no_takeover;
		out->rx_no_takeover = o.client_no_takeover || cfg->client_no_takeover;
		server_bits = min_bits(o.server_bits, cfg->server_bits);
		if (o.client_bits > 0)
			client_bits = min_bits(o.client_bits, cfg->client_bits);
		else if (o.client_bits < 0)
			client_bits = cfg->client_bits; /* the client lets the server choose */
		out->tx_bits = (unsigned char)(server_bits ? server_bits : 15);
		out->rx_bits = (unsigned char)(client_bits ? client_bits : 15);
		out->level = cfg->level;
		out->mem_level = cfg->mem_level;
		if (luaws_buf_printf(answer, "Sec-WebSocket-Extensions: permessage-deflate%s%s",
				     out->tx_no_takeover ? "; server_no_context_takeover" : "",
				     out->rx_no_takeover ? "; client_no_context_takeover" : "") ||
		    (server_bits && luaws_buf_printf(answer, "; server_max_window_bits=%d", server_bits)) ||
		    (client_bits && luaws_buf_printf(answer, "; client_max_window_bits=%d", client_bits)) ||
		    luaws_buf_append(answer, "\r\n", 2))
			return -1;
		return 1;
	}
	return 0;
}

int luaws_pmd_offer(const luaws_pmd_config *cfg, luaws_buf *out)
{
	if (luaws_buf_printf(out, "Sec-WebSocket-Extensions: permessage-deflate%s%s",
			     cfg->server_no_takeover ? "; server_no_context_takeover" : "",
			     cfg->client_no_takeover ? "; client_no_context_takeover" : "") ||
	    (cfg->server_bits &&
	     luaws_buf_printf(out, "; server_max_window_bits=%d", cfg->server_bits)))
		return -1;
	/* always: the server may choose our window (we offer to use at most cfg's) */
	if (cfg->client_bits)
		return luaws_buf_printf(out, "; client_max_window_bits=%d\r\n", cfg->client_bits);
	return luaws_buf_printf(out, "; client_max_window_bits\r\n");
}

int luaws_pmd_check_answer(const char *answer, const luaws_pmd_config *cfg, luaws_pmd_params *out)
{
	const char *p = answer;
	pmd_offer o, extra;
	int rc;
	do
		rc = *p ? parse_element(&p, &o, 1) : -1;
	while (rc == 2);
	if (rc != 1)
		return -1; /* not permessage-deflate, or not valid */
	while (*p) /* nothing else: we offered one extension */
		if (parse_element(&p, &extra, 1) != 2)
			return -1;
	/* RFC 7692 7.1.1.1, 7.1.2.1: what we asked of the server must be granted */
	if (cfg->server_no_takeover && !o.server_no_takeover)
		return -1;
	if (cfg->server_bits && (!o.server_bits || o.server_bits > cfg->server_bits))
		return -1;
	if (cfg->client_bits && o.client_bits > cfg->client_bits)
		return -1;
	memset(out, 0, sizeof(*out));
	out->rx_no_takeover = (unsigned char)o.server_no_takeover;
	out->tx_no_takeover = o.client_no_takeover || cfg->client_no_takeover;
	out->rx_bits = (unsigned char)(o.server_bits ? o.server_bits : 15);
	out->tx_bits = (unsigned char)(o.client_bits > 0 ? o.client_bits :
				       cfg->client_bits ? cfg->client_bits : 15);
	out->level = cfg->level;
	out->mem_level = cfg->mem_level;
	return 0;
}

/* A CompressionOptions table at idx (nil: the defaults; the Lua side checked the
 * fields, this checks the ranges again). */
void luaws_pmd_read_config(lua_State *L, int idx, luaws_pmd_config *cfg)
{
	static const struct {
		const char *name;
		int min, max;
	} fields[] = {
		{"ServerNoContextTakeover", 0, 1}, {"ClientNoContextTakeover", 0, 1},
		{"ServerMaxWindowBits", 8, 15},    {"ClientMaxWindowBits", 8, 15},
		{"Level", -2, 9},                  {"MemLevel", 1, 9},
	};
	size_t i;
	luaws_pmd_default_config(cfg);
	if (lua_isnoneornil(L, idx))
		return;
	luaL_checktype(L, idx, LUA_TTABLE);
	for (i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		int t = lua_getfield(L, idx, fields[i].name), v = 0;
		if (t == LUA_TBOOLEAN && fields[i].max == 1) {
			v = lua_toboolean(L, -1);
		} else if (t == LUA_TNUMBER && fields[i].max > 1 && lua_isinteger(L, -1) &&
			   lua_tointeger(L, -1) >= fields[i].min &&
			   lua_tointeger(L, -1) <= fields[i].max) {
			v = (int)lua_tointeger(L, -1);
		} else if (t != LUA_TNIL) {
			luaL_error(L, "CompressionOptions: bad %s", fields[i].name);
		}
		lua_pop(L, 1);
		if (t == LUA_TNIL)
			continue;
		switch (i) {
		case 0: cfg->server_no_takeover = (unsigned char)v; break;
		case 1: cfg->client_no_takeover = (unsigned char)v; break;
		case 2: cfg->server_bits = (unsigned char)v; break;
		case 3: cfg->client_bits = (unsigned char)v; break;
		case 4: cfg->level = (signed char)v; break;
		default: cfg->mem_level = (unsigned char)v; break;
		}
	}
}

/* Lua methods */

/* c:EnableWriteCompression(enable): whether the next messages are compressed (when
 * permessage-deflate was negotiated; the default). */
static int l_enable_write_compression(lua_State *L)
{
	luaws_conn *c = luaws_conn_check(L);
	luaL_checktype(L, 2, LUA_TBOOLEAN);
	if (c->pmd)
		c->pmd->write_on = (unsigned char)lua_toboolean(L, 2);
	lua_pushboolean(L, 1);
	return 1;
}

/* c:SetCompressionLevel(level): -2 (Huffman only) to 9, as gorilla; from the next
 * message on. */
static int l_set_compression_level(lua_State *L)
{
	luaws_conn *c = luaws_conn_check(L);
	lua_Integer level;
	level = lua_isinteger(L, 2) ? lua_tointeger(L, 2) : 100;
	if (level < -2 || level > 9)
		return luaL_argerror(L, 2, "invalid compression level (an integer from -2 to 9)");
	if (c->pmd)
		c->pmd->level = (signed char)level;
	lua_pushboolean(L, 1);
	return 1;
}

/* c:_deflate() -> what was negotiated (nil: nothing): {tx_bits, rx_bits,
 * tx_no_context_takeover, rx_no_context_takeover, level, mem_level, write} */
static int l_deflate(lua_State *L)
{
	luaws_conn *c = luaws_conn_check(L);
	struct luaws_pmd *d = c->pmd;
	if (!d)
		return 0;
	lua_createtable(L, 0, 7);
	lua_pushinteger(L, d->p.tx_bits);
	lua_setfield(L, -2, "tx_bits");
	lua_pushinteger(L, d->p.rx_bits);
	lua_setfield(L, -2, "rx_bits");
	lua_pushboolean(L, d->p.tx_no_takeover);
	lua_setfield(L, -2, "tx_no_context_takeover");
	lua_pushboolean(L, d->p.rx_no_takeover);
	lua_setfield(L, -2, "rx_no_context_takeover");
	lua_pushinteger(L, d->level);
	lua_setfield(L, -2, "level");
	lua_pushinteger(L, d->p.mem_level);
	lua_setfield(L, -2, "mem_level");
	lua_pushboolean(L, d->write_on);
	lua_setfield(L, -2, "write");
	lua_pushboolean(L, d->tx != NULL);
	lua_setfield(L, -2, "tx_stream");
	lua_pushboolean(L, d->rx != NULL);
	lua_setfield(L, -2, "rx_stream");
	return 1;
}

/* core._deflate_pool() -> deflaters, inflaters the loop's pool keeps (for specs) */
static int l_deflate_pool(lua_State *L)
{
	luaws_loop *loop = luaws_loop_get(L);
	struct luaws_pmd_pool *pool = loop->pmd_pool;
	lua_pushinteger(L, pool ? pool->ndeflaters : 0);
	lua_pushinteger(L, pool ? pool->ninflaters : 0);
	return 2;
}

int luaws_deflate_open(lua_State *L)
{
	static const luaL_Reg methods[] = {
		{"EnableWriteCompression", l_enable_write_compression},
		{"SetCompressionLevel", l_set_compression_level},
		{"_deflate", l_deflate},
		{NULL, NULL},
	};
	luaws_conn_add_methods(L, methods);
	lua_pushcfunction(L, l_deflate_pool);
	lua_setfield(L, -2, "_deflate_pool");
	return 0;
}
