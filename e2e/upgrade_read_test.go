package e2e_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/wsraw"
)

// How the node reads an upgrade request off a socket: on the epoll engine its front reads it,
// on gws net/http does; the client cannot tell them apart.

// statuses writes each piece of req to a new connection to addr (a pause between pieces)
// and returns the status of each of the n responses that follow (up to a 101). The
// connection stays open until the test ends.
func statuses(t *testing.T, addr string, n int, pieces ...string) []int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	for i, p := range pieces {
		if i > 0 {
			time.Sleep(20 * time.Millisecond) // pieces in separate reads: the arrival under test
		}
		if _, err := io.WriteString(c, p); err != nil {
			t.Fatal(err)
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	br := bufio.NewReader(c)
	var got []int
	for range n {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		got = append(got, resp.StatusCode)
		if resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return got
}

func TestUpgradeArrivingInPiecesIsAccepted(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, nil)
		req := wsraw.Head("/ws?token=" + n.Token(t, "u1"))
		got := statuses(t, n.Addr, 1, req[:5], req[5:40], req[40:len(req)-1], req[len(req)-1:])
		if len(got) != 1 || got[0] != http.StatusSwitchingProtocols {
			t.Fatalf("got %v, want 101", got)
		}
		waitActive(t, n.Service, 1)
	})
}

func TestRequestsPipelinedAheadOfAnUpgradeAreAnsweredInOrder(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, nil)
		got := statuses(t, n.Addr, 3, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"+
			wsraw.Head("/ws?token="+n.Token(t, "u1")))
		if len(got) != 3 || got[0] != http.StatusOK || got[1] != http.StatusNotFound || got[2] != http.StatusSwitchingProtocols {
			t.Fatalf("got %v, want [200 404 101]", got)
		}
		waitActive(t, n.Service, 1)
	})
}

func TestRefusedUpgradeLeavesTheConnectionOpenForTheNextRequest(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, nil)
		got := statuses(t, n.Addr, 2, wsraw.Head("/ws?token="+n.Token(t, "u1"), "Origin: https://evil.example\r\n")+
			"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		if len(got) != 2 || got[0] != http.StatusForbidden || got[1] != http.StatusOK {
			t.Fatalf("got %v, want [403 200]", got)
		}
	})
}
