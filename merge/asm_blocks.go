package merge

// byBlocksOf8 runs a kernel that stops at the blocks of eight it cannot take: asm(j)
// processes from element j on and returns how many it took (a multiple of 8, up to the
// first block it leaves), goRange(lo, hi) does elements [lo, hi) the plain way. With
// asm false (no assembly on this CPU or build) goRange does all n.
func byBlocksOf8(n int, asm bool, kernel func(j int) int, goRange func(lo, hi int)) {
	j := 0
	if asm {
		for n-j >= 8 {
			j += kernel(j)
			if n-j < 8 {
				break
			}
			goRange(j, j+8) // the block it stopped at
			j += 8
		}
	}
	goRange(j, n)
}
