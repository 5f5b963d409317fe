/*
 * The lws protocol table every luaws vhost uses and its one callback, which routes each
 * event to the object that owns it: HTTP requests to server.c, client handshakes to
 * client.c, WebSocket traffic to conn.c (the wsi's opaque user data says which).
 */
#include "luaws.h"

/* Sends are capped at this size (lws caps each send() at rx_buffer_size otherwise). */
#define TX_PACKET_SIZE (256 * 1024)
#define RX_BUFFER_SIZE 4096

const struct lws_protocols luaws_protocol_template[3] = {
	/* slot 0: HTTP, and WebSocket when the client names no subprotocol */
	{"luaws-internal-default", luaws_protocol_callback, 0, RX_BUFFER_SIZE, 0, NULL,
	 TX_PACKET_SIZE},
	/* slot 1: WebSocket with a negotiated (or refused) subprotocol; see server.c */
	{"x", luaws_protocol_callback, 0, RX_BUFFER_SIZE, 1, NULL, TX_PACKET_SIZE},
	{NULL, NULL, 0, 0, 0, NULL, 0},
};

int luaws_protocol_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
			    void *in, size_t len)
{
	enum luaws_kind *kind = wsi ? lws_get_opaque_user_data(wsi) : NULL;

	switch (reason) {
	case LWS_CALLBACK_HTTP:
	case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
	case LWS_CALLBACK_HTTP_WRITEABLE:
	case LWS_CALLBACK_CLOSED_HTTP:
	case LWS_CALLBACK_HTTP_BIND_PROTOCOL:
	case LWS_CALLBACK_ADD_HEADERS:
		return luaws_server_event(wsi, reason, user, in, len);

	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
	case LWS_CALLBACK_CLIENT_FILTER_PRE_ESTABLISH:
	case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER:
		if (kind && *kind == LUAWS_KIND_CONN)
			return luaws_client_event((luaws_conn *)kind, wsi, reason, in, len);
		return 0;

	case LWS_CALLBACK_CLIENT_ESTABLISHED:
		if (kind && *kind == LUAWS_KIND_CONN &&
		    luaws_client_event((luaws_conn *)kind, wsi, reason, in, len))
			return -1;
		break;

	case LWS_CALLBACK_WSI_DESTROY:
		if (kind && *kind == LUAWS_KIND_REQUEST)
			return luaws_server_event(wsi, reason, user, in, len);
		if (kind && *kind == LUAWS_KIND_CONN &&
		    ((luaws_conn *)kind)->state == LUAWS_CONNECTING)
			return luaws_client_event((luaws_conn *)kind, wsi, reason, in, len);
		break;

	default:
		break;
	}
	if (kind && *kind == LUAWS_KIND_CONN)
		return luaws_conn_event((luaws_conn *)kind, wsi, reason, in, len);
	return 0;
}
