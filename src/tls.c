/*
 * TLS on luaws's sockets (wss://, https://): OpenSSL driven by luaws itself, as a second
 * transport behind the sender. lws still accepts, connects and reads the socket; what it
 * reads (ciphertext) comes here before anything else sees it (protocol.c), and what a
 * connection writes is encrypted here (sender.c's transport_write). Plain sockets never
 * come here: ws:// keeps its direct syscalls.
 *
 * Each TLS socket has one record, in the socket's lws per-session space, so it stays
 * with the socket whoever owns it (a Request, then a Conn, an orphan, nobody while it
 * lingers) and is freed when lws closes the socket. OpenSSL talks to the socket through
 * a BIO of ours: reads take the bytes lws read, writes append to the record's out
 * buffer, which is sent (sender.c's luaws_socket_send) after each operation; what the
 * socket does not take waits there, and writes wait behind it.
 *
 * Also here: the connection state a handler sees as r.TLS. The SSL_CTX each socket's
 * SSL comes from is tls_config.c's.
 */
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "luaws.h"

/* An SSL_write takes this much at a time; a write stops once this much ciphertext
 * waits for the socket. */
#define WRITE_CHUNK (64 * 1024)
#define OUT_WAIT (256 * 1024)
/* The out buffer is freed when empty and larger than this (idle connections). */
#define OUT_KEEP (16 * 1024)

/* OpenSSL's record buffers (about 17 KiB each way). The SSL_CTX frees them after every
 * record (SSL_MODE_RELEASE_BUFFERS): an idle connection holds none, but a busy one pays
 * an allocation and a free per record each way (5 % of the instructions of a small
 * echo over TLS). So a socket that reads or writes more than BUSY_OPS times within one
 * sweep period keeps its buffers, and the loop's sweep timer hands them back once it
 * has been quiet for a whole period. */
#define BUSY_OPS 64
#define SWEEP_MS 1000

struct luaws_tls {
	SSL *ssl;
	struct lws *wsi;
	int fd;
	const unsigned char *in; /* ciphertext lws read, handed to OpenSSL by the BIO */
	size_t in_len;
	luaws_buf out;           /* ciphertext for the socket, from LWS_PRE + sent on */
	size_t sent;
	unsigned server : 1, handshake_done : 1, failed : 1, gone : 1, got_bytes : 1,
		 peer_done : 1, /* the peer's close_notify came */
		 keeps_buffers : 1; /* on the loop's list of busy sockets */
	unsigned ops;            /* reads and writes since ops_from (the last sweep) */
	uint64_t ops_from;       /* the loop's time (ms) the count started */
	luaws_tls *prev, *next;  /* the loop's busy sockets */
	char error[160];         /* why the handshake or the connection failed */
	char name[64];           /* a client's server name, for errors */
};

/* The BIO between OpenSSL and a luaws_tls: its method table is made once per process
 * and never changes. */
static BIO_METHOD *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

static int bio_read(BIO *b, char *out, int len)
{
	luaws_tls *t = BIO_get_data(b);
	size_t n = t->in_len < (size_t)len ? t->in_len : (size_t)len;
	BIO_clear_retry_flags(b);
	if (!n) {
		BIO_set_retry_read(b);
		return -1;
	}
	memcpy(out, t->in, n);
	t->in += n;
	t->in_len -= n;
	return (int)n;
}

static int bio_write(BIO *b, const char *p, int len)
{
	luaws_tls *t = BIO_get_data(b);
	BIO_clear_retry_flags(b);
	if (t->gone)
		return len; /* after the socket was let go: dropped */
	if (!t->out.len && luaws_buf_reserve(&t->out, LWS_PRE))
		return -1;
	if (!t->out.len)
		t->out.len = LWS_PRE;
	if (luaws_buf_append(&t->out, p, (size_t)len))
		return -1;
	return len;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	(void)b;
	(void)num;
	(void)ptr;
	return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static void bio_method_new(void)
{
	bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "luaws");
	if (!bio_method)
		return;
	BIO_meth_set_read(bio_method, bio_read);
	BIO_meth_set_write(bio_method, bio_write);
	BIO_meth_set_ctrl(bio_method, bio_ctrl);
}

/* lua_close unloads this library: the method table goes with it (LeakSanitizer). */
__attribute__((destructor)) static void bio_method_free(void)
{
	BIO_meth_free(bio_method);
	bio_method = NULL;
}

static luaws_tls **slot(struct lws *wsi)
{
	return wsi ? lws_wsi_user(wsi) : NULL;
}

luaws_tls *luaws_tls_of(struct lws *wsi)
{
	luaws_tls **s = slot(wsi);
	return s ? *s : NULL;
}

/* Ciphertext waiting for the socket (none once the socket was let go: lws has it). */
static size_t pending(const luaws_tls *t)
{
	return t->out.len && !t->gone ? t->out.len - LWS_PRE - t->sent : 0;
}

/* Send what waits in out. -1 when the socket failed; else the bytes still waiting
 * (lws is then asked for a writeable callback). */
static long flush(luaws_tls *t)
{
	size_t n = pending(t);
	if (t->failed)
		return -1;
	if (n) {
		ssize_t w = luaws_socket_send(t->fd, t->out.data + LWS_PRE + t->sent, n);
		if (w < 0) {
			t->failed = 1;
			return -1;
		}
		t->sent += (size_t)w;
		n -= (size_t)w;
	}
	if (!n && t->out.len) {
		t->sent = 0;
		t->out.len = 0;
		if (t->out.cap > OUT_KEEP)
			luaws_buf_free(&t->out);
		return 0;
	}
	if (n)
		lws_callback_on_writable(t->wsi);
	return (long)n;
}

/* A subject alternative name as text: a DNS name, or an IP address written into ip
 * (*is_ip set); NULL for other kinds. */
static const char *san_text(const GENERAL_NAME *g, char ip[64], int *is_ip)
{
	int len;
	*is_ip = 0;
	if (g->type == GEN_DNS)
		return (const char *)ASN1_STRING_get0_data(g->d.dNSName);
	if (g->type != GEN_IPADD)
		return NULL;
	len = g->d.iPAddress->length;
	if (len != 4 && len != 16)
		return NULL;
	*is_ip = 1;
	return inet_ntop(len == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(g->d.iPAddress),
			 ip, 64);
}

/* The certificate's names, as Go lists them in "certificate is valid for ...". */
static void cert_names(X509 *cert, char *out, size_t size)
{
	GENERAL_NAMES *sans = cert ? X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL) :
				     NULL;
	int i, is_ip;
	char ip[64];
	out[0] = '\0';
	for (i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
		const char *name = san_text(sk_GENERAL_NAME_value(sans, i), ip, &is_ip);
		size_t at = strlen(out);
		if (name)
			lws_snprintf(out + at, size - at, "%s%s", at ? ", " : "", name);
	}
	GENERAL_NAMES_free(sans);
}

/* OpenSSL's verify callback on the client: a certificate for another host gets Go's
 * message, with the names it is valid for. */
int luaws_tls_verified(int ok, X509_STORE_CTX *store)
{
	int err = X509_STORE_CTX_get_error(store);
	SSL *ssl;
	luaws_tls *t;
	char names[96];
	if (ok || (err != X509_V_ERR_HOSTNAME_MISMATCH && err != X509_V_ERR_IP_ADDRESS_MISMATCH))
		return ok;
	ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
	t = ssl ? BIO_get_data(SSL_get_rbio(ssl)) : NULL;
	if (t && !t->error[0]) {
		const char *host = X509_VERIFY_PARAM_get0_host(SSL_get0_param(ssl), 0);
		cert_names(X509_STORE_CTX_get_current_cert(store), names, sizeof(names));
		lws_snprintf(t->error, sizeof(t->error), "tls: failed to verify certificate: x509: "
			     "certificate is valid for %s, not %s", names[0] ? names : "no names",
			     host ? host : t->name);
	}
	return ok;
}

/* OpenSSL's reason for the last failure, the way Go's crypto/tls words the common ones. */
static void set_error(luaws_tls *t, int ssl_err)
{
	unsigned long e = ERR_peek_last_error();
	const char *reason = e ? ERR_reason_error_string(e) : NULL;
	long v = SSL_get_verify_result(t->ssl);
	if (t->error[0])
		return;
	if (!t->server && v != X509_V_OK) {
		const char *why;
		switch (v) {
		case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
		case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
		case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
		case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
		case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
			why = "certificate signed by unknown authority";
			break;
		case X509_V_ERR_CERT_HAS_EXPIRED:
		case X509_V_ERR_CERT_NOT_YET_VALID:
			why = "certificate has expired or is not yet valid";
			break;
		case X509_V_ERR_HOSTNAME_MISMATCH:
		case X509_V_ERR_IP_ADDRESS_MISMATCH:
			why = "certificate is not valid for this host"; /* unless verified() said */
			break;
		default:
			why = X509_verify_cert_error_string(v);
		}
		if (why)
			lws_snprintf(t->error, sizeof(t->error),
				     "tls: failed to verify certificate: x509: %s", why);
		return;
	}
	if (ssl_err == SSL_ERROR_SYSCALL || ssl_err == SSL_ERROR_ZERO_RETURN || !reason)
		lws_snprintf(t->error, sizeof(t->error), "tls: %s",
			     t->handshake_done ? "connection closed" :
			     "connection closed during the handshake");
	else if (ERR_GET_REASON(e) == SSL_R_WRONG_VERSION_NUMBER ||
		 ERR_GET_REASON(e) == SSL_R_PACKET_LENGTH_TOO_LONG)
		lws_snprintf(t->error, sizeof(t->error),
			     "tls: first record does not look like a TLS handshake");
	else if (!strncmp(reason, "tlsv1 alert ", 12) || !strncmp(reason, "sslv3 alert ", 12) ||
		 !strncmp(reason, "tlsv13 alert ", 13))
		lws_snprintf(t->error, sizeof(t->error), "remote error: tls: %s",
			     strchr(strchr(reason, ' ') + 1, ' ') + 1);
	else
		lws_snprintf(t->error, sizeof(t->error), "tls: %s", reason);
}

/* A plain HTTP request on a TLS port gets Go's answer (as net/http gives it). */
static int looks_like_http(const unsigned char *p, size_t n)
{
	return n >= 4 && p[0] >= 'A' && p[0] <= 'Z' && p[1] >= 'A' && p[1] <= 'Z';
}

/* Start TLS on wsi: server (name NULL) or client of name (SNI and the verified name;
 * an IP address is verified as such and sent no SNI). The client's hello goes out now.
 * -1 when out of memory or the socket failed. */
static luaws_loop *loop_of(const luaws_tls *t)
{
	return lws_context_user(lws_get_context(t->wsi));
}

static void unlist(luaws_loop *loop, luaws_tls *t)
{
	if (t->prev)
		t->prev->next = t->next;
	else
		loop->tls_busy = t->next;
	if (t->next)
		t->next->prev = t->prev;
	t->prev = t->next = NULL;
	t->keeps_buffers = 0;
	if (!loop->tls_busy)
		uv_timer_stop(&loop->tls_sweep);
}

/* Quiet for a whole period: back to releasing the buffers, which go now. */
static void sweep(uv_timer_t *timer)
{
	luaws_loop *loop = lws_container_of(timer, luaws_loop, tls_sweep);
	luaws_tls *t = loop->tls_busy, *next;
	for (; t; t = next) {
		next = t->next;
		if (t->ops) {
			t->ops = 0;
			continue;
		}
		unlist(loop, t);
		SSL_set_mode(t->ssl, SSL_MODE_RELEASE_BUFFERS);
		SSL_free_buffers(t->ssl); /* refuses while one holds data: freed after it */
	}
}

/* One more read or write on t: past BUSY_OPS in a period, t keeps its buffers. */
static void count_op(luaws_tls *t)
{
	luaws_loop *loop;
	uint64_t now;
	if (++t->ops < BUSY_OPS || t->keeps_buffers)
		return;
	loop = loop_of(t);
	now = uv_now(loop->uv);
	if (now - t->ops_from > SWEEP_MS) {
		/* that many took longer than a period: start counting again */
		t->ops = 1;
		t->ops_from = now;
		return;
	}
	if (loop->closing)
		return;
	SSL_clear_mode(t->ssl, SSL_MODE_RELEASE_BUFFERS);
	t->keeps_buffers = 1;
	t->next = loop->tls_busy;
	if (t->next)
		t->next->prev = t;
	loop->tls_busy = t;
	if (!uv_is_active((uv_handle_t *)&loop->tls_sweep))
		uv_timer_start(&loop->tls_sweep, sweep, SWEEP_MS, SWEEP_MS);
}

int luaws_tls_start(struct lws *wsi, SSL_CTX *ctx, int server, const char *name)
{
	luaws_tls **s = slot(wsi), *t;
	BIO *bio;
	pthread_once(&bio_once, bio_method_new);
	if (!s || !bio_method || !(t = calloc(1, sizeof(*t))))
		return -1;
	t->wsi = wsi;
	t->fd = lws_get_socket_fd(wsi);
	t->server = server ? 1 : 0;
	t->ssl = SSL_new(ctx);
	if (t->ssl)
		luaws_tls_ctx_took(ctx);
	bio = t->ssl ? BIO_new(bio_method) : NULL;
	if (!bio) {
		if (t->ssl)
			luaws_tls_ctx_dropped(ctx);
		SSL_free(t->ssl);
		free(t);
		return -1;
	}
	BIO_set_data(bio, t);
	BIO_set_init(bio, 1);
	SSL_set_bio(t->ssl, bio, bio);
	*s = t;
	if (server) {
		SSL_set_accept_state(t->ssl);
		return 0;
	}
	SSL_set_connect_state(t->ssl);
	if ((!name || !*name) && SSL_get_verify_mode(t->ssl) != SSL_VERIFY_NONE) {
		/* no name to verify: never a certificate of any host (Go's error) */
		lws_strncpy(t->error, "tls: either ServerName or InsecureSkipVerify must be "
			    "specified in the tls.Config", sizeof(t->error));
		return -1;
	}
	if (name && *name) {
		unsigned char ip[16];
		lws_strncpy(t->name, name, sizeof(t->name));
		int is_ip = inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1;
		if (!is_ip)
			SSL_set_tlsext_host_name(t->ssl, name);
		if (SSL_get_verify_mode(t->ssl) != SSL_VERIFY_NONE) {
			if (is_ip)
				X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), name);
			else
				SSL_set1_host(t->ssl, name);
		}
	}
	if (SSL_do_handshake(t->ssl) <= 0 &&
	    SSL_get_error(t->ssl, -1) != SSL_ERROR_WANT_READ) {
		set_error(t, SSL_ERROR_SSL);
		return -1;
	}
	return flush(t) < 0 ? -1 : 0;
}

/* Ciphertext lws read for t's socket: each piece of plaintext goes to sink(arg, p, n),
 * which returns nonzero to stop. -1 when the socket must close (the handshake or the
 * connection failed: luaws_tls_error says why). */
int luaws_tls_rx(luaws_tls *t, const unsigned char *in, size_t len, luaws_tls_sink sink,
		 void *arg)
{
	unsigned char plain[16 * 1024];
	int rc = 0;
	if (t->gone || t->peer_done)
		return 0;
	if (t->server && !t->got_bytes && len && looks_like_http(in, len)) {
		static const char answer[] = "HTTP/1.0 400 Bad Request\r\n\r\n"
					     "Client sent an HTTP request to an HTTPS server.\n";
		luaws_socket_send(t->fd, answer, sizeof(answer) - 1);
		lws_snprintf(t->error, sizeof(t->error), "tls: client sent an HTTP request");
		return -1;
	}
	t->got_bytes = 1;
	t->in = in;
	t->in_len = len;
	count_op(t);
	while (!t->gone) {
		int n, e;
		if (!t->handshake_done) {
			n = SSL_do_handshake(t->ssl);
			if (n == 1) {
				t->handshake_done = 1;
				/* a client's upgrade request waits in the sender's queue */
				lws_callback_on_writable(t->wsi);
				continue;
			}
		} else {
			n = SSL_read(t->ssl, plain, sizeof(plain));
			if (n > 0) {
				if (sink(arg, plain, (size_t)n)) {
					rc = -1;
					break;
				}
				if (!t->in_len && !SSL_has_pending(t->ssl))
					break; /* the next SSL_read could only say it wants more */
				continue;
			}
		}
		e = SSL_get_error(t->ssl, n);
		if (e == SSL_ERROR_WANT_READ)
			break;
		if (e == SSL_ERROR_ZERO_RETURN && t->handshake_done) {
			/* close_notify: the end of the peer's stream, as TCP's FIN over ws://.
			 * What came before it in this read (a dial's response and the first
			 * messages) is handled as usual, and the socket closes at lws's next
			 * turn (when the FIN that follows is read, or at once if none comes),
			 * not inside this read. */
			t->peer_done = 1;
			lws_set_timeout(t->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
			luaws_touched_lws(lws_context_user(lws_get_context(t->wsi)));
			break;
		}
		set_error(t, e);
		ERR_clear_error();
		rc = -1;
		break;
	}
	t->in_len = 0;
	if (flush(t) < 0)
		rc = -1;
	return rc;
}

static int drop_plain(void *arg, unsigned char *plain, size_t n)
{
	(void)arg;
	(void)plain;
	(void)n;
	return 0;
}

/* lws is closing wsi's socket, maybe on a hang-up reported without the readable flag:
 * the peer's last records (a TLS alert: why the handshake failed) may still be in the
 * kernel. Read them for luaws_tls_error; their plaintext is dropped. */
void luaws_tls_read_last(struct lws *wsi)
{
	luaws_tls *t = luaws_tls_of(wsi);
	unsigned char buf[16 * 1024];
	ssize_t n;
	if (!t || t->fd < 0)
		return;
	while (!t->error[0] && (n = recv(t->fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0)
		if (luaws_tls_rx(t, buf, (size_t)n, drop_plain, NULL))
			break;
}

/* Write plaintext from up to two pieces: the number of bytes OpenSSL took (0 while the
 * handshake runs or ciphertext waits for the socket), -1 when the socket failed. */
ssize_t luaws_tls_write(luaws_tls *t, const unsigned char *a, size_t an,
			const unsigned char *b, size_t bn)
{
	unsigned char joined[4096];
	size_t done = 0, total = an + bn;
	long waiting = flush(t);
	if (waiting < 0)
		return -1;
	if (waiting || !t->handshake_done || t->gone)
		return 0;
	count_op(t);
	while (done < total && pending(t) < OUT_WAIT) {
		const unsigned char *p;
		size_t n;
		int w;
		if (done < an && bn && an - done < sizeof(joined)) {
			/* a frame header and the start of its payload in one record */
			size_t from_b = sizeof(joined) - (an - done);
			if (from_b > bn)
				from_b = bn;
			memcpy(joined, a + done, an - done);
			memcpy(joined + (an - done), b, from_b);
			p = joined;
			n = an - done + from_b;
		} else if (done < an) {
			p = a + done;
			n = an - done;
		} else {
			p = b + (done - an);
			n = bn - (done - an);
		}
		if (n > WRITE_CHUNK)
			n = WRITE_CHUNK;
		w = SSL_write(t->ssl, p, (int)n);
		if (w <= 0) {
			set_error(t, SSL_get_error(t->ssl, w));
			ERR_clear_error();
			t->failed = 1;
			return -1;
		}
		done += (size_t)w;
	}
	if (flush(t) < 0)
		return -1;
	return (ssize_t)done;
}

/* lws says t's socket is writeable: 1 while ciphertext still waits (flush asked for
 * the next callback) or the handshake runs, 0 when the connection may write, -1 when
 * the socket failed. During the handshake the writer's bytes (a client's upgrade
 * request) wait for it: handing it the callback would have it ask for the next one at
 * once, a busy loop until the server answers; luaws_tls_rx asks for one when the
 * handshake is done. */
int luaws_tls_writeable(luaws_tls *t)
{
	long n = flush(t);
	return n < 0 ? -1 : n > 0 || !t->handshake_done;
}

/* t's socket is let go (sender.c): n bytes of plaintext at p, then close_notify, are
 * encrypted; *out (with LWS_PRE bytes of headroom) and *out_len are then the ciphertext
 * not yet sent, for lws to write. Nothing more is read or written. */
int luaws_tls_let_go(luaws_tls *t, const unsigned char *p, size_t n, unsigned char **out,
		     size_t *out_len)
{
	int rc = 0;
	*out = NULL;
	*out_len = 0;
	if (t->gone)
		return 0;
	if (t->handshake_done && !t->failed) {
		if (n && SSL_write(t->ssl, p, (int)n) <= 0)
			rc = -1;
		SSL_shutdown(t->ssl);
		ERR_clear_error();
	}
	t->gone = 1;
	if (t->out.len && !t->failed) {
		*out = t->out.data + LWS_PRE + t->sent;
		*out_len = t->out.len - LWS_PRE - t->sent;
	}
	return rc;
}

/* Has the socket taken every byte of ciphertext (always, for a plain socket)? */
int luaws_tls_idle(struct lws *wsi)
{
	luaws_tls *t = luaws_tls_of(wsi);
	return !t || !pending(t);
}

/* Before TCP closes: tell the peer with close_notify, when the socket takes it now. */
void luaws_tls_close_notify(struct lws *wsi)
{
	luaws_tls *t = luaws_tls_of(wsi);
	if (!t || !t->handshake_done || t->gone || t->failed || pending(t))
		return;
	SSL_shutdown(t->ssl);
	ERR_clear_error();
	flush(t);
}

/* Why t's socket failed, or NULL. */
const char *luaws_tls_error(struct lws *wsi)
{
	luaws_tls *t = luaws_tls_of(wsi);
	return t && t->error[0] ? t->error : NULL;
}

/* lws closed the socket. */
void luaws_tls_free(struct lws *wsi)
{
	luaws_tls **s = slot(wsi), *t = s ? *s : NULL;
	if (!t)
		return;
	*s = NULL;
	if (t->keeps_buffers)
		unlist(loop_of(t), t);
	luaws_tls_ctx_dropped(SSL_get_SSL_CTX(t->ssl));
	SSL_free(t->ssl);
	luaws_buf_free(&t->out);
	free(t);
}

/* Connection state (Go's tls.ConnectionState) */

static void push_name(lua_State *L, const X509_NAME *name)
{
	BIO *mem = BIO_new(BIO_s_mem());
	char *p;
	long n;
	if (!mem) {
		lua_pushliteral(L, "");
		return;
	}
	X509_NAME_print_ex(mem, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
	n = BIO_get_mem_data(mem, &p);
	lua_pushlstring(L, p, (size_t)n);
	BIO_free(mem);
}

static void push_time(lua_State *L, const ASN1_TIME *at)
{
	struct tm tm;
	if (at && ASN1_TIME_to_tm(at, &tm))
		lua_pushinteger(L, (lua_Integer)timegm(&tm));
	else
		lua_pushnil(L);
}

static void push_cert(lua_State *L, X509 *cert)
{
	GENERAL_NAMES *sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	BIGNUM *serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
	char *hex = serial ? BN_bn2hex(serial) : NULL;
	int i, nd = 0, ni = 0;
	lua_createtable(L, 0, 8);
	push_name(L, X509_get_subject_name(cert));
	lua_setfield(L, -2, "Subject");
	push_name(L, X509_get_issuer_name(cert));
	lua_setfield(L, -2, "Issuer");
	lua_pushstring(L, hex ? hex : "");
	lua_setfield(L, -2, "SerialNumber");
	OPENSSL_free(hex);
	BN_free(serial);
	push_time(L, X509_get0_notBefore(cert));
	lua_setfield(L, -2, "NotBefore");
	push_time(L, X509_get0_notAfter(cert));
	lua_setfield(L, -2, "NotAfter");
	lua_newtable(L); /* DNSNames */
	lua_newtable(L); /* IPAddresses */
	for (i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
		char ip[64];
		int is_ip;
		const char *name = san_text(sk_GENERAL_NAME_value(sans, i), ip, &is_ip);
		if (!name)
			continue;
		lua_pushstring(L, name);
		if (is_ip)
			lua_rawseti(L, -2, ++ni); /* IPAddresses */
		else
			lua_rawseti(L, -3, ++nd); /* DNSNames */
	}
	GENERAL_NAMES_free(sans);
	lua_setfield(L, -3, "IPAddresses");
	lua_setfield(L, -2, "DNSNames");
}

/* Push wsi's tls.ConnectionState as a table, or nil for a plain socket. */
void luaws_tls_push_state(lua_State *L, struct lws *wsi)
{
	luaws_tls *t = luaws_tls_of(wsi);
	const unsigned char *alpn;
	unsigned alen;
	const SSL_CIPHER *cipher;
	STACK_OF(X509) *chain;
	const char *sni;
	int i, n = 0;
	if (!t || !t->handshake_done) {
		lua_pushnil(L);
		return;
	}
	lua_createtable(L, 0, 8);
	lua_pushinteger(L, SSL_version(t->ssl));
	lua_setfield(L, -2, "Version");
	lua_pushboolean(L, 1);
	lua_setfield(L, -2, "HandshakeComplete");
	lua_pushboolean(L, SSL_session_reused(t->ssl));
	lua_setfield(L, -2, "DidResume");
	cipher = SSL_get_current_cipher(t->ssl);
	lua_pushinteger(L, cipher ? SSL_CIPHER_get_protocol_id(cipher) : 0);
	lua_setfield(L, -2, "CipherSuite");
	lua_pushstring(L, cipher ? SSL_CIPHER_standard_name(cipher) : "");
	lua_setfield(L, -2, "CipherSuiteName");
	sni = SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name);
	lua_pushstring(L, sni ? sni : "");
	lua_setfield(L, -2, "ServerName");
	SSL_get0_alpn_selected(t->ssl, &alpn, &alen);
	lua_pushlstring(L, (const char *)alpn, alpn ? alen : 0);
	lua_setfield(L, -2, "NegotiatedProtocol");
	lua_newtable(L);
	if (t->server) {
		/* the server's chain excludes the client's own certificate: put it first */
		X509 *leaf = SSL_get0_peer_certificate(t->ssl);
		if (leaf) {
			push_cert(L, leaf);
			lua_rawseti(L, -2, ++n);
		}
	}
	chain = SSL_get_peer_cert_chain(t->ssl);
	for (i = 0; chain && i < sk_X509_num(chain); i++) {
		push_cert(L, sk_X509_value(chain, i));
		lua_rawseti(L, -2, ++n);
	}
	lua_setfield(L, -2, "PeerCertificates");
}

/* core._tls_busy() -> the number of TLS sockets of this Lua state that keep OpenSSL's
 * buffers (see count_op). For the specs. */
static int l_tls_busy(lua_State *L)
{
	luaws_loop *loop = luaws_loop_get(L);
	lua_Integer n = 0;
	for (luaws_tls *t = loop->tls_busy; t; t = t->next)
		n++;
	lua_pushinteger(L, n);
	return 1;
}

int luaws_tls_open(lua_State *L)
{
	lua_pushcfunction(L, l_tls_busy);
	lua_setfield(L, -2, "_tls_busy");
	return 0;
}
