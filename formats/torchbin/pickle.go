package torchbin

import (
	"encoding/binary"
	"fmt"
	"math"
	"unicode/utf8"

	"github.com/gomerge/gomerge/formats/dtype"
)

// The unpickler below is written by hand rather than taken from a library because no
// Go pickle library restricts what a pickle may do the way a checkpoint reader must:
// they resolve GLOBALs into callables or generic objects, and accept every opcode
// (INST, OBJ, NEWOBJ, EXT*, ...). This one is a small stack machine that knows only
// the opcodes torch.save's protocol-2 pickles of state dicts use (and a few harmless
// protocol-4 spellings of them), and only the globals that rebuild tensors and plain
// containers. Every REDUCE is evaluated by a Go function written for that one global;
// nothing in the file is ever run.

// Pickle opcodes accepted. Everything else is refused.
const (
	opProto          = 0x80
	opFrame          = 0x95
	opStop           = '.'
	opMark           = '('
	opEmptyDict      = '}'
	opEmptyList      = ']'
	opEmptyTuple     = ')'
	opTuple          = 't'
	opTuple1         = 0x85
	opTuple2         = 0x86
	opTuple3         = 0x87
	opBinUnicode     = 'X'
	opShortBinUni    = 0x8c
	opBinUnicode8    = 0x8d
	opBinPut         = 'q'
	opLongBinPut     = 'r'
	opMemoize        = 0x94
	opBinGet         = 'h'
	opLongBinGet     = 'j'
	opGlobal         = 'c'
	opStackGlobal    = 0x93
	opBinInt         = 'J'
	opBinInt1        = 'K'
	opBinInt2        = 'M'
	opLong1          = 0x8a
	opBinFloat       = 'G'
	opNone           = 'N'
	opNewTrue        = 0x88
	opNewFalse       = 0x89
	opBinPersID      = 'Q'
	opReduce         = 'R'
	opBuild          = 'b'
	opSetItem        = 's'
	opSetItems       = 'u'
	opAppend         = 'a'
	opAppends        = 'e'
	maxPickleStack   = 1 << 20 // deeper than any state dict's pickle needs
	maxPickleMemo    = 1 << 22
	maxPickleItems   = 1 << 22 // dict and list entries in all; ~40 times a large model's tensor count
	maxRank          = 16
	maxStringLen     = 1 << 20 // tensor names and storage keys are short
	maxProtocol      = 4
	maxPickleElement = 1 << 62
)

// Values on the machine's stack. Python objects outside this list cannot be made.
type (
	pyTuple  []any
	pyList   struct{ items []any }
	pyGlobal struct{ module, name string }
	pyDict   struct {
		keys   []any
		values map[any]any
		built  bool // BUILD applied (an OrderedDict's __dict__, such as _metadata)
	}
	storageRef struct {
		key   string
		dtype dtype.DType
		numel int64
	}
	tensorRef struct {
		storage *storageRef
		offset  int64
		shape   []int64
		stride  []int64
	}
)

// Globals a state dict's pickle may name. Storage classes give the element type.
var (
	globalOrderedDict     = pyGlobal{"collections", "OrderedDict"}
	globalRebuildTensorV2 = pyGlobal{"torch._utils", "_rebuild_tensor_v2"}
	globalRebuildParam    = pyGlobal{"torch._utils", "_rebuild_parameter"}
	storageTypes          = map[string]dtype.DType{
		"FloatStorage":    dtype.F32,
		"HalfStorage":     dtype.F16,
		"BFloat16Storage": dtype.BF16,
		"DoubleStorage":   dtype.F64,
		"LongStorage":     dtype.I64,
		"IntStorage":      dtype.I32,
		"ShortStorage":    dtype.I16,
		"CharStorage":     dtype.I8,
		"ByteStorage":     dtype.U8,
		"BoolStorage":     dtype.Bool,
	}
)

func allowedGlobal(g pyGlobal) bool {
	if g == globalOrderedDict || g == globalRebuildTensorV2 || g == globalRebuildParam {
		return true
	}
	_, ok := storageTypes[g.name]
	return ok && g.module == "torch"
}

func (g pyGlobal) String() string { return g.module + "." + g.name }

// unpickler runs a pickle over a fixed byte slice.
type unpickler struct {
	b     []byte
	pos   int
	stack []any
	marks []int
	memo  map[uint32]any
	items int // entries put into dicts and lists so far
}

// pickleError is what the unpickler returns; the caller turns it into a FormatError.
type pickleError struct {
	off int
	msg string
}

func (e *pickleError) Error() string { return fmt.Sprintf("%s (at byte %d of data.pkl)", e.msg, e.off) }

func (u *unpickler) fail(format string, args ...any) error {
	return &pickleError{off: u.pos, msg: fmt.Sprintf(format, args...)}
}

// unpickle runs the pickle p and returns the object it leaves.
func unpickle(p []byte) (any, error) {
	u := &unpickler{b: p, memo: make(map[uint32]any)}
	for {
		if u.pos >= len(u.b) {
			return nil, u.fail("pickle ends without STOP")
		}
		start := u.pos
		op := u.b[u.pos]
		u.pos++
		if op == opStop {
			if len(u.stack) != 1 || len(u.marks) != 0 {
				u.pos = start
				return nil, u.fail("STOP with %d objects on the stack (want 1)", len(u.stack))
			}
			return u.stack[0], nil
		}
		if err := u.step(op); err != nil {
			if pe, ok := err.(*pickleError); ok {
				pe.off = start // where the refused opcode starts
			}
			return nil, err
		}
		if len(u.stack) > maxPickleStack || len(u.marks) > maxPickleStack {
			return nil, u.fail("stack deeper than %d", maxPickleStack)
		}
	}
}

func (u *unpickler) take(n int) ([]byte, error) {
	if n < 0 || n > len(u.b)-u.pos {
		return nil, u.fail("truncated pickle: %d bytes wanted, %d left", n, len(u.b)-u.pos)
	}
	s := u.b[u.pos : u.pos+n]
	u.pos += n
	return s, nil
}

func (u *unpickler) push(v any) { u.stack = append(u.stack, v) }

func (u *unpickler) pop() (any, error) {
	if len(u.stack) == 0 || (len(u.marks) > 0 && len(u.stack) <= u.marks[len(u.marks)-1]) {
		return nil, u.fail("stack underflow")
	}
	v := u.stack[len(u.stack)-1]
	u.stack = u.stack[:len(u.stack)-1]
	return v, nil
}

func (u *unpickler) top() (any, error) {
	if len(u.stack) == 0 || (len(u.marks) > 0 && len(u.stack) <= u.marks[len(u.marks)-1]) {
		return nil, u.fail("stack underflow")
	}
	return u.stack[len(u.stack)-1], nil
}

// popMark pops everything above the last MARK.
func (u *unpickler) popMark() ([]any, error) {
	if len(u.marks) == 0 {
		return nil, u.fail("no MARK on the stack")
	}
	m := u.marks[len(u.marks)-1]
	u.marks = u.marks[:len(u.marks)-1]
	items := append([]any(nil), u.stack[m:]...)
	u.stack = u.stack[:m]
	return items, nil
}

func (u *unpickler) uint(n int) (uint64, error) {
	b, err := u.take(n)
	if err != nil {
		return 0, err
	}
	var v uint64
	for i := n - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v, nil
}

func (u *unpickler) str(n uint64) error {
	if n > maxStringLen {
		return u.fail("string of %d bytes exceeds the limit of %d", n, maxStringLen)
	}
	b, err := u.take(int(n))
	if err != nil {
		return err
	}
	if !utf8.Valid(b) {
		return u.fail("string is not UTF-8")
	}
	u.push(string(b))
	return nil
}

func (u *unpickler) put(i uint64) error {
	if len(u.memo) >= maxPickleMemo {
		return u.fail("more than %d memo entries", maxPickleMemo)
	}
	v, err := u.top()
	if err != nil {
		return err
	}
	u.memo[uint32(i)] = v
	return nil
}

func (u *unpickler) get(i uint64) error {
	v, ok := u.memo[uint32(i)]
	if !ok {
		return u.fail("memo entry %d was never stored", i)
	}
	u.push(v)
	return nil
}

func (u *unpickler) step(op byte) error {
	switch op {
	case opProto:
		v, err := u.uint(1)
		if err != nil {
			return err
		}
		if v > maxProtocol {
			return u.fail("pickle protocol %d is not supported", v)
		}
	case opFrame:
		_, err := u.uint(8) // a hint for buffered readers; the pickle is in memory
		return err
	case opMark:
		u.marks = append(u.marks, len(u.stack))
	case opEmptyDict:
		u.push(&pyDict{values: map[any]any{}})
	case opEmptyList:
		u.push(&pyList{})
	case opEmptyTuple:
		u.push(pyTuple{})
	case opTuple:
		items, err := u.popMark()
		if err != nil {
			return err
		}
		u.push(pyTuple(items))
	case opTuple1, opTuple2, opTuple3:
		n := int(op-opTuple1) + 1
		items := make(pyTuple, n)
		for i := n - 1; i >= 0; i-- {
			v, err := u.pop()
			if err != nil {
				return err
			}
			items[i] = v
		}
		u.push(items)
	case opBinUnicode:
		n, err := u.uint(4)
		if err != nil {
			return err
		}
		return u.str(n)
	case opShortBinUni:
		n, err := u.uint(1)
		if err != nil {
			return err
		}
		return u.str(n)
	case opBinUnicode8:
		n, err := u.uint(8)
		if err != nil {
			return err
		}
		return u.str(n)
	case opBinPut, opLongBinPut:
		i, err := u.uint(operandSize(op, opBinPut))
		if err != nil {
			return err
		}
		return u.put(i)
	case opMemoize:
		return u.put(uint64(len(u.memo)))
	case opBinGet, opLongBinGet:
		i, err := u.uint(operandSize(op, opBinGet))
		if err != nil {
			return err
		}
		return u.get(i)
	case opGlobal:
		mod, err := u.line()
		if err != nil {
			return err
		}
		name, err := u.line()
		if err != nil {
			return err
		}
		return u.global(pyGlobal{mod, name})
	case opStackGlobal:
		name, err := u.pop()
		if err != nil {
			return err
		}
		mod, err := u.pop()
		if err != nil {
			return err
		}
		ms, ok1 := mod.(string)
		ns, ok2 := name.(string)
		if !ok1 || !ok2 {
			return u.fail("STACK_GLOBAL of non-strings")
		}
		return u.global(pyGlobal{ms, ns})
	case opBinInt:
		v, err := u.uint(4)
		if err != nil {
			return err
		}
		u.push(int64(int32(uint32(v))))
	case opBinInt1:
		v, err := u.uint(1)
		if err != nil {
			return err
		}
		u.push(int64(v))
	case opBinInt2:
		v, err := u.uint(2)
		if err != nil {
			return err
		}
		u.push(int64(v))
	case opLong1:
		n, err := u.uint(1)
		if err != nil {
			return err
		}
		if n > 8 {
			return u.fail("LONG1 of %d bytes does not fit 64 bits", n)
		}
		v, err := u.uint(int(n))
		if err != nil {
			return err
		}
		if n > 0 && n < 8 && v&(1<<(8*n-1)) != 0 { // two's complement, sign-extend
			v |= ^uint64(0) << (8 * n)
		}
		u.push(int64(v))
	case opBinFloat:
		b, err := u.take(8)
		if err != nil {
			return err
		}
		u.push(math.Float64frombits(binary.BigEndian.Uint64(b)))
	case opNone:
		u.push(nil)
	case opNewTrue:
		u.push(true)
	case opNewFalse:
		u.push(false)
	case opBinPersID:
		pid, err := u.pop()
		if err != nil {
			return err
		}
		s, err := u.persistentLoad(pid)
		if err != nil {
			return err
		}
		u.push(s)
	case opReduce:
		args, err := u.pop()
		if err != nil {
			return err
		}
		fn, err := u.pop()
		if err != nil {
			return err
		}
		v, err := u.reduce(fn, args)
		if err != nil {
			return err
		}
		u.push(v)
	case opBuild:
		state, err := u.pop()
		if err != nil {
			return err
		}
		obj, err := u.top()
		if err != nil {
			return err
		}
		// Only an OrderedDict's attribute dict (nn.Module.state_dict() stores
		// _metadata there) is accepted; it is plain data and is dropped.
		d, ok := obj.(*pyDict)
		if _, plain := state.(*pyDict); !ok || !plain || d.built {
			return u.fail("BUILD of %s with %s is not allowed (only an OrderedDict's attribute dict)", typeName(obj), typeName(state))
		}
		d.built = true
	case opSetItem:
		v, err := u.pop()
		if err != nil {
			return err
		}
		k, err := u.pop()
		if err != nil {
			return err
		}
		return u.setItems([]any{k, v})
	case opSetItems:
		items, err := u.popMark()
		if err != nil {
			return err
		}
		return u.setItems(items)
	case opAppend:
		v, err := u.pop()
		if err != nil {
			return err
		}
		return u.appendItems([]any{v})
	case opAppends:
		items, err := u.popMark()
		if err != nil {
			return err
		}
		return u.appendItems(items)
	default:
		return u.fail("pickle opcode 0x%02x is not allowed in a state dict (only plain containers and tensors are read)", op)
	}
	return nil
}

// operandSize is the memo index's size: 1 byte for the short opcode, 4 for LONG_.
func operandSize(op, short byte) int {
	if op == short {
		return 1
	}
	return 4
}

// line reads a GLOBAL operand: text up to a newline.
func (u *unpickler) line() (string, error) {
	for i := u.pos; i < len(u.b) && i-u.pos <= 256; i++ {
		if u.b[i] == '\n' {
			s := string(u.b[u.pos:i])
			u.pos = i + 1
			if !utf8.ValidString(s) {
				return "", u.fail("GLOBAL name is not UTF-8")
			}
			return s, nil
		}
	}
	return "", u.fail("GLOBAL name without a newline within 256 bytes")
}

func (u *unpickler) global(g pyGlobal) error {
	if !allowedGlobal(g) {
		return u.fail("global %q is not allowed (a state dict names only torch's tensor rebuilders, storage types and collections.OrderedDict); nothing in the file was run", g.String())
	}
	u.push(g)
	return nil
}

func (u *unpickler) setItems(items []any) error {
	if len(items)%2 != 0 {
		return u.fail("SETITEMS with an odd number of items")
	}
	d, err := u.top()
	if err != nil {
		return err
	}
	dict, ok := d.(*pyDict)
	if !ok {
		return u.fail("SETITEM on %s, not a dict", typeName(d))
	}
	if u.items += len(items) / 2; u.items > maxPickleItems {
		return u.fail("more than %d dict and list entries", maxPickleItems)
	}
	for i := 0; i < len(items); i += 2 {
		k := items[i]
		switch k.(type) {
		case string, int64, bool:
		default:
			return u.fail("dict key of type %s is not allowed", typeName(k))
		}
		if _, dup := dict.values[k]; !dup {
			dict.keys = append(dict.keys, k)
		}
		dict.values[k] = items[i+1]
	}
	return nil
}

func (u *unpickler) appendItems(items []any) error {
	l, err := u.top()
	if err != nil {
		return err
	}
	list, ok := l.(*pyList)
	if !ok {
		return u.fail("APPEND to %s, not a list", typeName(l))
	}
	if u.items += len(items); u.items > maxPickleItems {
		return u.fail("more than %d dict and list entries", maxPickleItems)
	}
	list.items = append(list.items, items...)
	return nil
}

// persistentLoad resolves torch's persistent id for a storage:
// ('storage', <StorageType>, key, location, numel).
func (u *unpickler) persistentLoad(pid any) (*storageRef, error) {
	t, ok := pid.(pyTuple)
	if !ok || len(t) != 5 || t[0] != "storage" {
		return nil, u.fail("persistent id %s is not a storage reference", typeName(pid))
	}
	g, ok := t[1].(pyGlobal)
	dt, known := storageTypes[g.name]
	if !ok || !known || g.module != "torch" {
		return nil, u.fail("persistent id names %s, not a torch storage type", typeName(t[1]))
	}
	key, ok1 := t[2].(string)
	_, ok2 := t[3].(string)
	numel, ok3 := t[4].(int64)
	if !ok1 || !ok2 || !ok3 {
		return nil, u.fail("storage reference is not (key, location, size)")
	}
	if key == "" || len(key) > 64 {
		return nil, u.fail("storage key %q is not a valid key", key)
	}
	if numel < 0 || numel > maxPickleElement/8 {
		return nil, u.fail("storage %q: size %d elements is out of range", key, numel)
	}
	return &storageRef{key: key, dtype: dt, numel: numel}, nil
}

// reduce applies one of the allowed callables to its arguments.
func (u *unpickler) reduce(fn, args any) (any, error) {
	g, ok := fn.(pyGlobal)
	a, isTuple := args.(pyTuple)
	if !ok || !isTuple {
		return nil, u.fail("REDUCE of %s is not allowed", typeName(fn))
	}
	switch g {
	case globalOrderedDict:
		if len(a) != 0 {
			return nil, u.fail("collections.OrderedDict called with %d arguments (want none)", len(a))
		}
		return &pyDict{values: map[any]any{}}, nil
	case globalRebuildTensorV2:
		return u.rebuildTensor(a)
	case globalRebuildParam:
		// (data, requires_grad, backward_hooks): the parameter is its tensor.
		if len(a) != 3 {
			return nil, u.fail("_rebuild_parameter called with %d arguments (want 3)", len(a))
		}
		t, ok := a[0].(*tensorRef)
		if _, b := a[1].(bool); !ok || !b || !emptyDict(a[2]) {
			return nil, u.fail("_rebuild_parameter arguments are not (tensor, bool, empty hooks)")
		}
		return t, nil
	}
	return nil, u.fail("REDUCE of %s is not allowed", g.String())
}

// rebuildTensor checks _rebuild_tensor_v2(storage, storage_offset, size, stride,
// requires_grad, backward_hooks[, metadata]) and records the view. Its bounds
// against the storage are checked once storages are known.
func (u *unpickler) rebuildTensor(a pyTuple) (*tensorRef, error) {
	if len(a) != 6 && len(a) != 7 {
		return nil, u.fail("_rebuild_tensor_v2 called with %d arguments (want 6 or 7)", len(a))
	}
	s, ok := a[0].(*storageRef)
	if !ok {
		return nil, u.fail("_rebuild_tensor_v2 of %s, not a storage", typeName(a[0]))
	}
	off, ok := a[1].(int64)
	if !ok || off < 0 {
		return nil, u.fail("tensor storage offset is not a non-negative integer")
	}
	shape, err := u.ints(a[2], "size")
	if err != nil {
		return nil, err
	}
	stride, err := u.ints(a[3], "stride")
	if err != nil {
		return nil, err
	}
	if len(shape) != len(stride) {
		return nil, u.fail("tensor has %d sizes and %d strides", len(shape), len(stride))
	}
	if _, ok := a[4].(bool); !ok || !emptyDict(a[5]) {
		return nil, u.fail("_rebuild_tensor_v2 requires_grad/backward_hooks are not (bool, empty OrderedDict)")
	}
	if len(a) == 7 && a[6] != nil && !emptyDict(a[6]) {
		return nil, u.fail("_rebuild_tensor_v2 metadata is not empty")
	}
	return &tensorRef{storage: s, offset: off, shape: shape, stride: stride}, nil
}

func (u *unpickler) ints(v any, what string) ([]int64, error) {
	t, ok := v.(pyTuple)
	if !ok {
		return nil, u.fail("tensor %s is %s, not a tuple", what, typeName(v))
	}
	if len(t) > maxRank {
		return nil, u.fail("tensor rank %d exceeds the limit of %d", len(t), maxRank)
	}
	out := make([]int64, len(t))
	for i, x := range t {
		n, ok := x.(int64)
		if !ok || n < 0 {
			return nil, u.fail("tensor %s[%d] is not a non-negative integer", what, i)
		}
		out[i] = n
	}
	return out, nil
}

func emptyDict(v any) bool {
	d, ok := v.(*pyDict)
	return ok && len(d.keys) == 0
}

// typeName names a stack value in messages.
func typeName(v any) string {
	switch x := v.(type) {
	case nil:
		return "None"
	case pyTuple:
		return "tuple"
	case *pyList:
		return "list"
	case pyGlobal:
		return x.String()
	case *pyDict:
		return "dict"
	case *storageRef:
		return "storage"
	case *tensorRef:
		return "tensor"
	case string:
		return "str"
	case int64:
		return "int"
	case float64:
		return "float"
	case bool:
		return "bool"
	}
	return fmt.Sprintf("%T", v)
}
