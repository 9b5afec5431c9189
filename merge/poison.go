package merge

import "unsafe"

// poison sets every byte of v to 0xFF, so that what is read from it afterwards is
// not what was kept there.
func poison[T any](v []T) {
	if len(v) == 0 {
		return
	}
	var zero T
	b := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(v))), uintptr(len(v))*unsafe.Sizeof(zero))
	for i := range b {
		b[i] = 0xFF
	}
}
