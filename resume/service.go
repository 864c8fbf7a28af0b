package resume

import (
	"context"
	"time"

	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/telemetry"
)

// Wait is how long a connection waits for the client's resume frame before it resumes as if
// the frame had been empty.
const Wait = 5 * time.Second

// readTimeout bounds the history reads of one resume; a stream not read by then is reported
// unavailable.
const readTimeout = 10 * time.Second

// Retries of a history read that failed for a moment (history.Transient: Redis unreachable or
// slow to answer, the node's few Redis connections all taken in a reconnect storm, a restart or
// failover of a second or two), within readTimeout. A read is safe to repeat, and each retry
// that succeeds saves its stream a recovered:false and the client a reload.
const (
	retryFirst = 50 * time.Millisecond
	retryMax   = time.Second
)

// defaultInFlight is how many resumes a node runs at once: each holds at most one replay per
// stream (entries shared with every reader of the same read) until its socket has taken it.
const defaultInFlight = 256

// Stream is one stream of a connection: its name on the wire and its backplane channel.
type Stream struct {
	Name    string
	Channel string
}

// Streams lists the streams of a connection of user with groups: user, each group, broadcast.
func Streams(t registry.Topics, user string, groups []string) []Stream {
	out := make([]Stream, 0, 2+len(groups))
	out = append(out, Stream{Name: registry.Target{Kind: registry.User}.Stream(), Channel: t.UserChannel(user)})
	out = append(out, groupStreams(t, groups)...)
	return append(out, Stream{Name: registry.Target{Kind: registry.Broadcast}.Stream(), Channel: t.Broadcast})
}

// Outcome is one stream's history verdict for a resume.
type Outcome struct {
	Stream string
	Result history.Result
}

// Options configure a Service.
type Options struct {
	Reader   history.Reader // nil: every stream is unavailable
	Topics   registry.Topics
	Limit    int // RECOVERY_MAX_MESSAGES
	InFlight int // resumes at once, node-wide; 0: a default
	// NoHistory is HISTORY_SIZE=0: nothing can be replayed, so no resume is continuous, even
	// one that missed nothing (docs/PROTOCOL.md: every resume then reports recovered:false).
	NoHistory bool
	Metrics   *telemetry.Metrics
}

// Service reads history for resuming connections, a bounded number at a time.
type Service struct {
	o     Options
	cache replayCache
	wait  time.Duration // Wait; package tests shorten it
	reads time.Duration // readTimeout; package tests shorten it
	sem   chan struct{}
}

// NewService makes a Service.
func NewService(o Options) *Service {
	if o.InFlight <= 0 {
		o.InFlight = defaultInFlight
	}
	return &Service{o: o, wait: Wait, reads: readTimeout, sem: make(chan struct{}, o.InFlight)}
}

// Wait is how long a connection waits for its resume frame.
func (s *Service) Wait() time.Duration { return s.wait }

// Streams lists the streams of a connection of user with groups.
func (s *Service) Streams(user string, groups []string) []Stream {
	return Streams(s.o.Topics, user, groups)
}

// Attach lets st share replay frames with every other connection of the node.
func (s *Service) Attach(st *State) { st.cache = &s.cache }

// Read reads, on a goroutine of its own once a slot is free, each stream's history after the
// client's cursor (cursors by stream name; a stream without one, or with one this service did
// not make, is read as new), and calls done with the verdicts in the order of streams and the
// function that frees the slot. done's caller owns the slot: it frees it once the replay has
// been handed to the socket, or at once if it cannot use the verdicts.
func (s *Service) Read(streams []Stream, cursors map[string]string, done func(out []Outcome, release func())) {
	go func() {
		s.sem <- struct{}{}
		out := s.read(streams, cursors)
		done(out, s.release)
	}()
}

func (s *Service) release() { <-s.sem }

func (s *Service) read(streams []Stream, cursors map[string]string) []Outcome {
	ctx, cancel := context.WithTimeout(context.Background(), s.reads)
	defer cancel()
	out := make([]Outcome, len(streams))
	afters := make([]history.Position, len(streams))
	var again []int // streams whose read failed for a moment
	for i, st := range streams {
		// A cursor that does not parse is no cursor: the verdict is new, not an error.
		afters[i], _ = history.ParseCursor(cursors[st.Name])
		var err error
		out[i] = Outcome{Stream: st.Name}
		if out[i].Result, err = s.readOne(ctx, st.Channel, afters[i]); history.Transient(err) {
			again = append(again, i)
		}
	}
	// Every stream has had its read; those that failed for a moment are read again, in turn,
	// until the resume's read time is over, so one stream's outage costs the others nothing.
	for delay := retryFirst; len(again) > 0 && sleep(ctx, delay); delay = min(2*delay, retryMax) {
		still := again[:0]
		for _, i := range again {
			var err error
			if out[i].Result, err = s.readOne(ctx, streams[i].Channel, afters[i]); history.Transient(err) {
				still = append(still, i)
			}
		}
		again = still
	}
	for i := range out {
		s.count(out[i].Result)
	}
	return out
}

// sleep waits d, or until ctx is done; it reports whether there is time left.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Head reads the current position of each stream: the sync of a group a refresh added.
func (s *Service) Head(streams []Stream) []Outcome {
	return s.read(streams, nil)
}

// readOne reads one stream's history after the cursor; a read that fails answers unavailable,
// with the error, so the caller can tell a passing failure from a lasting one.
func (s *Service) readOne(ctx context.Context, channel string, after history.Position) (history.Result, error) {
	if s.o.Reader == nil {
		return history.Result{Reason: history.ReasonUnavailable, Missed: -1}, nil
	}
	r, err := s.o.Reader.Read(ctx, channel, after, s.o.Limit)
	if err != nil {
		return history.Result{Reason: history.ReasonUnavailable, Missed: -1, Cursor: r.Cursor}, err
	}
	if s.o.NoHistory && r.Recovered {
		return history.Result{Reason: history.ReasonTrimmed, Cursor: r.Cursor}, nil
	}
	return r, nil
}

func (s *Service) count(r history.Result) {
	if s.o.Metrics == nil {
		return
	}
	if r.Recovered {
		s.o.Metrics.Recovery(telemetry.RecoveryRecovered)
		s.o.Metrics.RecoveryReplayed.Add(len(r.Entries))
		return
	}
	s.o.Metrics.Recovery(string(r.Reason))
}

// GroupStreams lists the streams of groups.
func (s *Service) GroupStreams(groups []string) []Stream { return groupStreams(s.o.Topics, groups) }

func groupStreams(t registry.Topics, groups []string) []Stream {
	out := make([]Stream, 0, len(groups))
	for _, g := range groups {
		tg := registry.Target{Kind: registry.Group, ID: g}
		out = append(out, Stream{Name: tg.Stream(), Channel: t.Channel(tg)})
	}
	return out
}

// RegroupFrames are what a v2 connection is told when a token refresh changes its groups:
// unsubscribed for each removed group, and for each added one (heads, from Head) a sync with
// recovered:false, reason new, and the stream's cursor.
func RegroupFrames(removed []string, heads []Outcome) [][]byte {
	out := make([][]byte, 0, len(removed)+len(heads))
	for _, g := range removed {
		out = append(out, UnsubscribedFrame(registry.Target{Kind: registry.Group, ID: g}.Stream()))
	}
	for _, h := range heads {
		r := h.Result
		if r.Recovered || r.Reason == "" {
			r = history.Result{Reason: history.ReasonNew, Missed: -1, Cursor: r.Cursor}
		}
		out = append(out, SyncFrame(h.Stream, r, 0))
	}
	return out
}
