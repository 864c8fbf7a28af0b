package history

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// mutingProxy forwards TCP connections to a Redis; the replies on connections it muted are
// dropped, while new connections work.
type mutingProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	mutes []*atomic.Bool // one per connection
}

func (p *mutingProxy) muteOpenConnections() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.mutes {
		m.Store(true)
	}
}

func newMutingProxy(t *testing.T, target string) *mutingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &mutingProxy{ln: ln}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", target)
			if err != nil {
				_ = client.Close()
				continue
			}
			mute := new(atomic.Bool)
			mu.Lock()
			conns = append(conns, client, server)
			mu.Unlock()
			p.mu.Lock()
			p.mutes = append(p.mutes, mute)
			p.mu.Unlock()
			wg.Add(2)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(server, client)
				_ = server.Close()
			}()
			go func() {
				defer wg.Done()
				buf := make([]byte, 4096)
				for {
					n, err := server.Read(buf)
					if n > 0 && !mute.Load() {
						_, _ = client.Write(buf[:n])
					}
					if err != nil {
						_ = client.Close()
						return
					}
				}
			}()
		}
	}()
	return p
}

func (p *mutingProxy) addr() string { return p.ln.Addr().String() }
