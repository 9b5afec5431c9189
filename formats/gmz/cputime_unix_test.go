//go:build unix

package gmz

import (
	"syscall"
	"time"
)

// cpuTime is the process's user and system CPU time so far: on a loaded machine,
// throughput per CPU-second says more than wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
