package main

import (
	"fmt"
	"os"
	"strconv"

	"github.com/spf13/pflag"

	"github.com/gomerge/gomerge/merge"
	"github.com/gomerge/gomerge/merge/recipe"
)

// shardFlags are --shard-index and --shard-count, which make a merge command one
// worker of a merge split across processes (docs/cluster.md).
type shardFlags struct {
	index string
	count int
}

func (s *shardFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&s.index, "shard-index", "", "write only this worker's shards of a folder output (0-based), or \"auto\": from SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX; then run 'gomerge finalize OUT'")
	fl.IntVar(&s.count, "shard-count", 0, "number of workers the folder output is split across (with --shard-index; auto reads it from a Slurm array)")
}

// shard resolves the flags, reading the cluster's variables through getenv for
// "auto"; nil when the merge is not split.
func (s *shardFlags) shard(getenv func(string) string) (*merge.Shard, error) {
	if s.index == "" {
		if s.count != 0 {
			return nil, usagef("--shard-count needs --shard-index")
		}
		return nil, nil
	}
	if s.count < 0 {
		return nil, usagef("--shard-count %d: must be positive", s.count)
	}
	if s.index != "auto" {
		i, err := strconv.Atoi(s.index)
		if err != nil {
			return nil, usagef("--shard-index %q: want a number or auto", s.index)
		}
		if s.count == 0 {
			return nil, usagef("--shard-index needs --shard-count")
		}
		return checkShard(merge.Shard{Index: i, Count: s.count}, "--shard-index")
	}
	if id := getenv("SLURM_ARRAY_TASK_ID"); id != "" {
		return slurmShard(getenv, s.count)
	}
	if id := getenv("JOB_COMPLETION_INDEX"); id != "" {
		i, err := strconv.Atoi(id)
		if err != nil {
			return nil, usagef("--shard-index auto: JOB_COMPLETION_INDEX=%q is not a number", id)
		}
		if s.count == 0 {
			return nil, usagef("--shard-index auto in a Kubernetes Indexed Job needs --shard-count (the Job's completions)")
		}
		return checkShard(merge.Shard{Index: i, Count: s.count}, "JOB_COMPLETION_INDEX")
	}
	return nil, usagef("--shard-index auto: neither SLURM_ARRAY_TASK_ID (a Slurm job array) nor JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) is set")
}

// slurmShard numbers a Slurm array's tasks 0…N−1 whatever the array's range and step
// (--array=1-8, --array=0-15:2): index (ID−MIN)/STEP; the count from
// SLURM_ARRAY_TASK_COUNT, else (MAX−MIN)/STEP+1, else --shard-count.
func slurmShard(getenv func(string) string, count int) (*merge.Shard, error) {
	num := func(name string, def int) (int, error) {
		v := getenv(name)
		if v == "" {
			return def, nil
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return 0, usagef("--shard-index auto: %s=%q is not a number", name, v)
		}
		return n, nil
	}
	id, err := num("SLURM_ARRAY_TASK_ID", 0)
	if err != nil {
		return nil, err
	}
	lo, err := num("SLURM_ARRAY_TASK_MIN", 0)
	if err != nil {
		return nil, err
	}
	step, err := num("SLURM_ARRAY_TASK_STEP", 1)
	if err != nil {
		return nil, err
	}
	if step < 1 || (id-lo)%step != 0 {
		return nil, usagef("--shard-index auto: task %d is not on the array's grid (min %d, step %d)", id, lo, step)
	}
	n, err := num("SLURM_ARRAY_TASK_COUNT", 0)
	if err != nil {
		return nil, err
	}
	if n == 0 && getenv("SLURM_ARRAY_TASK_MAX") != "" {
		hi, err := num("SLURM_ARRAY_TASK_MAX", 0)
		if err != nil {
			return nil, err
		}
		n = (hi-lo)/step + 1
	}
	switch {
	case n == 0 && count == 0:
		return nil, usagef("--shard-index auto: the Slurm array's size is not in the environment; give --shard-count")
	case n == 0:
		n = count
	case count != 0 && count != n:
		return nil, usagef("--shard-count %d, but the Slurm array has %d tasks", count, n)
	}
	return checkShard(merge.Shard{Index: (id - lo) / step, Count: n}, "SLURM_ARRAY_TASK_ID")
}

func checkShard(s merge.Shard, from string) (*merge.Shard, error) {
	if s.Index < 0 || s.Index >= s.Count {
		return nil, usagef("%s gives worker %d, outside 0…%d", from, s.Index, s.Count-1)
	}
	return &s, nil
}

// apply sets job's Shard from the flags.
func (s *shardFlags) apply(ios *IOStreams, job *merge.Job) error {
	sh, err := s.shard(os.Getenv)
	if err != nil || sh == nil {
		return err
	}
	job.Shard = sh
	job.OnLockWait = shardLockWait(ios, fmt.Sprintf("worker %d's folder", sh.Index))
	return nil
}

// shardLockWait says what a worker or finalize waits for.
func shardLockWait(ios *IOStreams, what string) func() {
	return func() {
		fmt.Fprintf(ios.ErrOut, "gomerge: %s is held by another gomerge; waiting for it to finish\n", what)
	}
}

// checkShardedRecipe refuses to split a pipeline of several steps: a later step
// reads an earlier one's output whole, which no worker has until finalize.
func checkShardedRecipe(r *recipe.Recipe, opts recipe.Options, job merge.Job) error {
	if job.Shard == nil {
		return nil
	}
	plan, err := recipe.PlanRecipe(r, opts)
	if err != nil {
		return err
	}
	if len(plan.Steps) > 1 {
		return usagef("--shard-index: the recipe has %d steps; split only a one-step recipe (run each step of a pipeline as its own sharded job, with finalize between)", len(plan.Steps))
	}
	return nil
}
