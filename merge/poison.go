package merge

// scratchWord is the element of the scratch that is poisoned on release: integers
// only, since overwriting a pointer would corrupt the heap.
type scratchWord interface{ ~uint16 | ~uint32 | ~uint64 }

// poison sets every element of v to all ones, so that what is read from it
// afterwards is not what was kept there.
func poison[T scratchWord](v []T) {
	for i := range v {
		v[i] = ^T(0)
	}
}
