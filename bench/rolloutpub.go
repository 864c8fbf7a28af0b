package bench

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/huleedu/websocket-service/config"
	"github.com/huleedu/websocket-service/history"
)

// rolloutClient is one client of the rollout: its user, its one group and its token.
type rolloutClient struct {
	User  string `json:"user"`
	Group string `json:"group"`
	Token string `json:"token"`
}

// rolloutPlan is who the clients are.
type rolloutPlan struct {
	clients []rolloutClient
	groups  []string
}

func newRolloutPlan(o RolloutOptions, secret string) (*rolloutPlan, error) {
	tokens, err := NewTokens(TokenOptions{Secret: secret, TTL: time.Hour})
	if err != nil {
		return nil, err
	}
	p := &rolloutPlan{}
	for i := range o.Clients {
		c := rolloutClient{User: "rollout-" + strconv.Itoa(i), Group: "class-" + strconv.Itoa(i/o.GroupSize)}
		if c.Token, err = tokens.Token(i, Identity{User: c.User, Groups: []string{c.Group}}); err != nil {
			return nil, err
		}
		if i%o.GroupSize == 0 {
			p.groups = append(p.groups, c.Group)
		}
		p.clients = append(p.clients, c)
	}
	return p, nil
}

// rolloutPublisher numbers each stream's messages 1, 2, 3… ({"seq": n}) and publishes them
// with the service's Redis function (FCALL ws_publish, docs/PROTOCOL.md "Publishing"), as a
// backend in another language would. A publish that fails is sent again with the same number
// next round: every failure it can meet here (the function missing after a Redis restart, or
// Redis down) means the call did not run, because the restart happens between two rounds.
type rolloutPublisher struct {
	o       RolloutOptions
	rs      *redisServer
	rdb     *redis.Client
	plan    *rolloutPlan
	targets []pubTarget
	rounds  atomic.Int64
	tick    chan struct{} // a round ended
	// published and errors are read once run has returned.
	published, errors int64
}

// pubTarget is one stream the publisher feeds, and the last number Redis accepted for it.
type pubTarget struct {
	kind, id string // "user", "group", "broadcast"
	channel  string
	keys     []string
	every    int // published every this many rounds, at round%every == phase
	phase    int
	last     int
}

func newRolloutPublisher(rs *redisServer, plan *rolloutPlan, o RolloutOptions) (*rolloutPublisher, error) {
	cfg, err := config.FromMap(map[string]string{})
	if err != nil {
		return nil, fmt.Errorf("default channel names: %w", err)
	}
	p := &rolloutPublisher{o: o, rs: rs, plan: plan, tick: make(chan struct{}, 1),
		rdb: redis.NewClient(&redis.Options{Addr: rs.addr(), MaxRetries: -1})}
	add := func(kind, id, channel string, every, phase int) {
		h, m := history.Keys(channel)
		p.targets = append(p.targets, pubTarget{kind: kind, id: id, channel: channel, keys: []string{h, m}, every: every, phase: phase})
	}
	add("broadcast", "", cfg.BroadcastChannel, 1, 0)
	for _, g := range plan.groups {
		add("group", g, cfg.GroupChannelPrefix+g, 1, 0)
	}
	for i, c := range plan.clients {
		add("user", c.User, cfg.UserChannelPrefix+c.User, o.UserEvery, i%o.UserEvery)
	}
	return p, nil
}

func (p *rolloutPublisher) round() int { return int(p.rounds.Load()) }

// run publishes a round every RoundEvery until ctx ends; with RestartRedis, Redis is
// restarted (SIGKILL, then started again empty on its port) half-way to the drain.
func (p *rolloutPublisher) run(ctx context.Context) error {
	defer p.rdb.Close()
	next := time.Now()
	for round := 0; ; round++ {
		if p.o.RestartRedis && round == p.o.RoundsBefore/2 {
			if err := p.rs.restart(ctx); err != nil {
				return err
			}
		}
		p.publishRound(round)
		p.rounds.Store(int64(round + 1))
		select {
		case p.tick <- struct{}{}:
		default:
		}
		next = next.Add(p.o.RoundEvery)
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// publishRound sends one round. A round once begun is finished even when the run is being
// stopped: a call cancelled in flight may have run, and the count of what was published
// must be exact.
func (p *rolloutPublisher) publishRound(round int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pipe := p.rdb.Pipeline()
	var cmds []*redis.Cmd
	var sent []*pubTarget
	for i := range p.targets {
		t := &p.targets[i]
		if round%t.every != t.phase {
			continue
		}
		payload := `{"seq":` + strconv.Itoa(t.last+1) + `}`
		cmds = append(cmds, pipe.FCall(ctx, history.PublishFunction, t.keys, t.channel, payload))
		sent = append(sent, t)
	}
	_, _ = pipe.Exec(ctx)
	for i, c := range cmds {
		if c.Err() != nil {
			p.errors++
			continue
		}
		sent[i].last++
		p.published++
	}
}

// awaitRound waits until the publisher has finished round n.
func (p *rolloutPublisher) awaitRound(ctx context.Context, done <-chan error, n int) error {
	deadline := time.NewTimer(time.Duration(n+10)*p.o.RoundEvery + p.o.Timeout)
	defer deadline.Stop()
	for p.round() < n {
		select {
		case <-p.tick:
		case err := <-done:
			return fmt.Errorf("publisher stopped: %w", err)
		case <-deadline.C:
			return fmt.Errorf("publisher at round %d, not %d", p.round(), n)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// expect is the last number of every stream, as bench/rollout-clients.mjs's finish wants it.
func (p *rolloutPublisher) expect() map[string]any {
	users, groups, broadcast := map[string]int{}, map[string]int{}, 0
	for _, t := range p.targets {
		switch t.kind {
		case "user":
			users[t.id] = t.last
		case "group":
			groups[t.id] = t.last
		default:
			broadcast = t.last
		}
	}
	return map[string]any{"user": users, "group": groups, "broadcast": broadcast}
}

// restart kills the server (SIGKILL: no chance to save anything; it runs without
// persistence anyway) and starts it again, empty, on the same port.
func (r *redisServer) restart(ctx context.Context) error {
	_ = r.cmd.Process.Kill()
	<-r.done
	var err error
	for range 5 { // the old socket may linger briefly
		var p *proc
		if p, err = startProc(exec.Command(r.argv[0], r.argv[1:]...)); err != nil {
			return err
		}
		r.proc = p
		if err = r.waitReady(ctx); err == nil {
			return nil
		}
		p.stop()
		sleep(ctx, 200*time.Millisecond)
	}
	return errors.Join(errors.New("restart redis-server"), err)
}
