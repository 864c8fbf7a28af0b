package backplane

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/huleedu/websocket-service/internal/hashslot"
	"github.com/redis/go-redis/v9"
)

// slotCount is the number of hash slots of a Redis Cluster.
const slotCount = hashslot.Count

// keySlot is the cluster hash slot of a channel.
func keySlot(key string) uint16 { return hashslot.Of(key) }

// groupBySlot splits channels into groups sharing a hash slot, as one SSUBSCRIBE requires.
// It reorders chans.
func groupBySlot(chans []string) [][]string {
	type keyed struct {
		slot uint16
		name string
	}
	ks := make([]keyed, len(chans))
	for i, ch := range chans {
		ks[i] = keyed{keySlot(ch), ch}
	}
	slices.SortFunc(ks, func(a, b keyed) int { return int(a.slot) - int(b.slot) })
	var groups [][]string
	start := 0
	for i, k := range ks {
		chans[i] = k.name
		if i > 0 && k.slot != ks[i-1].slot {
			groups = append(groups, chans[start:i])
			start = i
		}
	}
	if len(chans) > start {
		groups = append(groups, chans[start:])
	}
	return groups
}

// topology maps each hash slot to the address of the master serving it.
type topology struct {
	addrs []string         // distinct master addresses, sorted
	slot  [slotCount]uint8 // index into addrs; valid where covered
	owned [slotCount]bool
}

// loadTopology asks the cluster which master serves which slot.
func loadTopology(ctx context.Context, c *redis.ClusterClient) (*topology, error) {
	//lint:ignore SA1019 CLUSTER SLOTS still answers on Redis 7 and is the command every cluster version knows.
	ranges, err := c.ClusterSlots(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("cluster slots: %w", err)
	}
	t := &topology{}
	for _, r := range ranges {
		if len(r.Nodes) > 0 && !slices.Contains(t.addrs, r.Nodes[0].Addr) {
			t.addrs = append(t.addrs, r.Nodes[0].Addr)
		}
	}
	slices.Sort(t.addrs)
	if len(t.addrs) > 255 {
		return nil, fmt.Errorf("cluster slots: %d masters, at most 255 supported", len(t.addrs))
	}
	for _, r := range ranges {
		if len(r.Nodes) == 0 || r.Start < 0 || r.End >= slotCount {
			continue
		}
		idx := uint8(slices.Index(t.addrs, r.Nodes[0].Addr))
		for s := r.Start; s <= r.End; s++ {
			t.slot[s], t.owned[s] = idx, true
		}
	}
	if len(t.addrs) == 0 {
		return nil, fmt.Errorf("cluster slots: no slot is served")
	}
	return t, nil
}

// same reports whether two topologies route every slot alike.
func (t *topology) same(o *topology) bool {
	return o != nil && slices.Equal(t.addrs, o.addrs) && t.slot == o.slot && t.owned == o.owned
}

// route returns the index of the master serving ch; an uncovered slot goes to the first
// master, whose MOVED reply (or refusal) makes the relay refresh the topology.
func (t *topology) route(ch string) int {
	s := keySlot(ch)
	if !t.owned[s] {
		return 0
	}
	return int(t.slot[s])
}

// Topology checks on a cluster: at most one reload per topologyMinGap, and one every
// topologyEvery even when nothing went wrong, to notice resharding.
const (
	topologyMinGap = time.Second
	topologyEvery  = 30 * time.Second
)

// watchTopology loads the cluster's slot map and reroutes the channels whenever it changes
// (checked on a MOVED reply, a slot migrating away, a lost connection or periodically): each
// channel whose master changed is subscribed on the master now serving it (rebuildLocked).
func (r *Redis) watchTopology(ctx context.Context) {
	cc := r.pub.client.(*redis.ClusterClient)
	b := newBackoff(100*time.Millisecond, 5*time.Second)
	failing := false
	for ctx.Err() == nil {
		t, err := loadTopology(ctx, cc)
		if err != nil {
			r.mu.Lock()
			if r.topo == nil {
				r.topoErr = err
			}
			r.mu.Unlock()
			if !failing {
				r.log.Warn("backplane: cannot load redis cluster topology, retrying", "err", err)
			}
			failing = true
			if !b.sleep(ctx) {
				return
			}
			continue
		}
		b.reset()
		failing = false
		r.mu.Lock()
		if !t.same(r.topo) {
			r.rebuildLocked(t)
		} else {
			// Subscriptions the server dropped although their slot is still served here
			// (a migration rolled back) are sent again.
			for _, rl := range r.relays {
				rl.resync()
			}
		}
		r.mu.Unlock()
		r.updateConnected()

		gap := time.NewTimer(topologyMinGap)
		select {
		case <-ctx.Done():
			gap.Stop()
			return
		case <-gap.C:
		}
		every := time.NewTimer(topologyEvery)
		select {
		case <-ctx.Done():
		case <-r.refresh:
			// A reload right after an unreachable node refreshes go-redis's own view too.
			cc.ReloadState(ctx)
		case <-every.C:
		}
		every.Stop()
	}
}

// rebuildLocked routes the channels by t: one relay per master of t, reusing the relay of
// every master that was one already, so a channel whose master did not change stays
// subscribed on its connection, untouched (it loses nothing). A channel whose master changed
// is subscribed on its new master's relay and dropped from the old one; relays of masters no
// longer serving a slot stop. Subscribe callers waiting meanwhile route their channels again.
func (r *Redis) rebuildLocked(t *topology) {
	if r.topo != nil {
		r.log.Info("backplane: redis cluster topology changed, moving the channels of moved slots", "masters", len(t.addrs))
	}
	r.requestInstall() // a new primary has no functions
	old := map[string]*relay{}
	for _, rl := range r.relays {
		old[rl.addr] = rl
	}
	next := make([]*relay, len(t.addrs))
	var started []*relay
	for i, addr := range t.addrs {
		if rl, ok := old[addr]; ok {
			next[i] = rl
			delete(old, addr)
			continue
		}
		next[i] = r.newRelayLocked(addr)
		started = append(started, next[i])
	}
	// Channels move with their references (relaychans.go); those taken before the first
	// topology was loaded wait in r.waiting.
	wants, adopts, unwants := map[*relay][]heldChannel{}, map[*relay][]heldChannel{}, map[*relay][]string{}
	for ch, refs := range r.waiting.chans {
		to := next[t.route(ch)]
		wants[to] = append(wants[to], heldChannel{name: ch, n: refs.n})
	}
	r.active += r.waiting.active
	r.waiting.reset()
	for _, from := range r.relays {
		for _, h := range from.held() {
			to := next[t.route(h.name)]
			if from == to {
				continue
			}
			// A moved channel loses what its new master publishes before the new subscription
			// is confirmed: it resumes there (a Watcher repairs it) rather than starting afresh.
			adopts[to] = append(adopts[to], h)
			unwants[from] = append(unwants[from], h.name)
		}
	}
	now := time.Now()
	for rl, chans := range wants {
		rl.take(chans, false, now)
	}
	for rl, chans := range adopts {
		rl.take(chans, true, now)
	}
	for rl, chans := range unwants {
		rl.handOff(chans)
	}
	for _, rl := range old {
		rl.stop()
	}
	for _, rl := range next {
		rl.resync()
	}
	r.topo, r.topoErr, r.relays = t, nil, next
	for _, rl := range started {
		r.startRelayLocked(rl)
	}
	r.reroutedLocked()
}
