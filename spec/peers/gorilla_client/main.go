// gorilla/websocket client peer for spec/interop_spec.lua.
//
// usage: gorilla_client URL RESULT_FILE MODE [-cafile CA] [compress]
//
// A wss:// URL is verified against CA (a PEM file) with -cafile (the Dialer's
// TLSClientConfig.RootCAs), else the system's CAs. "compress" sets the Dialer's
// EnableCompression (spec/interop_deflate_spec.lua) and adds a line
// "extensions <the server's Sec-WebSocket-Extensions>" to the result.
//
// Dials URL offering the subprotocols "b, a" and an X-Interop-Token header, then by MODE:
//
//	messages   sends every message of the shared script (text and binary payloads of
//	           the sizes below) and checks each echo byte for byte;
//	handshake  nothing more;
//	big        the same as messages with a text and a binary message of 16 MiB;
//	ping       for each of pingPayloads in turn: pings the server with it, sends a
//	           text message and reads its echo, and checks that the pong handler saw
//	           exactly one pong, with that payload, meanwhile (the server answers the
//	           ping before it reads that message); then sends "PING-ME" (the luaws
//	           server pings us with the same payloads, answered by gorilla's default
//	           ping handler while we read, before it echoes it) and "PONGED" (by then
//	           our pongs have reached it), reading both echoes;
//	close1008  closes with 1008 instead of 4000 (below);
//	close1001  sends "CLOSE-1001", on which the luaws server closes with 1001 + text,
//	           and reports that close instead of closing itself.
//
// Then (except in close1001) it sends a close 4000 and reads the close the server
// echoes. It writes one line per check to RESULT_FILE (through a temporary file and a
// rename), the last line being "END":
//
//	subprotocol <name>
//	echo <text|binary> <size> ok            (or "MISMATCH ...")
//	ping <i> ok                             (or "MISMATCH ...")
//	close <code> <reason>
//	server-close <code> <reason>            (close1001: the close the server started)
//	error <text>                            (anything unexpected)
package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

const token = "gorilla-token-91c2"

var sizes = []int{0, 1, 125, 126, 127, 65535, 65536, 1048576}

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

func compare(gotType int, got []byte, wantType int, want []byte) string {
	if gotType != wantType {
		return fmt.Sprintf("MISMATCH type %d", gotType)
	}
	if len(got) != len(want) {
		return fmt.Sprintf("MISMATCH length %d", len(got))
	}
	if string(got) == string(want) {
		return "ok"
	}
	for i := range got {
		if got[i] != want[i] {
			return fmt.Sprintf("MISMATCH at byte %d", i)
		}
	}
	return "ok"
}

func run(url, mode, cafile string, compress bool, lines *[]string) error {
	add := func(format string, a ...interface{}) { *lines = append(*lines, fmt.Sprintf(format, a...)) }
	dialer := websocket.Dialer{HandshakeTimeout: 10 * time.Second, Subprotocols: []string{"b", "a"},
		EnableCompression: compress}
	if cafile != "" {
		pem, err := os.ReadFile(cafile)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("no certificate in %s", cafile)
		}
		dialer.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	c, resp, err := dialer.Dial(url, http.Header{"X-Interop-Token": {token}})
	if err != nil {
		return fmt.Errorf("dial: %v", err)
	}
	defer c.Close()
	add("subprotocol %s", c.Subprotocol())
	if compress {
		add("extensions %s", resp.Header.Get("Sec-WebSocket-Extensions"))
	}
	script := sizes
	switch mode {
	case "messages":
	case "big":
		script = bigSizes
	case "handshake", "ping", "close1001", "close1008":
		script = nil
	default:
		return fmt.Errorf("unknown mode %q", mode)
	}
	for _, size := range script {
		for _, m := range []struct {
			kind string
			mt   int
			data []byte
		}{{"text", websocket.TextMessage, text(size)}, {"binary", websocket.BinaryMessage, binary(size)}} {
			c.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if err := c.WriteMessage(m.mt, m.data); err != nil {
				return fmt.Errorf("write %s %d: %v", m.kind, size, err)
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			mt, got, err := c.ReadMessage()
			if err != nil {
				return fmt.Errorf("read %s %d: %v", m.kind, size, err)
			}
			add("echo %s %d %s", m.kind, size, compare(mt, got, m.mt, m.data))
		}
	}
	// echo sends a text message and reads it back.
	echo := func(what string) error {
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := c.WriteMessage(websocket.TextMessage, []byte(what)); err != nil {
			return fmt.Errorf("write %s: %v", what, err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		mt, got, err := c.ReadMessage()
		if err != nil {
			return fmt.Errorf("read the echo of %s: %v", what, err)
		}
		if mt != websocket.TextMessage || string(got) != what {
			return fmt.Errorf("echo of %s: type %d, %q", what, mt, got)
		}
		return nil
	}
	if mode == "ping" {
		var pongs []string
		c.SetPongHandler(func(appData string) error {
			pongs = append(pongs, appData)
			return nil
		})
		for i, p := range pingPayloads {
			before := len(pongs)
			if err := c.WriteControl(websocket.PingMessage, []byte(p), time.Now().Add(5*time.Second)); err != nil {
				return fmt.Errorf("write ping %d: %v", i+1, err)
			}
			if err := echo(fmt.Sprintf("after-ping-%d", i+1)); err != nil {
				return err
			}
			switch got := pongs[before:]; {
			case len(got) != 1:
				add("ping %d MISMATCH %d pongs %q", i+1, len(got), got)
			case got[0] != p:
				add("ping %d MISMATCH pong payload %q instead of %q", i+1, got[0], p)
			default:
				add("ping %d ok", i+1)
			}
		}
		for _, cmd := range []string{"PING-ME", "PONGED"} {
			if err := echo(cmd); err != nil {
				return err
			}
		}
	}
	if mode == "close1001" {
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := c.WriteMessage(websocket.TextMessage, []byte("CLOSE-1001")); err != nil {
			return fmt.Errorf("write CLOSE-1001: %v", err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			_, got, err := c.ReadMessage()
			if err == nil {
				add("error message instead of the close: %q", got)
				continue
			}
			if ce, ok := err.(*websocket.CloseError); ok {
				add("server-close %d %s", ce.Code, ce.Text)
				return nil
			}
			return fmt.Errorf("read the server's close: %v", err)
		}
	}
	msg := websocket.FormatCloseMessage(4000, "bye from gorilla")
	if mode == "close1008" {
		msg = websocket.FormatCloseMessage(websocket.ClosePolicyViolation, "policy from gorilla")
	}
	if err := c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(5*time.Second)); err != nil {
		return fmt.Errorf("write close: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			add("error message after close")
			continue
		}
		if ce, ok := err.(*websocket.CloseError); ok {
			add("close %d %s", ce.Code, ce.Text)
			return nil
		}
		return fmt.Errorf("read close: %v", err)
	}
}

func main() {
	url, result, mode := os.Args[1], os.Args[2], os.Args[3]
	cafile, compress := "", false
	for i := 4; i < len(os.Args); i++ {
		switch os.Args[i] {
		case "-cafile":
			if i+1 < len(os.Args) {
				cafile = os.Args[i+1]
				i++
			}
		case "compress":
			compress = true
		}
	}
	var lines []string
	if err := run(url, mode, cafile, compress, &lines); err != nil {
		lines = append(lines, "error "+err.Error())
	}
	lines = append(lines, "END")
	if err := os.WriteFile(result+".tmp", []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := os.Rename(result+".tmp", result); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
