/*
 * UTF-8 validation (RFC 3629) of text messages and close reasons, incremental so that a
 * message split across frames and reads is checked as it arrives. Pure: no sockets, no
 * Lua state.
 */
#include <string.h>

#include "luaws.h"

/* Check the next bytes of UTF-8 text (RFC 3629), carrying the state of a sequence split
 * across calls in st[0..2] (bytes still needed, allowed range of the next one). */
int luaws_utf8_valid(unsigned char st[3], const unsigned char *p, size_t n)
{
	unsigned need = st[0], lo = st[1], hi = st[2];
	size_t i = 0;
	for (; i < n; i++) {
		unsigned b = p[i];
		if (need) {
			if (b < lo || b > hi)
				return 0;
			need--;
			lo = 0x80;
			hi = 0xBF;
			continue;
		}
		if (b < 0x80) {
			/* ASCII runs: 8 bytes at a time */
			while (n - i > 8) {
				uint64_t w;
				memcpy(&w, p + i + 1, 8);
				if (w & 0x8080808080808080ULL)
					break;
				i += 8;
			}
			continue;
		}
		lo = 0x80;
		hi = 0xBF;
		if (b >= 0xC2 && b <= 0xDF)
			need = 1;
		else if (b == 0xE0)
			need = 2, lo = 0xA0;
		else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF)
			need = 2;
		else if (b == 0xED)
			need = 2, hi = 0x9F;
		else if (b == 0xF0)
			need = 3, lo = 0x90;
		else if (b >= 0xF1 && b <= 0xF3)
			need = 3;
		else if (b == 0xF4)
			need = 3, hi = 0x8F;
		else
			return 0;
	}
	st[0] = (unsigned char)need;
	st[1] = (unsigned char)lo;
	st[2] = (unsigned char)hi;
	return 1;
}
