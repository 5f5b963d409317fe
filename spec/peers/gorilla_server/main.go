// gorilla/websocket echo server peer for spec/interop_spec.lua.
//
// usage: gorilla_server [-compress] [-tls CERT KEY]
//
// -compress sets the Upgrader's EnableCompression (spec/interop_deflate_spec.lua).
//
// Listens on 127.0.0.1, port chosen by the system, and prints the port on the first line
// of stdout. With -tls it serves HTTPS and wss:// (http.ServeTLS) with that certificate
// and key. Each connection: the subprotocol is chosen by the server's preference from
// ["a", "b"] (gorilla's rule); every message is echoed, except the text commands
//
//	"FRAGMENT-TEXT"    answered by a text message written through NextWriter,
//	"FRAGMENT-BINARY"  the same with a binary message,
//	"CLOSE-1008"       answered by a close 1008 "policy from gorilla",
//
// and "PING-ME", which is echoed after the server has pinged the client with each of
// pingPayloads; the pongs are checked when the next message arrives (the pong handler
// runs inside ReadMessage, and the client answers the pings before it sends that).
//
// The upgrader's write buffer is fragmentBuffer bytes, so gorilla emits a frame each time
// that much payload has accumulated: fragmented messages really are several frames (and
// so are the big echoes). The text one is split inside multi-byte UTF-8 sequences.
// It prints (and flushes) one line per event:
//
//	HEADER <X-Interop-Token value>
//	SUBPROTOCOL <name>
//	RECEIVED <text|binary> <size> ok (or "MISMATCH ..."): a message of a size in
//	                                 bigSizes, checked against the shared payload
//	PING <i> ok                      (or "MISMATCH ..."), for "PING-ME"
//	CLOSED <code> <reason>           (the close frame the client sent)
package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

// Frame payload size for every message this server writes (gorilla has no minimum for
// the write buffer; it adds room for the frame header itself).
const fragmentBuffer = 1000

var upgrader = websocket.Upgrader{
	Subprotocols:    []string{"a", "b"},
	WriteBufferSize: fragmentBuffer,
	CheckOrigin:     func(r *http.Request) bool { return true },
}

// fragmentText is 6306 bytes (7 frames of at most 1000 bytes); the 9-byte repeat puts
// some frame boundaries inside the 3-byte and the 4-byte characters.
func fragmentText() string {
	return "F:" + strings.Repeat("\u20ac\U0001F600ab", 700) + " end"
}

func fragmentBinary() []byte {
	b := make([]byte, 4321)
	for i := range b {
		b[i] = byte(255 - i%256)
	}
	return b
}

// The shared payloads (as in spec/interop_spec.lua and spec/peers/gorilla_client).
var bigSizes = []int{16 << 20}

var pingPayloads = []string{
	"",
	"ping-1",
	string(func() []byte {
		b := make([]byte, 125)
		for i := range b {
			b[i] = byte(i)
		}
		return b
	}()),
	"\x00\xff\x80 binary \x01",
	"\u20ac\U0001F600 utf-8",
}

const unit = "ab\u20ac\u00e9\U0001F600-0123" // 16 bytes of UTF-8

func text(n int) []byte {
	return []byte(strings.Repeat(unit, n/16) + strings.Repeat("x", n%16))
}

func binary(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*131 + (i>>8)*17 + 7)
	}
	return b
}

// checkBig is the RECEIVED line for a message of a size in bigSizes.
func checkBig(mt int, msg []byte) string {
	kind, want := "text", text(len(msg))
	if mt == websocket.BinaryMessage {
		kind, want = "binary", binary(len(msg))
	}
	if bytes.Equal(msg, want) {
		return fmt.Sprintf("RECEIVED %s %d ok", kind, len(msg))
	}
	for i := range msg {
		if msg[i] != want[i] {
			return fmt.Sprintf("RECEIVED %s %d MISMATCH at byte %d", kind, len(msg), i)
		}
	}
	return "unreachable"
}

func say(format string, a ...interface{}) {
	fmt.Printf(format+"\n", a...)
	os.Stdout.Sync()
}

// writePieces writes data through one NextWriter in pieces of n bytes.
func writePieces(c *websocket.Conn, mt int, data []byte, n int) error {
	w, err := c.NextWriter(mt)
	if err != nil {
		return err
	}
	for len(data) > 0 {
		k := n
		if k > len(data) {
			k = len(data)
		}
		if _, err := w.Write(data[:k]); err != nil {
			return err
		}
		data = data[k:]
	}
	return w.Close()
}

func echo(w http.ResponseWriter, r *http.Request) {
	say("HEADER %s", r.Header.Get("X-Interop-Token"))
	c, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		say("UPGRADE-ERROR %v", err)
		return
	}
	defer c.Close()
	say("SUBPROTOCOL %s", c.Subprotocol())
	var pongs []string
	pinged := false // "PING-ME" came, and its pongs are to be checked
	c.SetPongHandler(func(appData string) error {
		pongs = append(pongs, appData)
		return nil
	})
	for {
		mt, msg, err := c.ReadMessage()
		if err == nil && pinged {
			pinged = false
			for i, p := range pingPayloads {
				switch {
				case i >= len(pongs):
					say("PING %d MISMATCH no pong (%d pongs)", i+1, len(pongs))
				case pongs[i] != p:
					say("PING %d MISMATCH pong payload %q instead of %q", i+1, pongs[i], p)
				default:
					say("PING %d ok", i+1)
				}
			}
			if len(pongs) > len(pingPayloads) {
				say("PING MISMATCH %d pongs for %d pings", len(pongs), len(pingPayloads))
			}
		}
		if err != nil {
			if ce, ok := err.(*websocket.CloseError); ok {
				say("CLOSED %d %s", ce.Code, ce.Text)
			} else {
				say("READ-ERROR %v", err)
			}
			return
		}
		for _, n := range bigSizes {
			if len(msg) == n {
				say("%s", checkBig(mt, msg))
			}
		}
		if mt == websocket.TextMessage && string(msg) == "PING-ME" {
			pongs, pinged = nil, true
			for i, p := range pingPayloads {
				if err := c.WriteControl(websocket.PingMessage, []byte(p), time.Now().Add(5*time.Second)); err != nil {
					say("WRITE-ERROR ping %d: %v", i+1, err)
					return
				}
			}
		}
		switch {
		case mt == websocket.TextMessage && string(msg) == "CLOSE-1008":
			msg := websocket.FormatCloseMessage(websocket.ClosePolicyViolation, "policy from gorilla")
			err = c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(5*time.Second))
		case mt == websocket.TextMessage && string(msg) == "FRAGMENT-TEXT":
			err = writePieces(c, websocket.TextMessage, []byte(fragmentText()), 333)
		case mt == websocket.TextMessage && string(msg) == "FRAGMENT-BINARY":
			err = writePieces(c, websocket.BinaryMessage, fragmentBinary(), 100)
		default:
			err = c.WriteMessage(mt, msg)
		}
		if err != nil {
			say("WRITE-ERROR %v", err)
			return
		}
	}
}

func main() {
	args := os.Args[1:]
	// -compress: permessage-deflate (spec/interop_deflate_spec.lua)
	if len(args) > 0 && args[0] == "-compress" {
		upgrader.EnableCompression = true
		args = args[1:]
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	say("%d", ln.Addr().(*net.TCPAddr).Port)
	http.HandleFunc("/", echo)
	if len(args) == 3 && args[0] == "-tls" {
		fmt.Fprintln(os.Stderr, http.ServeTLS(ln, nil, args[1], args[2]))
	} else {
		fmt.Fprintln(os.Stderr, http.Serve(ln, nil))
	}
	os.Exit(1)
}
