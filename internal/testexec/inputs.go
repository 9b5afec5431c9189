package testexec

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Inputs tells go test's result cache about files that programs started by a test
// read: the cache keys a test's result on the files the test process itself opens
// or stats (by size and modification time), so a Python script or a gomerge binary
// built in a subprocess from changed sources would otherwise be served "(cached)".
// Each path is opened the way the cache records it: a file by os.Open, a folder by
// os.ReadDir (which records every entry's name, size and time, not recursively).
func Inputs(paths ...string) error {
	for _, p := range paths {
		info, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("test input: %w", err)
		}
		if info.IsDir() {
			if _, err := os.ReadDir(p); err != nil {
				return fmt.Errorf("test input: %w", err)
			}
			continue
		}
		f, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("test input: %w", err)
		}
		f.Close()
	}
	return nil
}

// moduleSources records the folders of the module around the working directory
// that go build reads (every folder holding Go files, and go.mod and go.sum), for
// tests that build gomerge in a subprocess. Folders go build ignores (testdata, and
// names starting with "." or "_") and nested modules are skipped, so edits to
// documents or fixtures do not rerun those tests.
func moduleSources() error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	var dirs []string
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			if strings.HasSuffix(d.Name(), ".go") && (len(dirs) == 0 || dirs[len(dirs)-1] != filepath.Dir(path)) {
				dirs = append(dirs, filepath.Dir(path))
			}
			return nil
		}
		name := d.Name()
		if path != root {
			if name == "testdata" || name == "node_modules" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
				return filepath.SkipDir
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("test input: module sources: %w", err)
	}
	return Inputs(append(dirs, filepath.Join(root, "go.mod"), filepath.Join(root, "go.sum"))...)
}

// moduleRoot is the nearest folder at or above the working directory with a go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("test input: no go.mod above the working directory")
		}
		dir = parent
	}
}
