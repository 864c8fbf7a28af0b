package e2e_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/internal/seqtest"
)

// Ways to publish a sequenced message, as backends do (docs/PROTOCOL.md "Publishing").

// apiVia publishes through POST /api/publish of the node at baseURL.
func apiVia(t *testing.T, baseURL, key string) seqtest.Via {
	hc := &http.Client{Transport: &http.Transport{}, Timeout: 2 * wait}
	t.Cleanup(hc.CloseIdleConnections)
	return func(ctx context.Context, channel, payload string) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/api/publish", strings.NewReader(publishBody(channel, payload)))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			text, _ := io.ReadAll(resp.Body)
			return fmt.Errorf("POST /api/publish: %d %s", resp.StatusCode, text)
		}
		return nil
	}
}

// publishBody is the API request that publishes payload (a JSON object) on channel.
func publishBody(channel, payload string) string {
	switch {
	case channel == "ws-broadcast":
		return `{"broadcast":true,"message":` + payload + `}`
	case strings.HasPrefix(channel, "ws-group:"):
		return fmt.Sprintf(`{"group":%q,"message":%s}`, strings.TrimPrefix(channel, "ws-group:"), payload)
	default:
		return fmt.Sprintf(`{"user_id":%q,"message":%s}`, strings.TrimPrefix(channel, "ws:"), payload)
	}
}

// fcallVia publishes with FCALL ws_publish, as a backend switched from PUBLISH does. A
// function missing after a restart without persistence is an error here: the backend's
// publish failed, and the service loads the function again.
func fcallVia(rdb redis.UniversalClient) seqtest.Via {
	return func(ctx context.Context, channel, payload string) error {
		h, m := history.Keys(channel)
		return rdb.FCall(ctx, history.PublishFunction, []string{h, m}, channel, payload).Err()
	}
}

// noRetryClient is a client of addr that never retries a command (a retried publish may run
// twice).
func noRetryClient(t *testing.T, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// fleet is n clients spread over users users and groups groups ("<name>-u<i>", "<name>-g<j>"),
// each reading its user, its group and broadcast, and the channels a publisher covers. Their
// connections are closed when the test ends.
func fleet(t *testing.T, name string, n, users, groups int, v2 bool) ([]*relClient, []string) {
	clients := make([]*relClient, n)
	for i := range clients {
		clients[i] = newRelClient(fmt.Sprintf("%s-u%d", name, i%users), v2, fmt.Sprintf("%s-g%d", name, i%groups))
	}
	t.Cleanup(func() {
		for _, c := range clients {
			c.close()
		}
		for _, c := range clients {
			if rc := c.current(); rc != nil {
				<-rc.pumped
			}
		}
	})
	channels := []string{"ws-broadcast"}
	for g := 0; g < groups; g++ {
		channels = append(channels, fmt.Sprintf("ws-group:%s-g%d", name, g))
	}
	for u := 0; u < users; u++ {
		channels = append(channels, fmt.Sprintf("ws:%s-u%d", name, u))
	}
	return clients, channels
}

// connectAll opens a connection for every client to the URL url gives it, 16 at a time, and
// waits until each v2 client has its first syncs.
func connectAll(t *testing.T, clients []*relClient, url func(*relClient) string) {
	t.Helper()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	errs := make(chan error, len(clients))
	for _, c := range clients {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := c.connect(url(c)); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	waitSynced(t, clients, 0)
}

// waitSynced waits until every v2 client's connection of index has a sync for each stream.
func waitSynced(t *testing.T, clients []*relClient, index int) {
	t.Helper()
	if pending := waitAll(clients, 6*wait, func(c *relClient) bool { return !c.v2 || c.synced(index) }); len(pending) > 0 {
		t.Fatalf("%d of %d clients without a sync for each stream on connection %d (first: %s, syncs %+v, errors %v)",
			len(pending), len(clients), index, pending[0].sub, pending[0].syncs, pending[0].errs)
	}
}

// waitPublished waits until p has attempted at least n publishes.
func waitPublished(t *testing.T, p *seqtest.Publisher, n int) {
	t.Helper()
	eventually(t, 6*wait, fmt.Sprintf("%d publishes", n), func() bool {
		total, _ := p.Counts()
		return total >= n
	})
}

// checkDelivery stops the publisher, waits until every client has the last acknowledged
// message of each of its channels, and checks that each received every message exactly once,
// in order, or inside a reported hole; it returns the messages received in all.
func checkDelivery(t *testing.T, p *seqtest.Publisher, clients []*relClient) int {
	t.Helper()
	p.Stop()
	total, failed := p.Counts()
	pending := waitAll(clients, 6*wait, func(c *relClient) bool { return c.rec.CaughtUp(p, c.channels()...) })
	received := 0
	for _, c := range clients {
		received += c.rec.Received()
	}
	t.Logf("%d publishes (%d failed %q), %d messages received by %d clients", total, failed, p.Errors(), received, len(clients))
	bad := 0
	for _, c := range clients {
		if err := c.rec.Check(p, c.channels()...); err != nil {
			if bad++; bad <= 5 {
				t.Errorf("client %s (v2 %v): %v", c.sub, c.v2, err)
			}
		}
		for _, f := range c.failures() {
			if c.v2 && strings.Contains(f, "recovered:false") {
				continue // the scenario judges the holes it expects
			}
			if bad++; bad <= 5 {
				t.Errorf("%s", f)
			}
		}
	}
	if bad > 5 {
		t.Errorf("… %d problems in all", bad)
	}
	if len(pending) > 0 && bad == 0 {
		t.Errorf("%d clients never caught up with the last message (first: %s; behind: %s)", len(pending), pending[0].sub, behind(p, pending))
	}
	return received
}

// behind says, for each channel some of clients lag on, how many of them and where they are
// against the last number acknowledged: the stream that stalled.
func behind(p *seqtest.Publisher, clients []*relClient) string {
	lag := map[string][]int{}
	for _, c := range clients {
		for _, ch := range c.channels() {
			if last := c.rec.Last(ch); last < p.LastAcked(ch) {
				lag[ch] = append(lag[ch], last)
			}
		}
	}
	var out []string
	for ch, lasts := range lag {
		out = append(out, fmt.Sprintf("%s: %d clients at %v of %d", ch, len(lasts), firstOf(lasts, 5), p.LastAcked(ch)))
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}

// holes lists the clients' reported holes (recovered:false after their first syncs).
func holes(clients []*relClient) []string {
	var out []string
	for _, c := range clients {
		for _, f := range c.failures() {
			if strings.Contains(f, "recovered:false") {
				out = append(out, f)
			}
		}
	}
	return out
}

// replayed sums the replayed counts of the clients' recovered syncs after their first
// connection: how many messages resumes delivered.
func replayed(clients []*relClient) int {
	n := 0
	for _, c := range clients {
		c.mu.Lock()
		for _, conn := range c.syncs[min(1, len(c.syncs)):] {
			for _, s := range conn {
				n += s.Replayed
			}
		}
		c.mu.Unlock()
	}
	return n
}

// firstOf shortens a list for a failure message.
func firstOf[T any](s []T, n int) []T { return s[:min(n, len(s))] }
