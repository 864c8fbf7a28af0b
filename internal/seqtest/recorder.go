package seqtest

import (
	"fmt"
	"sort"
	"strings"
	"sync"
)

// Recorder is what one client saw, per channel, across all its connections: messages by
// number, and the holes the service reported (a v2 sync with recovered:false).
type Recorder struct {
	mu      sync.Mutex
	streams map[string][]event
	gaps    []Gap
	conn    int // connections before the current one
}

type event struct {
	seq  int // 0 for a reported hole
	gap  Gap
	conn int // the connection it came on, for failure messages
}

// Gap is one hole the service reported.
type Gap struct {
	Channel string
	Reason  string
	Missed  int // -1 when the service did not know
}

// NewRecorder is an empty recorder.
func NewRecorder() *Recorder { return &Recorder{streams: map[string][]event{}} }

// NewConnection says that the events from now on come on the client's next connection.
func (r *Recorder) NewConnection() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.conn++
}

// Message records number seq of channel.
func (r *Recorder) Message(channel string, seq int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.streams[channel] = append(r.streams[channel], event{seq: seq, conn: r.conn})
}

// Hole records that the service reported a hole in channel at this point.
func (r *Recorder) Hole(g Gap) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.streams[g.Channel] = append(r.streams[g.Channel], event{gap: g, conn: r.conn})
	r.gaps = append(r.gaps, g)
}

// Gaps lists the holes reported, in the order they came.
func (r *Recorder) Gaps() []Gap {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Gap(nil), r.gaps...)
}

// Last is the highest number received on channel (0 when none).
func (r *Recorder) Last(channel string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	last := 0
	for _, e := range r.streams[channel] {
		last = max(last, e.seq)
	}
	return last
}

// Received counts the messages received on every channel.
func (r *Recorder) Received() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, evs := range r.streams {
		for _, e := range evs {
			if e.seq > 0 {
				n++
			}
		}
	}
	return n
}

// CaughtUp reports whether the recorder has, on each channel, the last number p had
// acknowledged on it.
func (r *Recorder) CaughtUp(p *Publisher, channels ...string) bool {
	for _, ch := range channels {
		if r.Last(ch) < p.LastAcked(ch) {
			return false
		}
	}
	return true
}

// Check reports, for each channel, every number received twice or out of order, and every
// acknowledged number that is neither received nor inside a reported hole (a hole covers the
// numbers between the messages received just before and just after it). Numbers whose
// publish failed may be missing silently: they may never have been published.
func (r *Recorder) Check(p *Publisher, channels ...string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var problems []string
	for _, ch := range channels {
		acked := p.acked(ch)
		prev, prevConn, hole := 0, 0, false
		var lost []int
		covered := func(upTo int) {
			for s := prev + 1; s < upTo && s <= len(acked); s++ {
				if acked[s-1] && !hole {
					lost = append(lost, s)
				}
			}
		}
		for _, e := range r.streams[ch] {
			if e.seq == 0 {
				hole = true
				continue
			}
			if e.seq <= prev {
				problems = append(problems, fmt.Sprintf("%s: %d (connection %d) after %d (connection %d): duplicate or out of order", ch, e.seq, e.conn, prev, prevConn))
				continue
			}
			covered(e.seq)
			prev, prevConn, hole = e.seq, e.conn, false
		}
		covered(len(acked) + 1)
		if len(lost) > 0 {
			problems = append(problems, fmt.Sprintf("%s: %d acknowledged messages lost without a reported hole: %s", ch, len(lost), ranges(lost)))
		}
	}
	if len(problems) == 0 {
		return nil
	}
	sort.Strings(problems)
	return fmt.Errorf("%s", strings.Join(problems, "; "))
}

// ranges prints sorted numbers as "3-7 9 12-13".
func ranges(s []int) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		j := i
		for j+1 < len(s) && s[j+1] == s[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		if j > i {
			fmt.Fprintf(&b, "%d-%d", s[i], s[j])
		} else {
			fmt.Fprintf(&b, "%d", s[i])
		}
		i = j + 1
	}
	return b.String()
}
