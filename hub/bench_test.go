package hub_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/gomerge/gomerge/hub"
	"github.com/gomerge/gomerge/hub/hubtest"
)

// BenchmarkDownload fetches a model of 64 MiB in 1 or 4 shards from the loopback fake
// Hub into an empty cache: the client's own cost (HTTP, writing, sha256 verification,
// fsync, linking), with no network in the way.
func BenchmarkDownload(b *testing.B) {
	const total = 64 << 20
	for _, shards := range []int{1, 4} {
		b.Run(fmt.Sprintf("shards=%d/size=64MiB", shards), func(b *testing.B) {
			s := hubtest.New(b)
			files := map[string][]byte{"config.json": []byte("{}")}
			wm := ""
			for i := range shards {
				name := fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, shards)
				files[name] = randBytes(total/shards, uint64(i))
				if wm != "" {
					wm += ","
				}
				wm += fmt.Sprintf("%q:%q", fmt.Sprint("t", i), name)
			}
			files["model.safetensors.index.json"] = []byte(`{"weight_map":{` + wm + `}}`)
			s.AddRepo("org/m", files)
			b.SetBytes(total)
			b.ReportAllocs()
			for b.Loop() {
				cache := b.TempDir()
				dir, err := (&hub.Client{Endpoint: s.Endpoint(), CacheDir: cache}).Resolve(context.Background(), "org/m")
				if err != nil {
					b.Fatal(err)
				}
				fi, err := os.Stat(filepath.Join(dir, fmt.Sprintf("model-%05d-of-%05d.safetensors", shards, shards)))
				if err != nil || fi.Size() != int64(total/shards) {
					b.Fatalf("last shard: %v", err)
				}
				b.StopTimer()
				os.RemoveAll(cache)
				b.StartTimer()
			}
		})
	}
}
