package seqtest

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// published acknowledges n messages on "c", the ones in fail failing.
func published(t *testing.T, n int, fail ...int) *Publisher {
	t.Helper()
	seq := 0
	p := New([]string{"c"}, func(context.Context, string, string) error {
		seq++
		for _, f := range fail {
			if f == seq {
				return errors.New("refused")
			}
		}
		return nil
	})
	for i := 0; i < n; i++ {
		_ = p.One(context.Background(), "c", i)
	}
	return p
}

func TestCheckTellsLossDuplicatesAndOrderFromReportedHoles(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fail  []int
		recv  []int // 0: a reported hole
		wants string
	}{
		{name: "every message once in order", recv: []int{1, 2, 3, 4, 5}},
		{name: "a silent loss", recv: []int{1, 2, 4, 5}, wants: "lost without a reported hole: 3"},
		{name: "a loss at the end", recv: []int{1, 2, 3}, wants: "lost without a reported hole: 4-5"},
		{name: "a reported hole", recv: []int{1, 0, 4, 5}},
		{name: "a reported hole at the end", recv: []int{1, 2, 0}},
		{name: "a duplicate", recv: []int{1, 2, 2, 3, 4, 5}, wants: "2 (connection 0) after 2"},
		{name: "out of order", recv: []int{1, 3, 2, 4, 5}, wants: "2 (connection 0) after 3"},
		{name: "a failed publish may be missing", fail: []int{3}, recv: []int{1, 2, 4, 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := published(t, 5, tc.fail...)
			r := NewRecorder()
			for _, s := range tc.recv {
				if s == 0 {
					r.Hole(Gap{Channel: "c", Reason: "epoch", Missed: -1})
				} else {
					r.Message("c", s)
				}
			}
			err := r.Check(p, "c")
			if tc.wants == "" && err != nil || tc.wants != "" && (err == nil || !strings.Contains(err.Error(), tc.wants)) {
				t.Fatalf("Check = %v, want %q", err, tc.wants)
			}
		})
	}
}

func TestPayloadParses(t *testing.T) {
	ch, seq, err := Parse([]byte(Payload(`ws:"odd"`, 42)))
	if err != nil || ch != `ws:"odd"` || seq != 42 {
		t.Fatalf("Parse = %q %d %v", ch, seq, err)
	}
	if _, _, err := Parse([]byte(`{"other":1}`)); err == nil {
		t.Fatal("Parse accepted a foreign payload")
	}
}
