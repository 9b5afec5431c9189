package merge

import (
	"path/filepath"
	"testing"
)

// BenchmarkRunGeometric is a whole merge, files to file, by each method of
// geometry.go's family, beside task_arithmetic (one elementwise pass) for scale:
// BF16, ~12.6M parameters, a base and two models (nearswap and arcee_fusion: one).
// Bytes are input bytes read, passes included.
func BenchmarkRunGeometric(b *testing.B) {
	basePath, base, models := benchMethodFixture(b, 2)
	p := Params{Lambda: 1, T: 1e-3, Epsilon: 1e-5, Normalize: SwitchOn, Geo: GeoParams{MaxIter: 10, Tol: 1e-5, R: 0.1, Alpha: 0.2}}
	for _, tc := range []struct {
		name, method string
		base         bool
		n            int
		geo          func(*GeoParams)
	}{
		{"task_arithmetic", "task_arithmetic", true, 2, nil},
		{"nuslerp", "nuslerp", true, 2, nil},
		{"nuslerp_rows", "nuslerp", true, 2, func(g *GeoParams) { g.Flatten = SwitchOff }},
		{"nuslerp_columns", "nuslerp", true, 2, func(g *GeoParams) { g.Flatten, g.RowWise = SwitchOff, SwitchOn }},
		{"multislerp", "multislerp", true, 2, nil},
		{"karcher", "karcher", false, 2, nil},
		{"nearswap", "nearswap", true, 1, nil},
		{"arcee_fusion", "arcee_fusion", true, 1, nil},
		{"ram", "ram", true, 2, nil},
		{"ramplus_tl", "ramplus_tl", true, 2, nil},
	} {
		b.Run(tc.name, func(b *testing.B) {
			q := p
			if tc.geo != nil {
				tc.geo(&q.Geo)
			}
			job := MethodJob{Method: tc.method, Models: models[:tc.n], Params: q, Job: Job{Out: filepath.Join(b.TempDir(), tc.name+".out.safetensors")}}
			if tc.base {
				job.Base = basePath
			}
			benchRunMethod(b, job, len(base))
		})
	}
}
