package bench

import (
	"fmt"
	"os"
)

// logf writes one progress line to stderr, which stays free for people while stdout carries
// the report (and, in a worker, the JSON the parent reads).
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "wsbench: "+format+"\n", args...)
}
