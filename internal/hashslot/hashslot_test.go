package hashslot

import "testing"

// The slots Redis itself reports (CLUSTER KEYSLOT) for these keys.
func TestOfMatchesRedis(t *testing.T) {
	for key, want := range map[string]uint16{
		"foo":           12182,
		"{user1000}.a":  3443,
		"user1000":      3443,
		"foo{}{bar}":    8363,
		"foo{{bar}}zap": 4015,
		"foo{bar}{zap}": 5061,
		"123456789":     12739,
		"{}":            15257,
		"a{":            14311,
	} {
		if got := Of(key); got != want {
			t.Errorf("Of(%q) = %d, want %d", key, got, want)
		}
	}
}
