package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/gomerge/gomerge/hub"
	"github.com/gomerge/gomerge/merge"
)

// Model arguments by Hugging Face id: org/name[@revision] (or org/name/file.gguf)
// that is no local path is resolved through the Hugging Face cache, and downloaded
// into it unless --offline or HF_HUB_OFFLINE is set (docs/hub.md).

func addHubFlags(root *cobra.Command) {
	root.PersistentFlags().Bool("offline", false, "resolve Hugging Face ids (org/name[@rev]) from the local cache only, never downloading (as HF_HUB_OFFLINE=1)")
}

// hubClient is the client configured by the environment and the command line.
func hubClient(cmd *cobra.Command, ios *IOStreams) *hub.Client {
	c := hub.FromEnv()
	if off, err := cmd.Flags().GetBool("offline"); err == nil && off {
		c.Offline = true
	}
	c.UserAgent = "gomerge/" + versionString()
	c.Log = func(msg string) { fmt.Fprintln(ios.ErrOut, "gomerge: "+msg) }
	if ios.ErrTTY {
		c.Progress = downloadBar(ios)
	}
	return c
}

// downloadBar draws one bar per model download on the terminal. Chunks arrive from
// several goroutines, which the bar is not safe for on its own.
func downloadBar(ios *IOStreams) func(hub.Ref, int64) (func(int64), func()) {
	return func(ref hub.Ref, total int64) (func(int64), func()) {
		var mu sync.Mutex
		bar := progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(ios.ErrOut),
			progressbar.OptionShowBytes(true),
			progressbar.OptionSetDescription("downloading "+ref.String()),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
			progressbar.OptionSetWidth(30),
		)
		add := func(n int64) {
			mu.Lock()
			bar.Add64(n)
			mu.Unlock()
		}
		done := func() {
			mu.Lock()
			bar.Finish()
			mu.Unlock()
		}
		return add, done
	}
}

// modelResolver returns the function that turns a model argument into a local path:
// an existing path as it is, a Hub id as its snapshot (each id resolved once per
// command), anything else as it is, for the open that follows to report.
func modelResolver(ctx context.Context, cmd *cobra.Command, ios *IOStreams) func(string) (string, error) {
	var (
		mu   sync.Mutex
		seen = map[string]string{}
		c    *hub.Client
	)
	return func(arg string) (string, error) {
		if _, err := os.Stat(arg); err == nil || !hub.LooksLikeRef(arg) {
			return arg, nil
		}
		mu.Lock()
		defer mu.Unlock()
		if p, ok := seen[arg]; ok {
			return p, nil
		}
		if c == nil {
			c = hubClient(cmd, ios)
		}
		p, err := c.Resolve(ctx, arg)
		if err != nil {
			return "", hubInputError{err}
		}
		seen[arg] = p
		return p, nil
	}
}

// hubInputError makes a model the Hub or the cache does not have, or refuses, bad
// input (exit 3), as a missing local file is; a network failure stays what it is.
type hubInputError struct{ err error }

func (e hubInputError) Error() string { return e.err.Error() }
func (e hubInputError) Unwrap() error { return e.err }
func (e hubInputError) Is(target error) bool {
	return target == merge.ErrBadInput && (errors.Is(e.err, fs.ErrNotExist) || errors.Is(e.err, hub.ErrAccess))
}

// resolveAll resolves each non-empty path in place.
func resolveAll(resolve func(string) (string, error), paths ...*string) error {
	for _, p := range paths {
		if *p == "" {
			continue
		}
		r, err := resolve(*p)
		if err != nil {
			return err
		}
		*p = r
	}
	return nil
}

func newDownloadCmd(ios *IOStreams) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "download ORG/NAME[@REVISION] ...",
		Short: "Fetch models from the Hugging Face Hub into the local cache and print their folders",
		Long: `Fetch what a merge needs of each model (config, generation config, tokenizer
files, and the weights: the shards model.safetensors.index.json names, or
model.safetensors) into the Hugging Face cache (HF_HUB_CACHE, else HF_HOME/hub), in
the layout Python's huggingface_hub writes, and print each snapshot folder.
ORG/NAME/FILE.gguf fetches one GGUF file. Files already cached are not fetched again;
an interrupted download resumes. HF_ENDPOINT and HF_TOKEN are honoured; with
--offline (or HF_HUB_OFFLINE=1) only the cache is looked at. Merge commands and
recipes resolve Hugging Face ids the same way, so this command is optional.`,
		Example: `  gomerge download mistralai/Mistral-7B-v0.1
  gomerge download org/model@v1.0 org/other@0123456789abcdef0123456789abcdef01234567
  gomerge download TheBloke/Llama-2-7B-GGUF/llama-2-7b.Q4_K_M.gguf
  HF_HUB_OFFLINE=1 gomerge download org/model --json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("give at least one model id (org/name[@revision])")
			}
			for _, a := range args {
				if _, err := hub.ParseRef(a); err != nil {
					return usageError{err}
				}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c := hubClient(cmd, ios)
			type result struct {
				Model string `json:"model"`
				Path  string `json:"path"`
			}
			var results []result
			for _, a := range args {
				p, err := c.Resolve(cmd.Context(), a)
				if err != nil {
					return hubInputError{err}
				}
				results = append(results, result{a, p})
			}
			if asJSON {
				return writeJSON(ios.Out, results)
			}
			for _, r := range results {
				fmt.Fprintln(ios.Out, r.Path)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print [{model, path}] as JSON")
	return cmd
}
