package bench

import (
	"bytes"
	"strconv"
)

// Stamp is what every published message carries so a receiver can account for it: the run
// it belongs to (messages of another run are counted as unexpected, not delivered), the
// target it was sent to (index into the plan's targets), its sequence number within that
// target, and when it was published (unix nanoseconds; publisher and receivers share the
// machine's clock).
type Stamp struct {
	Run    string
	Target int
	Seq    int
	SentNs int64
}

// AppendPayload appends the JSON payload of s to dst, padded with a "pad" string to size
// bytes when size is larger than the bare payload. It allocates nothing when dst has room.
func AppendPayload(dst []byte, s Stamp, size int) []byte {
	start := len(dst)
	dst = append(dst, `{"type":"bench","r":"`...)
	dst = append(dst, s.Run...)
	dst = append(dst, `","j":`...)
	dst = strconv.AppendInt(dst, int64(s.Target), 10)
	dst = append(dst, `,"k":`...)
	dst = strconv.AppendInt(dst, int64(s.Seq), 10)
	dst = append(dst, `,"t":`...)
	dst = strconv.AppendInt(dst, s.SentNs, 10)
	const padOpen, padClose = `,"pad":"`, `"}`
	if pad := size - (len(dst) - start) - len(padOpen) - len(padClose); pad > 0 {
		dst = append(dst, padOpen...)
		for range pad {
			dst = append(dst, 'x')
		}
		dst = append(dst, padClose[:1]...)
	}
	return append(dst, '}')
}

// ParseStamp finds a stamp in a received frame. It looks the fields up by name rather than
// decoding JSON, so it also finds a stamp the server wrapped in an envelope, and it costs no
// allocation besides the run id comparison the caller does. ok is false for anything that
// carries no complete stamp (a server error message, say).
func ParseStamp(frame []byte) (run []byte, target, seq int, sentNs int64, ok bool) {
	run, ok = stringField(frame, `"r":"`)
	if !ok {
		return nil, 0, 0, 0, false
	}
	j, ok1 := intField(frame, `"j":`)
	k, ok2 := intField(frame, `"k":`)
	t, ok3 := intField(frame, `"t":`)
	if !ok1 || !ok2 || !ok3 {
		return nil, 0, 0, 0, false
	}
	return run, int(j), int(k), t, true
}

func stringField(b []byte, key string) ([]byte, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return nil, false
	}
	rest := b[i+len(key):]
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return nil, false
	}
	return rest[:end], true
}

func intField(b []byte, key string) (int64, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return 0, false
	}
	rest := b[i+len(key):]
	var v int64
	n := 0
	for n < len(rest) && n < 19 && rest[n] >= '0' && rest[n] <= '9' {
		v = v*10 + int64(rest[n]-'0')
		n++
	}
	return v, n > 0
}

// errorCode returns the code of a server ErrorMessage (`{"type":"error","code":"X",...}`).
func errorCode(frame []byte) (string, bool) {
	if !bytes.Contains(frame, []byte(`"type":"error"`)) {
		return "", false
	}
	code, ok := stringField(frame, `"code":"`)
	return string(code), ok
}
