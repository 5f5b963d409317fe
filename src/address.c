/*
 * Socket addresses as Go prints them: "ip:port" or "[ip6]:port", an IPv4 peer of a
 * dual-stack socket as plain IPv4.
 */
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "luaws.h"

/* "ip:port" (or "[ip6]:port") of a socket address. */
void luaws_format_address(const struct sockaddr *sa, char *out, size_t len)
{
	char host[INET6_ADDRSTRLEN];
	out[0] = '\0';
	if (sa->sa_family == AF_INET6 &&
	    IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6 *)sa)->sin6_addr)) {
		/* ::ffff:a.b.c.d, an IPv4 peer of a dual-stack socket: Go prints a.b.c.d */
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		struct sockaddr_in in;
		memset(&in, 0, sizeof(in));
		in.sin_family = AF_INET;
		in.sin_port = in6->sin6_port;
		memcpy(&in.sin_addr, &in6->sin6_addr.s6_addr[12], 4);
		luaws_format_address((const struct sockaddr *)&in, out, len);
	} else if (sa->sa_family == AF_INET6) {
		uv_ip6_name((const struct sockaddr_in6 *)sa, host, sizeof(host));
		lws_snprintf(out, len, "[%s]:%u", host,
			     ntohs(((const struct sockaddr_in6 *)sa)->sin6_port));
	} else if (sa->sa_family == AF_INET && len >= sizeof("255.255.255.255:65535")) {
		/* by hand: this runs for every accepted connection, and snprintf costs more
		 * than the rest of the accept path in user space */
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		const unsigned char *b = (const unsigned char *)&in->sin_addr.s_addr;
		unsigned parts[5] = {b[0], b[1], b[2], b[3], ntohs(in->sin_port)};
		char *p = out;
		int i;
		for (i = 0; i < 5; i++) {
			char digits[5];
			int n = 0;
			unsigned v = parts[i];
			do {
				digits[n++] = (char)('0' + v % 10);
				v /= 10;
			} while (v);
			while (n)
				*p++ = digits[--n];
			*p++ = i < 3 ? '.' : i == 3 ? ':' : '\0';
		}
	}
}

/* "ip:port" of either end of a socket. */
void luaws_socket_address(int fd, int peer, char *out, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	out[0] = '\0';
	if (!(peer ? getpeername(fd, (struct sockaddr *)&ss, &sl) :
		     getsockname(fd, (struct sockaddr *)&ss, &sl)))
		luaws_format_address((struct sockaddr *)&ss, out, len);
}
