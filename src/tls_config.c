/*
 * luaws.TLSConfig: an OpenSSL SSL_CTX made from the Go-shaped tls.Config fields that
 * lua/luaws/tls.lua checks (certificates, CAs, client authentication, versions), for a
 * server (every connection a listener accepts) or for wss:// dials. A server with several
 * certificates picks one per handshake by SNI, as Go. The sockets' TLS is tls.c's.
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

typedef struct {
	SSL_CTX *ctx;
	int server;
} luaws_tls_config;

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
static pthread_once_t certs_once = PTHREAD_ONCE_INIT;

static void certs_index_new(void)
{
	certs_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
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
void luaws_tls_ctx_took(SSL_CTX *ctx)
{
	cert_list *l = cert_list_of(ctx);
	if (l)
		l->refs++;
}

void luaws_tls_ctx_dropped(SSL_CTX *ctx)
{
	cert_list *l = cert_list_of(ctx);
	if (l && --l->refs == 0) {
		SSL_CTX_set_ex_data(ctx, certs_index, NULL);
		cert_list_free(l);
	}
}

static int config_gc(lua_State *L)
{
	luaws_tls_config *cfg = luaL_checkudata(L, 1, TLS_CONFIG_MT);
	luaws_tls_ctx_dropped(cfg->ctx);
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
	luaws_tls_ctx_took(ctx);
	return ctx;
}

void luaws_tls_config_unref(SSL_CTX *ctx)
{
	luaws_tls_ctx_dropped(ctx);
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
	luaws_tls_ctx_dropped(ctx);
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
	pthread_once(&certs_once, certs_index_new);
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
		SSL_CTX_set_verify(ctx, insecure ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, luaws_tls_verified);
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

int luaws_tls_config_open(lua_State *L)
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
