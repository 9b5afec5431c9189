//go:build race

package merge

// raceBuild: the race detector's instrumentation changes the compiler's register
// allocation, and with it which operand of an SSE addition or product comes first:
// where two NaNs meet, which payload the result keeps.
const raceBuild = true
