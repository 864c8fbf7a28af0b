package backplane

// dispatcher gathers the messages read from one connection into the next batch for the sink.
// It belongs to the connection's reader goroutine.
//
// Cost per message, once the batch exists: no allocation. The channel name is the relay's own
// string for the channel, and payloads are carved out of one arena per read-buffer's worth of
// input. The batch slice itself is one allocation per batch, since the sink keeps it.
type dispatcher struct {
	batch     []Message
	arena     arena
	confirmed bool // a subscription went live since the last flush
	// changes are subscription changes for a Watcher not yet reported. They and batch are
	// never both non-empty: each is flushed before the other grows, which keeps them in the
	// order they were read.
	changes []Subscription
}

// add appends a message; buffered (bytes still in the read buffer) sizes a new batch.
func (d *dispatcher) add(channel string, payload []byte, buffered int) {
	if d.batch == nil {
		d.batch = make([]Message, 0, min(max(buffered/64+1, 4), maxBatch))
	}
	d.batch = append(d.batch, message(channel, payload))
}

func (d *dispatcher) full() bool { return len(d.batch) >= maxBatch }

// take returns the batch gathered so far (nil if none) and starts a new one. The arena is
// kept: the memory past the payloads already handed over belongs to nobody yet.
func (d *dispatcher) take() []Message {
	b := d.batch
	d.batch = nil
	return b
}
