// Command gomerge merges neural-network checkpoints: SFA between training segments,
// and the common model-merging methods, over memory-mapped safetensors files.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/gguf"
	"github.com/gomerge/gomerge/formats/imatrix"
	"github.com/gomerge/gomerge/formats/safetensors"
	"github.com/gomerge/gomerge/gpu"
	"github.com/gomerge/gomerge/merge"
)

// version is set at link time (-ldflags "-X main.version=v1.2.3"); otherwise the
// module version or VCS revision from the build info is used.
var version = ""

// Exit statuses (docs/numerics.md#exit-status).
const (
	exitOK       = 0
	exitOther    = 1
	exitUsage    = 2
	exitBadInput = 3
	exitIO       = 4
)

// IOStreams are a command's standard streams; tests substitute buffers.
type IOStreams struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer
	// ErrTTY says whether ErrOut is a terminal, where progress is drawn.
	ErrTTY bool
}

// usageError marks an error in how gomerge was called.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ios := &IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr, ErrTTY: term.IsTerminal(int(os.Stderr.Fd()))}
	code := run(ctx, ios, os.Args[1:])
	stop()
	os.Exit(code)
}

// run executes one gomerge command line and returns its exit status.
func run(ctx context.Context, ios *IOStreams, args []string) (code int) {
	defer func() {
		// A panic is a bug: say so, with the stack, and exit 1 (the Go runtime's own
		// status for it, 2, would read as a usage error).
		if r := recover(); r != nil {
			fmt.Fprintf(ios.ErrOut, "gomerge: internal error: %v\n%s", r, debug.Stack())
			code = exitOther
		}
	}()
	var st runState
	root := newRootCmd(ios, &st)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(ios.ErrOut, "gomerge: %v\n", err)
	code = exitCode(err, st.started)
	if st.json {
		// A caller that asked for JSON parses stdout: give it the failure there too.
		writeJSON(ios.Out, struct {
			Error      string `json:"error"`
			ExitStatus int    `json:"exit_status"`
		}{err.Error(), code})
	}
	if code == exitUsage {
		fmt.Fprintf(ios.ErrOut, "Run 'gomerge %s --help' for usage.\n", commandPath(root, args))
	}
	return code
}

func commandPath(root *cobra.Command, args []string) string {
	c, _, err := root.Find(args)
	if err != nil || c == root {
		return "<command>"
	}
	return c.CommandPath()[len(root.Name())+1:]
}

// exitCode maps an error to the exit statuses of docs/numerics.md#exit-status by its type, never its text.
func exitCode(err error, started bool) int {
	var ue usageError
	var oe *merge.OutputError
	switch {
	case errors.Is(err, gpu.ErrUnavailable): // --device cuda without a usable GPU
		return exitOther
	case errors.As(err, &ue) || !started, errors.Is(err, merge.ErrBadParameter):
		return exitUsage
	case errors.As(err, &oe):
		return exitIO
	case errors.Is(err, merge.ErrBadInput), errors.Is(err, safetensors.ErrFormat), errors.Is(err, gguf.ErrFormat),
		errors.Is(err, imatrix.ErrFormat), errors.Is(err, dtype.ErrUnsupported), errors.Is(err, dtype.ErrUnknown),
		errors.Is(err, merge.ErrInputChanged), errors.Is(err, fs.ErrNotExist):
		return exitBadInput
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EIO),
		errors.Is(err, syscall.EROFS), errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.ENOTEMPTY):
		return exitIO
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return exitIO
	}
	return exitOther
}

// runState is what run learns about the command line once cobra has parsed it.
type runState struct {
	started bool // a command's RunE began: errors before that are usage errors
	json    bool // the command was asked for --json
}

func newRootCmd(ios *IOStreams, st *runState) *cobra.Command {
	root := &cobra.Command{
		Use:   "gomerge",
		Short: "Merge neural-network checkpoints (SFA, linear, TIES, ...) fast and safely",
		Long: `gomerge merges checkpoints stored as safetensors files, Hugging Face folders or
GGUF files (llama.cpp's format, quantized types included).

It memory-maps its inputs, computes in float32 (on a CUDA GPU when one is there and
it pays, with the same bytes as the CPU) and writes the result through a
temporary file that is fsynced and renamed, so an interrupted merge never leaves a
half-written checkpoint. Exit status: 0 ok, 2 usage, 3 bad input, 4 I/O failure,
1 anything else.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRun: func(cmd *cobra.Command, _ []string) {
			st.started = true
			if f := cmd.Flags().Lookup("json"); f != nil && f.Value.String() == "true" {
				st.json = true
			}
		},
	}
	root.SetIn(ios.In)
	root.SetOut(ios.Out)
	root.SetErr(ios.ErrOut)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newSFACmd(ios), newDistanceCmd(ios), newReportCmd(ios), newInspectCmd(ios), newVersionCmd(ios))
	root.AddCommand(newRunCmd(ios), newCompressCmd(ios), newDecompressCmd(ios))
	root.AddCommand(newDownloadCmd(ios), newLoraCmd(ios))
	addHubFlags(root)
	root.AddCommand(newFinalizeCmd(ios))
	for _, group := range methodCommands() {
		root.AddCommand(newMethodCmd(ios, group))
	}
	return root
}

func versionString() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return "devel-" + rev
}
