package auth

import (
	"testing"
	"time"
)

// BenchmarkVerify is one handshake's token check: HS256, a subject and a few groups, issuer and
// audience configured, under the default groups claim and under a custom one.
func BenchmarkVerify(b *testing.B) {
	for _, claim := range []string{"groups", "roles"} {
		b.Run(claim, func(b *testing.B) {
			v, err := NewVerifier(Settings{Algorithm: "HS256", Secret: secret, Issuer: "iss", Audience: "aud", GroupsClaim: claim, Leeway: 5 * time.Second})
			if err != nil {
				b.Fatal(err)
			}
			m, err := NewMinter("HS256", secret, "iss", "aud", claim)
			if err != nil {
				b.Fatal(err)
			}
			tok, err := m.Mint("student-123456", []string{"class-7b", "school-42", "year-2026"}, time.Hour)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
