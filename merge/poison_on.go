//go:build gomerge_poison

package merge

// poisonReleased makes scratch that is given back (blockSlab.release,
// keepCache.release) all ones before another may take it, so that a read of a slice after its release gets
// values no merge makes and a test against the reference fails, even where nothing
// reuses the block in between (a single-threaded test). .ci/run's plain run of
// merge's tests sets it; builds without the tag pay nothing.
const poisonReleased = true
