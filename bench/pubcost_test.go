package bench

import (
	"strings"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/history"
)

// TestPubCostMeasuresHistoryAgainstPlainPublish runs the smallest publish-cost comparison:
// every message of both modes is published, only FCALL ws_publish stores them (trimmed to
// the history size), and what a stored message costs in Redis memory is measured.
func TestPubCostMeasuresHistoryAgainstPlainPublish(t *testing.T) {
	if _, err := lookRedis(); err != nil {
		t.Skip(err)
	}
	o := PubCostOptions{Streams: 10, Messages: 600, Rate: 2000, Payload: 200,
		History: history.Limits{Size: 50, TTL: time.Minute}}
	var progress strings.Builder
	res, err := RunPubCost(t.Context(), o, &progress)
	if err != nil {
		t.Fatalf("pubcost: %v\n%s", err, progress.String())
	}
	if len(res.Modes) != 2 || res.Modes[0].Via != "redis" || res.Modes[1].Via != "fcall" {
		t.Fatalf("modes %+v, want redis then fcall", res.Modes)
	}
	plain, seq := res.Modes[0], res.Modes[1]
	if plain.Published != 600 || seq.Published != 600 || plain.Errors+seq.Errors != 0 {
		t.Errorf("published %d and %d with %d and %d errors, want 600 each and none", plain.Published, seq.Published, plain.Errors, seq.Errors)
	}
	if plain.Stored != 0 || seq.Stored != 500 {
		t.Errorf("stored %d by PUBLISH and %d by FCALL, want 0 and 10 streams × 50", plain.Stored, seq.Stored)
	}
	// A stored message holds its 200-byte payload and its entry; well under 4 KB.
	if seq.KeyBytesPerStored < 200 || seq.KeyBytesPerStored > 4096 {
		t.Errorf("%.0f key bytes per stored message", seq.KeyBytesPerStored)
	}
	var table strings.Builder
	WritePubCostTable(&table, res)
	if testing.Verbose() {
		t.Log("\n" + table.String())
	}
	if !strings.Contains(table.String(), "FCALL ws_publish costs Redis") {
		t.Errorf("table:\n%s", table.String())
	}
}
