// Package hashslot computes Redis Cluster hash slots: which of the 16384 slots a key (or a
// sharded Pub/Sub channel) belongs to, following the cluster's hash-tag rule. It exists so the
// backplane (routing SSUBSCRIBE) and the history (naming keys that share a channel's slot)
// agree on one implementation. It talks to no Redis.
package hashslot

import "strings"

// Count is the number of hash slots of a Redis Cluster.
const Count = 16384

// Tag returns the key's hash tag (the part between the first "{" and the next "}") and
// whether it has one: an empty "{}" or an unclosed "{" is no tag, and the whole key is hashed.
func Tag(key string) (string, bool) {
	i := strings.IndexByte(key, '{')
	if i < 0 {
		return "", false
	}
	j := strings.IndexByte(key[i+1:], '}')
	if j <= 0 {
		return "", false
	}
	return key[i+1 : i+1+j], true
}

// Of is the cluster hash slot of key: CRC16 (XMODEM) of its hash tag when it has one, else of
// the whole key, modulo 16384.
func Of(key string) uint16 {
	if tag, ok := Tag(key); ok {
		key = tag
	}
	return crc16(key) % Count
}

// crc16 is CRC-16/XMODEM (polynomial 0x1021), the checksum Redis Cluster hashes keys with.
// Bitwise rather than table-driven: callers hash names when they (un)subscribe or name keys,
// never per message.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for b := 0; b < 8; b++ {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
