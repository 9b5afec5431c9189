package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// k8sJob is the part of a batch/v1 Job that docs/cluster.md's manifest sets.
type k8sJob struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec struct {
		CompletionMode string `yaml:"completionMode"`
		Completions    *int   `yaml:"completions"`
		Parallelism    *int   `yaml:"parallelism"`
		Template       struct {
			Spec struct {
				RestartPolicy string `yaml:"restartPolicy"`
				Containers    []struct {
					Command      []string `yaml:"command"`
					Args         []string `yaml:"args"`
					VolumeMounts []struct {
						Name      string `yaml:"name"`
						MountPath string `yaml:"mountPath"`
					} `yaml:"volumeMounts"`
				} `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

// argv is the container's command line, without the program.
func (j *k8sJob) argv(t *testing.T) []string {
	cs := j.Spec.Template.Spec.Containers
	if len(cs) != 1 || len(cs[0].Command) != 1 || cs[0].Command[0] != "gomerge" {
		t.Fatalf("job %s: want one container running gomerge, got %+v", j.Metadata.Name, cs)
	}
	return cs[0].Args
}

// fencedBlocks returns the bodies of a Markdown file's ```lang blocks.
func fencedBlocks(t *testing.T, path, lang string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	rest := string(data)
	for {
		_, after, ok := strings.Cut(rest, "```"+lang+"\n")
		if !ok {
			return blocks
		}
		body, tail, ok := strings.Cut(after, "```")
		if !ok {
			t.Fatalf("%s: unterminated ```%s block", path, lang)
		}
		blocks, rest = append(blocks, body), tail
	}
}

// docJobs parses docs/cluster.md's Kubernetes manifest: the merge's Indexed Job and
// the finalize Job.
func docJobs(t *testing.T) (merge, finalize *k8sJob) {
	t.Helper()
	blocks := fencedBlocks(t, "../../docs/cluster.md", "yaml")
	if len(blocks) != 1 {
		t.Fatalf("docs/cluster.md has %d yaml blocks, want the one manifest", len(blocks))
	}
	dec := yaml.NewDecoder(strings.NewReader(blocks[0]))
	var jobs []*k8sJob
	for {
		var j k8sJob
		err := dec.Decode(&j)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("docs/cluster.md manifest: %v", err)
		}
		if j.APIVersion != "batch/v1" || j.Kind != "Job" || j.Spec.Template.Spec.RestartPolicy != "Never" {
			t.Fatalf("docs/cluster.md: %s is not a batch/v1 Job with restartPolicy Never", j.Metadata.Name)
		}
		jobs = append(jobs, &j)
	}
	if len(jobs) != 2 {
		t.Fatalf("docs/cluster.md manifest has %d documents, want the merge Job and the finalize Job", len(jobs))
	}
	return jobs[0], jobs[1]
}

// docSlurmLine is the gomerge command line of docs/cluster.md's sbatch script.
func docSlurmLine(t *testing.T) (array string, argv []string) {
	t.Helper()
	for _, b := range fencedBlocks(t, "../../docs/cluster.md", "sh") {
		if !strings.Contains(b, "#SBATCH --array=") {
			continue
		}
		for _, line := range strings.Split(b, "\n") {
			if a, ok := strings.CutPrefix(line, "#SBATCH --array="); ok {
				array = a
			}
			if w := strings.Fields(line); len(w) > 0 && w[0] == "gomerge" {
				argv = w[1:]
			}
		}
		return array, argv
	}
	t.Fatal("docs/cluster.md has no sbatch script")
	return "", nil
}

// TestKubernetesManifest: the documented Indexed Job runs the Slurm script's command
// line with --shard-count equal to its completions, and those command lines, run
// here with JOB_COMPLETION_INDEX 0…N−1 and the finalize Job's line after them, give
// the single-process merge's folder byte for byte.
func TestKubernetesManifest(t *testing.T) {
	job, fin := docJobs(t)
	if job.Spec.CompletionMode != "Indexed" || job.Spec.Completions == nil {
		t.Fatalf("the merge Job is not an Indexed Job with completions: %+v", job.Spec)
	}
	n := *job.Spec.Completions
	if job.Spec.Parallelism != nil && *job.Spec.Parallelism > n {
		t.Errorf("parallelism %d exceeds completions %d", *job.Spec.Parallelism, n)
	}
	args := job.argv(t)
	i := slices.Index(args, "--shard-count")
	if i < 0 || i+1 >= len(args) || args[i+1] != strconv.Itoa(n) {
		t.Fatalf("the Indexed Job's --shard-count is not its completions (%d): %q", n, args)
	}
	if j := slices.Index(args, "--shard-index"); j < 0 || j+1 >= len(args) || args[j+1] != "auto" {
		t.Fatalf("the Indexed Job does not pass --shard-index auto: %q", args)
	}
	array, slurm := docSlurmLine(t)
	if array != fmt.Sprintf("0-%d", n-1) {
		t.Errorf("the sbatch script's array %q and the Job's %d completions differ", array, n)
	}
	withoutCount := slices.Delete(slices.Clone(args), i, i+2)
	if !slices.Equal(withoutCount, slurm) {
		t.Errorf("the Kubernetes and Slurm command lines differ:\n%q\n%q", withoutCount, slurm)
	}
	out := slices.Index(args, "--out")
	if out < 0 || fin.argv(t)[0] != "finalize" || !slices.Equal(fin.argv(t)[1:], args[out+1:out+2]) {
		t.Fatalf("the finalize Job does not finalize the merge's --out: %q", fin.argv(t))
	}

	// Run them: /models becomes a folder of fixtures named as the manifest names them.
	f := newShardFixture(t)
	mount := job.Spec.Template.Spec.Containers[0].VolumeMounts
	if len(mount) != 1 {
		t.Fatalf("want one volume mount, got %+v", mount)
	}
	local := func(argv []string) []string {
		out := make([]string, len(argv))
		for i, a := range argv {
			out[i] = strings.Replace(a, mount[0].MountPath, f.dir, 1)
		}
		return out
	}
	for _, a := range local(args) {
		if strings.HasPrefix(a, f.dir) && !strings.HasSuffix(a, "merged") {
			if _, err := os.Stat(a); err != nil {
				t.Fatalf("the manifest names %s, which the fixture lacks: %v", a, err)
			}
		}
	}
	single := slices.Clone(local(withoutCount))
	k := slices.Index(single, "--shard-index")
	single = slices.Delete(single, k, k+2)
	ref := filepath.Join(f.dir, "ref")
	single[slices.Index(single, "--out")+1] = ref
	mustGomerge(t, single...)
	for w := range n {
		t.Setenv("JOB_COMPLETION_INDEX", strconv.Itoa(w))
		rep := workerReport(t, mustGomerge(t, local(args)...))
		if rep.Shard == nil || rep.Shard.Index != w || rep.Shard.Count != n {
			t.Fatalf("pod %d ran as %+v", w, rep.Shard)
		}
	}
	if said := mustGomerge(t, local(fin.argv(t))...); !strings.Contains(said, "complete") {
		t.Errorf("finalize said %q", said)
	}
	if d := mustHashTree(t, ref).diff(mustHashTree(t, local([]string{args[out+1]})[0])); d != "" {
		t.Errorf("the Indexed Job's output differs from the single-process merge: %s", d)
	}
}
