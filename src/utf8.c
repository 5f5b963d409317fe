/*
 * UTF-8 validation (RFC 3629) of text messages and close reasons, incremental so that a
 * message split across frames and reads is checked as it arrives. Pure: no sockets, no
 * Lua state.
 */
#include <string.h>

#include "luaws.h"

/* Each byte as the lead of a sequence: its length (0: cannot lead one) and the range of
 * the byte after it (no overlong forms, no surrogates, nothing over U+10FFFF). */
struct lead {
	unsigned char len, lo, hi;
};

static const struct lead leads[256] = {
	[0x00 ... 0x7F] = {1, 0, 0},
	[0xC2 ... 0xDF] = {2, 0x80, 0xBF},
	[0xE0] = {3, 0xA0, 0xBF},
	[0xE1 ... 0xEC] = {3, 0x80, 0xBF},
	[0xED] = {3, 0x80, 0x9F},
	[0xEE ... 0xEF] = {3, 0x80, 0xBF},
	[0xF0] = {4, 0x90, 0xBF},
	[0xF1 ... 0xF3] = {4, 0x80, 0xBF},
	[0xF4] = {4, 0x80, 0x8F},
};

/* The bytes after the second of a sequence of each length, as w below holds them (the
 * third in bits 8..15, the fourth in 16..23): each must be 10xxxxxx. */
static const uint32_t cont_mask[5] = {0, 0, 0, 0xC000, 0xC0C000};
static const uint32_t cont_bits[5] = {0, 0, 0, 0x8000, 0x808000};

/* Check the next bytes of UTF-8 text (RFC 3629), carrying the state of a sequence split
 * across calls in st[0..2] (bytes still needed, allowed range of the next one; only
 * st[0] matters when it is 0). A character with 4 bytes of the piece left is checked
 * from its lead byte's entry with no branch on its length (text that mixes lengths
 * would mispredict one per character); the last few bytes go byte by byte, carrying a
 * sequence the piece cuts. */
int luaws_utf8_valid(unsigned char st[3], const unsigned char *p, size_t n)
{
	unsigned need = st[0], lo = st[1], hi = st[2];
	size_t i = 0;

	/* the end of a sequence the previous piece began */
	for (; need && i < n; i++) {
		unsigned b = p[i];
		if (b < lo || b > hi)
			return 0;
		need--;
		lo = 0x80;
		hi = 0xBF;
	}
	while (i < n) {
		unsigned b = p[i];
		const struct lead *t;
		if (b < 0x80) {
			i++;
			/* ASCII runs: 8 bytes at a time, and the ASCII bytes before the first
			 * other one at once */
			while (n - i >= 8) {
				uint64_t w, high;
				memcpy(&w, p + i, 8);
				high = w & 0x8080808080808080ULL;
				if (high) {
#if defined(__GNUC__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
					i += (size_t)__builtin_ctzll(high) >> 3;
#endif
					break;
				}
				i += 8;
			}
			continue;
		}
		t = &leads[b];
		if (!t->len)
			return 0;
		if (n - i >= 4) {
			uint32_t w = p[i + 1] | (uint32_t)p[i + 2] << 8 | (uint32_t)p[i + 3] << 16;
			if ((w & 0xFF) - t->lo > (uint32_t)(t->hi - t->lo) ||
			    (w & cont_mask[t->len]) != cont_bits[t->len])
				return 0;
			i += t->len;
			continue;
		}
		/* near the end of the piece: byte by byte, carrying what it cuts */
		need = t->len - 1u;
		lo = t->lo;
		hi = t->hi;
		for (i++; need && i < n; i++) {
			b = p[i];
			if (b < lo || b > hi)
				return 0;
			need--;
			lo = 0x80;
			hi = 0xBF;
		}
	}
	st[0] = (unsigned char)need;
	st[1] = (unsigned char)lo;
	st[2] = (unsigned char)hi;
	return 1;
}
