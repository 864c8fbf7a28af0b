package bench

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"
)

// publishCluster publishes to a Redis Cluster the way the service subscribes there: SPUBLISH
// (sharded Pub/Sub), each target through a connection to the master serving its channel's
// hash slot, p.Publishers connections per master at most.
func publishCluster(ctx context.Context, p *Params, targets []Target) (PublishStats, error) {
	var seeds []string
	var first *redis.Options
	for i, raw := range strings.Split(p.RedisURL, ",") {
		opt, err := redis.ParseURL(strings.TrimSpace(raw))
		if err != nil {
			return PublishStats{}, fmt.Errorf("redis URL %d: %w", i+1, err)
		}
		if first == nil {
			first = opt
		}
		seeds = append(seeds, opt.Addr)
	}
	if first.TLSConfig != nil {
		return PublishStats{}, errors.New("the harness publishes to a cluster over plain redis:// only")
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: seeds, Username: first.Username, Password: first.Password})
	defer cc.Close()
	byMaster := map[string][]int{}
	for j, t := range targets {
		master, err := cc.MasterForKey(ctx, t.Channel)
		if err != nil {
			return PublishStats{}, fmt.Errorf("redis cluster: master of %s: %w", t.Channel, err)
		}
		addr := master.Options().Addr
		byMaster[addr] = append(byMaster[addr], j)
	}
	routeOf := make([]int, len(targets))
	var routes []route
	for _, addr := range slices.Sorted(maps.Keys(byMaster)) {
		js := byMaster[addr]
		conns := max(1, min(p.Publishers, len(js)))
		base := len(routes)
		for k := range conns {
			idx := base + k
			routes = append(routes, route{addr: addr, owns: func(j int) bool { return routeOf[j] == idx }})
		}
		for n, j := range js {
			routeOf[j] = base + n%conns
		}
	}
	return rawPublisher{opt: first}.publishRoutes(ctx, p, targets, routes, publishVerb(p, "SPUBLISH"))
}
