package e2e_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/huleedu/websocket-service/internal/servicetest"
)

// Settings (README "Configuration", docs/PROTOCOL.md "Channels") that change what a connection
// hears or who may connect.

func TestCustomChannelNamesAreHonoured(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, redisBP, map[string]string{
			"WEBSOCKET_CHANNEL_PREFIX": "notify:user:", "GROUP_CHANNEL_PREFIX": "notify:class:", "BROADCAST_CHANNEL": "notify-all",
		})
		c := dial(t, n.Service, "u1", "c7")
		waitActive(t, n.Service, 1)
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		for ch, payload := range map[string]string{"notify:user:u1": "user", "notify:class:c7": "group", "notify-all": "all"} {
			if err := n.rdb.Publish(ctx, ch, payload).Err(); err != nil {
				t.Fatal(err)
			}
			expectText(t, c, payload)
		}
		// The default names mean nothing to this node.
		if err := n.rdb.Publish(ctx, "ws:u1", "default name").Err(); err != nil {
			t.Fatal(err)
		}
		c.Quiet(t, 300*time.Millisecond)
		chans := n.subscriptions(t)
		slices.Sort(chans)
		if want := []string{"notify-all", "notify:class:c7", "notify:user:u1"}; !slices.Equal(chans, want) {
			t.Fatalf("PUBSUB CHANNELS = %q, want %q", chans, want)
		}
	})
}

func TestCustomGroupsClaimDecidesGroupMembership(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, map[string]string{"JWT_GROUPS_CLAIM": "classes"})
		member := dial(t, n.Service, "u1", "c7") // the harness mints under the configured claim
		tok := signed(t, jwt.SigningMethodHS256, []byte(n.Secret), jwt.MapClaims{
			"sub": "u2", "exp": time.Now().Add(time.Hour).Unix(), "groups": []string{"c7"},
		})
		outsider := servicetest.Dial(t, n.DialURL(tok))
		waitActive(t, n.Service, 2)
		n.publish(t, group("c7"), `{"to":"c7"}`)
		expectText(t, member, `{"to":"c7"}`)
		outsider.Quiet(t, 300*time.Millisecond)
	})
}

func TestIssuerAndAudienceAreCheckedWhenConfigured(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, map[string]string{"JWT_ISSUER": "huleedu-auth", "JWT_AUDIENCE": "websocket"})
		ok := dial(t, n.Service, "u1") // minted with the configured iss and aud
		ok.Send(t, "in")
		expectText(t, ok, "Echo: in")
		for name, c := range map[string]jwt.MapClaims{
			"no iss or aud": {"sub": "u1", "exp": time.Now().Add(time.Hour).Unix()},
			"wrong iss":     {"sub": "u1", "exp": time.Now().Add(time.Hour).Unix(), "iss": "other", "aud": "websocket"},
			"wrong aud":     {"sub": "u1", "exp": time.Now().Add(time.Hour).Unix(), "iss": "huleedu-auth", "aud": "billing"},
		} {
			t.Run(name, func(t *testing.T) {
				tok := signed(t, jwt.SigningMethodHS256, []byte(n.Secret), c)
				expectRefusal(t, servicetest.Dial(t, n.DialURL(tok)), "AUTH_FAILED", 1008)
			})
		}
	})
}

func TestChannelIsUnsubscribedAfterItsLastConnectionLeaves(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, redisBP, nil)
		a := dial(t, n.Service, "u1", "c7")
		b := dial(t, n.Service, "u2", "c7")
		waitActive(t, n.Service, 2)
		if chans := n.subscriptions(t); len(chans) != 4 {
			t.Fatalf("PUBSUB CHANNELS = %q, want ws:u1 ws:u2 ws-group:c7 ws-broadcast", chans)
		}
		if err := a.Conn.WriteClose(1000, nil); err != nil {
			t.Fatal(err)
		}
		// After the linger, u1's channel goes; the group and broadcast stay for u2.
		eventually(t, wait, "ws:u1 unsubscribed", func() bool {
			chans := n.subscriptions(t)
			return !slices.Contains(chans, "ws:u1") && len(chans) == 3
		})
		if err := b.Conn.WriteClose(1000, nil); err != nil {
			t.Fatal(err)
		}
		eventually(t, wait, "every channel unsubscribed", func() bool { return len(n.subscriptions(t)) == 0 })
		n.WaitMetric(t, "backplane_subscriptions_active", 0, wait)
	})
}
