//go:build !unix

package gmz

import "time"

func cpuTime() time.Duration { return 0 }
