// gorilla/websocket echo server peer for spec/interop_spec.lua.
//
// usage: gorilla_server
//
// Listens on 127.0.0.1, port chosen by the system, and prints the port on the first line
// of stdout. Each connection: the subprotocol is chosen by the server's preference from
// ["a", "b"] (gorilla's rule); every message is echoed, except the text commands
//
//	"FRAGMENT-TEXT"    answered by a text message written through NextWriter,
//	"FRAGMENT-BINARY"  the same with a binary message.
//
// The upgrader's write buffer is fragmentBuffer bytes, so gorilla emits a frame each time
// that much payload has accumulated: fragmented messages really are several frames (and
// so are the big echoes). The text one is split inside multi-byte UTF-8 sequences.
// It prints (and flushes) one line per event:
//
//	HEADER <X-Interop-Token value>
//	SUBPROTOCOL <name>
//	CLOSED <code> <reason>           (the close frame the client sent)
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"

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
	for {
		mt, msg, err := c.ReadMessage()
		if err != nil {
			if ce, ok := err.(*websocket.CloseError); ok {
				say("CLOSED %d %s", ce.Code, ce.Text)
			} else {
				say("READ-ERROR %v", err)
			}
			return
		}
		switch {
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	say("%d", ln.Addr().(*net.TCPAddr).Port)
	http.HandleFunc("/", echo)
	fmt.Fprintln(os.Stderr, http.Serve(ln, nil))
	os.Exit(1)
}
