//go:build linux

package eventloop

import "github.com/huleedu/websocket-service/internal/rfc6455"

// The opcodes under the short names the loop uses (RFC 6455 §5.2; internal/rfc6455).
const (
	opContinuation = rfc6455.OpContinuation
	opText         = rfc6455.OpText
	opBinary       = rfc6455.OpBinary
	opClose        = rfc6455.OpClose
	opPing         = rfc6455.OpPing
	opPong         = rfc6455.OpPong
)

// encodeFrame returns a new final server frame of exactly the right size. A frame handed to
// several connections is shared and never modified after this returns.
func encodeFrame(op byte, payload []byte) []byte { return rfc6455.EncodeFrame(op, payload) }

// encodeClose returns a close frame carrying code (no reason); code 0 means an empty body,
// the answer to a peer close frame that had no status code.
func encodeClose(code uint16) []byte { return rfc6455.EncodeClose(code) }
