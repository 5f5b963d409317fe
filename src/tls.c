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
 * Also here: luaws.TLSConfig (an SSL_CTX made from Go-shaped tls.Config fields) and the
 * connection state a handler sees as r.TLS.
 */
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <errno.h>
#include <sys/stat.h>
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <openssl/pem.h>

#include "luaws.h"

#define TLS_CONFIG_MT "luaws.TLSConfig"
/* An SSL_write takes this much at a time; a write stops once this much ciphertext
 * waits for the socket. */
#define WRITE_CHUNK (64 * 1024)
#define OUT_WAIT (256 * 1024)
/* The out buffer is freed when empty and larger than this (idle connections). */
#define OUT_KEEP (16 * 1024)

struct luaws_tls {
	SSL *ssl;
	struct lws *wsi;
	int fd;
	const unsigned char *in; /* ciphertext lws read, handed to OpenSSL by the BIO */
	size_t in_len;
	luaws_buf out;           /* ciphertext for the socket, from LWS_PRE + sent on */
	size_t sent;
	unsigned server : 1, handshake_done : 1, failed : 1, gone : 1, got_bytes : 1,
		 peer_done : 1; /* the peer's close_notify came */
	char error[160];         /* why the handshake or the connection failed */
	char name[64];           /* a client's server name, for errors */
};

typedef struct {
	SSL_CTX *ctx;
	int server;
} luaws_tls_config;

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

/* A server's certificates when it has more than one (Certificates, CertFile): OpenSSL
 * keeps one per key type, so each handshake gets the one its SNI names (pick_cert),
 * as Go's. Hung on the SSL_CTX (ex_data, no callbacks: none may outlive this library)
 * and counted with every reference luaws takes to it (refs), freed with the last. */
typedef struct {
	int refs, n;
	struct cert_key {
		X509 *cert;
		EVP_PKEY *key;
		STACK_OF(X509) *chain;
	} c[];
} cert_list;
static int certs_index = -1;

static void bio_method_new(void)
{
	certs_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
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

static void cert_list_free(cert_list *l)
{
	int i;
	for (i = 0; l && i < l->n; i++) {
		X509_free(l->c[i].cert);
		EVP_PKEY_free(l->c[i].key);
		sk_X509_pop_free(l->c[i].chain, X509_free);
	}
	free(l);
}

static cert_list *cert_list_of(SSL_CTX *ctx)
{
	return ctx && certs_index >= 0 ? SSL_CTX_get_ex_data(ctx, certs_index) : NULL;
}

/* luaws takes a reference to ctx (SSL_CTX_up_ref, SSL_new) or drops one (SSL_CTX_free,
 * SSL_free): its certificate list follows. */
static void ctx_took(SSL_CTX *ctx)
{
	cert_list *l = cert_list_of(ctx);
	if (l)
		l->refs++;
}

static void ctx_dropped(SSL_CTX *ctx)
{
	cert_list *l = cert_list_of(ctx);
	if (l && --l->refs == 0) {
		SSL_CTX_set_ex_data(ctx, certs_index, NULL);
		cert_list_free(l);
	}
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

/* The certificate's names, as Go lists them in "certificate is valid for ...". */
static void cert_names(X509 *cert, char *out, size_t size)
{
	GENERAL_NAMES *sans = cert ? X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL) :
				     NULL;
	int i;
	out[0] = '\0';
	for (i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
		GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
		size_t at = strlen(out);
		char ip[64];
		const char *name = NULL;
		if (g->type == GEN_DNS) {
			name = (const char *)ASN1_STRING_get0_data(g->d.dNSName);
		} else if (g->type == GEN_IPADD && (g->d.iPAddress->length == 4 ||
						    g->d.iPAddress->length == 16)) {
			inet_ntop(g->d.iPAddress->length == 4 ? AF_INET : AF_INET6,
				  ASN1_STRING_get0_data(g->d.iPAddress), ip, sizeof(ip));
			name = ip;
		}
		if (name)
			lws_snprintf(out + at, size - at, "%s%s", at ? ", " : "", name);
	}
	GENERAL_NAMES_free(sans);
}

/* OpenSSL's verify callback on the client: a certificate for another host gets Go's
 * message, with the names it is valid for. */
static int verified(int ok, X509_STORE_CTX *store)
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
		ctx_took(ctx);
	bio = t->ssl ? BIO_new(bio_method) : NULL;
	if (!bio) {
		if (t->ssl)
			ctx_dropped(ctx);
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
	ctx_dropped(SSL_get_SSL_CTX(t->ssl));
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
		GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
		if (g->type == GEN_DNS) {
			lua_pushstring(L, (const char *)ASN1_STRING_get0_data(g->d.dNSName));
			lua_rawseti(L, -3, ++nd);
		} else if (g->type == GEN_IPADD) {
			char ip[64];
			int len = g->d.iPAddress->length;
			const unsigned char *a = ASN1_STRING_get0_data(g->d.iPAddress);
			if (len == 4 || len == 16) {
				inet_ntop(len == 4 ? AF_INET : AF_INET6, a, ip, sizeof(ip));
				lua_pushstring(L, ip);
				lua_rawseti(L, -2, ++ni);
			}
		}
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

/* luaws.TLSConfig */

static int config_gc(lua_State *L)
{
	luaws_tls_config *cfg = luaL_checkudata(L, 1, TLS_CONFIG_MT);
	ctx_dropped(cfg->ctx);
	SSL_CTX_free(cfg->ctx);
	cfg->ctx = NULL;
	return 0;
}

static int config_tostring(lua_State *L)
{
	luaws_tls_config *cfg = luaL_checkudata(L, 1, TLS_CONFIG_MT);
	lua_pushfstring(L, "%s: %p (%s)", TLS_CONFIG_MT, (void *)cfg,
			cfg->server ? "server" : "client");
	return 1;
}

SSL_CTX *luaws_tls_config_ref(SSL_CTX *ctx)
{
	if (!ctx || !SSL_CTX_up_ref(ctx))
		return NULL;
	ctx_took(ctx);
	return ctx;
}

void luaws_tls_config_unref(SSL_CTX *ctx)
{
	ctx_dropped(ctx);
	SSL_CTX_free(ctx);
}

SSL_CTX *luaws_tls_check_config(lua_State *L, int idx, int server)
{
	luaws_tls_config *cfg = luaL_checkudata(L, idx, TLS_CONFIG_MT);
	if (!cfg->ctx || cfg->server != server)
		luaL_argerror(L, idx, server ? "server TLS config expected" :
					       "client TLS config expected");
	return cfg->ctx;
}

/* A config that could not be made: nil, "tls: <what> <file>: <why>", why from
 * OpenSSL's error queue in plain words unless given ("": none). */
static int config_fail(lua_State *L, SSL_CTX *ctx, const char *what, const char *file,
		       const char *why)
{
	unsigned long e = ERR_peek_error(), err; /* the first: the cause */
	char buf[256];
	ctx_dropped(ctx);
	SSL_CTX_free(ctx);
	if (!why && e) {
		ERR_error_string_n(e, buf, sizeof(buf));
		why = ERR_reason_error_string(e) ? ERR_reason_error_string(e) : buf;
		if (ERR_GET_LIB(e) == ERR_LIB_SYS)
			why = strerror(ERR_GET_REASON(e));
		while ((err = ERR_get_error())) {
			int lib = ERR_GET_LIB(err), reason = ERR_GET_REASON(err);
			if (lib == ERR_LIB_PEM && reason == PEM_R_BAD_PASSWORD_READ) {
				why = "the key is encrypted (luaws asks for no passphrase)";
				break;
			}
			if ((lib == ERR_LIB_PEM && reason == PEM_R_NO_START_LINE) ||
			    (lib == ERR_LIB_OSSL_DECODER && reason == ERR_R_UNSUPPORTED) ||
			    (lib == ERR_LIB_X509 && reason == X509_R_NO_CERTIFICATE_OR_CRL_FOUND))
				why = !strcmp(what, "cannot load key") ? "no private key (PEM) in it" :
									 "no certificate (PEM) in it";
		}
	}
	ERR_clear_error();
	luaL_pushfail(L);
	if (!why)
		why = "failed";
	if (file)
		lua_pushfstring(L, "tls: %s %s%s%s", what, file, *why ? ": " : "", why);
	else
		lua_pushfstring(L, "tls: %s%s%s", what, *why ? ": " : "", why);
	return 2;
}

/* A file to load: NULL when it is one, else why not (as Go's "open ...: ..."). */
static const char *not_a_file(const char *path)
{
	struct stat st;
	if (stat(path, &st))
		return strerror(errno);
	return S_ISDIR(st.st_mode) ? strerror(EISDIR) : NULL;
}

/* Load CAs to verify with from a PEM file or a directory of hashed certificates
 * (openssl rehash). 0, or -1 with the error pushed (ctx freed). */
static int load_cas(lua_State *L, SSL_CTX *ctx, const char *cas, int *is_dir)
{
	struct stat st;
	if (stat(cas, &st))
		return config_fail(L, ctx, "cannot load CAs from", cas, strerror(errno)), -1;
	*is_dir = S_ISDIR(st.st_mode);
	if (SSL_CTX_load_verify_locations(ctx, *is_dir ? NULL : cas, *is_dir ? cas : NULL) != 1)
		return config_fail(L, ctx, "cannot load CAs from", cas, NULL), -1;
	return 0;
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		       const unsigned char *in, unsigned int inlen, void *arg)
{
	static const unsigned char http11[] = "\x08http/1.1";
	(void)ssl;
	(void)arg;
	if (SSL_select_next_proto((unsigned char **)out, outlen, http11, sizeof(http11) - 1, in,
				  inlen) == OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_OK;
	return SSL_TLSEXT_ERR_ALERT_FATAL; /* as Go: no protocol in common */
}

/* A server with several certificates, as the ClientHello is handled: the first whose
 * names cover the client's SNI, else the first (Go's getCertificate). */
static int pick_cert(SSL *ssl, void *arg)
{
	cert_list *l = cert_list_of(SSL_get_SSL_CTX(ssl));
	const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	int i, pick = 0;
	(void)arg;
	if (!l)
		return 1;
	for (i = 0; sni && i < l->n; i++) {
		if (X509_check_host(l->c[i].cert, sni, 0, 0, NULL) == 1) {
			pick = i;
			break;
		}
	}
	SSL_certs_clear(ssl); /* not another key type's certificate */
	return SSL_use_cert_and_key(ssl, l->c[pick].cert, l->c[pick].key, l->c[pick].chain,
				    1) == 1;
}

/* An encrypted key file: no passphrase (OpenSSL's default callback would prompt on the
 * terminal and wait there, with the whole loop). */
static int no_passphrase(char *buf, int size, int rwflag, void *arg)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)arg;
	return -1;
}

static int accept_any(int ok, X509_STORE_CTX *store)
{
	(void)ok;
	(void)store;
	return 1;
}

static int opt_field(lua_State *L, int t, const char *k, int type)
{
	int got = lua_getfield(L, t, k);
	if (got == LUA_TNIL)
		return 0;
	if (got != type)
		luaL_error(L, "tls config: %s has the wrong type", k);
	return 1;
}

/* core.tls_config(server, t) -> luaws.TLSConfig | nil, err. t's fields (checked by
 * the Lua side): Certificates = {{CertFile, KeyFile}, ...}, RootCAs / ClientCAs (a file
 * or a directory of PEM), ClientAuth (0..4 as Go's tls.ClientAuthType), MinVersion,
 * MaxVersion (0x0303, 0x0304), InsecureSkipVerify. */
static int l_tls_config(lua_State *L)
{
	int server = lua_toboolean(L, 1);
	luaws_tls_config *cfg;
	SSL_CTX *ctx;
	int i, verify = SSL_VERIFY_NONE;
	luaL_checktype(L, 2, LUA_TTABLE);
	pthread_once(&bio_once, bio_method_new);
	ERR_clear_error();
	ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
	if (!ctx)
		return config_fail(L, NULL, "cannot make a context", NULL, NULL);
	SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	/* NO_AUTO_CHAIN: send the chain the certificate file holds, as Go does, not one
	 * OpenSSL completes from the CAs we verify with (RootCAs, ClientCAs) */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_NO_AUTO_CHAIN);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF);
	if (opt_field(L, 2, "MinVersion", LUA_TNUMBER))
		SSL_CTX_set_min_proto_version(ctx, (int)lua_tointeger(L, -1));
	lua_pop(L, 1);
	if (opt_field(L, 2, "MaxVersion", LUA_TNUMBER))
		SSL_CTX_set_max_proto_version(ctx, (int)lua_tointeger(L, -1));
	lua_pop(L, 1);

	if (opt_field(L, 2, "Certificates", LUA_TTABLE)) {
		int n = (int)luaL_len(L, -1);
		cert_list *list = NULL;
		if (server && n > 1) {
			/* the handshake picks one (pick_cert); freed with ctx from here on */
			list = calloc(1, sizeof(*list) + (size_t)n * sizeof(list->c[0]));
			if (!list || certs_index < 0 ||
			    !SSL_CTX_set_ex_data(ctx, certs_index, list)) {
				free(list);
				return config_fail(L, ctx, "out of memory", NULL, "");
			}
			list->refs = 1;
			list->n = n;
			SSL_CTX_set_cert_cb(ctx, pick_cert, NULL);
		}
		for (i = 1; i <= n; i++) {
			const char *cert, *key;
			lua_rawgeti(L, -1, i);
			lua_getfield(L, -1, "CertFile");
			lua_getfield(L, -2, "KeyFile");
			cert = lua_tostring(L, -2);
			key = lua_tostring(L, -1);
			if (!cert || !key)
				return luaL_error(L, "tls config: Certificates[%d] needs CertFile "
						     "and KeyFile", i);
			if (not_a_file(cert))
				return config_fail(L, ctx, "cannot load certificate", cert,
						   not_a_file(cert));
			if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
				return config_fail(L, ctx, "cannot load certificate", cert, NULL);
			if (not_a_file(key))
				return config_fail(L, ctx, "cannot load key", key, not_a_file(key));
			if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 &&
			    ERR_GET_REASON(ERR_peek_last_error()) != X509_R_KEY_VALUES_MISMATCH)
				return config_fail(L, ctx, "cannot load key", key, NULL);
			if (SSL_CTX_check_private_key(ctx) != 1) {
				lua_pushfstring(L, "(%s, %s)", key, cert);
				return config_fail(L, ctx, "private key does not match public key",
						   lua_tostring(L, -1), "");
			}
			if (list) {
				struct cert_key *k = &list->c[i - 1];
				STACK_OF(X509) *chain = NULL;
				k->cert = SSL_CTX_get0_certificate(ctx);
				k->key = SSL_CTX_get0_privatekey(ctx);
				SSL_CTX_get0_chain_certs(ctx, &chain);
				X509_up_ref(k->cert);
				EVP_PKEY_up_ref(k->key);
				k->chain = chain ? X509_chain_up_ref(chain) : NULL;
				if (chain && !k->chain)
					return config_fail(L, ctx, "out of memory", NULL, "");
			}
			lua_pop(L, 3);
		}
	}
	lua_pop(L, 1);

	if (server) {
		lua_Integer auth = 0;
		if (opt_field(L, 2, "ClientAuth", LUA_TNUMBER))
			auth = lua_tointeger(L, -1);
		lua_pop(L, 1);
		/* Go: 1 RequestClientCert, 2 RequireAnyClientCert, 3 VerifyClientCertIfGiven,
		 * 4 RequireAndVerifyClientCert */
		if (auth > 0)
			verify = SSL_VERIFY_PEER | (auth == 2 || auth == 4 ?
						    SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0);
		if (opt_field(L, 2, "ClientCAs", LUA_TSTRING)) {
			const char *cas = lua_tostring(L, -1);
			STACK_OF(X509_NAME) *names;
			int is_dir;
			if (load_cas(L, ctx, cas, &is_dir))
				return 2;
			/* the CAs' names, in the certificate request */
			names = is_dir ? NULL : SSL_load_client_CA_file(cas);
			if (names)
				SSL_CTX_set_client_CA_list(ctx, names);
		}
		lua_pop(L, 1);
		/* Go's RequestClientCert and RequireAnyClientCert take any certificate */
		SSL_CTX_set_verify(ctx, verify, auth == 1 || auth == 2 ? accept_any : NULL);
		SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
		SSL_CTX_set_num_tickets(ctx, 1); /* as Go */
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	} else {
		static const unsigned char http11[] = "\x08http/1.1";
		int insecure = 0;
		if (opt_field(L, 2, "InsecureSkipVerify", LUA_TBOOLEAN))
			insecure = lua_toboolean(L, -1);
		lua_pop(L, 1);
		if (opt_field(L, 2, "RootCAs", LUA_TSTRING)) {
			int is_dir;
			if (load_cas(L, ctx, lua_tostring(L, -1), &is_dir))
				return 2;
		} else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
			return config_fail(L, ctx, "cannot load the system's CAs", NULL, NULL);
		}
		lua_pop(L, 1);
		SSL_CTX_set_verify(ctx, insecure ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, verified);
		SSL_CTX_set_alpn_protos(ctx, http11, sizeof(http11) - 1);
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	}
	ERR_clear_error();
	cfg = lua_newuserdatauv(L, sizeof(*cfg), 0);
	cfg->ctx = ctx;
	cfg->server = server;
	luaL_setmetatable(L, TLS_CONFIG_MT);
	return 1;
}

int luaws_tls_open(lua_State *L)
{
	if (luaL_newmetatable(L, TLS_CONFIG_MT)) {
		lua_pushcfunction(L, config_gc);
		lua_setfield(L, -2, "__gc");
		lua_pushcfunction(L, config_tostring);
		lua_setfield(L, -2, "__tostring");
	}
	lua_pop(L, 1);
	lua_pushcfunction(L, l_tls_config);
	lua_setfield(L, -2, "tls_config");
	return 0;
}
