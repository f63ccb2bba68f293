package main

import "bytes"

// Counting a frame by its type, without decoding it: a server frame's type
// and an error's code are read from its first bytes by the writer, and a
// client frame that did not decode has its type scanned for, bounded, by the
// reader.

// serverFrame numbers a server frame type as serverFrameTypes lists it, and
// any other as len(serverFrameTypes). A switch, not a map: the writer counts
// every frame, and this costs it a third of a map lookup.
func serverFrame(typ []byte) int {
	switch string(typ) {
	case "session":
		return 0
	case "goodbye":
		return 1
	case "error":
		return 2
	case "heartbeat_ack":
		return 3
	case "presence":
		return 4
	case "game_joined":
		return 5
	case "game_left":
		return 6
	case "game_updated":
		return 7
	case "resumed":
		return 8
	case "session_expiring":
		return 9
	case "token_expiring":
		return 10
	case "token_refreshed":
		return 11
	case "defensive_decision":
		return 12
	case "offensive_decision":
		return 13
	case "dice_rolled":
		return 14
	}
	return len(serverFrameTypes)
}

// Where a server frame names its type and an error frame its code. Every
// frame starts {"type":"…" (encode puts the type first), or {"dup":true,"type":"…"
// for a remembered reply. The id that may come before an error's data is
// JSON-escaped, so a quote inside it is always preceded by a backslash and
// the first `"data":{"code":"` is the real one.
var (
	dupPrefix  = []byte(`{"dup":true,`)
	typePrefix = []byte(`"type":"`)
	codeMark   = []byte(`"data":{"code":"`)
)

// frameSent counts a frame handed to a client's socket, by its type and, for
// an error, its code, read from the frame's first bytes without decoding it.
// It is called just before the write, so that a client that has read a frame
// finds it counted; a write that fails counts one frame too many, at a
// connection's end.
func (m *metrics) frameSent(frame []byte) {
	if m == nil {
		return
	}
	m.sentBytes.Add(float64(len(frame)))
	typ := frameType(frame)
	m.sent[serverFrame(typ)].Inc()
	if string(typ) == "error" {
		code := quotedAfter(frame, codeMark)
		c := m.errors[string(code)] // a []byte-to-string map key does not allocate
		if c == nil {
			c = m.errors["unknown"]
		}
		c.Inc()
	}
}

// frameType returns the type a server frame starts with, or nil.
func frameType(frame []byte) []byte {
	switch {
	case bytes.HasPrefix(frame, dupPrefix):
		frame = frame[len(dupPrefix):]
	case len(frame) > 0 && frame[0] == '{':
		frame = frame[1:]
	default:
		return nil
	}
	if !bytes.HasPrefix(frame, typePrefix) {
		return nil
	}
	frame = frame[len(typePrefix):]
	end := bytes.IndexByte(frame, '"')
	if end < 0 {
		return nil
	}
	return frame[:end]
}

// quotedAfter returns the bytes after the first mark in b up to the next
// quote, or nil. Type names and error codes hold no escapes.
func quotedAfter(b, mark []byte) []byte {
	i := bytes.Index(b, mark)
	if i < 0 {
		return nil
	}
	b = b[i+len(mark):]
	end := bytes.IndexByte(b, '"')
	if end < 0 {
		return nil
	}
	return b[:end]
}

// typeKey is the key scanType looks for.
var typeKey = []byte(`"type"`)

// scanType finds the kind of a frame that was refused or did not decode, the
// way scanID finds its id: a bounded scan, so that counting a bad frame costs
// no decode. 0 when the type is missing, unknown or not a plain string.
func scanType(msg []byte) cmdKind {
	sc := idScanner{b: msg[:min(len(msg), idScanLimit)]}
	if !sc.expect('{') {
		return 0
	}
	for {
		key, ok := sc.str()
		if !ok || !sc.expect(':') {
			return 0
		}
		if bytes.EqualFold(key, typeKey) {
			raw, ok := sc.str()
			if !ok {
				return 0
			}
			return clientTypes[string(raw[1:len(raw)-1])]
		}
		if !sc.skipValue() || !sc.expect(',') {
			return 0
		}
	}
}
