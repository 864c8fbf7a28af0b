//go:build linux

package eventloop

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/huleedu/websocket-service/session"
)

// ErrHandshake wraps every reason a request is not a valid WebSocket upgrade; the client got
// an HTTP error response saying which.
var ErrHandshake = errors.New("websocket handshake")

// acceptGUID is the fixed GUID of RFC 6455 §1.3.
const acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// handshakeError is a refused upgrade: the HTTP status and the reason sent to the client.
type handshakeError struct {
	status int
	reason string
}

func (e *handshakeError) Error() string { return e.reason }

func (e *handshakeError) Unwrap() error { return ErrHandshake }

// write sends the refusal as a plain HTTP response (the connection is not hijacked).
func (e *handshakeError) write(w http.ResponseWriter) {
	if e.status == http.StatusUpgradeRequired {
		w.Header().Set("Sec-WebSocket-Version", "13")
	}
	http.Error(w, e.reason, e.status)
}

// checkHandshake validates an upgrade request (RFC 6455 §4.2.1) and returns the 101 response
// to send, selecting session.Subprotocol only when the client offered it (the bearer.<JWT>
// entry is never echoed).
func checkHandshake(r *http.Request) ([]byte, *handshakeError) {
	switch {
	case r.Method != http.MethodGet:
		return nil, &handshakeError{http.StatusBadRequest, "websocket: method must be GET"}
	case !headerHasToken(r.Header, "Upgrade", "websocket"):
		return nil, &handshakeError{http.StatusBadRequest, "websocket: Upgrade header must be websocket"}
	case !headerHasToken(r.Header, "Connection", "upgrade"):
		return nil, &handshakeError{http.StatusBadRequest, "websocket: Connection header must contain upgrade"}
	case r.Header.Get("Sec-WebSocket-Version") != "13":
		return nil, &handshakeError{http.StatusUpgradeRequired, "websocket: unsupported version (want 13)"}
	}
	key := r.Header.Get("Sec-WebSocket-Key")
	if raw, err := base64.StdEncoding.DecodeString(key); err != nil || len(raw) != 16 {
		return nil, &handshakeError{http.StatusBadRequest, "websocket: Sec-WebSocket-Key must be 16 bytes, base64"}
	}
	sum := sha1.Sum([]byte(key + acceptGUID))
	var b bytes.Buffer
	b.Grow(160)
	b.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ")
	b.WriteString(base64.StdEncoding.EncodeToString(sum[:]))
	b.WriteString("\r\n")
	if headerHasToken(r.Header, "Sec-WebSocket-Protocol", session.Subprotocol) {
		b.WriteString("Sec-WebSocket-Protocol: " + session.Subprotocol + "\r\n")
	}
	b.WriteString("\r\n")
	return b.Bytes(), nil
}

// headerHasToken reports whether any comma-separated element of header name equals token,
// ignoring case and surrounding space.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for elem := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(elem), token) {
				return true
			}
		}
	}
	return false
}

// hijack takes the connection away from net/http and out of Go's netpoller, returning a
// duplicate of its descriptor (close-on-exec, non-blocking) and the bytes the client sent
// behind its handshake that net/http had already buffered. The original net.Conn is closed
// before returning, on every path. See the package doc for why this is safe.
func hijack(w http.ResponseWriter) (fd int, pending []byte, err error) {
	nc, fd, pending, err := hijackKeep(w)
	if nc != nil {
		nc.Close()
	}
	return fd, pending, err
}

// hijackKeep is hijack that leaves the original net.Conn open for the caller (nil on error),
// so Accept can still write through it; the duplicate keeps the socket alive after the caller
// closes it.
func hijackKeep(w http.ResponseWriter) (nc net.Conn, fd int, pending []byte, err error) {
	nc, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, -1, nil, fmt.Errorf("hijack: %w", err)
	}
	fd, pending, err = dupConn(nc, rw.Reader)
	if err != nil {
		nc.Close()
		return nil, -1, nil, err
	}
	return nc, fd, pending, nil
}

func dupConn(nc net.Conn, br *bufio.Reader) (fd int, pending []byte, err error) {
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n) // never fails for n ≤ Buffered
		pending = bytes.Clone(b)
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return -1, nil, fmt.Errorf("hijack: %T has no file descriptor (terminate TLS in front of the epoll engine)", nc)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return -1, nil, fmt.Errorf("hijack: syscall conn: %w", err)
	}
	var dupErr error
	fd = -1
	if err := raw.Control(func(s uintptr) {
		fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, nil, fmt.Errorf("hijack: control: %w", err)
	}
	if dupErr != nil {
		return -1, nil, fmt.Errorf("hijack: dup: %w", dupErr)
	}
	// O_NONBLOCK lives on the shared open file description, which Go already set; set it
	// anyway so the loop never depends on that detail.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, nil, fmt.Errorf("hijack: set non-blocking fd %d: %w", fd, err)
	}
	return fd, pending, nil
}
