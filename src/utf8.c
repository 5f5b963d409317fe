/*
 * UTF-8 validation (RFC 3629) of text messages and close reasons, incremental so that a
 * message split across frames and reads is checked as it arrives. Pure: no sockets, no
 * Lua state.
 */
#include <string.h>

#include "luaws.h"

/* Check the next bytes of UTF-8 text (RFC 3629), carrying the state of a sequence split
 * across calls in st[0..2] (bytes still needed, allowed range of the next one; only
 * st[0] matters when it is 0). A sequence that is all here is checked at once, from
 * its lead byte (one branch per character, not per byte); only one cut by the end of
 * the piece goes byte by byte, with its state carried. */
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
		if (b < 0x80) {
			i++;
			/* ASCII runs: 8 bytes at a time */
			while (n - i >= 8) {
				uint64_t w;
				memcpy(&w, p + i, 8);
				if (w & 0x8080808080808080ULL)
					break;
				i += 8;
			}
			continue;
		}
		/* the lead byte gives the length and the range of the second byte (no overlong
		 * forms, no surrogates, nothing over U+10FFFF) */
		lo = 0x80;
		hi = 0xBF;
		if (b >= 0xC2 && b <= 0xDF) {
			need = 1;
		} else if (b >= 0xE0 && b <= 0xEF) {
			need = 2;
			if (b == 0xE0)
				lo = 0xA0;
			else if (b == 0xED)
				hi = 0x9F;
		} else if (b >= 0xF0 && b <= 0xF4) {
			need = 3;
			if (b == 0xF0)
				lo = 0x90;
			else if (b == 0xF4)
				hi = 0x8F;
		} else {
			return 0;
		}
		if (n - i > need) { /* all here */
			unsigned b1 = p[i + 1];
			if (b1 < lo || b1 > hi)
				return 0;
			if (need >= 2 && (p[i + 2] & 0xC0) != 0x80)
				return 0;
			if (need == 3 && (p[i + 3] & 0xC0) != 0x80)
				return 0;
			i += need + 1;
			need = 0;
			continue;
		}
		/* cut by the end of the piece: check what came, carry the rest */
		for (i++; i < n; i++) {
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
