//go:build !gomerge_poison

package merge

// poisonReleased is set by the gomerge_poison build tag (poison_on.go).
const poisonReleased = false
