/* luaws_buf: a growable byte buffer (heads being built, received bytes, batches). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "luaws.h"

int luaws_buf_reserve(luaws_buf *b, size_t extra)
{
	size_t want = b->len + extra, cap = b->cap ? b->cap : 256;
	unsigned char *p;
	if (want <= b->cap)
		return 0;
	while (cap < want)
		cap *= 2;
	p = realloc(b->data, cap);
	if (!p)
		return -1;
	b->data = p;
	b->cap = cap;
	return 0;
}

int luaws_buf_append(luaws_buf *b, const void *p, size_t n)
{
	if (luaws_buf_reserve(b, n))
		return -1;
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

/* Append printf-formatted text (without its NUL); -1 when out of memory. */
int luaws_buf_printf(luaws_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;
	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || luaws_buf_reserve(b, (size_t)n + 1))
		return -1;
	va_start(ap, fmt);
	vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return 0;
}

void luaws_buf_free(luaws_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}
