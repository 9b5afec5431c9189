package main

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// writebackEvery is how often the floor asks the kernel to start writing the output's
// dirty pages: gomerge's interval (internal/atomicout), kept here rather than
// imported so that the floor stays independent of the code it measures.
const writebackEvery = 100 * time.Millisecond

// startWriteback asks the kernel every writebackEvery to start writing f's dirty
// pages (sync_file_range with SYNC_FILE_RANGE_WRITE: it waits for nothing), as
// gomerge does while it merges, so that the final fsync has little left to write.
// It returns the function that stops it.
func startWriteback(f *os.File) func() {
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(writebackEvery)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE) // advice only
			}
		}
	}()
	return func() {
		close(stop)
		<-done
	}
}
