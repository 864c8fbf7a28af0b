package redistest

import (
	"bufio"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Steady is a backend publishing a numbered sequence at a steady pace, for tests of what a
// stall or an outage costs the subscribers.
type Steady struct {
	t     testing.TB
	conn  net.Conn
	stop  chan struct{}
	once  sync.Once
	wrote chan struct{} // closed when the writer has returned
	wg    sync.WaitGroup

	mu    sync.Mutex
	sent  int           // PUBLISH commands written
	acked int           // replies read
	more  chan struct{} // capacity 1: a reply arrived
	err   error
}

// PublishSteadily publishes "0", "1", "2", … one every interval, round-robin over channels,
// until Stop (or the end of the test). Like many backends publishing at once, it keeps
// sending at its pace while Redis is stalled (a Freeze): the commands wait in the socket and
// Redis executes them, in order, when it resumes.
func (s *Server) PublishSteadily(t testing.TB, interval time.Duration, channels ...string) *Steady {
	t.Helper()
	conn, err := net.DialTimeout("tcp", s.Addr(), waitLimit)
	if err != nil {
		t.Fatalf("redistest: dial %s: %v", s.Addr(), err)
	}
	p := &Steady{t: t, conn: conn, stop: make(chan struct{}), wrote: make(chan struct{}), more: make(chan struct{}, 1)}
	p.wg.Add(2)
	go p.write(interval, channels)
	go p.read()
	t.Cleanup(func() { p.Stop() })
	return p
}

func (p *Steady) write(interval time.Duration, channels []string) {
	defer p.wg.Done()
	defer close(p.wrote)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
		ch, num := channels[n%len(channels)], strconv.Itoa(n)
		cmd := fmt.Sprintf("*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", len(ch), ch, len(num), num)
		_ = p.conn.SetWriteDeadline(time.Now().Add(2 * waitLimit))
		if _, err := p.conn.Write([]byte(cmd)); err != nil {
			p.fail(fmt.Errorf("PUBLISH %d: %w", n, err))
			return
		}
		p.mu.Lock()
		p.sent = n + 1
		p.mu.Unlock()
	}
}

func (p *Steady) read() {
	defer p.wg.Done()
	r := bufio.NewReader(p.conn)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			p.fail(err)
			return
		}
		if len(line) == 0 || line[0] != ':' {
			p.fail(fmt.Errorf("PUBLISH answered %q", line))
			return
		}
		p.mu.Lock()
		p.acked++
		p.mu.Unlock()
		select {
		case p.more <- struct{}{}:
		default:
		}
	}
}

func (p *Steady) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err == nil {
		p.err = err
	}
}

// Published is how many numbers Redis has published so far (answered PUBLISH).
func (p *Steady) Published() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.acked
}

// Stop ends publishing, waits until Redis has answered every PUBLISH sent and returns how
// many numbers were published ("0" … count-1).
func (p *Steady) Stop() int {
	p.once.Do(func() {
		close(p.stop)
		// The writer may be past its stop check with a command on its way: count it as sent
		// before waiting for the replies, or its reply would be cut off by the close below.
		<-p.wrote
		deadline := time.After(2 * waitLimit)
	wait:
		for {
			p.mu.Lock()
			done, err := p.acked >= p.sent, p.err
			p.mu.Unlock()
			if done || err != nil {
				break
			}
			select {
			case <-p.more:
			case <-deadline:
				break wait
			}
		}
		_ = p.conn.Close()
		p.wg.Wait()
	})
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.acked < p.sent {
		p.t.Errorf("redistest: %d of %d PUBLISH commands unanswered (%v)", p.sent-p.acked, p.sent, p.err)
	}
	return p.acked
}
