package gguf

import (
	"fmt"
	"reflect"
	"regexp"
	"strconv"
)

// The metadata keys of a model split across files, as llama.cpp's gguf-split writes
// them: every part holds all three; only the first holds the model's metadata.
const (
	KeySplitNo      = "split.no"            // UINT16, 0-based index of this part
	KeySplitCount   = "split.count"         // UINT16, number of parts
	KeySplitTensors = "split.tensors.count" // INT32, tensors in all parts together
)

// maxSplitCount bounds the parts of a set (llama.cpp's UINT16 and 5-digit names).
const maxSplitCount = 99999

// SplitName is the name of part no (0-based) of count parts of a model whose name
// without the .gguf is prefix: PREFIX-00001-of-00003.gguf, llama.cpp's llama_split_path.
func SplitName(prefix string, no, count int) string {
	return fmt.Sprintf("%s-%05d-of-%05d.gguf", prefix, no+1, count)
}

var splitNameRE = regexp.MustCompile(`^(.*)-([0-9]{5})-of-([0-9]{5})\.gguf$`)

// ParseSplitName reads a part's name: its prefix, 0-based index and the part count.
// ok is false for a name not of that form or with an index out of range.
func ParseSplitName(name string) (prefix string, no, count int, ok bool) {
	m := splitNameRE.FindStringSubmatch(name)
	if m == nil {
		return "", 0, 0, false
	}
	n, _ := strconv.Atoi(m[2])
	c, _ := strconv.Atoi(m[3])
	if n < 1 || n > c {
		return "", 0, 0, false
	}
	return m[1], n - 1, c, true
}

// Split is where a file stands in a split set, from its split.* keys.
type Split struct {
	No, Count, Tensors int
}

// SplitOf returns f's split keys; ok is false if it has none (a whole model). A file
// with some but not all of the keys, or with values out of range, is malformed.
func SplitOf(f *File) (s Split, ok bool, err error) {
	no, hasNo := f.Lookup(KeySplitNo)
	count, hasCount := f.Lookup(KeySplitCount)
	tensors, hasTensors := f.Lookup(KeySplitTensors)
	if !hasNo && !hasCount && !hasTensors {
		return Split{}, false, nil
	}
	if !hasNo || !hasCount || !hasTensors {
		return Split{}, false, &FormatError{Off: -1, Msg: fmt.Sprintf("split keys incomplete: %s, %s and %s go together", KeySplitNo, KeySplitCount, KeySplitTensors)}
	}
	n, ok1 := no.AsUint()
	c, ok2 := count.AsUint()
	t, ok3 := tensors.AsInt()
	switch {
	case !ok1 || !ok2 || !ok3:
		return Split{}, false, &FormatError{Off: -1, Msg: "split keys are not integers"}
	case c < 1 || c > maxSplitCount || n >= c:
		return Split{}, false, &FormatError{Off: -1, Msg: fmt.Sprintf("%s %d of %s %d", KeySplitNo, n, KeySplitCount, c)}
	case t < 0 || t > maxElements:
		return Split{}, false, &FormatError{Off: -1, Msg: fmt.Sprintf("%s %d", KeySplitTensors, t)}
	}
	return Split{No: int(n), Count: int(c), Tensors: int(t)}, true, nil
}

// SplitError says which part of a split set is wrong and why.
type SplitError struct {
	Part int // 0-based index of the part at fault
	Msg  string
}

func (e *SplitError) Error() string { return fmt.Sprintf("part %d: %s", e.Part+1, e.Msg) }

// Is makes a SplitError an ErrFormat: the set is malformed.
func (e *SplitError) Is(target error) bool { return target == ErrFormat }

// CheckSplit checks that parts, in order, form one complete split model: every part
// has the split keys, part i says it is part i of len(parts), all agree on the
// tensor count, which is the number of tensors they hold together, no tensor name
// is in two parts, and a metadata key that two parts both hold (beyond the split
// keys) has the same value in both. It reports the first part at fault.
func CheckSplit(parts []*File) error {
	if len(parts) == 0 {
		return &SplitError{Part: 0, Msg: "no parts"}
	}
	var first Split
	names := map[string]int{}
	total := 0
	for i, f := range parts {
		s, ok, err := SplitOf(f)
		switch {
		case err != nil:
			return &SplitError{Part: i, Msg: err.Error()}
		case !ok:
			return &SplitError{Part: i, Msg: "no split keys: not part of a split model"}
		case s.Count != len(parts):
			return &SplitError{Part: i, Msg: fmt.Sprintf("%s is %d, but the set has %d parts", KeySplitCount, s.Count, len(parts))}
		case s.No != i:
			return &SplitError{Part: i, Msg: fmt.Sprintf("%s is %d, want %d", KeySplitNo, s.No, i)}
		}
		if i == 0 {
			first = s
		} else if s.Tensors != first.Tensors {
			return &SplitError{Part: i, Msg: fmt.Sprintf("%s is %d, part 1 says %d", KeySplitTensors, s.Tensors, first.Tensors)}
		}
		for _, t := range f.Tensors() {
			if j, dup := names[t.Name]; dup {
				return &SplitError{Part: i, Msg: fmt.Sprintf("tensor %q is also in part %d", t.Name, j+1)}
			}
			names[t.Name] = i
		}
		total += len(f.Tensors())
		if i > 0 {
			for _, kv := range f.Metadata() {
				if kv.Key == KeySplitNo {
					continue
				}
				if v, ok := parts[0].Lookup(kv.Key); ok && !reflect.DeepEqual(v, kv.Value) {
					return &SplitError{Part: i, Msg: fmt.Sprintf("metadata %q differs from part 1's", kv.Key)}
				}
			}
		}
	}
	if total != first.Tensors {
		return &SplitError{Part: 0, Msg: fmt.Sprintf("%s is %d, but the parts hold %d tensors", KeySplitTensors, first.Tensors, total)}
	}
	return nil
}
