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
# Protocol notifications.v2 (docs/PROTOCOL.md): `make bench-v2-fanout` runs the 10,000-member
# group fan-out with v1 and v2 clients side by side (both published with FCALL ws_publish);
# `make bench-pubcost` measures what history costs Redis per message and per stored message;
# `make bench-storm-v2` kills one of three nodes holding STORM_V2_CONNS_PER_NODE v2 clients
# each; its clients resume on the two others with their cursors (three nodes so that each
# survivor stays under the 20,000-descriptor limit with its share; time until all synced,
# Redis commands per resume, the survivors' peak memory against k8s/deployment.yaml's limit,
# recovered:false count).

WSBENCH ?= bin/wsbench
BENCH_GO_PKGS ?= ./bench ./eventloop ./backplane ./gwsengine

FLEET_CONNS_PER_NODE ?= 5000
STORM_CONNS_PER_NODE ?= 12000
ROLLOUT_CLIENTS ?= 1000
STORM_V2_CONNS_PER_NODE ?= 10000

.PHONY: bench bench-full bench-fleet bench-storm bench-rollout bench-v2-fanout bench-pubcost bench-storm-v2 bench-go bench-k6-check wsbench

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

bench-v2-fanout: wsbench
	$(WSBENCH) suite --full --only classroom-v1,classroom-v2 --protocol both --rounds 3 --json-out bin/bench-v2-fanout.json

bench-pubcost: wsbench
	$(WSBENCH) pubcost --json-out bin/bench-pubcost.json

bench-storm-v2: wsbench
	$(WSBENCH) storm --protocol v2 --nodes 3 --conns-per-node $(STORM_V2_CONNS_PER_NODE) --json-out bin/bench-storm-v2.json

# Go benchmarks of the hot path (JWT, registry, topics here; frames, fan-out, dispatch
# beside their code).
bench-go:
	go test -run '^$$' -bench . -benchmem $(BENCH_GO_PKGS)

# Syntax and shimmed-run check of the k6 script with node (k6 itself is not run).
bench-k6-check:
	go test -count=1 -run 'TestK6' ./bench
