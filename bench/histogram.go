package bench

import (
	"fmt"
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram is a log-linear histogram of non-negative durations in nanoseconds, in the
// spirit of HdrHistogram: values below 2^subBits are counted exactly, larger ones in
// 2^subBits linear sub-buckets per power of two, so any percentile it reports is at most
// 1/2^subBits (0.8 %) above the true value. Record is lock-free (one atomic add), because
// thousands of connection goroutines record into one histogram concurrently.
type Histogram struct {
	counts [histBuckets]atomic.Int64
	total  atomic.Int64
	sum    atomic.Int64
	min    atomic.Int64 // math.MaxInt64 while empty
	max    atomic.Int64
}

const (
	subBits     = 7
	subCount    = 1 << subBits
	maxExponent = 42 // 2^42 ns ≈ 73 min: longer values are clamped into the last bucket
	histBuckets = (maxExponent - subBits + 2) * subCount
)

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram {
	h := &Histogram{}
	h.min.Store(math.MaxInt64)
	return h
}

// bucketOf maps a value to its bucket index.
func bucketOf(v int64) int {
	if v < 0 {
		v = 0
	}
	if v < subCount {
		return int(v)
	}
	e := bits.Len64(uint64(v)) - 1 // v in [2^e, 2^(e+1))
	if e > maxExponent {
		return histBuckets - 1
	}
	shift := e - subBits
	return (shift+1)*subCount + int(v>>shift) - subCount
}

// bucketHigh is the largest value that maps to bucket i.
func bucketHigh(i int) int64 {
	if i < subCount {
		return int64(i)
	}
	shift := i/subCount - 1
	sub := int64(i%subCount + subCount)
	return (sub+1)<<shift - 1
}

// Record adds one value.
func (h *Histogram) Record(v int64) {
	if v < 0 {
		v = 0
	}
	h.counts[bucketOf(v)].Add(1)
	h.total.Add(1)
	h.sum.Add(v)
	for m := h.min.Load(); v < m && !h.min.CompareAndSwap(m, v); m = h.min.Load() {
	}
	for m := h.max.Load(); v > m && !h.max.CompareAndSwap(m, v); m = h.max.Load() {
	}
}

// RecordDuration adds one duration.
func (h *Histogram) RecordDuration(d time.Duration) { h.Record(int64(d)) }

// Count is the number of recorded values.
func (h *Histogram) Count() int64 { return h.total.Load() }

// Quantile returns the value at quantile q (0..1): the highest value of the bucket holding
// the ceil(q·count)-th smallest value, clamped to the recorded maximum; q 0 is the minimum.
// It is 0 when empty.
func (h *Histogram) Quantile(q float64) int64 {
	n := h.total.Load()
	if n == 0 {
		return 0
	}
	if q <= 0 {
		return h.min.Load()
	}
	rank := int64(math.Ceil(q * float64(n)))
	if rank > n {
		rank = n
	}
	var seen int64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			v := bucketHigh(i)
			if mx := h.max.Load(); v > mx {
				v = mx
			}
			if mn := h.min.Load(); v < mn {
				v = mn
			}
			return v
		}
	}
	return h.max.Load()
}

// Merge adds every value of o into h.
func (h *Histogram) Merge(o *Histogram) {
	for i := range o.counts {
		if c := o.counts[i].Load(); c != 0 {
			h.counts[i].Add(c)
		}
	}
	h.total.Add(o.total.Load())
	h.sum.Add(o.sum.Load())
	if m := o.min.Load(); m < h.min.Load() {
		h.min.Store(m)
	}
	if m := o.max.Load(); m > h.max.Load() {
		h.max.Store(m)
	}
}

// Summary is what a report shows of a latency histogram, in milliseconds.
type Summary struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
}

// Summary reduces the histogram to the figures a report prints.
func (h *Histogram) Summary() Summary {
	n := h.total.Load()
	if n == 0 {
		return Summary{}
	}
	ms := func(v int64) float64 { return float64(v) / 1e6 }
	return Summary{
		Count: n,
		Mean:  float64(h.sum.Load()) / float64(n) / 1e6,
		P50:   ms(h.Quantile(0.50)),
		P99:   ms(h.Quantile(0.99)),
		P999:  ms(h.Quantile(0.999)),
		Max:   ms(h.max.Load()),
	}
}

func (s Summary) String() string {
	if s.Count == 0 {
		return "n=0"
	}
	return fmt.Sprintf("p50 %s  p99 %s  p999 %s  max %s  (n=%d)",
		fmtMS(s.P50), fmtMS(s.P99), fmtMS(s.P999), fmtMS(s.Max), s.Count)
}

// fmtMS prints milliseconds with precision that suits their size.
func fmtMS(v float64) string {
	switch {
	case v < 1:
		return fmt.Sprintf("%.3fms", v)
	case v < 100:
		return fmt.Sprintf("%.2fms", v)
	}
	return fmt.Sprintf("%.0fms", v)
}

// wireHistogram is a histogram as workers send it to the parent: only non-empty buckets.
type wireHistogram struct {
	Buckets [][2]int64 `json:"b,omitempty"` // [index, count]
	Sum     int64      `json:"s"`
	Min     int64      `json:"lo"`
	Max     int64      `json:"hi"`
}

func (h *Histogram) wire() wireHistogram {
	w := wireHistogram{Sum: h.sum.Load(), Min: h.min.Load(), Max: h.max.Load()}
	for i := range h.counts {
		if c := h.counts[i].Load(); c != 0 {
			w.Buckets = append(w.Buckets, [2]int64{int64(i), c})
		}
	}
	return w
}

func (w wireHistogram) histogram() (*Histogram, error) {
	h := NewHistogram()
	for _, b := range w.Buckets {
		if b[0] < 0 || b[0] >= histBuckets || b[1] < 0 {
			return nil, fmt.Errorf("histogram bucket %d (count %d) out of range", b[0], b[1])
		}
		h.counts[b[0]].Add(b[1])
		h.total.Add(b[1])
	}
	h.sum.Store(w.Sum)
	if h.total.Load() > 0 {
		h.min.Store(w.Min)
		h.max.Store(w.Max)
	}
	return h, nil
}
