package registry

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
)

func sorted(s []int) []int {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

func TestShardLooksUpByUserGroupAndBroadcast(t *testing.T) {
	s := NewShard[int]()
	s.Add(1, "u1", []string{"class7"})
	s.Add(2, "u1", nil)
	s.Add(3, "u2", []string{"class7", "class8"})
	s.Add(4, "u3", nil)
	for _, tc := range []struct {
		target Target
		want   []int
	}{
		{Target{Kind: User, ID: "u1"}, []int{1, 2}},
		{Target{Kind: User, ID: "u2"}, []int{3}},
		{Target{Kind: User, ID: "nobody"}, nil},
		{Target{Kind: Group, ID: "class7"}, []int{1, 3}},
		{Target{Kind: Group, ID: "class8"}, []int{3}},
		{Target{Kind: Group, ID: "u1"}, nil},
		{Target{Kind: Broadcast}, []int{1, 2, 3, 4}},
		{Target{}, nil},
	} {
		if got := sorted(s.Lookup(tc.target)); !reflect.DeepEqual(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
			t.Errorf("Lookup(%v %q) = %v, want %v", tc.target.Kind, tc.target.ID, got, tc.want)
		}
	}
	if s.Len() != 4 || len(s.All()) != 4 {
		t.Fatalf("Len %d All %v", s.Len(), s.All())
	}
}

func TestShardRemoveDropsEveryIndexEntry(t *testing.T) {
	s := NewShard[int]()
	s.Add(1, "u1", []string{"g"})
	s.Add(2, "u1", []string{"g"})
	s.Add(3, "u2", []string{"g"})
	if !s.Remove(1, "u1", []string{"g"}) {
		t.Fatal("Remove of a present connection reported false")
	}
	if got := sorted(s.Lookup(Target{Kind: User, ID: "u1"})); !reflect.DeepEqual(got, []int{2}) {
		t.Fatalf("user after remove: %v", got)
	}
	if got := sorted(s.Lookup(Target{Kind: Group, ID: "g"})); !reflect.DeepEqual(got, []int{2, 3}) {
		t.Fatalf("group after remove: %v", got)
	}
	if got := sorted(s.All()); !reflect.DeepEqual(got, []int{2, 3}) {
		t.Fatalf("all after remove: %v", got)
	}
	s.Remove(2, "u1", []string{"g"})
	s.Remove(3, "u2", []string{"g"})
	if s.Len() != 0 || len(s.users) != 0 || len(s.groups) != 0 || len(s.allPos) != 0 {
		t.Fatalf("empty shard keeps entries: users %v groups %v pos %v", s.users, s.groups, s.allPos)
	}
}

func TestShardRemoveIsExactlyOnce(t *testing.T) {
	s := NewShard[int]()
	s.Add(1, "u1", nil)
	if !s.Remove(1, "u1", nil) {
		t.Fatal("first Remove reported false")
	}
	if s.Remove(1, "u1", nil) {
		t.Fatal("second Remove reported true")
	}
	if s.Remove(99, "u1", nil) {
		t.Fatal("Remove of an unknown connection reported true")
	}
}

func TestShardIgnoresADuplicateAdd(t *testing.T) {
	s := NewShard[int]()
	s.Add(1, "u1", []string{"g"})
	s.Add(1, "u1", []string{"g"})
	if s.Len() != 1 || len(s.Lookup(Target{Kind: User, ID: "u1"})) != 1 || len(s.Lookup(Target{Kind: Group, ID: "g"})) != 1 {
		t.Fatalf("duplicate Add indexed twice: all %v", s.All())
	}
}

func TestShardStaysConsistentUnderChurn(t *testing.T) {
	s := NewShard[int]()
	type entry struct {
		user   string
		groups []string
	}
	live := map[int]entry{}
	for i := 0; i < 2000; i++ {
		c := i % 97
		if e, ok := live[c]; ok {
			if !s.Remove(c, e.user, e.groups) {
				t.Fatalf("Remove(%d) reported false", c)
			}
			delete(live, c)
			continue
		}
		e := entry{user: fmt.Sprintf("u%d", c%7), groups: []string{fmt.Sprintf("g%d", c%5)}}
		s.Add(c, e.user, e.groups)
		live[c] = e
	}
	if s.Len() != len(live) {
		t.Fatalf("Len %d, want %d", s.Len(), len(live))
	}
	for c, e := range live {
		if !slices.Contains(s.Lookup(Target{Kind: User, ID: e.user}), c) || !slices.Contains(s.Lookup(Target{Kind: Group, ID: e.groups[0]}), c) {
			t.Fatalf("connection %d missing from its indexes", c)
		}
	}
	for i, c := range s.all {
		if s.allPos[c] != i {
			t.Fatalf("allPos[%d] = %d, want %d", c, s.allPos[c], i)
		}
	}
}

var defaultTopics = Topics{UserPrefix: "ws:", GroupPrefix: "ws-group:", Broadcast: "ws-broadcast"}

func TestTopicsNameTheSpecChannels(t *testing.T) {
	tp := defaultTopics
	if tp.UserChannel("u1") != "ws:u1" || tp.GroupChannel("class7") != "ws-group:class7" {
		t.Fatal(`channel names differ from docs/PROTOCOL.md "Channels"`)
	}
	if got := tp.Channels("u1", []string{"a", "b"}); !reflect.DeepEqual(got, []string{"ws:u1", "ws-group:a", "ws-group:b", "ws-broadcast"}) {
		t.Fatalf("Channels = %q", got)
	}
	for _, tg := range []Target{{Kind: User, ID: "u1"}, {Kind: Group, ID: "g"}, {Kind: Broadcast}} {
		back, ok := tp.Parse(tp.Channel(tg))
		if !ok || back != tg {
			t.Errorf("Parse(Channel(%v)) = %v, %v", tg, back, ok)
		}
	}
}

func TestTopicsParse(t *testing.T) {
	for _, tc := range []struct {
		name    string
		topics  Topics
		channel string
		want    Target
		ok      bool
	}{
		{"user", defaultTopics, "ws:u1", Target{Kind: User, ID: "u1"}, true},
		{"group", defaultTopics, "ws-group:class7", Target{Kind: Group, ID: "class7"}, true},
		{"broadcast", defaultTopics, "ws-broadcast", Target{Kind: Broadcast}, true},
		{"user id with colon", defaultTopics, "ws:a:b", Target{Kind: User, ID: "a:b"}, true},
		{"empty user id", defaultTopics, "ws:", Target{}, false},
		{"empty group id", defaultTopics, "ws-group:", Target{}, false},
		{"foreign channel", defaultTopics, "other:u1", Target{}, false},
		{"broadcast prefix only", defaultTopics, "ws-broadcastx", Target{}, false},
		{"group prefix extends user prefix: group", Topics{"ws:", "ws:group:", "all"}, "ws:group:g1", Target{Kind: Group, ID: "g1"}, true},
		{"group prefix extends user prefix: user", Topics{"ws:", "ws:group:", "all"}, "ws:u1", Target{Kind: User, ID: "u1"}, true},
		{"user prefix extends group prefix: user", Topics{"g:user:", "g:", "all"}, "g:user:u1", Target{Kind: User, ID: "u1"}, true},
		{"user prefix extends group prefix: group", Topics{"g:user:", "g:", "all"}, "g:class7", Target{Kind: Group, ID: "class7"}, true},
		{"longer prefix with empty id falls back", Topics{"ws:", "ws:group:", "all"}, "ws:group:", Target{Kind: User, ID: "group:"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := tc.topics.Parse(tc.channel)
			if ok != tc.ok || got != tc.want {
				t.Fatalf("Parse(%q) = %v %q, %v; want %v %q, %v", tc.channel, got.Kind, got.ID, ok, tc.want.Kind, tc.want.ID, tc.ok)
			}
		})
	}
}

func TestKindNames(t *testing.T) {
	for k, want := range map[Kind]string{User: "user", Group: "group", Broadcast: "broadcast", Kind(0): "unknown"} {
		if k.String() != want {
			t.Errorf("Kind(%d) = %q, want %q", k, k.String(), want)
		}
	}
}

func TestLimitsNodeLimit(t *testing.T) {
	l := NewLimits(2, 0)
	if first, second := l.ReserveNode(), l.ReserveNode(); first != nil || second != nil {
		t.Fatal("reserve within the limit failed")
	}
	if err := l.ReserveNode(); !errors.Is(err, ErrNodeFull) {
		t.Fatalf("third reserve: %v, want ErrNodeFull", err)
	}
	if l.Total() != 2 {
		t.Fatalf("Total %d after a refused reserve", l.Total())
	}
	l.ReleaseNode()
	if err := l.ReserveNode(); err != nil {
		t.Fatalf("reserve after release: %v", err)
	}
}

func TestLimitsPerUserLimit(t *testing.T) {
	l := NewLimits(0, 2)
	for i := 0; i < 2; i++ {
		if err := l.ReserveUser("u1"); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.ReserveUser("u1"); !errors.Is(err, ErrUserFull) {
		t.Fatalf("third reserve for u1: %v, want ErrUserFull", err)
	}
	if err := l.ReserveUser("u2"); err != nil {
		t.Fatalf("another user is limited by u1: %v", err)
	}
	l.ReleaseUser("u1")
	if l.User("u1") != 1 {
		t.Fatalf("User(u1) = %d after release", l.User("u1"))
	}
	l.ReleaseUser("u1")
	l.ReleaseUser("u1") // extra release must not go negative
	if l.User("u1") != 0 {
		t.Fatalf("User(u1) = %d", l.User("u1"))
	}
	if err := l.ReserveUser("u1"); err != nil {
		t.Fatal(err)
	}
}

func TestLimitsZeroMeansNoLimit(t *testing.T) {
	l := NewLimits(0, 0)
	for i := 0; i < 1000; i++ {
		if l.ReserveNode() != nil || l.ReserveUser("u") != nil {
			t.Fatalf("refused at %d without a limit", i)
		}
	}
}

func TestLimitsHoldUnderConcurrency(t *testing.T) {
	const maxNode, maxUser, workers, users = 50, 3, 16, 10
	l := NewLimits(maxNode, maxUser)
	var (
		wg      sync.WaitGroup
		inNode  atomic.Int64
		peak    atomic.Int64
		perUser [users]atomic.Int64
		failed  atomic.Bool
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				u := (w + i) % users
				user := fmt.Sprintf("u%d", u)
				if l.ReserveNode() != nil {
					continue
				}
				if n := inNode.Add(1); n > peak.Load() {
					peak.Store(n)
				}
				if l.ReserveUser(user) == nil {
					if n := perUser[u].Add(1); n > maxUser {
						failed.Store(true)
					}
					perUser[u].Add(-1)
					l.ReleaseUser(user)
				}
				inNode.Add(-1)
				l.ReleaseNode()
			}
		}()
	}
	wg.Wait()
	if failed.Load() {
		t.Fatal("a user held more than its limit of connections")
	}
	if peak.Load() > maxNode {
		t.Fatalf("node held %d connections, limit %d", peak.Load(), maxNode)
	}
	if l.Total() != 0 {
		t.Fatalf("Total %d after every release", l.Total())
	}
	for u := 0; u < users; u++ {
		if n := l.User(fmt.Sprintf("u%d", u)); n != 0 {
			t.Fatalf("u%d holds %d after every release", u, n)
		}
	}
}

func BenchmarkShardLookupGroup(b *testing.B) {
	s := NewShard[int]()
	for i := 0; i < 1000; i++ {
		s.Add(i, fmt.Sprintf("u%d", i), []string{fmt.Sprintf("g%d", i%10)})
	}
	tg := Target{Kind: Group, ID: "g3"}
	b.ReportAllocs()
	for b.Loop() {
		if len(s.Lookup(tg)) != 100 {
			b.Fatal("lookup")
		}
	}
}

func TestShardJoinAndLeaveChangeAConnectionsGroups(t *testing.T) {
	s := NewShard[int]()
	s.Add(1, "u1", []string{"a", "b"})
	s.Add(2, "u2", []string{"a"})
	s.Leave(1, []string{"a"})
	s.Join(1, []string{"c"})
	s.Join(99, []string{"c"}) // not on the shard: ignored
	for g, want := range map[string][]int{"a": {2}, "b": {1}, "c": {1}} {
		if got := sorted(s.Lookup(Target{Kind: Group, ID: g})); !reflect.DeepEqual(got, want) {
			t.Errorf("group %s: %v, want %v", g, got, want)
		}
	}
	if !s.Has(1) || s.Has(99) {
		t.Fatal("Has")
	}
	s.Remove(1, "u1", []string{"b", "c"})
	s.Remove(2, "u2", []string{"a"})
	if len(s.groups) != 0 || s.Has(1) {
		t.Fatalf("entries left after removing with the changed groups: %v", s.groups)
	}
}

// TestIndexedShardStaysConsistentUnderChurn is the churn test for a shard that keeps each
// connection's place in the connection (the epoll engine's), checking every index exactly:
// a user's connections, one or many, its groups, the whole list and the kept places.
func TestIndexedShardStaysConsistentUnderChurn(t *testing.T) {
	type item struct {
		id    int
		place int32
	}
	user := func(c int) string { return fmt.Sprintf("u%d", c%29) }
	s := NewIndexedShard(func(c *item) *int32 { return &c.place }, func(c *item) string { return user(c.id) })
	items := make([]*item, 97)
	for i := range items {
		items[i] = &item{id: i}
	}
	group := func(c int) []string { return []string{fmt.Sprintf("g%d", c%5)} }
	live := map[int]bool{}
	for i := 0; i < 3000; i++ {
		c := (i * 31) % 97
		if live[c] {
			if !s.Remove(items[c], user(c), group(c)) || s.Remove(items[c], user(c), group(c)) {
				t.Fatalf("Remove(%d) is not exactly once", c)
			}
			delete(live, c)
		} else {
			s.Add(items[c], user(c), group(c))
			s.Add(items[c], user(c), group(c)) // ignored
			live[c] = true
		}
		ids := func(cs []*item) []int {
			out := make([]int, 0, len(cs))
			for _, c := range cs {
				out = append(out, c.id)
			}
			return sorted(out)
		}
		wantUser := map[string][]int{}
		for c := range live {
			wantUser[user(c)] = append(wantUser[user(c)], c)
		}
		for u := range 29 {
			name := fmt.Sprintf("u%d", u)
			if got, want := ids(s.Lookup(Target{Kind: User, ID: name})), sorted(wantUser[name]); !slices.Equal(got, want) {
				t.Fatalf("step %d: Lookup(user %s) = %v, want %v", i, name, got, want)
			}
		}
		if s.Len() != len(live) {
			t.Fatalf("Len %d, want %d", s.Len(), len(live))
		}
		for j, c := range s.all {
			if int(c.place) != j+1 || !s.Has(c) {
				t.Fatalf("connection %d at %d keeps place %d", c.id, j, c.place)
			}
		}
	}
	for c := range live {
		if !slices.ContainsFunc(s.Lookup(Target{Kind: Group, ID: group(c)[0]}), func(x *item) bool { return x.id == c }) {
			t.Fatalf("connection %d missing from its group", c)
		}
	}
}

// BenchmarkShardLookupUser compares the two ways a shard finds a user's only connection: a Go
// map keyed by the user (NewShard) and the table keyed by the user each connection carries
// (NewIndexedShard, the epoll engine's).
func BenchmarkShardLookupUser(b *testing.B) {
	type conn struct {
		user  string
		place int32
	}
	conns := make([]*conn, 10000)
	for i := range conns {
		conns[i] = &conn{user: fmt.Sprintf("user-%d", i)}
	}
	for _, bc := range []struct {
		name  string
		shard *Shard[*conn]
	}{
		{"map", NewShard[*conn]()},
		{"indexed", NewIndexedShard(func(c *conn) *int32 { return &c.place }, func(c *conn) string { return c.user })},
	} {
		for _, c := range conns {
			bc.shard.Add(c, c.user, nil)
		}
		tg := Target{Kind: User, ID: "user-4321"}
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if len(bc.shard.Lookup(tg)) != 1 {
					b.Fatal("user not found")
				}
			}
		})
	}
}
