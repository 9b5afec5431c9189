package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/gpu/gputest"
)

// deviceReport is the part of --json the device flags decide.
type deviceReport struct {
	Device        string `json:"device"`
	TensorsMerged int    `json:"tensors_merged"`
	GPU           *struct {
		Name            string          `json:"name"`
		Tensors         int             `json:"tensors"`
		Methods         []string        `json:"methods"`
		BytesToDevice   int64           `json:"bytes_to_device"`
		BytesFromDevice int64           `json:"bytes_from_device"`
		Calibration     json.RawMessage `json:"calibration"`
		Unavailable     string          `json:"unavailable"`
	} `json:"gpu"`
}

func parseDeviceReport(t *testing.T, stdout string) deviceReport {
	t.Helper()
	var r deviceReport
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatalf("%v:\n%s", err, stdout)
	}
	return r
}

// TestDeviceCUDA runs merges and distance with --device cuda on the fake driver and
// checks the report's device fields and that the output is the CPU's, byte for byte.
func TestDeviceCUDA(t *testing.T) {
	lib := gputest.Library(t)
	f := newCLIFixture(t)
	cuda := []string{"--device", "cuda", "--gpu-library", lib, "--gpu-min-elems", "1", "--json"}
	cases := []struct {
		name   string
		args   []string
		method string
	}{
		{"ties", []string{"ties", "--base", f.anchor, f.current + ":weight=0.7", f.folder + ":weight=0.5", "--density", "0.3"}, "ties"},
		{"dare", []string{"dare", "--ties", "--base", f.anchor, f.current, f.folder + ":density=0.5", "--seed", "3"}, "dare_ties"},
		{"fisher", []string{"fisher", f.current + ":fisher=" + f.fisher, f.anchor + ":fisher=" + f.fisher}, "fisher"},
		{"sfa-fisher", []string{"sfa", "--anchor", f.anchor, "--current", f.current, "--fisher", f.fisher, "--eta", "100"}, "sfa"},
		{"sfa", []string{"sfa", "--anchor", f.anchor, "--current", f.current}, "sfa"},
		{"linear", []string{"linear", f.anchor, f.current}, "linear"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cpuOut := filepath.Join(f.dir, c.name+".cpu.safetensors")
			gpuOut := filepath.Join(f.dir, c.name+".gpu.safetensors")
			code, stdout, stderr := gomerge(t, append(append([]string{}, c.args...), "--out", cpuOut, "--device", "cpu", "--json")...)
			if code != 0 {
				t.Fatalf("--device cpu: exit %d: %s", code, stderr)
			}
			if r := parseDeviceReport(t, stdout); r.Device != "cpu" || r.GPU != nil {
				t.Errorf("--device cpu: device %q, gpu %+v", r.Device, r.GPU)
			}
			code, stdout, stderr = gomerge(t, append(append(append([]string{}, c.args...), "--out", gpuOut), cuda...)...)
			if code != 0 {
				t.Fatalf("--device cuda: exit %d: %s", code, stderr)
			}
			r := parseDeviceReport(t, stdout)
			if r.Device != "cuda" || r.GPU == nil || r.GPU.Name == "" || r.GPU.Tensors != r.TensorsMerged ||
				len(r.GPU.Methods) != 1 || r.GPU.Methods[0] != c.method || r.GPU.BytesToDevice == 0 || r.GPU.BytesFromDevice == 0 {
				t.Errorf("--device cuda report:\n%s", stdout)
			}
			want, err := os.ReadFile(cpuOut)
			if err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(gpuOut)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Error("--device cuda wrote other bytes than --device cpu")
			}
		})
	}
	t.Run("distance", func(t *testing.T) {
		args := []string{"distance", f.anchor, f.current, "--base", f.folder, "--per-tensor"}
		_, want, _ := gomerge(t, append(args, "--device", "cpu", "--json")...)
		code, stdout, stderr := gomerge(t, append(args, cuda...)...)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		r := parseDeviceReport(t, stdout)
		if r.Device != "cuda" || r.GPU == nil || r.GPU.Tensors == 0 {
			t.Errorf("distance report:\n%s", stdout)
		}
		// Everything but the device fields is the CPU's.
		var g, w map[string]any
		json.Unmarshal([]byte(stdout), &g)
		json.Unmarshal([]byte(want), &w)
		for _, m := range []map[string]any{g, w} {
			delete(m, "device")
			delete(m, "gpu")
		}
		gj, _ := json.Marshal(g)
		wj, _ := json.Marshal(w)
		if !bytes.Equal(gj, wj) {
			t.Errorf("distance on the GPU:\n%s\nwant\n%s", gj, wj)
		}
	})
	t.Run("calibration", func(t *testing.T) {
		// --device auto: the calibration of the method's kernel decides,
		// and the report shows it; --device cuda does not measure.
		for _, dev := range []string{"auto", "cuda"} {
			code, stdout, stderr := gomerge(t, "ties", "--base", f.anchor, f.current, f.folder, "--out", filepath.Join(f.dir, "cal.safetensors"),
				"--device", dev, "--gpu-library", lib, "--gpu-min-elems", "1", "--gpu-fixed-cost", "-1", "--json")
			if code != 0 {
				t.Fatalf("--device %s: exit %d: %s", dev, code, stderr)
			}
			r := parseDeviceReport(t, stdout)
			var cal struct {
				GPUWins *bool `json:"gpu_wins"`
			}
			if r.GPU != nil && len(r.GPU.Calibration) > 0 {
				if err := json.Unmarshal(r.GPU.Calibration, &cal); err != nil {
					t.Fatal(err)
				}
			}
			switch {
			case r.GPU == nil:
				t.Errorf("--device %s: no gpu report:\n%s", dev, stdout)
			case dev == "cuda" && (cal.GPUWins != nil || r.Device != "cuda"):
				t.Errorf("--device cuda measured, or did not use the GPU:\n%s", stdout)
			case dev == "auto" && (cal.GPUWins == nil || r.Device != map[bool]string{true: "cuda", false: "cpu"}[*cal.GPUWins]):
				t.Errorf("--device auto: placement not as measured:\n%s", stdout)
			}
		}
	})
}

// TestDeviceUnavailable: no driver. --device cuda is an error (exit 1) wrapping
// gpu.ErrUnavailable, with the JSON error object; --device auto merges on the CPU and
// says why, when it looked for a device at all.
func TestDeviceUnavailable(t *testing.T) {
	f := newCLIFixture(t)
	missing := filepath.Join(f.dir, "no-such-libcuda.so.1")
	out := filepath.Join(f.dir, "merged.safetensors")
	base := []string{"ties", "--base", f.anchor, f.current, "--out", out, "--gpu-library", missing, "--json"}

	code, stdout, stderr := gomerge(t, append(base, "--device", "cuda")...)
	if code != exitOther || !strings.Contains(stderr, "--device cuda: gpu: no usable CUDA device") || !strings.Contains(stdout, `"exit_status": 1`) {
		t.Errorf("--device cuda without a driver: exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("--device cuda without a driver wrote %s", out)
	}

	// --device auto tries the driver only when a tensor could go to the device:
	// here with --gpu-min-elems 1, and --gpu-fixed-cost -1 so that so small a merge
	// still looks for it; then it says why none did.
	code, stdout, stderr = gomerge(t, append(base, "--device", "auto", "--gpu-min-elems", "1", "--gpu-fixed-cost", "-1")...)
	if code != 0 {
		t.Fatalf("--device auto without a driver: exit %d: %s", code, stderr)
	}
	r := parseDeviceReport(t, stdout)
	if r.Device != "cpu" || r.GPU == nil || !strings.Contains(r.GPU.Unavailable, "no usable CUDA device") || r.GPU.Tensors != 0 {
		t.Errorf("--device auto without a driver:\n%s", stdout)
	}
	// With a fixed cost no merge this small can pay for (a day, so that no
	// machine's speed decides), it is the CPU's without opening the device: with
	// a driver that loads (the fake one), the report has the CPU's calibration,
	// the device skipped; without one, nothing was timed (gpu.DriverLoads said
	// so first), and the report says why.
	small := []string{"--device", "auto", "--gpu-min-elems", "1", "--gpu-fixed-cost", "86400"}
	code, stdout, stderr = gomerge(t, append(append(base, small...), "--gpu-library", gputest.Library(t))...)
	if code != 0 {
		t.Fatalf("--device auto, a small merge: exit %d: %s", code, stderr)
	}
	if r := parseDeviceReport(t, stdout); r.Device != "cpu" || r.GPU == nil || r.GPU.Unavailable != "" || !strings.Contains(string(r.GPU.Calibration), `"device_skipped": true`) {
		t.Errorf("--device auto, a small merge:\n%s", stdout)
	}
	code, stdout, stderr = gomerge(t, append(base, small...)...)
	if code != 0 {
		t.Fatalf("--device auto, a small merge without a driver: exit %d: %s", code, stderr)
	}
	if r := parseDeviceReport(t, stdout); r.Device != "cpu" || r.GPU == nil || !strings.Contains(r.GPU.Unavailable, "no usable CUDA device") || len(r.GPU.Calibration) != 0 {
		t.Errorf("--device auto, a small merge without a driver timed the CPU:\n%s", stdout)
	}
	// Nothing the device could take (the fixture's tensors are under the default
	// threshold; slerp has no device kernel): the driver is not looked for at all.
	for _, args := range [][]string{base, {"slerp", "--base", f.anchor, f.current, "--out", out, "--gpu-library", missing, "--json", "--gpu-min-elems", "1"}} {
		code, stdout, stderr = gomerge(t, append(args, "--device", "auto")...)
		if code != 0 {
			t.Fatalf("%s --device auto: exit %d: %s", args[0], code, stderr)
		}
		if r := parseDeviceReport(t, stdout); r.Device != "cpu" || r.GPU != nil {
			t.Errorf("%s --device auto opened the device for nothing:\n%s", args[0], stdout)
		}
	}

	for _, bad := range [][]string{{"--device", "tpu"}, {"--gpu-min-elems", "-1"}} {
		if code, _, stderr := gomerge(t, append(append([]string{}, base...), bad...)...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d: %s", bad, code, exitUsage, stderr)
		}
	}
}

// TestDeviceRecipe: gomerge run with --device cuda runs each step's tensors on the
// device (one device for every step) and writes what --device cpu writes.
func TestDeviceRecipe(t *testing.T) {
	lib := gputest.Library(t)
	dir := recipeFixture(t)
	p := func(name string) string { return filepath.Join(dir, name+".safetensors") }
	r := writeRecipe(t, dir, "pipeline.yaml", `name: tied
merge_method: ties
base_model: `+p("base")+`
parameters: {density: 0.3}
models:
  - model: `+p("a")+`
  - model: `+p("b")+`
    parameters: {weight: 0.5}
---
merge_method: dare_linear
base_model: `+p("base")+`
parameters: {density: 0.5}
models:
  - model: tied
  - model: `+p("a")+`
`)
	run := func(dev string, extra ...string) (string, []deviceReport) {
		out := filepath.Join(dir, dev+".safetensors")
		args := append([]string{"run", r, "--out", out, "--intermediate-dir", filepath.Join(dir, dev+"-steps"), "--json", "--device", dev}, extra...)
		code, stdout, stderr := gomerge(t, args...)
		if code != 0 {
			t.Fatalf("--device %s: exit %d: %s", dev, code, stderr)
		}
		var rep struct {
			Steps []deviceReport `json:"steps"`
		}
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil || len(rep.Steps) != 2 {
			t.Fatalf("%v:\n%s", err, stdout)
		}
		return out, rep.Steps
	}
	cpuOut, _ := run("cpu")
	gpuOut, steps := run("cuda", "--gpu-library", lib, "--gpu-min-elems", "1")
	for i, s := range steps {
		if s.Device != "cuda" || s.GPU == nil || s.GPU.Tensors != s.TensorsMerged {
			t.Errorf("step %d: device %q, gpu %+v", i, s.Device, s.GPU)
		}
	}
	sameCheckpointTensors(t, gpuOut, cpuOut)
}
