package main

import "testing"

func TestParseDecision(t *testing.T) {
	for _, c := range []struct {
		in   string
		want decisionFields
		ok   bool
	}{
		{`{"type":"defensive_decision","id":"7","data":{"game_id":"g","sid":"S","user_id":null,"decision":{"seq":7,"sent_ns":1700000000123456789,"from":12}}}`,
			decisionFields{7, 1700000000123456789, 12}, true},
		{`{"type":"defensive_decision","data":{"game_id":"g","sid":"S","user_id":3,"decision":{"from":0,"seq":1,"sent_ns":5}}}`,
			decisionFields{1, 5, 0}, true},
		{`{"type":"defensive_decision","data":{"decision":{"seq":1,"sent_ns":-5,"from":0}}}`, decisionFields{}, false},
		{`{"type":"presence","data":{}}`, decisionFields{}, false},
	} {
		got, ok := parseDecision([]byte(c.in))
		if ok != c.ok || (ok && got != c.want) {
			t.Errorf("parseDecision(%s) = %+v, %t; want %+v, %t", c.in, got, ok, c.want, c.ok)
		}
	}
}
