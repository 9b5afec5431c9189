//go:build !race

package merge

// raceBuild: see race_on_test.go.
const raceBuild = false
