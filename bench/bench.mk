# Load-harness targets, included by the Makefile. `make bench` builds wsbench and runs the
# quick suite (both engines, a private redis-server, a few minutes on two cores); `make
# bench-full` is the sizing run. Both print the side-by-side table and exit non-zero when a
# run lost or duplicated messages. `make bench-fleet` runs 1, 2 and 4 service processes on one
# Redis and on a 3-master Redis Cluster (both engines, classroom/burst/broadcast; under 10
# minutes on two cores, scaled down to FLEET_CONNS_PER_NODE connections per node). `make
# bench-storm` kills one of four nodes under a steady publisher and times its clients'
# reconnects (both engines, STORM_CONNS_PER_NODE connections per node before the kill). `make
# bench-rollout` drains one of two nodes under ROLLOUT_CLIENTS reference clients (client/, in
# Node) and checks each stream exactly once, in order, after they resume on the other.

WSBENCH ?= bin/wsbench
BENCH_GO_PKGS ?= ./bench ./eventloop ./backplane ./gwsengine

FLEET_CONNS_PER_NODE ?= 2000
STORM_CONNS_PER_NODE ?= 2500
ROLLOUT_CLIENTS ?= 1000

.PHONY: bench bench-full bench-fleet bench-storm bench-rollout bench-go bench-k6-check wsbench

wsbench:
	go build -o $(WSBENCH) ./cmd/wsbench

bench: wsbench
	$(WSBENCH) suite --quick --json-out bin/bench-quick.json

bench-full: wsbench
	$(WSBENCH) suite --full --json-out bin/bench-full.json

bench-fleet: wsbench
	$(WSBENCH) fleet --conns-per-node $(FLEET_CONNS_PER_NODE) --json-out bin/bench-fleet.json

bench-storm: wsbench
	$(WSBENCH) storm --conns-per-node $(STORM_CONNS_PER_NODE) --json-out bin/bench-storm.json

bench-rollout: wsbench
	$(WSBENCH) rollout --clients $(ROLLOUT_CLIENTS) --json-out bin/bench-rollout.json

# Go benchmarks of the hot path (JWT, registry, topics here; frames, fan-out, dispatch
# beside their code).
bench-go:
	go test -run '^$$' -bench . -benchmem $(BENCH_GO_PKGS)

# Syntax and shimmed-run check of the k6 script with node (k6 itself is not run).
bench-k6-check:
	go test -count=1 -run 'TestK6' ./bench
