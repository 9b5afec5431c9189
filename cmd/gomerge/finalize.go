package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/gomerge/gomerge/merge"
)

func newFinalizeCmd(ios *IOStreams) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "finalize OUT",
		Short: "Finish a merge split across workers (--shard-index): check every shard, then write the index and the other files",
		Long: `Finish a merge that workers run with --shard-index I --shard-count N wrote into the
folder OUT. finalize waits for workers still writing, checks that workers 0…N−1 all
finished under the same plan (the same inputs, recipe, parameters and gomerge version)
and that every shard has the size and SHA-256 its worker recorded, then moves the
shards, config and tokenizer files into OUT and writes model.safetensors.index.json
last. It refuses, naming the worker or the shard to rerun, before it moves anything;
interrupted, it can be run again. See docs/cluster.md.`,
		Example: `  sbatch --array=0-3 --wrap 'gomerge ties --base base a b --out merged --shard-index auto'
  gomerge finalize merged`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("give the output folder")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			rep, err := merge.Finalize(cmd.Context(), args[0], shardLockWait(ios, "a worker's folder or the output"))
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(ios.Out, rep)
			}
			_, err = fmt.Fprintf(ios.Out, "finalize: %s complete (%d workers, %d files, %s in %.2fs)\n",
				rep.Output, rep.Workers, len(rep.Files), humanBytes(rep.Bytes), rep.Seconds)
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON report on stdout")
	return cmd
}
