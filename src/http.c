/*
 * The HTTP/1.1 side of the opening handshake (RFC 6455 §4, RFC 9112): collecting a
 * request or response head from the socket, splitting it into the start line and a
 * header list, and the Sec-WebSocket-Key / Sec-WebSocket-Accept computation.
 */
#include <stdlib.h>
#include <string.h>
#include <ctype.h>
#include <stdint.h>
/* SHA1_Init/Update/Final: deprecated in OpenSSL 3 but kept, and the only way to hash
 * without EVP's per-call method fetch (SHA1() fetches every time): lws_SHA1 cost 6k
 * instructions per handshake, the one-shot SHA1() 5k, these 2k (and OpenSSL uses the
 * CPU's SHA instructions when it has them). */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

#include "luaws.h"

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/* Append bytes to the head until its blank line: returns how many of the len bytes
 * belong to the head once it is complete (the rest is the body or frames), 0 when all
 * were taken and more are needed, -1 when the head outgrew max. */
long luaws_http_feed(luaws_buf *head, const unsigned char *in, size_t len, size_t max)
{
	size_t old = head->len, i, take = len;
	if (old >= max)
		return -1;
	if (take > max - old)
		take = max - old;
	if (luaws_buf_reserve(head, take))
		return -1;
	memcpy(head->data + old, in, take);
	head->len += take;
	/* the blank line may start in bytes that came before */
	for (i = old > 3 ? old - 3 : 0; i < head->len; i++) {
		unsigned char *d = head->data, *nl = memchr(d + i, '\n', head->len - i);
		if (!nl)
			break;
		i = (size_t)(nl - d);
		if ((i >= 1 && d[i - 1] == '\n') || (i >= 2 && d[i - 1] == '\r' && d[i - 2] == '\n')) {
			head->len = i + 1;
			return (long)(i + 1 - old);
		}
	}
	return head->len >= max ? -1 : 0;
}

/* RFC 9110 tchar: visible ASCII except "(),/:;<=>?@[\]{}, one bit per code 0-127 (a
 * strchr per byte of every header name was a measurable part of each handshake). */
static const uint64_t tchar_bits[2] = {0x03ff6cfa00000000ULL, 0x57ffffffc7fffffeULL};

static int is_tchar(int c)
{
	return c < 128 && (tchar_bits[c >> 6] >> (c & 63)) & 1;
}

/* Cut the next line (CRLF or LF) off *p: returns it NUL-terminated (*eol: its NUL), or
 * NULL at end. */
static char *next_line(char **p, char *end, char **eol)
{
	char *line = *p, *nl;
	if (line >= end)
		return NULL;
	nl = memchr(line, '\n', (size_t)(end - line));
	if (!nl)
		return NULL;
	*p = nl + 1;
	if (nl > line && nl[-1] == '\r')
		nl--;
	*nl = '\0';
	*eol = nl;
	return line;
}

/* Parse the header lines after the start line into out ("name\0value\0", names lower
 * case, values trimmed). inplace: the list is written over the lines themselves (it is
 * never longer than they are) and out only points at it (cap 0: nothing to free);
 * else out gets a copy. -1 on a malformed line. */
static int parse_fields(char *p, char *end, luaws_buf *out, int inplace)
{
	char *line, *eol, *w = p;
	int count = 0;
	out->len = 0;
	if (inplace) {
		out->data = (unsigned char *)p;
		out->cap = 0;
	}
	while ((line = next_line(&p, end, &eol)) && *line) {
		char *colon = strchr(line, ':'), *v, *ve, *k, *to;
		size_t nl, vl;
		if (!colon || colon == line || ++count > 100)
			return -1;
		for (k = line; k < colon; k++) {
			if (!is_tchar((unsigned char)*k))
				return -1; /* also refuses obsolete line folding and "name :" */
			if (*k >= 'A' && *k <= 'Z')
				*k = (char)(*k + ('a' - 'A'));
		}
		v = colon + 1;
		while (*v == ' ' || *v == '\t')
			v++;
		ve = memchr(v, '\0', (size_t)(eol - v)); /* a NUL in the line ends the value */
		if (!ve)
			ve = eol;
		while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
			ve--;
		nl = (size_t)(colon - line);
		vl = (size_t)(ve - v);
		if (memchr(v, '\r', vl))
			return -1;
		if (inplace) {
			to = w; /* w <= line: each record is at most as long as its line */
		} else {
			if (luaws_buf_reserve(out, nl + vl + 2))
				return -1;
			to = (char *)out->data + out->len;
		}
		memmove(to, line, nl);
		to[nl] = '\0';
		memmove(to + nl + 1, v, vl);
		to[nl + 1 + vl] = '\0';
		out->len += nl + vl + 2;
		w += nl + vl + 2;
	}
	return 0;
}

/* Split a complete request head (modified in place): *method and *target point into
 * it, and so does out, the header list (not to be freed: it goes with head). -1 when it
 * is not an HTTP/1.x request. */
int luaws_http_parse_request(luaws_buf *head, char **method, char **target, luaws_buf *out)
{
	char *p = (char *)head->data, *end = p + head->len, *line, *eol, *sp1, *sp2, *c;

	/* tolerate empty lines before the request line (RFC 9112 §2.2) */
	do {
		line = next_line(&p, end, &eol);
	} while (line && !*line);
	if (!line)
		return -1;
	sp1 = strchr(line, ' ');
	if (!sp1)
		return -1;
	sp2 = strchr(sp1 + 1, ' ');
	if (!sp2 || strncmp(sp2 + 1, "HTTP/1.", 7) || !isdigit((unsigned char)sp2[8]) || sp2[9])
		return -1;
	*sp1 = *sp2 = '\0';
	for (c = line; *c; c++)
		if (!is_tchar((unsigned char)*c))
			return -1;
	if (!*line || !sp1[1])
		return -1;
	for (c = sp1 + 1; *c; c++)
		if ((unsigned char)*c <= 32 || *c == 127)
			return -1;
	*method = line;
	*target = sp1 + 1;
	return parse_fields(p, end, out, 1);
}

/* Split a complete response head: the status code, headers to out. -1 when malformed. */
int luaws_http_parse_response(luaws_buf *head, int *status, luaws_buf *out)
{
	char *p = (char *)head->data, *end = p + head->len, *eol, *line = next_line(&p, end, &eol);
	if (!line || strncmp(line, "HTTP/1.", 7) || !isdigit((unsigned char)line[7]) ||
	    line[8] != ' ' || !isdigit((unsigned char)line[9]) ||
	    !isdigit((unsigned char)line[10]) || !isdigit((unsigned char)line[11]) ||
	    (line[12] && line[12] != ' '))
		return -1;
	*status = atoi(line + 9);
	return parse_fields(p, end, out, 0);
}

/* The value of the first header called name (lower case) in the list, or NULL. */
const char *luaws_http_header(const luaws_buf *list, const char *name)
{
	const char *n, *v;
	size_t off = 0;
	while (luaws_headers_next(list, &off, &n, &v))
		if (!strcmp(n, name))
			return v;
	return NULL;
}

/* Does some header called name carry token (comma-separated, any case)? */
int luaws_http_has_token(const luaws_buf *list, const char *name, const char *token)
{
	const char *n, *v;
	size_t off = 0, tl = strlen(token);
	while (luaws_headers_next(list, &off, &n, &v)) {
		if (strcmp(n, name))
			continue;
		while (*v) {
			const char *e;
			size_t l;
			while (*v == ' ' || *v == '\t' || *v == ',')
				v++;
			e = v;
			while (*e && *e != ',')
				e++;
			l = (size_t)(e - v);
			while (l && (v[l - 1] == ' ' || v[l - 1] == '\t'))
				l--;
			if (l == tl && !strncasecmp(v, token, tl))
				return 1;
			v = e;
		}
	}
	return 0;
}

/* Sec-WebSocket-Accept for a key: base64(SHA-1(key + GUID)), 28 characters. */
void luaws_ws_accept(const char *key, char out[32])
{
	static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	unsigned char buf[128], md[21];
	size_t kl = strlen(key);
	SHA_CTX sha;
	int i;
	char *o = out;
	if (kl > sizeof(buf) - sizeof(ws_guid))
		kl = sizeof(buf) - sizeof(ws_guid);
	memcpy(buf, key, kl);
	memcpy(buf + kl, ws_guid, sizeof(ws_guid) - 1);
	SHA1_Init(&sha);
	SHA1_Update(&sha, buf, kl + sizeof(ws_guid) - 1);
	SHA1_Final(md, &sha);
	/* 20 bytes: six groups of three, then two bytes and one '=' */
	md[20] = 0;
	for (i = 0; i < 21; i += 3) {
		unsigned v = (unsigned)md[i] << 16 | (unsigned)md[i + 1] << 8 | md[i + 2];
		*o++ = b64[v >> 18];
		*o++ = b64[(v >> 12) & 63];
		*o++ = b64[(v >> 6) & 63];
		*o++ = i + 3 < 21 ? b64[v & 63] : '=';
	}
	*o = '\0';
}

/* A fresh Sec-WebSocket-Key: 16 random bytes in base64 (24 characters). */
void luaws_ws_new_key(char out[32])
{
	unsigned char nonce[16];
	arc4random_buf(nonce, sizeof(nonce));
	lws_b64_encode_string((const char *)nonce, sizeof(nonce), out, 32);
}
