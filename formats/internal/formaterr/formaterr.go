// Package formaterr spells the messages of the format readers' FormatError types the
// same way. Each reader keeps its own FormatError and ErrFormat (so errors.Is tells the
// formats apart); only the wording is shared.
package formaterr

import "fmt"

// Message is "FORMAT: tensor "T": MSG (at byte OFF): ERR", leaving out the tensor when
// empty, the offset when negative and the cause when nil.
func Message(format, tensor, msg string, off int64, err error) string {
	s := format + ": "
	if tensor != "" {
		s += fmt.Sprintf("tensor %q: ", tensor)
	}
	s += msg
	if off >= 0 {
		s += fmt.Sprintf(" (at byte %d)", off)
	}
	if err != nil {
		s += ": " + err.Error()
	}
	return s
}
