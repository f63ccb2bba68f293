package main

// Finding a refused frame's id without decoding it, reading a bounded prefix,
// so that the rate limiter's reply can echo the id at a cost that does not
// grow with the frame.

import (
	"bytes"
	"encoding/json"
	"strings"
	"unicode/utf8"
)

// idScanLimit bounds the bytes scanID reads. A refused message must cost the
// server next to nothing, yet its reply should still carry its id; a client
// that writes its frames as type, id, data (as JSON.stringify of an object
// literal in that order does) has its id within the first few dozen bytes.
const idScanLimit = 4096

// scanID finds a frame's top-level "id" without decoding the frame, reading at
// most idScanLimit bytes, and returns it when it is a string the contract
// allows as an id; otherwise "". It serves the rate limiter, which must echo a
// refused message's id at a cost that does not grow with the message.
func scanID(msg []byte) string {
	sc := idScanner{b: msg[:min(len(msg), idScanLimit)]}
	if !sc.expect('{') {
		return ""
	}
	for {
		key, ok := sc.str()
		if !ok || !sc.expect(':') {
			return ""
		}
		if bytes.EqualFold(key, []byte(`"id"`)) { // encoding/json matches names case-insensitively too
			raw, ok := sc.str()
			if !ok {
				return ""
			}
			var id string
			if json.Unmarshal(raw, &id) != nil || utf8.RuneCountInString(id) > maxIDLen {
				return ""
			}
			return id
		}
		if !sc.skipValue() || !sc.expect(',') {
			return ""
		}
	}
}

// idScanner walks the start of a JSON object token by token. Every method
// reports false when the input ends or is not what it expects, and the scan
// is abandoned: the frame is refused either way, so any doubt means no id.
type idScanner struct {
	b []byte
	i int
}

// space skips JSON white space.
func (s *idScanner) space() {
	for s.i < len(s.b) && (s.b[s.i] == ' ' || s.b[s.i] == '\t' || s.b[s.i] == '\r' || s.b[s.i] == '\n') {
		s.i++
	}
}

// expect consumes the byte c after white space.
func (s *idScanner) expect(c byte) bool {
	s.space()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// str consumes a JSON string and returns it with its quotes.
func (s *idScanner) str() ([]byte, bool) {
	s.space()
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, false
	}
	start := s.i
	for s.i++; s.i < len(s.b); s.i++ {
		switch s.b[s.i] {
		case '\\':
			s.i++
		case '"':
			s.i++
			return s.b[start:s.i], true
		}
	}
	return nil, false
}

// skipValue consumes one JSON value of any kind.
func (s *idScanner) skipValue() bool {
	s.space()
	if s.i >= len(s.b) {
		return false
	}
	switch s.b[s.i] {
	case '"':
		_, ok := s.str()
		return ok
	case '{', '[':
		depth := 0
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case '"':
				if _, ok := s.str(); !ok {
					return false
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					s.i++
					return true
				}
			}
			s.i++
		}
		return false
	default: // a number, true, false or null
		start := s.i
		for s.i < len(s.b) && strings.IndexByte(",}] \t\r\n", s.b[s.i]) < 0 {
			s.i++
		}
		return s.i > start && s.i < len(s.b)
	}
}
