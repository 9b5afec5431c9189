//go:build nogpu || !linux || !(amd64 || arm64)

package gputest

const bindingBuilt = false
