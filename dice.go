package main

// roll_dice's dice: the default set, the bounded decode of the array (the one
// list a client frame may make huge) and the contract's rule on their number
// and sides.

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
)

// defaultDice is what roll_dice rolls when the client names no dice. Decoded
// commands share it, so nothing may write to a command's dice.
var defaultDice = []int{6, 6, 6, 20}

// diceField decodes a dice array, refusing one longer than the contract
// allows at its eleventh element, without decoding the rest: a roll_dice may
// be as large as MAX_MESSAGE_BYTES, and half a million dice cost 172 ms to
// decode into a []int. Its elements must be JSON integers, as for a []int.
// A malformed array is kept as err rather than returned, so that the frame's
// other fields are still decoded in the same pass and the error can be
// reported without decoding the frame again.
type diceField struct {
	dice []int // nil when absent or null
	err  error // errTooManyDice or errNotDice
}

// errTooManyDice is what a dice array longer than maxDice decodes to.
var errTooManyDice = errors.New("too many dice")

// errNotDice is what any other malformed dice array decodes to.
var errNotDice = errors.New("dice must be an array of integers")

// UnmarshalJSON reads raw, which encoding/json has already checked is valid JSON.
func (d *diceField) UnmarshalJSON(raw []byte) error {
	d.dice, d.err = parseDice(raw)
	return nil
}

// parseDice reads a JSON array of at most maxDice integers.
func parseDice(raw []byte) ([]int, error) {
	if string(raw) == "null" {
		return nil, nil
	}
	if len(raw) < 2 || raw[0] != '[' {
		return nil, errNotDice
	}
	dice := make([]int, 0, maxDice)
	rest := bytes.TrimLeft(raw[1:], " \t\r\n")
	if len(rest) > 0 && rest[0] == ']' {
		return dice, nil
	}
	for {
		if len(dice) == maxDice {
			return nil, errTooManyDice
		}
		end := 0
		for end < len(rest) && (rest[end] == '-' || rest[end] >= '0' && rest[end] <= '9') {
			end++
		}
		n, err := strconv.Atoi(string(rest[:end]))
		if err != nil {
			return nil, errNotDice // a fraction, an exponent, a string, an object, or out of range
		}
		dice = append(dice, n)
		rest = bytes.TrimLeft(rest[end:], " \t\r\n")
		if len(rest) == 0 {
			return nil, errNotDice
		}
		switch rest[0] {
		case ']':
			return dice, nil
		case ',':
			rest = bytes.TrimLeft(rest[1:], " \t\r\n")
		default:
			return nil, errNotDice
		}
	}
}

// diceProblem is the message for a dice array parseDice refused.
func diceProblem(err error) string {
	if errors.Is(err, errTooManyDice) {
		return fmt.Sprintf("data.dice must hold %d to %d dice", minDice, maxDice)
	}
	return "data.dice must be an array of integers"
}

// checkDice returns what is wrong with a set of dice, or "" when it is fine.
func checkDice(dice []int) string {
	if len(dice) < minDice || len(dice) > maxDice {
		return fmt.Sprintf("data.dice must hold %d to %d dice", minDice, maxDice)
	}
	for _, sides := range dice {
		if sides < minSides || sides > maxSides {
			return fmt.Sprintf("each die must have %d to %d sides", minSides, maxSides)
		}
	}
	return ""
}
