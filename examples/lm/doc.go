// Package lm holds the paper's LLM experiment in miniature: a byte-level transformer
// (Python, torch on the CPU) trained on Math, Law and Code in sequence, with every
// merge done by the gomerge binary through integrations/python/gomerge.py; and the Go
// test that runs its reduced configuration and checks the findings that hold across
// seeds. There is no Go API here; see README.md.
package lm
