/*
 * The one lws protocol every luaws socket uses (raw sockets: luaws speaks HTTP and
 * WebSocket itself, lws moves the bytes) and its callback, which routes each event to
 * the object that owns the wsi: requests to server.c, client handshakes to client.c,
 * WebSocket traffic to conn.c (the wsi's opaque user data says which). On a TLS socket
 * what lws reads goes through tls.c first, and the routing gets the plaintext.
 */
#include "luaws.h"

/* Sends are capped at this size per write. */
#define TX_PACKET_SIZE (256 * 1024)

/* Each socket's per-session space holds its TLS record (tls.c), NULL on plain sockets. */
const struct lws_protocols luaws_protocols[2] = {
	{"luaws", luaws_protocol_callback, sizeof(luaws_tls *), 0, 0, NULL, TX_PACKET_SIZE},
	{NULL, NULL, 0, 0, 0, NULL, 0},
};

static int route(struct lws *wsi, enum lws_callback_reasons reason, void *in, size_t len);

/* Plaintext from tls.c: routed as lws's RX would be. */
static int route_plain(void *wsi, unsigned char *plain, size_t n)
{
	return route(wsi, LWS_CALLBACK_RAW_RX, plain, n);
}

int luaws_protocol_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
			    void *in, size_t len)
{
	luaws_tls *tls = user ? *(luaws_tls **)user : NULL;
	enum luaws_kind *kind;
	int rc;
	if (!tls)
		return route(wsi, reason, in, len);
	kind = lws_get_opaque_user_data(wsi);
	switch (reason) {
	case LWS_CALLBACK_RAW_RX:
		/* a lingering socket's or an orphan's bytes are dropped unread */
		if (!kind || *kind == LUAWS_KIND_ORPHAN)
			return 0;
		return luaws_tls_rx(tls, in, len, route_plain, wsi);
	case LWS_CALLBACK_RAW_WRITEABLE:
		rc = luaws_tls_writeable(tls);
		if (rc)
			return rc < 0 ? -1 : 0; /* more ciphertext waits: lws calls again */
		return route(wsi, reason, in, len);
	case LWS_CALLBACK_RAW_CLOSE:
		rc = route(wsi, reason, in, len);
		luaws_tls_free(wsi);
		return rc;
	default:
		return route(wsi, reason, in, len);
	}
}

static int route(struct lws *wsi, enum lws_callback_reasons reason, void *in, size_t len)
{
	enum luaws_kind *kind = wsi ? lws_get_opaque_user_data(wsi) : NULL;

	switch (reason) {
	case LWS_CALLBACK_RAW_ADOPT:
		return luaws_server_event(wsi, reason, in, len);

	case LWS_CALLBACK_RAW_CONNECTED:
	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
		if (kind && *kind == LUAWS_KIND_CONN)
			return luaws_client_event((luaws_conn *)kind, wsi, reason, in, len);
		return reason == LWS_CALLBACK_RAW_CONNECTED ? -1 : 0;

	case LWS_CALLBACK_RAW_RX:
	case LWS_CALLBACK_RAW_WRITEABLE:
	case LWS_CALLBACK_RAW_CLOSE:
		if (!kind) {
			/* lingering (sender.c): drop what arrives */
			if (reason == LWS_CALLBACK_RAW_WRITEABLE)
				luaws_detached_writeable(wsi);
			return 0;
		}
		if (*kind == LUAWS_KIND_ORPHAN) {
			/* its bytes wait for the next step; what arrives is dropped */
			if (reason == LWS_CALLBACK_RAW_CLOSE)
				luaws_orphan_closed((struct luaws_orphan *)kind);
			return 0;
		}
		if (*kind == LUAWS_KIND_LISTENER) /* adopted, never made a request */
			return reason == LWS_CALLBACK_RAW_CLOSE ? 0 : -1;
		if (*kind == LUAWS_KIND_REQUEST)
			return luaws_server_event(wsi, reason, in, len);
		if (*kind != LUAWS_KIND_CONN)
			return 0;
		if (((luaws_conn *)kind)->state == LUAWS_CONNECTING &&
		    reason != LWS_CALLBACK_RAW_WRITEABLE)
			return luaws_client_event((luaws_conn *)kind, wsi, reason, in, len);
		return luaws_conn_event((luaws_conn *)kind, reason, in, len);

	default:
		return 0;
	}
}
