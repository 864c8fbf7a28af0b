package bench

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strconv"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/auth"
	"github.com/huleedu/websocket-service/registry"
)

// Benchmarks of the hot path that no package's own tests cover: the JWT check every
// handshake pays, the registry lookups every delivery pays, and the channel parse every
// backplane message pays. Run: go test -run '^$' -bench . -benchmem ./bench

func BenchmarkVerifyHS256(b *testing.B) {
	v, err := auth.NewVerifier(auth.Settings{Algorithm: "HS256", Secret: []byte("0123456789abcdef0123456789abcdef")})
	if err != nil {
		b.Fatal(err)
	}
	m, _ := auth.NewMinter("HS256", []byte("0123456789abcdef0123456789abcdef"), "", "", "")
	benchVerify(b, v, m)
}

func BenchmarkVerifyRS256(b *testing.B) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	v, err := auth.NewVerifier(auth.Settings{Algorithm: "RS256", PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})})
	if err != nil {
		b.Fatal(err)
	}
	m, _ := auth.NewMinter("RS256", key, "", "", "")
	benchVerify(b, v, m)
}

func benchVerify(b *testing.B, v *auth.Verifier, m *auth.Minter) {
	tok, err := m.Mint("user-123456", []string{"class-7a", "school-12"}, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := v.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}

// shardOf builds a shard of n connections over n users, in groups of 30.
func shardOf(n int) *registry.Shard[int] {
	s := registry.NewShard[int]()
	for i := range n {
		s.Add(i, "user-"+strconv.Itoa(i), []string{"group-" + strconv.Itoa(i/30)})
	}
	return s
}

func BenchmarkShardLookupUser(b *testing.B) {
	s := shardOf(10000)
	t := registry.Target{Kind: registry.User, ID: "user-4321"}
	b.ReportAllocs()
	for b.Loop() {
		if len(s.Lookup(t)) != 1 {
			b.Fatal("user not found")
		}
	}
}

func BenchmarkShardLookupGroup(b *testing.B) {
	s := shardOf(10000)
	t := registry.Target{Kind: registry.Group, ID: "group-123"}
	b.ReportAllocs()
	for b.Loop() {
		if len(s.Lookup(t)) != 30 {
			b.Fatal("group not found")
		}
	}
}

func BenchmarkShardAddRemove(b *testing.B) {
	s := shardOf(10000)
	groups := []string{"group-1"}
	b.ReportAllocs()
	for b.Loop() {
		s.Add(-1, "user-x", groups)
		s.Remove(-1, "user-x", groups)
	}
}

func BenchmarkTopicsParse(b *testing.B) {
	t := registry.Topics{UserPrefix: "ws:", GroupPrefix: "ws-group:", Broadcast: "ws-broadcast"}
	for _, ch := range []string{"ws:user-123456", "ws-group:class-7a", "ws-broadcast"} {
		b.Run(ch, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := t.Parse(ch); !ok {
					b.Fatal("not parsed")
				}
			}
		})
	}
}

// The harness's own per-message work, so its cost can be told apart from the server's.
func BenchmarkHarnessParseStamp(b *testing.B) {
	p := AppendPayload(nil, Stamp{Run: "bx1", Target: 12345, Seq: 7, SentNs: time.Now().UnixNano()}, 0)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, _, _, ok := ParseStamp(p); !ok {
			b.Fatal("no stamp")
		}
	}
}

func BenchmarkHarnessHistogramRecord(b *testing.B) {
	h := NewHistogram()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		v := int64(1)
		for pb.Next() {
			h.Record(v)
			v = (v*31 + 7) & 0xffffff
		}
	})
}
