//go:build linux

package eventloop

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/huleedu/websocket-service/internal/rfc6455"
	"github.com/huleedu/websocket-service/session"
)

// ErrHandshake wraps every reason a request is not a valid WebSocket upgrade; the client got
// an HTTP error response saying which.
var ErrHandshake = errors.New("websocket handshake")

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

// Header names as net/http stores them (textproto canonical form), so lookups index the map
// directly instead of canonicalizing a name per request.
const (
	hdrUpgrade    = "Upgrade"
	hdrConnection = "Connection"
	hdrVersion    = "Sec-Websocket-Version"
	hdrKey        = "Sec-Websocket-Key"
	hdrProtocol   = "Sec-Websocket-Protocol"
)

const (
	response101   = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "
	responseProto = "\r\nSec-WebSocket-Protocol: "
)

// checkHandshake validates an upgrade request (RFC 6455 §4.2.1) and returns the 101 response
// to send, selecting what session.Select selects from what the client offered (the
// bearer.<JWT> entry is never echoed). It runs on every handshake, so it allocates only the response.
func checkHandshake(r *http.Request) ([]byte, *handshakeError) {
	switch {
	case r.Method != http.MethodGet:
		return nil, &handshakeError{http.StatusBadRequest, "websocket: method must be GET"}
	case !rfc6455.HeaderHasToken(r.Header, hdrUpgrade, "websocket"):
		return nil, &handshakeError{http.StatusBadRequest, "websocket: Upgrade header must be websocket"}
	case !rfc6455.HeaderHasToken(r.Header, hdrConnection, "upgrade"):
		return nil, &handshakeError{http.StatusBadRequest, "websocket: Connection header must contain upgrade"}
	case firstValue(r.Header, hdrVersion) != "13":
		return nil, &handshakeError{http.StatusUpgradeRequired, "websocket: unsupported version (want 13)"}
	}
	key := firstValue(r.Header, hdrKey)
	if !rfc6455.ValidKey(key) {
		return nil, &handshakeError{http.StatusBadRequest, "websocket: Sec-WebSocket-Key must be 16 bytes, base64"}
	}
	proto := session.Select(func(p string) bool { return rfc6455.HeaderHasToken(r.Header, hdrProtocol, p) })
	n := len(response101) + rfc6455.AcceptLen + 4
	if proto != "" {
		n += len(responseProto) + len(proto)
	}
	b := make([]byte, 0, n)
	b = append(b, response101...)
	b = rfc6455.AppendAccept(b, key)
	if proto != "" {
		b = append(b, responseProto...)
		b = append(b, proto...)
	}
	return append(b, "\r\n\r\n"...), nil
}

// firstValue is h.Get for a name already in canonical form.
func firstValue(h http.Header, name string) string {
	if v := h[name]; len(v) > 0 {
		return v[0]
	}
	return ""
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
	if rc, ok := nc.(*replayConn); ok && len(rc.unread()) > 0 { // a long head the front read
		pending = append(pending, rc.unread()...)
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return -1, nil, fmt.Errorf("hijack: %T has no file descriptor (terminate TLS in front of the epoll engine)", nc)
	}
	if fd, err = dupFD(sc); err != nil {
		return -1, nil, fmt.Errorf("hijack: %w", err)
	}
	// No fcntl for O_NONBLOCK: it is a flag of the open file description, which the duplicate
	// shares and Go's accept4(SOCK_NONBLOCK) set; TestDuplicateIsNonBlocking checks it.
	return fd, pending, nil
}

// dupFD duplicates sc's descriptor, close-on-exec, for the engine to own beside Go's.
func dupFD(sc syscall.Conn) (int, error) {
	raw, err := sc.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("syscall conn: %w", err)
	}
	fd, dupErr := -1, error(nil)
	if err := raw.Control(func(s uintptr) { fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, fmt.Errorf("control: %w", err)
	}
	if dupErr != nil {
		return -1, fmt.Errorf("dup: %w", dupErr)
	}
	return fd, nil
}
