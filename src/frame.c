/*
 * The WebSocket wire format (RFC 6455 §5): an incremental frame parser that enforces the
 * framing rules (reserved bits, opcodes, control frames, continuation, masking
 * direction, lengths) and unmasks payload in place, the frame header writer, and
 * masking. RSV1 is allowed, on the first frame of a data message only, when
 * permessage-deflate was negotiated (rsv1_ok). Message-level rules (UTF-8, close codes,
 * limits, inflating) are receiver.c's.
 */
#include <string.h>

#include "luaws.h"

/* XOR n bytes at p with the 4-byte key, starting at key position pos & 3: 8 bytes at a
 * time (unaligned loads and stores, which memcpy compiles to), then the tail. */
void luaws_mask(unsigned char *p, size_t n, const unsigned char key[4], size_t pos)
{
	size_t i = 0, j;
	unsigned char kb[8];
	uint64_t k;
	for (j = 0; j < 8; j++)
		kb[j] = key[(pos + j) & 3];
	memcpy(&k, kb, 8);
	for (; n - i >= 8; i += 8) {
		uint64_t w;
		memcpy(&w, p + i, 8);
		w ^= k;
		memcpy(p + i, &w, 8);
	}
	for (; i < n; i++)
		p[i] ^= kb[i & 7];
}

/* Write the header of a frame carrying len bytes at out (room for 14 bytes); with a
 * mask key (client frames) the key follows the length. opcode may carry LUAWS_RSV1.
 * Returns the header size. */
size_t luaws_frame_header(unsigned char *out, int fin, int opcode, uint64_t len,
			  const unsigned char *mask)
{
	size_t n = 2;
	out[0] = (unsigned char)((fin ? 0x80 : 0) | (opcode & (LUAWS_RSV1 | 0x0f)));
	if (len < 126) {
		out[1] = (unsigned char)len;
	} else if (len <= 0xffff) {
		out[1] = 126;
		out[2] = (unsigned char)(len >> 8);
		out[3] = (unsigned char)len;
		n = 4;
	} else {
		int i;
		out[1] = 127;
		for (i = 0; i < 8; i++)
			out[2 + i] = (unsigned char)(len >> (56 - 8 * i));
		n = 10;
	}
	if (mask) {
		out[1] |= 0x80;
		memcpy(out + n, mask, 4);
		n += 4;
	}
	return n;
}

static int frame_error(luaws_frame_parser *fp, luaws_frame_event *ev, const char *why)
{
	fp->failed = 1;
	ev->code = 1002;
	ev->reason = why;
	return -1;
}

/* The header in fp->hdr is complete: check it against the rules. */
static int check_header(luaws_frame_parser *fp, luaws_frame_event *ev)
{
	int opcode = fp->hdr[0] & 0x0f, fin = fp->hdr[0] >> 7;

	if (fp->hdr[0] & 0x30)
		return frame_error(fp, ev, "reserved bits set");
	if (fp->hdr[0] & 0x40) {
		if (!fp->rsv1_ok)
			return frame_error(fp, ev, "reserved bits set");
		if (opcode == 0)
			return frame_error(fp, ev, "RSV1 set on a continuation frame");
		if (opcode >= 8)
			return frame_error(fp, ev, "RSV1 set on a control frame");
	}
	if (!!(fp->hdr[1] & 0x80) != fp->expect_masked)
		return frame_error(fp, ev, fp->expect_masked ? "unmasked client frame" :
							       "masked server frame");
	switch (opcode) {
	case 0:
		if (!fp->in_message)
			return frame_error(fp, ev, "continuation with no message started");
		break;
	case 1:
	case 2:
		if (fp->in_message)
			return frame_error(fp, ev, "new message inside a fragmented message");
		break;
	case 8:
	case 9:
	case 10:
		if (!fin)
			return frame_error(fp, ev, "fragmented control frame");
		if (fp->length > 125)
			return frame_error(fp, ev, "control frame longer than 125 bytes");
		break;
	default:
		return frame_error(fp, ev, "unknown opcode");
	}
	if (fp->length >> 63)
		return frame_error(fp, ev, "frame length with the top bit set");
	if (opcode < 8)
		fp->in_message = !fin;
	fp->opcode = (unsigned char)opcode;
	fp->fin = (unsigned char)fin;
	fp->rsv1 = (fp->hdr[0] & 0x40) != 0;
	fp->first = 1;
	fp->mask_pos = 0;
	return 0;
}

/* Take the next event from the bytes at *in (*len of them), advancing past what it
 * used: 1 and a payload chunk in ev (unmasked in place; possibly empty, ev->first on the
 * frame's first, which comes as soon as the header is complete, ev->last on its final), 0 when the bytes ran out, -1 on a protocol error (ev->code,
 * ev->reason; the parser stays failed). */
/* The size of a frame header whose second byte is b1: 2, the extended length, the mask
 * key. */
static size_t header_size(unsigned b1)
{
	unsigned l7 = b1 & 0x7f;
	return 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + ((b1 & 0x80) ? 4 : 0);
}

int luaws_frame_next(luaws_frame_parser *fp, unsigned char **in, size_t *len,
		     luaws_frame_event *ev)
{
	unsigned char *p = *in;
	size_t n = *len, take;

	if (fp->failed)
		return frame_error(fp, ev, "connection already failed");
	while (!fp->in_payload) {
		if (!fp->hdr_have && n >= 2 && n >= header_size(p[1])) {
			/* the whole header is here (the common case): taken at once */
			size_t need = header_size(p[1]);
			memcpy(fp->hdr, p, need);
			fp->hdr_have = (unsigned char)need;
			p += need;
			n -= need;
		} else {
			if (!n) {
				*in = p; /* the header bytes so far are kept in fp->hdr */
				*len = 0;
				return 0;
			}
			fp->hdr[fp->hdr_have++] = *p++;
			n--;
			if (fp->hdr_have < 2 || fp->hdr_have < header_size(fp->hdr[1]))
				continue;
		}
		{
			unsigned l7 = fp->hdr[1] & 0x7f, i;
			size_t at = 2;
			if (l7 < 126) {
				fp->length = l7;
			} else if (l7 == 126) {
				fp->length = (uint64_t)fp->hdr[2] << 8 | fp->hdr[3];
				at = 4;
			} else {
				fp->length = 0;
				for (i = 0; i < 8; i++)
					fp->length = fp->length << 8 | fp->hdr[2 + i];
				at = 10;
			}
			if (fp->hdr[1] & 0x80)
				memcpy(fp->mask, fp->hdr + at, 4);
		}
		fp->hdr_have = 0;
		*in = p;
		*len = n;
		if (check_header(fp, ev))
			return -1;
		fp->in_payload = 1;
	}
	/* a frame's first event comes with its header, even before any payload, so that
	 * the length it claims can be refused before the payload arrives */
	if (!n && fp->length && !fp->first)
		return 0;
	take = n < fp->length ? n : (size_t)fp->length;
	if (fp->expect_masked && take)
		luaws_mask(p, take, fp->mask, fp->mask_pos);
	fp->mask_pos += take;
	fp->length -= take;
	ev->opcode = fp->opcode;
	ev->frame_len = fp->mask_pos + fp->length;
	ev->fin = fp->fin;
	ev->rsv1 = fp->rsv1;
	ev->first = fp->first;
	ev->last = fp->length == 0;
	ev->data = p;
	ev->len = take;
	fp->first = 0;
	if (ev->last)
		fp->in_payload = 0;
	*in = p + take;
	*len = n - take;
	return 1;
}
