package merge

import "unsafe"

// scratchWord is the element of the scratch that is poisoned on release: integers
// only, since overwriting a pointer would corrupt the heap.
type scratchWord interface{ ~uint16 | ~uint32 | ~uint64 }

// poison sets every byte of v to 0xFF, so that what is read from it afterwards is
// not what was kept there.
func poison[T scratchWord](v []T) {
	if len(v) == 0 {
		return
	}
	var zero T
	b := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(v))), uintptr(len(v))*unsafe.Sizeof(zero))
	for i := range b {
		b[i] = 0xFF
	}
}
