# Load-harness targets, included by the Makefile. `make bench` builds wsbench and runs the
# quick suite (both engines, a private redis-server, a few minutes on two cores); `make
# bench-full` is the sizing run. Both print the side-by-side table and exit non-zero when a
# run lost or duplicated messages.

WSBENCH ?= bin/wsbench
BENCH_GO_PKGS ?= ./bench ./eventloop ./backplane ./gwsengine

.PHONY: bench bench-full bench-go bench-k6-check wsbench

wsbench:
	go build -o $(WSBENCH) ./cmd/wsbench

bench: wsbench
	$(WSBENCH) suite --quick --json-out bin/bench-quick.json

bench-full: wsbench
	$(WSBENCH) suite --full --json-out bin/bench-full.json

# Go benchmarks of the hot path (JWT, registry, topics here; frames, fan-out, dispatch
# beside their code).
bench-go:
	go test -run '^$$' -bench . -benchmem $(BENCH_GO_PKGS)

# Syntax and shimmed-run check of the k6 script with node (k6 itself is not run).
bench-k6-check:
	go test -count=1 -run 'TestK6' ./bench
